#!/usr/bin/env bash
# minilm with its dense layers in FP32, INT16 and BF16 (`matmul_weights`), one
# after the other on one machine, for docs/BENCHMARKS.md:
#  1. in-process, one thread (models/examples/bench.rs: 16-token texts, batches of 8 and 32);
#  2. served: `nereid bench` over gRPC, 16 tokens per request, concurrency 32, against a
#     `nereid serve` of that config (one instance, one thread, as the demo);
#  3. `nereid batch` in-process over a JSONL of ROWS texts (default 20,000), wall time.
# Release builds first (about 15 minutes from scratch on 2 cores). Writes what it prints to
# target/bench-encoder-formats.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
rows=${ROWS:-20000}
if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
  cargo build --release --locked -p nereid --bin nereid
  cargo build --release --locked -p nereid-models --example bench
fi
out=target/bench-encoder-formats.txt
exec > >(tee "$out") 2>&1
echo "== $(date -u +%FT%TZ) $(git rev-parse --short HEAD) on $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)); load: $(cut -d' ' -f1-3 /proc/loadavg)"

work=$(mktemp -d)
log=$work/server.log
server=
trap 'kill $server 2>/dev/null || true; rm -rf "$work"' EXIT
source scripts/lib/serve.sh
./target/release/nereid models pull > /dev/null
cache=${NEREID_CACHE:-$HOME/.cache/nereid}

# "hello" x 14 is 14 WordPiece tokens, 16 with [CLS] and [SEP], as in the in-process bench.
words=$(printf 'hello %.0s' {1..14})
printf '{"data":[{"TEXT":["%s"]}]}' "${words% }" > "$work/inputs.json"
python3 - "$work/texts.jsonl" "$rows" <<'PY'
import json, sys
words = "the sea a ship sails at dawn under grey clouds while gulls circle and cry".split()
with open(sys.argv[1], "w") as f:
    for i in range(int(sys.argv[2])):
        text = " ".join(words[(i * 7 + j * 3) % len(words)] for j in range(12))
        f.write(json.dumps({"id": i, "text": f"{i} {text}"}) + "\n")
PY

for format in fp32 int16 bf16; do
  repo=$work/repo-$format
  mkdir -p "$repo/minilm/1"
  grep -v '"matmul_weights"' "$cache/demo-repository/minilm/config.pbtxt" |
    sed "s/parameters \[/parameters [\n  { key: \"matmul_weights\" value: { string_value: \"$format\" } },/" \
      > "$repo/minilm/config.pbtxt"
  grep -q "\"$format\"" "$repo/minilm/config.pbtxt"

  echo "== $format: in-process, one thread"
  name=minilm; [[ $format != fp32 ]] && name=minilm-$format
  RAYON_NUM_THREADS=1 CANDLE_NUM_THREADS=1 ./target/release/examples/bench --child "$name" 1 1

  echo "== $format: served over gRPC, 16 tokens per request, concurrency 32"
  serve --model-repository "$repo"
  ./target/release/nereid bench -m minilm -i grpc -u "$grpc" --input-data "$work/inputs.json" \
    --concurrency-range 32 -p 5000 -r 3 --no-progress | grep -E 'Throughput|p50'
  kill "$server"; wait "$server" 2>/dev/null || true; server=

  echo "== $format: nereid batch in-process, $rows texts"
  start=$(date +%s.%N)
  ./target/release/nereid batch --model minilm --model-repository "$repo" \
    --input "$work/texts.jsonl" --input-column text=TEXT --key-column id \
    --output "$work/out-$format" --output-format jsonl > "$work/batch-$format.log" 2>&1
  end=$(date +%s.%N)
  python3 -c "import sys; r,s,e=map(float,sys.argv[1:]); print(f'batch: {r:.0f} rows in {e-s:.1f} s = {r/(e-s):.1f} rows/s')" "$rows" "$start" "$end"
done
echo "== load after: $(cut -d' ' -f1-3 /proc/loadavg)"
