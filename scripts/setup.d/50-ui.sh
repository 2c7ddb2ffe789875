#!/usr/bin/env bash
# Dashboard end-to-end tests (crates/godel/tests/ui_e2e.rs): Debian's
# headless-capable chromium, driven by playwright-core from npm (the library
# only: it never downloads a browser) installed under
# ${GODEL_CACHE:-$HOME/.cache/godel}/ui-test. Idempotent: installs only what is
# missing; a marker file is written only after a complete npm install.
set -euo pipefail
PLAYWRIGHT_CORE_VERSION="${PLAYWRIGHT_CORE_VERSION:-1.49.1}"
if ! command -v chromium >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium
fi
if ! command -v npm >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm
fi
d="${GODEL_CACHE:-$HOME/.cache/godel}/ui-test"
if [ ! -f "$d/.installed-$PLAYWRIGHT_CORE_VERSION" ]; then
  rm -rf "$d"
  mkdir -p "$d"
  echo '{"private":true}' >"$d/package.json"
  (cd "$d" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 timeout "${UI_INSTALL_TIMEOUT:-300}" \
    npm install --silent --no-audit --no-fund "playwright-core@$PLAYWRIGHT_CORE_VERSION")
  touch "$d/.installed-$PLAYWRIGHT_CORE_VERSION"
fi
