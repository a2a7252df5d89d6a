#!/usr/bin/env bash
# Bounded memory soak (issue 13): `nereid serve --demo-models all` under a mixed load, its
# RSS sampled every $SAMPLE_S s, and a PASS/FAIL on RSS growth after the warm-up.
#
# Load, all at once:
#  * `simple` (INT32 add/sub) over four doors, one `nereid bench` closed loop each
#    (gRPC, REST JSON, REST binary, REST binary over HTTP/2), $SIMPLE_CONCURRENCY in flight
#    per door, until $SIMPLE_REQUESTS requests in all (default 1,000,000) or for $DURATION s.
#    `nereid bench` measures windows, not request counts: each run is one window
#    (`-p MS -r 1`) of at most $CHUNK_S s, its "Request count" is added up, and the last
#    windows are sized from the doors' measured rates to close in on the target (a few
#    percent over it). A new run per window also means new connections every $CHUNK_S s.
#  * minilm: $MINILM_CLIENTS Python threads, closed loop, alternating /v1/embeddings and
#    KServe infer (scripts/soak_clients.py).
#  * smollm2: $CHAT_CLIENTS Python threads streaming OpenAI chat completions (`openai`,
#    stream=True, $CHAT_MAX_TOKENS tokens); every $CHAT_ABANDON_EVERY-th stream is closed
#    after its first chunk.
# Warm-up: the first $WARMUP_PCT% of the load time (default 20), but at least $WARMUP_MIN_S s
# (default 60: smollm2's prompt-prefix cache, bounded at 64 MiB, fills during the first few
# dozen chats) and at most half the load; $WARMUP_S s sets it outright. Growth is RSS at the
# end of the load against RSS after the warm-up; RESULT is PASS when growth < $MAX_GROWTH_PCT%
# (default 5), there were no client errors and the server exits 0 on SIGTERM. The load
# starts once all three models are ready (the first run fetches minilm and smollm2 into
# ~/.cache/nereid). Other knobs: SIMPLE_CONCURRENCY (8 per door), CHUNK_S (10), MINILM_CLIENTS
# (2), CHAT_CLIENTS (2), CHAT_MAX_TOKENS (16), CHAT_ABANDON_EVERY (5), SAMPLE_S (2), IDLE_S (10
# s sampled after the load), READY_TIMEOUT (900), SERVE_ARGS (--demo-models all), PY.
#
#   scripts/soak.sh                                   # release build, 1M simple requests
#   DURATION=600 scripts/soak.sh                      # ten minutes instead of a count
#   BIN=target/sysalloc/nereid ALLOCATOR=system scripts/soak.sh
#
# Writes to $OUT (default /tmp/nereid-soak): rss.csv (elapsed_s,rss_kb,hwm_kb,threads,phase),
# server.log, count-DOOR (one line per bench run: requests errors exit_code window_ms),
# bench-DOOR.log (the last run's output; bench-DOOR.failed.log for a failed one), clients.json,
# clients.log, server-stats.json (GET /v2/models/{m}/stats at the end), summary.txt.
# Exit status: 0 on PASS, 1 on FAIL, 2 when the soak could not run.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${BIN:-./target/release/nereid}
SIMPLE_REQUESTS=${SIMPLE_REQUESTS:-1000000}
DURATION=${DURATION:-}
OUT=${OUT:-/tmp/nereid-soak}
ALLOCATOR=${ALLOCATOR:-default features (mimalloc)}
SIMPLE_CONCURRENCY=${SIMPLE_CONCURRENCY:-8}
CHUNK_S=${CHUNK_S:-10}
MINILM_CLIENTS=${MINILM_CLIENTS:-2}
CHAT_CLIENTS=${CHAT_CLIENTS:-2}
CHAT_MAX_TOKENS=${CHAT_MAX_TOKENS:-16}
CHAT_ABANDON_EVERY=${CHAT_ABANDON_EVERY:-5}
WARMUP_PCT=${WARMUP_PCT:-20}
WARMUP_MIN_S=${WARMUP_MIN_S:-60}
WARMUP_S=${WARMUP_S:-}
MAX_GROWTH_PCT=${MAX_GROWTH_PCT:-5}
SAMPLE_S=${SAMPLE_S:-2}
IDLE_S=${IDLE_S:-10}
READY_TIMEOUT=${READY_TIMEOUT:-900}
PY=${PY:-.venv/bin/python}
# Flags of `nereid serve` (word-split); another repository must hold simple, minilm, smollm2.
SERVE_ARGS=${SERVE_ARGS:---demo-models all}

die() { echo "soak: $*" >&2; exit 2; }
[[ -x "$BIN" ]] || die "no binary at $BIN (build it, or set BIN)"
[[ -x "$PY" ]] || die "no Python at $PY (set PY)"
"$PY" -c 'import openai, requests' 2>/dev/null || die "$PY lacks openai or requests"
if [[ -n "$DURATION" ]]; then
  [[ "$DURATION" =~ ^[0-9]+$ && "$DURATION" -gt 0 ]] || die "DURATION must be whole seconds"
  mode="DURATION=${DURATION} s"
else
  [[ "$SIMPLE_REQUESTS" =~ ^[0-9]+$ && "$SIMPLE_REQUESTS" -gt 0 ]] || die "SIMPLE_REQUESTS must be a count"
  mode="SIMPLE_REQUESTS=$SIMPLE_REQUESTS"
fi

mkdir -p "$OUT"
rm -f "$OUT"/count-* "$OUT"/pending-* "$OUT"/rate-* "$OUT"/active-* "$OUT"/bench-*.log "$OUT"/rss.csv "$OUT"/clients.json \
  "$OUT"/server-stats.json "$OUT"/summary.txt "$OUT"/.idle "$OUT"/.stop
log=$OUT/server.log
server=
sampler=
clients=
doors=()
cleanup() {
  local p
  for p in "${doors[@]}" $clients $sampler; do kill "$p" 2>/dev/null || true; done
  [[ -n "$server" ]] && kill "$server" 2>/dev/null || true
  wait 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

echo "== soak: $mode, binary $BIN, allocator: $ALLOCATOR, serve $SERVE_ARGS, $(nproc) cores," \
  "load $(cut -d' ' -f1-3 /proc/loadavg), output in $OUT"
# serve FLAGS...: sets $server, $http and $grpc.
NEREID_BIN=$BIN
source scripts/lib/serve.sh
# shellcheck disable=SC2086
serve $SERVE_ARGS
# serve waits 300 s for NEREID_READY; the first run may fetch weights for longer.
deadline=$(( $(date +%s) + READY_TIMEOUT ))
while [[ -z "${http:-}" || -z "${grpc:-}" ]]; do
  kill -0 "$server" 2>/dev/null || { tail -20 "$log" >&2; die "the server exited before NEREID_READY"; }
  (( $(date +%s) < deadline )) || die "no NEREID_READY within $READY_TIMEOUT s (see $log)"
  sleep 2
  if ready=$(grep NEREID_READY "$log"); then
    http=$(sed -E 's/.*http=([^ ]+).*/\1/' <<<"$ready")
    grpc=$(sed -E 's/.*grpc=([^ ]+).*/\1/' <<<"$ready")
  fi
done
for model in simple minilm smollm2; do
  until [[ $(curl -s -o /dev/null -w '%{http_code}' "http://$http/v2/models/$model/ready") == 200 ]]; do
    kill -0 "$server" 2>/dev/null || { tail -20 "$log" >&2; die "the server exited while $model loaded"; }
    (( $(date +%s) < deadline )) || die "$model not ready within $READY_TIMEOUT s (see $log)"
    sleep 2
  done
done
echo "== all three models ready; starting the load"

# RSS sampler: one line per $SAMPLE_S s until .stop appears or the server is gone.
start_ms=$(now_ms)
sample_loop() {
  echo "elapsed_s,rss_kb,hwm_kb,threads,phase" > "$OUT/rss.csv"
  while [[ ! -e "$OUT/.stop" ]] && [[ -r /proc/$server/status ]]; do
    local phase=load
    [[ -e "$OUT/.idle" ]] && phase=idle
    awk -v t="$(( $(now_ms) - start_ms ))" -v phase=$phase '
      /^VmRSS:/ {r = $2} /^VmHWM:/ {h = $2} /^Threads:/ {n = $2}
      END { if (r != "") printf "%.1f,%d,%d,%d,%s\n", t / 1000, r, h, n, phase }' \
      "/proc/$server/status" >> "$OUT/rss.csv" 2>/dev/null || true
    sleep "$SAMPLE_S"
  done
}
sample_loop &
sampler=$!

[[ -n "$DURATION" ]] && load_end_ms=$(( start_ms + DURATION * 1000 ))
simple_done() { cat "$OUT"/count-* 2>/dev/null | awk '{s += $1} END {print s + 0}'; }
# sum_files GLOB-PREFIX: the sum of the numbers in $OUT/PREFIX-* (0 when none).
sum_files() { cat "$OUT/$1"-* 2>/dev/null | awk '{s += $1} END {printf "%d", s}'; }

# door_loop NAME BENCH-FLAGS...: `nereid bench` on simple, one window per run, until the
# target is met (or the time is up); appends "requests errors exit_code window_ms" per run
# to count-NAME. For a request target, every door keeps its last rate in rate-NAME and what
# it expects of the window it is running in pending-NAME (active-NAME while it runs), so that
# all doors size their windows from the requests still unclaimed at the doors' combined rate
# and end together.
door_loop() {
  local name=$1; shift
  local count=$OUT/count-$name rate=0 window_ms fails=0 bench=
  trap '[[ -n "$bench" ]] && kill "$bench" 2>/dev/null; exit 0' TERM
  : > "$count"
  touch "$OUT/active-$name"
  while :; do
    window_ms=$(( CHUNK_S * 1000 ))
    if [[ -n "$DURATION" ]]; then
      local left_ms=$(( load_end_ms - $(now_ms) ))
      (( left_ms >= 500 )) || break
      (( left_ms < window_ms )) && window_ms=$left_ms
    else
      local left=$(( SIMPLE_REQUESTS - $(simple_done) - $(sum_files pending) ))
      (( left > 0 )) || break
      # A 2 s first window measures the door's rate; then 60% of the time the rest takes at
      # the doors' combined rate (all of it under 2 s; at least 500 ms, at most $CHUNK_S s),
      # so that the last windows close in on the target as the rates move.
      # Doors still in their first window count at the mean rate of the others.
      local known active
      known=$(find "$OUT" -maxdepth 1 -name 'rate-*' | wc -l)
      active=$(find "$OUT" -maxdepth 1 -name 'active-*' | wc -l)
      window_ms=$(awk -v left="$left" -v rate="$rate" -v sum="$(sum_files rate)" -v known="$known" \
        -v active="$active" -v max="$window_ms" '
        BEGIN { all = known > 0 ? sum * (active > known ? active : known) / known : 0;
                w = (rate > 0 && all > 0) ? left / all * 1000 : 2000;
                if (rate > 0 && w > 2000) w *= 0.6; if (w > max) w = max;
                if (w < 500) w = 500; printf "%d", w }')
      echo $(( ${rate%.*} * window_ms / 1000 )) > "$OUT/pending-$name"
    fi
    "$BIN" bench -m simple --concurrency-range "$SIMPLE_CONCURRENCY" -p "$window_ms" -r 1 \
      --no-progress "$@" > "$OUT/bench-$name.log" 2>&1 &
    bench=$!
    local rc=0
    wait "$bench" || rc=$?
    bench=
    local line ok=0 errors=0
    line=$(grep -m1 'Request count:' "$OUT/bench-$name.log" || true)
    if [[ "$line" =~ Request\ count:\ ([0-9]+)\ \(([0-9]+)\ errors ]]; then
      ok=${BASH_REMATCH[1]}
      errors=${BASH_REMATCH[2]}
    fi
    # The count lands before the claim goes: another door may see both, never neither.
    echo "$ok $errors $rc $window_ms" >> "$count"
    rm -f "$OUT/pending-$name"
    if (( rc != 0 )); then
      cp "$OUT/bench-$name.log" "$OUT/bench-$name.failed.log"
      fails=$(( fails + 1 ))
      (( fails < 3 )) || { echo "soak: $name: three bench runs failed in a row, see $OUT/bench-$name.failed.log" >&2; break; }
      sleep 1
    else
      fails=0
      rate=$(awk -v ok="$ok" -v ms="$window_ms" 'BEGIN { printf "%.1f", ok / (ms / 1000) }')
      echo "$rate" > "$OUT/rate-$name"
    fi
  done
  rm -f "$OUT/rate-$name" "$OUT/active-$name"
}

door_loop grpc -i grpc -u "$grpc" & doors+=($!)
door_loop rest-json -i http -u "$http" --input-tensor-format json & doors+=($!)
door_loop rest-binary -i http -u "$http" --input-tensor-format binary & doors+=($!)
door_loop http2-binary -i http -u "$http" --http-version 2 --input-tensor-format binary & doors+=($!)

"$PY" scripts/soak_clients.py load --http "$http" --minilm "$MINILM_CLIENTS" --chat "$CHAT_CLIENTS" \
  --max-tokens "$CHAT_MAX_TOKENS" --abandon-every "$CHAT_ABANDON_EVERY" --out "$OUT/clients.json" \
  > "$OUT/clients.log" 2>&1 &
clients=$!

# Progress every 30 s until every door is done.
last=0
while :; do
  alive=0
  for p in "${doors[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
  (( alive )) || break
  kill -0 "$server" 2>/dev/null || { echo "soak: the server died under load (see $log)" >&2; break; }
  sleep 1
  t=$(( ($(now_ms) - start_ms) / 1000 ))
  if (( t - last >= 30 )); then
    last=$t
    rss=$(awk '/^VmRSS:/ {printf "%.1f MiB", $2 / 1024}' "/proc/$server/status" 2>/dev/null || echo gone)
    echo "   t=${t}s simple=$(simple_done) RSS=$rss"
  fi
done
for p in "${doors[@]}"; do wait "$p" 2>/dev/null || true; done
doors=()
load_s=$(awk -v ms="$(( $(now_ms) - start_ms ))" 'BEGIN { printf "%.1f", ms / 1000 }')
touch "$OUT/.idle"
kill -TERM "$clients" 2>/dev/null || true
wait "$clients" 2>/dev/null || echo "soak: the Python clients exited non-zero (see $OUT/clients.log)" >&2
clients=
echo "== load done after ${load_s} s; sampling the idle server for ${IDLE_S} s"
sleep "$IDLE_S"

{
  echo "{"
  sep=
  for model in simple minilm smollm2; do
    printf '%s"%s": %s\n' "$sep" "$model" "$(curl -s "http://$http/v2/models/$model/stats" || echo null)"
    sep=,
  done
  echo "}"
} > "$OUT/server-stats.json"
touch "$OUT/.stop"
wait "$sampler" 2>/dev/null || true
sampler=
server_rc=gone
if kill -0 "$server" 2>/dev/null; then
  kill -TERM "$server"
  server_rc=0
  wait "$server" || server_rc=$?
fi
server=

report_args=(--out "$OUT" --load-seconds "$load_s" --warmup-pct "$WARMUP_PCT" --warmup-min-seconds "$WARMUP_MIN_S"
  --max-growth "$MAX_GROWTH_PCT"
  --sample-s "$SAMPLE_S" --bin "$BIN" --allocator "$ALLOCATOR" --mode "$mode" --cores "$(nproc)")
[[ -n "$WARMUP_S" ]] && report_args+=(--warmup-seconds "$WARMUP_S")
rc=0
"$PY" scripts/soak_clients.py report "${report_args[@]}" | tee "$OUT/summary.txt" || rc=$?
echo "server exit after SIGTERM: $server_rc" | tee -a "$OUT/summary.txt"
if [[ "$server_rc" != 0 ]]; then
  echo "RESULT: FAIL (the server did not exit 0 after SIGTERM)" | tee -a "$OUT/summary.txt"
  rc=1
fi
exit "$rc"
