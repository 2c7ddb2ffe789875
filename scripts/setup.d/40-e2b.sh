#!/usr/bin/env bash
# The official E2B SDKs, unpatched, for the conformance matrix in tests/e2b_sdk:
# one venv per `e2b` Python version and one node_modules per `e2b` npm version,
# under ${GODEL_CACHE:-$HOME/.cache/godel}/e2b-sdk/{py,js}/VERSION.
# Idempotent: a version already installed is left alone (a marker file is
# written only after a complete install). Bounded in time: each install gets
# E2B_INSTALL_TIMEOUT seconds (default 300). The npm part is optional
# (skipped when node/npm are missing).
#
#   E2B_PY_VERSIONS="2.63.0 2.45.1 2.0.0"   # the Python matrix (first = default)
#   E2B_JS_VERSIONS="2.51.0 2.45.0 2.0.1"   # the npm matrix (first = default)
#
# `venv` and `node` under e2b-sdk are kept as links to the default versions
# for the single-version scripts (bench.py, bench_vs_native.sh).
set -euo pipefail
E2B_PY_VERSIONS="${E2B_PY_VERSIONS:-2.63.0 2.45.1 2.0.0}"
E2B_JS_VERSIONS="${E2B_JS_VERSIONS:-2.51.0 2.45.0 2.0.1}"
limit="${E2B_INSTALL_TIMEOUT:-300}"
dir="${GODEL_CACHE:-$HOME/.cache/godel}/e2b-sdk"
mkdir -p "$dir/py" "$dir/js"

if ! command -v python3 >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv
fi

py_install() { # VERSION
  local v="$1" d="$dir/py/$1"
  [ -f "$d/.installed" ] && return 0
  rm -rf "$d"
  python3 -m venv "$d" 2>/dev/null || {
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv
    python3 -m venv "$d"
  }
  if timeout "$limit" "$d/bin/pip" install -q --disable-pip-version-check "e2b==$v"; then
    touch "$d/.installed"
  else
    echo "40-e2b: pip install e2b==$v failed or took over ${limit}s" >&2
    return 1
  fi
}

js_install() { # VERSION
  local v="$1" d="$dir/js/$1"
  [ -f "$d/.installed" ] && return 0
  rm -rf "$d"
  mkdir -p "$d"
  echo '{"private":true,"type":"module"}' >"$d/package.json"
  if (cd "$d" && timeout "$limit" npm install --silent --no-audit --no-fund "e2b@$v"); then
    touch "$d/.installed"
  else
    echo "40-e2b: npm install e2b@$v failed or took over ${limit}s" >&2
    return 1
  fi
}

status=0
for v in $E2B_PY_VERSIONS; do py_install "$v" || status=1; done
if command -v npm >/dev/null; then
  for v in $E2B_JS_VERSIONS; do js_install "$v" || status=1; done
else
  echo "40-e2b: npm not found; the JS scenarios will be skipped" >&2
fi

# The default versions under the old single-version paths.
py_default="${E2B_PY_VERSIONS%% *}"
js_default="${E2B_JS_VERSIONS%% *}"
for pair in "venv:py/$py_default" "node:js/$js_default"; do
  link="$dir/${pair%%:*}" target="$dir/${pair#*:}"
  [ -e "$target" ] || continue
  [ -L "$link" ] || rm -rf "$link"
  ln -sfn "$target" "$link"
done
echo "40-e2b: python e2b $E2B_PY_VERSIONS, npm e2b $E2B_JS_VERSIONS under $dir" >&2
exit $status
