#!/usr/bin/env bash
# E2B's own Python SDK tests, unchanged, against a fresh `godel serve
# --e2b-listen` with a key from `godel token create`. Run by hand, not in CI
# (E2B's code is not part of this repository):
#
#   tests/e2b_sdk/upstream.sh /tmp/e2b-src            # a checkout (or export) of E2B's repository
#   tests/e2b_sdk/upstream.sh /tmp/e2b-src commands   # only some groups
#
# The checkout's packages/python-sdk gives the tests and the version: the
# `e2b` of that version comes from PyPI, with the pytest plugins its tests
# use, into ${GODEL_CACHE:-$HOME/.cache/godel}/e2b-sdk/upstream-VERSION.
# Groups (the sync tests): commands, files, api, create, kill, connect, timeout
# (the default set); also fork, snapshot, snapshot-list, volume, and all
# (every sync test).
# Prints one `GROUP: N passed, M failed, K skipped` line per group and the total.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
src="${1:?usage: upstream.sh PATH-TO-E2B-CHECKOUT [GROUP...]}"
shift
sdk_dir="$src/packages/python-sdk"
[ -f "$sdk_dir/pyproject.toml" ] || sdk_dir="$src"
[ -f "$sdk_dir/pyproject.toml" ] && [ -d "$sdk_dir/tests/sync" ] || {
  echo "upstream.sh: $src has no packages/python-sdk with tests/sync" >&2
  exit 2
}
version="$(sed -n 's/^version = "\(.*\)"/\1/p' "$sdk_dir/pyproject.toml" | head -1)"
venv="${GODEL_CACHE:-$HOME/.cache/godel}/e2b-sdk/upstream-$version"
if [ ! -f "$venv/.installed" ]; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  timeout 600 "$venv/bin/pip" install -q --disable-pip-version-check "e2b==$version" \
    "pytest>=9,<10" "pytest-asyncio>=1.3,<2" "pytest-timeout>=2.4,<3" \
    "pytest-dotenv>=0.5.2,<0.6" "python-dotenv>=1,<2"
  touch "$venv/.installed"
fi

declare -A paths=(
  [commands]=tests/sync/sandbox_sync/commands
  [files]=tests/sync/sandbox_sync/files
  [api]=tests/sync/api_sync
  [create]=tests/sync/sandbox_sync/test_create.py
  [kill]=tests/sync/sandbox_sync/test_kill.py
  [connect]=tests/sync/sandbox_sync/test_connect.py
  [timeout]=tests/sync/sandbox_sync/test_timeout.py
  [fork]=tests/sync/sandbox_sync/test_fork.py
  [snapshot]=tests/sync/sandbox_sync/test_snapshot_api.py
  [snapshot-list]=tests/sync/api_sync/test_sbx_snapshot.py
  [volume]=tests/sync/volume_sync
  [all]=tests/sync
)
groups=("$@")
[ ${#groups[@]} -gt 0 ] || groups=(commands files api create kill connect timeout)

# shellcheck source=serve.sh
. "$here/serve.sh"
godel_serve_start upstream
out="$(mktemp -d /tmp/godel-e2b-upstream.XXXXXX)"
echo "upstream: e2b $version tests against $E2B_API_URL (logs in $out)" >&2

total_p=0 total_f=0 total_s=0
for g in "${groups[@]}"; do
  p="${paths[$g]:-}"
  [ -n "$p" ] || { echo "upstream.sh: unknown group $g" >&2; exit 2; }
  (cd "$sdk_dir" && "$venv/bin/python" -m pytest -p no:cacheprovider -q -rfE "$p") \
    >"$out/$g.log" 2>&1 || true
  line="$(grep -E '^(=+ )?[0-9]+ (passed|failed|errors?|skipped).* in [0-9.]+s' "$out/$g.log" | tail -1 || true)"
  count() { echo "$line" | grep -oE "[0-9]+ $1" | grep -oE '[0-9]+' || echo 0; }
  np=$(count passed) nf=$(( $(count failed) + $(count errors?) )) ns=$(count skipped)
  echo "$g: $np passed, $nf failed, $ns skipped"
  grep -E '^(FAILED|ERROR) ' "$out/$g.log" | sed 's/^/    /' | cut -c1-220 || true
  total_p=$((total_p + np)) total_f=$((total_f + nf)) total_s=$((total_s + ns))
done
echo "upstream e2b $version: $total_p passed, $total_f failed, $total_s skipped"
