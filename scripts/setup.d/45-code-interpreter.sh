#!/usr/bin/env bash
# The `code-interpreter-v1` template's server (templates/code-interpreter/
# server.py) and its Python packages, pinned, in a venv under
# /usr/local/lib/godel/code-interpreter: a path every worktree sandbox sees
# read-only (it is under the host's /usr), so sandboxes start it without
# copying anything. Also the `e2b-code-interpreter` SDK, pinned, in its own
# venv under ${GODEL_CACHE:-$HOME/.cache/godel}/e2b-sdk/code-interpreter for
# tests/e2b_sdk/code_interpreter.py, and (when npm is there) the
# `@e2b/code-interpreter` npm package under e2b-sdk/code-interpreter-js for
# tests/e2b_sdk/code_interpreter.mjs. Idempotent (a marker written after a
# complete install; the server file is refreshed every run).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
dir="${GODEL_CODE_INTERPRETER_DIR:-/usr/local/lib/godel/code-interpreter}"
limit="${E2B_INSTALL_TIMEOUT:-600}"
pkgs="ipykernel==7.4.0 jupyter_client==8.10.0 matplotlib==3.11.2"
sdk="${GODEL_CACHE:-$HOME/.cache/godel}/e2b-sdk/code-interpreter"
sdk_pkgs="e2b-code-interpreter==2.11.5 e2b==2.63.0"

# The server's venv must use the system interpreter: sandboxes see /usr,
# not a python under /root or /opt.
venv() { # DIR PYTHON
  "$2" -m venv "$1" 2>/dev/null || {
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv
    "$2" -m venv "$1"
  }
}
if [ ! -x /usr/bin/python3 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv
fi

mkdir -p "$dir"
if [ "$(cat "$dir/.installed" 2>/dev/null)" != "$pkgs" ] \
  || [ "$(readlink -f "$dir/venv/bin/python")" != "$(readlink -f /usr/bin/python3)" ]; then
  rm -rf "$dir/venv"
  venv "$dir/venv" /usr/bin/python3
  # shellcheck disable=SC2086
  timeout "$limit" "$dir/venv/bin/pip" install -q --disable-pip-version-check $pkgs
  echo "$pkgs" >"$dir/.installed"
fi
install -m 0644 "$here/templates/code-interpreter/server.py" "$dir/server.py"
chmod -R a+rX "$dir"

if [ "$(cat "$sdk/.installed" 2>/dev/null)" != "$sdk_pkgs" ]; then
  rm -rf "$sdk"
  venv "$sdk" python3
  # shellcheck disable=SC2086
  timeout "$limit" "$sdk/bin/pip" install -q --disable-pip-version-check $sdk_pkgs
  echo "$sdk_pkgs" >"$sdk/.installed"
fi
js="${GODEL_CACHE:-$HOME/.cache/godel}/e2b-sdk/code-interpreter-js"
js_pkg="@e2b/code-interpreter@2.8.0"
if command -v npm >/dev/null && [ "$(cat "$js/.installed" 2>/dev/null)" != "$js_pkg" ]; then
  rm -rf "$js"
  mkdir -p "$js"
  echo '{"private":true,"type":"module"}' >"$js/package.json"
  (cd "$js" && timeout "$limit" npm install --silent --no-audit --no-fund "$js_pkg")
  echo "$js_pkg" >"$js/.installed"
fi
echo "45-code-interpreter: server in $dir ($pkgs); SDK in $sdk" >&2
