#!/usr/bin/env bash
# `godel chaos --short`: the bounded fault-injection run (SIGKILL of agents
# and a microVM, the daemon killed mid-spawn and mid-snapshot, a full
# $GODEL_HOME, connections dropped mid-exec), then the tally; non-zero when
# anything is unaccounted for. The full run is `godel chaos` by hand.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
cargo build -p godel -p godel-sandbox
# The microVM tests' image cache; built here when they have not built it
# (the VM fault is a failure, not a skip, where GODEL_REQUIRE has qemu).
image_home=target/tmp/godel-image-test-home
images=$image_home/images
if [ ! -e "$images/default/image.json" ] && command -v qemu-system-x86_64 >/dev/null; then
  GODEL_HOME="$image_home" target/debug/godel image build
fi
args=(--short)
[ -d "$images" ] && args+=(--images "$images")
home="$(mktemp -d)"
trap 'rm -rf "$home"' EXIT
GODEL_HOME="$home" timeout 600 target/debug/godel chaos "${args[@]}"
