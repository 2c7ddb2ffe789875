#!/usr/bin/env bash
# The official E2B SDKs (Python and, when installed, JavaScript), unpatched,
# against a real `godel serve --e2b-listen` on loopback with a team token.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
cargo build -q -p godel
home="$(mktemp -d /tmp/godel-e2b-ci.XXXXXX)"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
GODEL_HOME="$home" target/debug/godel serve --e2b-listen "127.0.0.1:$port" >"$home/serve.log" 2>&1 &
pid=$!
cleanup() {
  GODEL_HOME="$home" target/debug/godel ls --json 2>/dev/null \
    | python3 -c 'import json,sys; [print(r["id"]) for r in json.load(sys.stdin)]' 2>/dev/null \
    | while read -r id; do GODEL_HOME="$home" target/debug/godel rm "$id" >/dev/null 2>&1 || true; done
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
trap cleanup EXIT
for _ in $(seq 1 100); do
  [ -S "$home/godel.sock" ] && python3 -c "import socket; socket.create_connection(('127.0.0.1',$port),0.2)" 2>/dev/null && break
  sleep 0.1
done
token="$(GODEL_HOME="$home" target/debug/godel token create --team e2b-sdk | tail -1)"
if ! E2B_API_URL="http://127.0.0.1:$port" E2B_SANDBOX_URL="http://127.0.0.1:$port" E2B_API_KEY="$token" \
  tests/e2b_sdk/run.sh; then
  echo "--- godel serve log ---" >&2
  tail -50 "$home/serve.log" >&2
  exit 1
fi
