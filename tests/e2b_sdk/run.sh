#!/usr/bin/env bash
# Runs the official-SDK conformance scenarios (Python, then JS when the npm
# package is installed) against an E2B-compatible godel endpoint.
#
#   tests/e2b_sdk/run.sh                 # serves the e2b_serve_local example on a free port
#   E2B_API_URL=http://127.0.0.1:3000 E2B_SANDBOX_URL=http://127.0.0.1:3000 \
#   E2B_API_KEY=<team token> tests/e2b_sdk/run.sh   # an existing `godel serve --e2b-listen`
#   tests/e2b_sdk/run.sh --bench 20      # also the create → first command → kill benchmark
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
sdk="${GODEL_CACHE:-$HOME/.cache/godel}/e2b-sdk"
bash "$root/scripts/setup.d/40-e2b.sh" >/dev/null
py="$sdk/venv/bin/python"

server_pid=""
cleanup() { [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true; }
trap cleanup EXIT

if [ -z "${E2B_API_URL:-}" ]; then
  (cd "$root" && cargo build -q -p godel-e2b --example e2b_serve_local)
  port="$("$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
  "$root/target/debug/examples/e2b_serve_local" --listen "127.0.0.1:$port" --key e2b_local_test &
  server_pid=$!
  for _ in $(seq 1 100); do
    "$py" -c "import socket; socket.create_connection(('127.0.0.1',$port),0.2)" 2>/dev/null && break
    sleep 0.1
  done
  export E2B_API_URL="http://127.0.0.1:$port" E2B_SANDBOX_URL="http://127.0.0.1:$port" E2B_API_KEY=e2b_local_test
fi

status=0
"$py" "$here/scenario.py" || status=1
if [ -d "$sdk/node/node_modules/e2b" ] && command -v node >/dev/null; then
  node "$here/scenario.mjs" || status=1
fi
if [ "${1:-}" = "--bench" ]; then
  "$py" "$here/bench.py" "${2:-20}" || status=1
fi
exit $status
