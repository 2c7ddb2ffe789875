#!/usr/bin/env bash
# cargo-fuzz (from crates.io) for scripts/fuzz.sh and scripts/test.d/40-fuzz.sh.
# Without a nightly toolchain fuzz.sh runs the targets on stable with
# RUSTC_BOOTSTRAP=1 and no sanitizer. Idempotent.
set -euo pipefail
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
