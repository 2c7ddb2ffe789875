#!/usr/bin/env bash
# Installs everything godel's tests and runtimes need on a fresh Debian machine.
# Idempotent: each fragment in scripts/setup.d checks before it installs.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
for f in "$here"/setup.d/*.sh; do
  [ -e "$f" ] || continue
  echo "==> setup: $(basename "$f")" >&2
  bash "$f"
done
