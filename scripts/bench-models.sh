#!/usr/bin/env bash
# Measures the real models in one run, for docs/BENCHMARKS.md:
#  1. minilm and smollm2 in-process (models/examples/bench.rs: the forward pass as an instance
#     runs it, no server);
#  2. minilm served: `nereid bench` over gRPC against `nereid serve`, the same 16-token text;
#  3. smollm2 served: aggregate tokens/s and time to first token at 1, 4 and 8 concurrent
#     OpenAI streaming chats (frontends/stream/examples/stream_load.rs), with the demo
#     config, with prompt-prefix reuse off, and with FP16 matmul weights.
# Release builds of the three programs first (about 15 minutes from scratch on 2 cores).
# Writes everything it prints to target/bench-models.txt as well.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
  cargo build --release --locked -p nereid --bin nereid
  cargo build --release --locked -p nereid-models --example bench
  cargo build --release --locked -p nereid-stream --example stream_load
fi
out=target/bench-models.txt
exec > >(tee "$out") 2>&1

echo "== $(date -u +%FT%TZ) on $(nproc) cores; load: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== in-process forward passes"
./target/release/examples/bench all

# "hello" x 14 is 14 WordPiece tokens, 16 with [CLS] and [SEP]: as in the in-process bench.
inputs=$(mktemp --suffix .json)
words=$(printf 'hello %.0s' {1..14})
printf '{"data":[{"TEXT":["%s"]}]}' "${words% }" > "$inputs"

log=$(mktemp)
repo=$(mktemp -d)
server=
trap 'kill $server 2>/dev/null || true; rm -rf "$inputs" "$log" "$repo"' EXIT
# serve FLAGS...: sets $http and $grpc.
source scripts/lib/serve.sh
minilm() {
  echo "== minilm over gRPC ($1), 16 tokens per request, concurrency 32"
  ./target/release/nereid bench -m minilm -i grpc -u "$grpc" --input-data "$inputs" \
    --concurrency-range 32 -p 5000 -r 3 --no-progress
}

# The demo minilm runs one single-threaded instance; a second config runs two.
mkdir -p "$repo/minilm/1"
cache=${NEREID_CACHE:-$HOME/.cache/nereid}
serve --demo-models all
minilm "demo config: 1 instance, 1 thread"
sed 's/count: 1 kind: KIND_CPU/count: 2 kind: KIND_CPU/' "$cache/demo-repository/minilm/config.pbtxt" \
  > "$repo/minilm/config.pbtxt"
serve --model-repository "$repo"
minilm "2 instances, 1 thread each"
serve --demo-models all

stream() {
  echo "== smollm2 streamed over /v1/chat/completions ($1)"
  ./target/release/examples/stream_load "http://$http" smollm2 --levels 1,4,8 --requests 2 --max-tokens 64
}
stream "demo config: prefix cache on"
# Serves the demo smollm2 with one more config parameter KEY = VALUE, and streams.
smollm2_with() {
  sed "s/{ key: \"intra_op_threads\"/{ key: \"$1\" value: { string_value: \"$2\" } },\n  { key: \"intra_op_threads\"/" \
    "$cache/demo-repository/smollm2/config.pbtxt" > "$repo/smollm2/config.pbtxt"
  grep -q "\"$1\"" "$repo/smollm2/config.pbtxt"
  serve --model-repository "$repo"
  stream "$1 $2"
}
rm -rf "$repo/minilm"
mkdir -p "$repo/smollm2/1"
# Prompt-prefix reuse turned off, then FP16 matmul weights (reuse on, as in the demo).
smollm2_with prefix_cache_mb 0
smollm2_with matmul_weights fp16
echo "== load after: $(cut -d' ' -f1-3 /proc/loadavg)"
