#!/usr/bin/env bash
# Dashboard render benchmark: pages with 1 agent (the baseline) and with N
# agents (default 1000), measured in headless Chromium in the same run
# against crates/godel-api/examples/ui_fixture.rs (the real control plane
# and TCP app over the fake runtime).
#   scripts/bench-ui.sh [N] [--json]
# Needs what scripts/setup.d/50-ui.sh installs.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
n="${1:-1000}"
shift || true
export PLAYWRIGHT_CORE="${GODEL_CACHE:-$HOME/.cache/godel}/ui-test/node_modules/playwright-core"
# The daemon side is built as users run it (release); GODEL_UI_BENCH_DEBUG=1 for a debug build.
if [ -n "${GODEL_UI_BENCH_DEBUG:-}" ]; then
  cargo build -q -p godel-api --example ui_fixture
  fixture="${CARGO_TARGET_DIR:-target}/debug/examples/ui_fixture"
else
  cargo build -q --release -p godel-api --example ui_fixture
  fixture="${CARGO_TARGET_DIR:-target}/release/examples/ui_fixture"
fi
run() { # AGENTS LABEL [--json]
  local agents="$1" label="$2" fifo dir
  shift 2
  dir="$(mktemp -d)"
  fifo="$dir/in"
  mkfifo "$fifo"
  "$fixture" "$agents" <"$fifo" >"$dir/out" &
  local pid=$!
  exec 9>"$fifo"
  until [ -s "$dir/out" ]; do
    kill -0 "$pid" 2>/dev/null || { echo "ui_fixture exited" >&2; return 1; }
    sleep 0.2
  done
  GODEL_UI_URL="$(sed -n 's/.*"url":"\([^"]*\)".*/\1/p' "$dir/out")" \
  GODEL_UI_TOKEN="$(sed -n 's/.*"token":"\([^"]*\)".*/\1/p' "$dir/out")" \
  GODEL_UI_LABEL="$label" node crates/godel/tests/ui/bench.cjs "$@" || rc=$?
  exec 9>&-
  wait "$pid" || true
  rm -rf "$dir"
  return "${rc:-0}"
}
run 1 "baseline: 1 agent" "$@"
run "$n" "$n agents" "$@"
