#!/usr/bin/env bash
# create → first command → kill through the official Python SDK against a
# real `godel serve --e2b-listen`, next to the same through godel's native
# API (`--listen`), in one run. Usage: tests/e2b_sdk/bench_vs_native.sh [N]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
n="${1:-20}"
bash scripts/setup.d/40-e2b.sh >/dev/null
py="${GODEL_CACHE:-$HOME/.cache/godel}/e2b-sdk/venv/bin/python"
bin="${GODEL_BIN:-target/release/godel}"
[ -x "$bin" ] || cargo build -q --release -p godel
home="$(mktemp -d /tmp/godel-e2b-bench.XXXXXX)"
free() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
e2b_port="$(free)"; api_port="$(free)"
GODEL_HOME="$home" "$bin" serve --e2b-listen "127.0.0.1:$e2b_port" --listen "127.0.0.1:$api_port" >"$home/serve.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do [ -S "$home/godel.sock" ] && break; sleep 0.1; done
sleep 0.3
token="$(GODEL_HOME="$home" "$bin" token create --team bench | tail -1)"
E2B_API_URL="http://127.0.0.1:$e2b_port" E2B_SANDBOX_URL="http://127.0.0.1:$e2b_port" E2B_API_KEY="$token" \
GODEL_URL="http://127.0.0.1:$api_port" GODEL_TOKEN="$token" "$py" tests/e2b_sdk/bench.py "$n"
