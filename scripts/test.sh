#!/usr/bin/env bash
# The whole test suite: installs what the tests need (idempotent), checks
# formatting and lints, then runs every crate's tests, including the
# end-to-end suites that start the real `godel` binary, boot microVMs under
# TCG, talk to the in-repo fake Kubernetes API server and run the official
# E2B SDK against `godel serve`; the state store's crates run a second time
# against a private PostgreSQL server (scripts/postgres.sh).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
./scripts/setup.sh
export CARGO_TERM_COLOR=never
# Tests that cannot run here skip visibly (godel_testkit::require!) and
# append one line each to this ledger; the summary at the end counts them.
mkdir -p target
export GODEL_SKIP_LEDGER="$PWD/target/skipped-tests.txt"
: > "$GODEL_SKIP_LEDGER"
skip_summary() {
  local n
  n=$(wc -l < "$GODEL_SKIP_LEDGER")
  echo "skipped: $n$([ "$n" -gt 0 ] && echo " (reasons below; tests in $GODEL_SKIP_LEDGER)")" >&2
  cut -f3 "$GODEL_SKIP_LEDGER" | sort | uniq -c | sort -rn | sed 's/^ *\([0-9]*\) /  \1  needs /' >&2
}
trap skip_summary EXIT
# CI runs as root with the setup scripts' packages: there a missing need is a
# failure, not a skip. A non-root machine still passes by skipping.
if [ "${CI:-}" = true ] && [ "$(id -u)" = 0 ]; then
  export GODEL_REQUIRE=root,qemu,nft,mkfs,chromium,postgres
fi
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
# A private PostgreSQL server (scripts/postgres.sh; left running for the
# next run): the multi-replica tests need one, and the crates that use the
# state store run a second time against it.
if scripts/postgres.sh start >/dev/null && scripts/postgres.sh reset; then
  GODEL_TEST_POSTGRES_URL="$(scripts/postgres.sh url)"
  export GODEL_TEST_POSTGRES_URL
elif [[ ",${GODEL_REQUIRE:-}," =~ ,(postgres|all), ]]; then
  echo "PostgreSQL did not start and GODEL_REQUIRE demands \"postgres\"" >&2
  exit 1
else
  echo "SKIPPED the tests against PostgreSQL: needs a PostgreSQL server (scripts/postgres.sh start failed; scripts/setup.d/15-postgres.sh installs it, as root)" >&2
  printf '%s\t%s\t%s\n' scripts/test.sh::postgres postgres "a PostgreSQL server (scripts/postgres.sh start)" >>"$GODEL_SKIP_LEDGER"
fi
cargo test --workspace --no-fail-fast
if [ -n "${GODEL_TEST_POSTGRES_URL:-}" ]; then
  echo "==> tests against PostgreSQL" >&2
  # The end-to-end suites that exercise the store (not the microVM, disk
  # and browser ones: their state paths are the same and they are slow).
  GODEL_TEST_DATABASE_URL="$GODEL_TEST_POSTGRES_URL" cargo test --no-fail-fast \
    -p godel-control -p godel-api \
    -p godel --test spine --test control_plane --test costs_cli --test cross_team \
    --test errors --test lifetime_cli --test security --test replicas --test replicas_cli --test e2b_runtime
fi
for extra in scripts/test.d/*.sh; do
  [ -e "$extra" ] || continue
  echo "==> $(basename "$extra")" >&2
  bash "$extra"
done
