#!/usr/bin/env bash
# `godel chaos --short`: the bounded fault-injection run (SIGKILL of agents
# and a microVM, the daemon killed mid-spawn and mid-snapshot, a full
# $GODEL_HOME, connections dropped mid-exec), then the tally; non-zero when
# anything is unaccounted for. The full run is `godel chaos` by hand.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
cargo build -p godel -p godel-sandbox
images=target/tmp/godel-image-test-home/images
args=(--short)
[ -d "$images" ] && args+=(--images "$images")
home="$(mktemp -d)"
trap 'rm -rf "$home"' EXIT
GODEL_HOME="$home" timeout 900 target/debug/godel chaos "${args[@]}"
