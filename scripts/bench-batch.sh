#!/usr/bin/env bash
# Measures `nereid batch` against its peers in one run, for docs/BENCHMARKS.md:
#  1. in-process: minilm over a Parquet of ROWS short texts (default 100,000) against the
#     model's own in-process throughput (the same engine fed the same texts from memory),
#     and smollm2 completions against the engine's own generation
#     (batch/examples/batch_vs_engine.rs, rounds alternating);
#  2. served minilm: `nereid batch --server` against `nereid bench` on the same
#     `nereid serve`, requests of 32 rows, 4 in flight, rounds alternating. `nereid bench`
#     repeats one sample over a request's batch, so batch reads a table in which every 32
#     rows repeat one text too: both send the same requests (no padding inside a batch);

#  3. served smollm2: `nereid batch --server` completions against the streaming OpenAI
#     load (frontends/stream/examples/stream_load.rs) at as many streams as batch keeps
#     in flight.
# Release builds first (about 15 minutes from scratch on 2 cores). Needs .venv with
# pyarrow (scripts/test-all.sh makes it). Writes what it prints to target/bench-batch.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
rows=${ROWS:-100000}
served_rows=${SERVED_ROWS:-10000}
prompts=${PROMPTS:-128}
# minilm scores about 190 short texts a second on 2 cores: 100,000 rows take about 9
# minutes a side, so one round by default.
rounds=${ROUNDS:-1}
if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
  cargo build --release --locked -p nereid --bin nereid
  cargo build --release --locked -p nereid-batch --example batch_vs_engine
  cargo build --release --locked -p nereid-stream --example stream_load
fi
out=target/bench-batch.txt
exec > >(tee "$out") 2>&1
echo "== $(date -u +%FT%TZ) $(git rev-parse --short HEAD) on $(nproc) cores; load: $(cut -d' ' -f1-3 /proc/loadavg)"

# PHASES picks what runs (default all three).
phases=${PHASES:-"in-process served-minilm served-smollm2"}
if [[ " $phases " == *" in-process "* ]]; then
  echo "== in-process: minilm, $rows texts"
  ./target/release/examples/batch_vs_engine "$rows" "$rounds" minilm
  echo "== in-process: smollm2, $prompts prompts, 32 tokens each"
  ./target/release/examples/batch_vs_engine "$prompts" 2 smollm2
fi

work=$(mktemp -d)
log="$work/serve.log"
server=
trap 'kill $server 2>/dev/null || true; rm -rf "$work"' EXIT
# The texts of the in-process run's generator, as Parquet for batch and as a perf_analyzer
# input file for `nereid bench` (one text per sample; each request repeats it 32 times).
.venv/bin/python - "$work" "$served_rows" "$prompts" <<'EOF'
import json, sys
import pyarrow as pa, pyarrow.parquet as pq
work, rows, prompts = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
WORDS = ["river", "engine", "quiet", "market", "signal", "garden", "orbit", "paper", "winter",
         "copper", "lantern", "harbor", "violet", "thunder", "meadow", "silver", "canyon",
         "rocket", "velvet", "island", "anchor", "ember", "falcon", "glacier"]
def text(i):
    w = lambda k: WORDS[(i // k + k) % len(WORDS)]
    return "the %s %s near the %s %s number %d" % (w(1), w(3), w(7), w(11), i)
texts = [text(i) for i in range(rows)]
# Row r carries text r // 32: each request of 32 rows is one text 32 times, as bench sends.
pq.write_table(pa.table({"id": list(range(rows)), "text": [texts[r // 32] for r in range(rows)]}),
               work + "/texts.parquet")
json.dump({"data": [{"TEXT": [t]} for t in texts[:rows // 32]]}, open(work + "/texts.json", "w"))
pq.write_table(pa.table({"id": list(range(prompts)), "text": texts[:prompts]}), work + "/prompts.parquet")
EOF
# serve FLAGS...: sets $http and $grpc.
source scripts/lib/serve.sh

if [[ " $phases " == *" served-minilm "* ]]; then
serve --model-control-mode explicit --load-model minilm
echo "== served minilm: $served_rows texts, 32 rows a request, 4 in flight"
for round in 1 2; do
  ./target/release/nereid bench -m minilm -i grpc -u "$grpc" --input-data "$work/texts.json" \
    -b 32 --concurrency-range 4 -p 5000 -r 3 --no-progress | grep -E "Throughput|infer/sec" | sed "s/^/round $round bench: /"
  rm -rf "$work/out"
  ./target/release/nereid batch --model minilm --server "$grpc" --input "$work/texts.parquet" \
    --output "$work/out" --input-column text=TEXT --key-column id --concurrency 4 2>&1 \
    | grep "rows written" | sed "s/^/round $round batch: /"
done
fi

if [[ " $phases " == *" served-smollm2 "* ]]; then
# The load generator of bench-models.sh; its debug build (dependencies optimised) serves
# as well when no release build of it is there.
stream_load=./target/release/examples/stream_load
[[ -x "$stream_load" ]] || stream_load=./target/debug/examples/stream_load
serve --model-control-mode explicit --load-model smollm2
echo "== served smollm2: $prompts prompts, 32 tokens each, 16 in flight"
for round in 1 2; do
  "$stream_load" "http://$http" smollm2 --levels 16 --requests $((prompts / 16)) \
    --max-tokens 32 | sed "s/^/round $round stream_load: /"
  rm -rf "$work/out"
  ./target/release/nereid batch --model smollm2 --server "$grpc" --input "$work/prompts.parquet" \
    --output "$work/out" --input-column text=text_input --key-column id --parameter max_tokens=32 2>&1 \
    | grep "rows written" | sed "s/^/round $round batch: /"
done
fi
echo "== load after: $(cut -d' ' -f1-3 /proc/loadavg)"
