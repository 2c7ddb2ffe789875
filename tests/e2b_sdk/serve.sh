# Sourced by run.sh and upstream.sh: start one real `godel serve
# --e2b-listen` on a free loopback port with a fresh $GODEL_HOME and a team
# key from `godel token create` (the default shape, as a user gets it), and
# stop it (removing what it runs) on exit.
#
#   godel_serve_start TEAM   # exports E2B_API_URL, E2B_SANDBOX_URL, E2B_API_KEY
#   godel_serve_stop         # also run by the EXIT trap it installs
#   godel_serve_log          # the last lines of its log, on stderr

serve_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
godel="${GODEL_BIN:-$serve_root/target/debug/godel}"
serve_home=""
serve_pid=""

godel_serve_stop() {
  [ -n "$serve_pid" ] || return 0
  GODEL_HOME="$serve_home" "$godel" ls --json 2>/dev/null \
    | python3 -c 'import json,sys; [print(r["id"]) for r in json.load(sys.stdin)]' 2>/dev/null \
    | while read -r id; do GODEL_HOME="$serve_home" "$godel" rm "$id" >/dev/null 2>&1 || true; done
  kill "$serve_pid" 2>/dev/null || true
  wait "$serve_pid" 2>/dev/null || true
  serve_pid=""
}

godel_serve_log() {
  [ -n "$serve_home" ] || return 0
  echo "--- godel serve log ($serve_home/serve.log) ---" >&2
  tail -"${1:-50}" "$serve_home/serve.log" >&2
}

godel_serve_start() { # TEAM
  [ -n "${GODEL_BIN:-}" ] || (cd "$serve_root" && cargo build -q -p godel)
  serve_home="$(mktemp -d /tmp/godel-e2b-sdk.XXXXXX)"
  local port
  port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
  GODEL_HOME="$serve_home" "$godel" serve --e2b-listen "127.0.0.1:$port" >"$serve_home/serve.log" 2>&1 &
  serve_pid=$!
  trap godel_serve_stop EXIT
  local up=""
  for _ in $(seq 1 150); do
    if [ -S "$serve_home/godel.sock" ] \
      && python3 -c "import socket; socket.create_connection(('127.0.0.1',$port),0.2)" 2>/dev/null; then
      up=1
      break
    fi
    sleep 0.1
  done
  if [ -z "$up" ]; then
    echo "godel serve did not come up on 127.0.0.1:$port" >&2
    godel_serve_log
    return 1
  fi
  local key
  key="$(GODEL_HOME="$serve_home" "$godel" token create --team "$1" | tail -1)"
  export E2B_API_URL="http://127.0.0.1:$port" E2B_SANDBOX_URL="http://127.0.0.1:$port" E2B_API_KEY="$key"
}
