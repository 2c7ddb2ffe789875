#!/usr/bin/env bash
# The official-SDK conformance matrix: every installed `e2b` Python and npm
# version (scripts/setup.d/40-e2b.sh) runs its scenario against one
# E2B-compatible godel endpoint, one `N passed, M failed` line per version
# and a final total.
#
#   tests/e2b_sdk/run.sh                 # starts `godel serve --e2b-listen` on a free loopback port
#   E2B_API_URL=http://127.0.0.1:3000 E2B_SANDBOX_URL=http://127.0.0.1:3000 \
#   E2B_API_KEY=<team token> tests/e2b_sdk/run.sh   # an existing `godel serve --e2b-listen`
#   E2B_PY_VERSIONS=2.63.0 E2B_JS_VERSIONS= tests/e2b_sdk/run.sh   # a part of the matrix
#   tests/e2b_sdk/run.sh --bench 20      # also the create → first command → kill benchmark
#
# Versions before 2.7.0 cannot be pointed at a plain-HTTP endpoint (no
# E2B_API_URL / E2B_SANDBOX_URL): for them the run checks, with the
# installed SDK itself, that this is still so, and says so (README table).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
E2B_PY_VERSIONS="${E2B_PY_VERSIONS-2.63.0 2.45.1 2.0.0}"
E2B_JS_VERSIONS="${E2B_JS_VERSIONS-2.51.0 2.45.0 2.0.1}"
export E2B_PY_VERSIONS E2B_JS_VERSIONS
sdk="${GODEL_CACHE:-$HOME/.cache/godel}/e2b-sdk"
bash "$here/../../scripts/setup.d/40-e2b.sh" >/dev/null || echo "run.sh: some SDK versions did not install" >&2
bash "$here/../../scripts/setup.d/45-code-interpreter.sh" >/dev/null 2>&1 || echo "run.sh: the code interpreter did not install" >&2

# shellcheck source=serve.sh
. "$here/serve.sh"
[ -n "${E2B_API_URL:-}" ] || godel_serve_start e2b-sdk

# The oldest version that reads E2B_API_URL and E2B_SANDBOX_URL.
first_configurable=2.7.0
older() { [ "$1" != "$2" ] && [ "$(printf '%s\n%s\n' "$1" "$2" | sort -V | head -1)" = "$1" ]; }

t0=$SECONDS
passed=0 failed=0 summary=()
run_one() { # LABEL LOG-FILE COMMAND...
  local label="$1" log="$2" s=$SECONDS
  shift 2
  "$@" >"$log" 2>&1 || true
  local line p f
  line="$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$log" | tail -1 || true)"
  [ -n "$line" ] || line="0 passed, 1 failed"
  p="${line%% passed*}" f="${line#*passed, }" f="${f%% failed*}"
  passed=$((passed + p)) failed=$((failed + f))
  [ "$f" = 0 ] || { grep -E '^FAIL' "$log" | sed 's/^/    /' >&2 || tail -20 "$log" >&2; }
  summary+=("$label: $line ($((SECONDS - s)) s)")
  echo "$label: $line ($((SECONDS - s)) s)"
}

logs="$(mktemp -d /tmp/godel-e2b-matrix.XXXXXX)"
for v in $E2B_PY_VERSIONS; do
  py="$sdk/py/$v/bin/python"
  if [ ! -f "$sdk/py/$v/.installed" ]; then
    echo "python e2b $v: 0 passed, 1 failed (not installed)"; failed=$((failed + 1)); continue
  fi
  if older "$v" "$first_configurable"; then
    run_one "python e2b $v (unsupported: probe)" "$logs/py-$v.log" "$py" "$here/probe.py"
  else
    run_one "python e2b $v" "$logs/py-$v.log" "$py" "$here/scenario.py"
  fi
done
# Port URLs (get_host, WebSocket) and network rules (allowOut/denyOut against
# servers in namespaces the scenario makes) with the newest Python SDK.
newest_py="$(printf '%s\n' $E2B_PY_VERSIONS | sort -V | tail -1)"
if [ -n "$newest_py" ] && [ -f "$sdk/py/$newest_py/.installed" ]; then
  run_one "python e2b $newest_py ports + network" "$logs/ports-network.log" "$sdk/py/$newest_py/bin/python" "$here/ports_network.py"
fi
# A template built from tests/e2b_sdk/template/Dockerfile with the CLI (for
# the key's team), started by name with the newest Python SDK.
if [ -n "$newest_py" ] && [ -f "$sdk/py/$newest_py/.installed" ]; then
  if [ -n "$serve_home" ] && [ -z "${E2B_TEMPLATE:-}" ]; then
    GODEL_HOME="$serve_home" "$godel" template build --team e2b-sdk --name sdk-template \
      "$here/template" >"$logs/template-build.log" 2>&1 \
      || { echo "run.sh: godel template build failed:" >&2; tail -20 "$logs/template-build.log" >&2; }
    # Set even when the build failed: the scenario then fails on the create.
    export E2B_TEMPLATE=sdk-template
  fi
  run_one "python e2b $newest_py template" "$logs/template.log" "$sdk/py/$newest_py/bin/python" "$here/template.py"
fi
# The unchanged e2b-code-interpreter SDK (code-interpreter-v1), fork, snapshots, volumes.
ci_py="$sdk/code-interpreter/bin/python"
if [ -x "$ci_py" ]; then
  run_one "python e2b-code-interpreter" "$logs/code-interpreter.log" "$ci_py" "$here/code_interpreter.py"
else
  echo "python e2b-code-interpreter: 0 passed, 1 failed (not installed)"; failed=$((failed + 1))
fi
if command -v node >/dev/null && [ -f "$sdk/code-interpreter-js/.installed" ]; then
  run_one "npm @e2b/code-interpreter" "$logs/code-interpreter-js.log" \
    env E2B_CI_JS_DIR="$sdk/code-interpreter-js" node "$here/code_interpreter.mjs"
fi
if command -v node >/dev/null; then
  for v in $E2B_JS_VERSIONS; do
    if [ ! -f "$sdk/js/$v/.installed" ]; then
      echo "npm e2b $v: 0 passed, 1 failed (not installed)"; failed=$((failed + 1)); continue
    fi
    if older "$v" "$first_configurable"; then
      run_one "npm e2b $v (unsupported: probe)" "$logs/js-$v.log" env E2B_JS_DIR="$sdk/js/$v" node "$here/probe.mjs"
    else
      run_one "npm e2b $v" "$logs/js-$v.log" env E2B_JS_DIR="$sdk/js/$v" node "$here/scenario.mjs"
    fi
  done
else
  echo "run.sh: node not found; the npm versions are not run" >&2
fi
if [ "${1:-}" = "--bench" ]; then
  "$sdk/venv/bin/python" "$here/bench.py" "${2:-20}" || failed=$((failed + 1))
fi
echo "matrix: ${#summary[@]} SDK versions in $((SECONDS - t0)) s (logs in $logs)"
echo "$passed passed, $failed failed"
if [ "$failed" != 0 ]; then
  godel_serve_log
  exit 1
fi
