# Sourced by the benchmark scripts. `serve FLAGS...` starts the release `nereid serve` on
# free ports with FLAGS (stopping the one it started before), waits for NEREID_READY and
# sets $http and $grpc. The caller sets $log (a file for the server's output) and
# `server=` beforehand, and kills "$server" on exit. $NEREID_BIN names another binary
# (default ./target/release/nereid).
serve() {
  [[ -n "$server" ]] && kill "$server" && wait "$server" 2>/dev/null || true
  "${NEREID_BIN:-./target/release/nereid}" serve --http-port 0 --grpc-port 0 --metrics-port 0 "$@" > "$log" 2>&1 &
  server=$!
  for _ in $(seq 600); do
    grep -q NEREID_READY "$log" && break
    sleep 0.5
  done
  ready=$(grep NEREID_READY "$log")
  http=$(sed -E 's/.*http=([^ ]+).*/\1/' <<<"$ready")
  grpc=$(sed -E 's/.*grpc=([^ ]+).*/\1/' <<<"$ready")
  echo "== served: $ready"
}
