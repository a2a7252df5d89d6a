#!/usr/bin/env bash
# What tracing costs: `simple` over gRPC with `nereid bench` (16 in flight) against the
# release server three ways: tracing off, on for 1 request in 1000, on for every request
# (spans exported over OTLP/HTTP to a local sink that answers 200). Prints throughput,
# p50/p99 latency, the server's CPU time per request and the spans the sink received.
#   scripts/trace-cost.sh                  # 20 s per way
#   SECS=60 scripts/trace-cost.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/serve.sh
SECS=${SECS:-20}
BIN=${NEREID_BIN:-./target/release/nereid}
PY=${PYTHON:-python3}
work=$(mktemp -d)
log=$work/server.log
server=
trap '[[ -n "$server" ]] && kill $server 2>/dev/null; kill $sink 2>/dev/null; rm -rf "$work"' EXIT

# The sink: counts the bytes of each export and answers 200 (an empty ExportTraceServiceResponse).
cat > "$work/sink.py" <<'EOF'
import http.server, sys
class Sink(http.server.BaseHTTPRequestHandler):
    exports = 0
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        Sink.exports += 1
        with open(sys.argv[2], "w") as f:
            f.write(str(Sink.exports))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Sink).serve_forever()
EOF
port=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$PY" "$work/sink.py" "$port" "$work/exports" &
sink=$!
url="opentelemetry,url=http://127.0.0.1:$port/v1/traces"

cpu_secs() { # utime + stime of a process, in seconds
  awk '{ print ($14 + $15) / 100 }' "/proc/$1/stat"
}

run() { # label, serve flags...
  local label=$1; shift
  NEREID_BIN=$BIN serve --demo-models builtin "$@"
  local before; before=$(cpu_secs "$server")
  "$BIN" bench -m simple -u "$grpc" -i grpc --concurrency-range 16 \
    -p $((SECS * 1000)) -r 1 -s 100 --percentile 99 --no-progress -f "$work/$label.csv" > "$work/$label.out"
  local after; after=$(cpu_secs "$server")
  "$PY" - "$label" "$work/$label.csv" "$before" "$after" <<'EOF'
import csv, sys
label, path, before, after = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
row = next(csv.DictReader(open(path)))
rate = float(row["Inferences/Second"])
count = rate * float(__import__("os").environ.get("SECS", "20"))
print("| %s | %.0f | %s | %s | %.1f |" % (label, rate, row["p50 latency"], row["p99 latency"],
                                        (after - before) / count * 1e6))
EOF
}

echo "| tracing | requests/s | p50 (us) | p99 (us) | server CPU per request (us) |"
echo "|---|---:|---:|---:|---:|"
SECS=$SECS run off
SECS=$SECS run rate-1000 --trace-config level=TIMESTAMPS --trace-config rate=1000 --trace-config "$url" \
  --trace-config opentelemetry,bsp_schedule_delay=200
SECS=$SECS run rate-1 --trace-config level=TIMESTAMPS --trace-config rate=1 --trace-config "$url" \
  --trace-config opentelemetry,bsp_schedule_delay=200
sleep 1
echo "exports received by the sink: $(cat "$work/exports" 2>/dev/null || echo 0)"
grep -h "trace export" "$log" || true
