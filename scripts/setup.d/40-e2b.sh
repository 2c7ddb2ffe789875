#!/usr/bin/env bash
# The official E2B SDKs, unpatched, for the conformance scenarios in tests/e2b_sdk:
# the `e2b` Python package in a venv and the `e2b` npm package in node_modules,
# both under ${GODEL_CACHE:-$HOME/.cache/godel}/e2b-sdk. Idempotent: a pinned
# version already installed is left alone. The npm part is optional (skipped
# when node/npm are missing).
set -euo pipefail
E2B_PY_VERSION="${E2B_PY_VERSION:-2.63.0}"
E2B_JS_VERSION="${E2B_JS_VERSION:-2.51.0}"
dir="${GODEL_CACHE:-$HOME/.cache/godel}/e2b-sdk"
mkdir -p "$dir"

if ! command -v python3 >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv
fi
if [ ! -x "$dir/venv/bin/python" ]; then
  python3 -m venv "$dir/venv" || {
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv
    python3 -m venv "$dir/venv"
  }
fi
have="$("$dir/venv/bin/python" -c 'import importlib.metadata as m; print(m.version("e2b"))' 2>/dev/null || true)"
if [ "$have" != "$E2B_PY_VERSION" ]; then
  "$dir/venv/bin/pip" install -q --disable-pip-version-check "e2b==$E2B_PY_VERSION"
fi

if command -v npm >/dev/null; then
  js_have="$(node -e 'console.log(require(process.argv[1]).version)' "$dir/node/node_modules/e2b/package.json" 2>/dev/null || true)"
  if [ "$js_have" != "$E2B_JS_VERSION" ]; then
    mkdir -p "$dir/node"
    (cd "$dir/node" && { [ -f package.json ] || echo '{"private":true,"type":"module"}' > package.json; } \
      && npm install --silent --no-audit --no-fund "e2b@$E2B_JS_VERSION") \
      || echo "40-e2b: npm install e2b@$E2B_JS_VERSION failed; the JS scenario will be skipped" >&2
  fi
fi
echo "40-e2b: python $dir/venv/bin/python (e2b $E2B_PY_VERSION)" >&2
