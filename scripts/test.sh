#!/usr/bin/env bash
# The whole test suite: installs what the tests need (idempotent), checks
# formatting and lints, then runs every crate's tests, including the
# end-to-end suites that start the real `godel` binary, boot microVMs under
# TCG, talk to the in-repo fake Kubernetes API server and run the official
# E2B SDK against `godel serve`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
./scripts/setup.sh
export CARGO_TERM_COLOR=never
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace --no-fail-fast
for extra in scripts/test.d/*.sh; do
  [ -e "$extra" ] || continue
  echo "==> $(basename "$extra")" >&2
  bash "$extra"
done
