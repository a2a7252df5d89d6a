#!/usr/bin/env bash
# SmolLM2-135M-Instruct (the demo's GGUF, Q4_1) served by llama.cpp's `llama-server` and by
# `nereid serve`, one after the other on the same machine, measured by the same OpenAI
# streaming client (frontends/stream/examples/stream_load.rs): aggregate tokens/s and time
# to first token at 1, 4 and 8 concurrent chats, 64 tokens per answer, 2 requests per client.
# Then this machine's memory read bandwidth (models/examples/read_bandwidth.rs), the ceiling
# of a lone stream that reads every weight once per token.
#
#   LLAMA_SERVER=/path/to/llama-server scripts/bench-vs-llamacpp.sh
#
# llama-server is built outside this repository, never committed: its source is vendored in
# the `llama-cpp-python` sdist on PyPI (vendor/llama.cpp), built with
#   cmake -B build -DLLAMA_CURL=OFF -DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON \
#     -DGGML_F16C=ON -DGGML_AVX512=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_VBMI=ON \
#     -DGGML_AVX512_BF16=ON -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF
#   cmake --build build --target llama-server -j2
# (about 15 minutes on 2 cores). Not GGML_NATIVE=ON on a VM that lists AMX: ggml's AMX
# kernels then die in `ldtilecfg`, the guest not being allowed the tile state.
# ROUNDS=N repeats the pair N times (default 1). Writes target/bench-vs-llamacpp.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${LLAMA_SERVER:?set LLAMA_SERVER to a llama-server binary}"

if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
  cargo build --release --locked -p nereid --bin nereid
  cargo build --release --locked -p nereid-stream --example stream_load
  cargo build --release --locked -p nereid-models --example read_bandwidth
fi
out=target/bench-vs-llamacpp.txt
exec > >(tee "$out") 2>&1

./target/release/nereid models pull
cache=${NEREID_CACHE:-$HOME/.cache/nereid}
gguf=$(find "$cache/pypi" -name 'SmolLM2-135M-Instruct.Q4_1.gguf' | head -1)
[[ -f "$gguf" ]] || { echo "no SmolLM2 GGUF under $cache/pypi"; exit 1; }

log=$(mktemp)
server=
trap 'kill $server 2>/dev/null || true; rm -f "$log"' EXIT
source scripts/lib/serve.sh

load() {
  ./target/release/examples/stream_load "http://$1" smollm2 --levels 1,4,8 --requests 2 --max-tokens 64
}

echo "== $(date -u +%FT%TZ) on $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)); load: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== llama-server: $("$LLAMA_SERVER" --version 2>&1 | grep -m1 -i version || true)"
echo "== GGUF: $gguf"
for round in $(seq "${ROUNDS:-1}"); do
  echo "== round $round: llama-server -t 2 -np 8 -c 8192 (continuous batching)"
  port=$((20000 + RANDOM % 20000))
  "$LLAMA_SERVER" -m "$gguf" -t 2 -np 8 -c 8192 --host 127.0.0.1 --port "$port" > "$log" 2>&1 &
  server=$!
  for _ in $(seq 240); do
    curl -sf "http://127.0.0.1:$port/health" > /dev/null && break
    sleep 0.5
  done
  load "127.0.0.1:$port"
  kill "$server"; wait "$server" 2>/dev/null || true; server=

  echo "== round $round: nereid serve --demo-models all (demo config)"
  serve --demo-models all
  load "$http"
  kill "$server"; wait "$server" 2>/dev/null || true; server=
done

echo "== memory read bandwidth"
./target/release/examples/read_bandwidth
echo "== load after: $(cut -d' ' -f1-3 /proc/loadavg)"
