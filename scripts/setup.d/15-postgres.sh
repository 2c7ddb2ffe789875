#!/usr/bin/env bash
# PostgreSQL (Debian's `postgresql` package: server, initdb, pg_ctl, psql) for
# the state store's tests against PostgreSQL; scripts/postgres.sh runs a
# private server on its own port and data directory (the package's own
# cluster on 5432 is neither used nor touched). Idempotent: installs only when
# no /usr/lib/postgresql/*/bin/initdb exists. Without root and without the
# package, says the PostgreSQL tests will skip and succeeds.
set -euo pipefail
have_initdb() {
  compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null
}
have_initdb && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "15-postgres: PostgreSQL is not installed and installing it needs root; the PostgreSQL tests will skip" >&2
  exit 0
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql
have_initdb || { echo "15-postgres: installed postgresql but found no /usr/lib/postgresql/*/bin/initdb" >&2; exit 1; }
