#!/usr/bin/env bash
# The official E2B SDKs (Python and, when installed, JavaScript), unpatched,
# against a real `godel serve --e2b-listen` on loopback with a team token.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
exec "$root/tests/e2b_sdk/run.sh"
