#!/usr/bin/env bash
# Runs the official-SDK conformance scenarios (Python, then JS when the npm
# package is installed) against an E2B-compatible godel endpoint.
#
#   tests/e2b_sdk/run.sh                 # starts `godel serve --e2b-listen` on a free loopback port
#   E2B_API_URL=http://127.0.0.1:3000 E2B_SANDBOX_URL=http://127.0.0.1:3000 \
#   E2B_API_KEY=<team token> tests/e2b_sdk/run.sh   # an existing `godel serve --e2b-listen`
#   tests/e2b_sdk/run.sh --bench 20      # also the create → first command → kill benchmark
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
sdk="${GODEL_CACHE:-$HOME/.cache/godel}/e2b-sdk"
bash "$root/scripts/setup.d/40-e2b.sh" >/dev/null
py="$sdk/venv/bin/python"

home=""
pid=""
godel="$root/target/debug/godel"
cleanup() {
  [ -n "$pid" ] || return 0
  GODEL_HOME="$home" "$godel" ls --json 2>/dev/null \
    | python3 -c 'import json,sys; [print(r["id"]) for r in json.load(sys.stdin)]' 2>/dev/null \
    | while read -r id; do GODEL_HOME="$home" "$godel" rm "$id" >/dev/null 2>&1 || true; done
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
trap cleanup EXIT

if [ -z "${E2B_API_URL:-}" ]; then
  (cd "$root" && cargo build -q -p godel)
  home="$(mktemp -d /tmp/godel-e2b-sdk.XXXXXX)"
  port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
  GODEL_HOME="$home" "$godel" serve --e2b-listen "127.0.0.1:$port" >"$home/serve.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 100); do
    [ -S "$home/godel.sock" ] && python3 -c "import socket; socket.create_connection(('127.0.0.1',$port),0.2)" 2>/dev/null && break
    sleep 0.1
  done
  token="$(GODEL_HOME="$home" "$godel" token create --team e2b-sdk | tail -1)"
  export E2B_API_URL="http://127.0.0.1:$port" E2B_SANDBOX_URL="http://127.0.0.1:$port" E2B_API_KEY="$token"
fi

status=0
"$py" "$here/scenario.py" || status=1
if [ -d "$sdk/node/node_modules/e2b" ] && command -v node >/dev/null; then
  node "$here/scenario.mjs" || status=1
fi
if [ "${1:-}" = "--bench" ]; then
  "$py" "$here/bench.py" "${2:-20}" || status=1
fi
if [ "$status" != 0 ] && [ -n "$home" ]; then
  echo "--- godel serve log ---" >&2
  tail -50 "$home/serve.log" >&2
fi
exit $status
