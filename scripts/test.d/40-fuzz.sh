#!/usr/bin/env bash
# Every cargo-fuzz target (fuzz/, one per request parser) for 10 s each (the cold build of the instrumented targets takes ~3 min more);
# fails on a crash. `scripts/fuzz.sh 600` is the longer run by hand.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
home="$(mktemp -d)"
trap 'rm -rf "$home"' EXIT
GODEL_HOME="$home" timeout 900 "$root/scripts/fuzz.sh" 10
