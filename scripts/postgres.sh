#!/usr/bin/env bash
# A private PostgreSQL server for the test suite (scripts/test.sh runs the
# state store's crates against it with GODEL_TEST_DATABASE_URL). It has its
# own data directory and port, listens on 127.0.0.1 only and trusts every
# local connection: a throwaway test server, never a deployment. The
# distribution's own cluster (Debian's on 5432) is neither used nor touched.
#
#   scripts/postgres.sh start    initdb when new, start when not running (a
#                                stale postmaster.pid after a crash is cleared),
#                                create role `godel` (superuser) and database
#                                `godel_test` when missing; prints the URL.
#                                Idempotent; nothing else on stdout.
#   scripts/postgres.sh url      postgres://godel@127.0.0.1:PORT/godel_test
#   scripts/postgres.sh stop     fast shutdown; a no-op when not running
#   scripts/postgres.sh status   exit 0 when it accepts connections
#   scripts/postgres.sh reset    drop and re-create `godel_test` (the schemas
#                                earlier test runs left); the server must run
#
#   GODEL_PG_PORT   the port (default 55432)
#   GODEL_PG_DIR    the server's directory: the cluster in data/, the log in
#                   server.log, the Unix socket (default
#                   ${GODEL_CACHE:-$HOME/.cache/godel}/postgres; as root
#                   /var/tmp/godel-postgres, since the server runs as the
#                   `postgres` user, which cannot enter /root)
#   GODEL_PG_BIN    the directory with initdb, pg_ctl and psql (default: the
#                   newest /usr/lib/postgresql/*/bin)
#
# initdb and postgres refuse to run as root: as root they run as the
# `postgres` user that Debian's package creates, which then owns the
# directory; otherwise as the current user.
set -euo pipefail

port="${GODEL_PG_PORT:-55432}"
if [ "$(id -u)" = 0 ]; then
  root=1
  dir="${GODEL_PG_DIR:-/var/tmp/godel-postgres}"
else
  root=
  dir="${GODEL_PG_DIR:-${GODEL_CACHE:-${HOME:?}/.cache/godel}/postgres}"
fi
data="$dir/data"
log="$dir/server.log"
url="postgres://godel@127.0.0.1:$port/godel_test"
export LC_ALL=C

die() {
  echo "postgres.sh: $*" >&2
  exit 1
}

usage() {
  echo "usage: $0 start|stop|url|status" >&2
  exit 2
}

# The binaries: GODEL_PG_BIN, else those matching an existing cluster's
# major version, else the newest installed; empty when there are none.
find_bin() {
  if [ -n "${GODEL_PG_BIN:-}" ]; then
    echo "$GODEL_PG_BIN"
    return
  fi
  local v
  v="$(cat "$data/PG_VERSION" 2>/dev/null || true)"
  if [ -n "$v" ] && [ -x "/usr/lib/postgresql/$v/bin/initdb" ]; then
    echo "/usr/lib/postgresql/$v/bin"
    return
  fi
  local b
  b="$(compgen -G '/usr/lib/postgresql/*/bin/initdb' | sort -V | tail -n1 || true)"
  if [ -n "$b" ]; then
    dirname "$b"
  elif command -v initdb >/dev/null; then
    dirname "$(command -v initdb)"
  fi
}

# Run a server-side command as the cluster's owner (from /, which that user
# can always enter: initdb fails in a directory it cannot read), without the
# lock's descriptor: a server started with it would hold the lock forever.
as_owner() {
  if [ -n "$root" ]; then
    (cd / && runuser -u postgres -- "$@" 9>&-)
  else
    "$@" 9>&-
  fi
}

# Write stdin to a file inside the cluster, owned by the cluster's owner.
put() {
  as_owner tee "$1" >/dev/null
}

psql_admin() {
  "$bin/psql" -X -q -At -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres -d postgres "$@"
}

# The PID of the postmaster serving $data: postmaster.pid names a live
# process whose working directory is the cluster (every server process
# chdirs there), so a recycled PID is not mistaken for the server.
running_pid() {
  local pid
  pid="$(head -n1 "$data/postmaster.pid" 2>/dev/null)" || return 1
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  [ "$(readlink "/proc/$pid/cwd" 2>/dev/null)" = "$(readlink -f "$data")" ] || return 1
  echo "$pid"
}

# Server processes left in the cluster by a postmaster that died (they exit
# by themselves once they notice, which can take a moment).
orphans() {
  local real p
  real="$(readlink -f "$data")"
  for p in /proc/[0-9]*; do
    [ "$(cat "$p/comm" 2>/dev/null)" = postgres ] || continue
    [ "$(readlink "$p/cwd" 2>/dev/null)" = "$real" ] && echo "${p#/proc/}"
  done
  return 0
}

clear_stale() {
  [ -e "$data/postmaster.pid" ] || return 0
  local i left
  for i in $(seq 50); do
    left="$(orphans)"
    [ -z "$left" ] && break
    [ "$i" = 50 ] || sleep 0.2
  done
  if [ -n "$left" ]; then
    # shellcheck disable=SC2086
    kill -9 $left 2>/dev/null || true
    sleep 0.5
  fi
  rm -f "$data/postmaster.pid" "$dir"/.s.PGSQL.*
}

# The directory, owned by whoever runs the server, and the lock that
# serialises concurrent starts and stops.
prepare_dir() {
  mkdir -p "$dir"
  if [ -n "$root" ]; then
    getent passwd postgres >/dev/null \
      || die "running as root needs the 'postgres' user (from Debian's postgresql package: scripts/setup.d/15-postgres.sh)"
    chown postgres: "$dir"
    chmod 700 "$dir"
    as_owner test -w "$dir" -a -x "$dir" \
      || die "the postgres user cannot enter $dir (a parent directory is closed to it); set GODEL_PG_DIR to a directory under /var/tmp"
  fi
  local sock="$dir/.s.PGSQL.$port"
  [ "${#sock}" -lt 108 ] || die "the socket path $sock is too long for a Unix socket; set a shorter GODEL_PG_DIR"
  exec 9>>"$dir/.lock"
  flock -w 300 9 || die "timed out waiting for another postgres.sh on $dir"
}

init_cluster() {
  local major
  major="$("$bin/pg_ctl" --version | sed -n 's/^[^0-9]*\([0-9][0-9]*\).*/\1/p')"
  if [ -e "$dir/.initialized" ] && [ "$(cat "$data/PG_VERSION" 2>/dev/null)" = "$major" ]; then
    return 0
  fi
  if [ -e "$data" ]; then
    [ -e "$dir/.initialized" ] \
      && echo "postgres.sh: $data is a PostgreSQL $(cat "$data/PG_VERSION" 2>/dev/null) cluster and $bin is $major; re-creating it (test data only)" >&2
    rm -rf "$data"
  fi
  rm -f "$dir/.initialized"
  if ! as_owner "$bin/initdb" -D "$data" -U postgres -E UTF8 --locale=C -A trust >"$dir/initdb.log" 2>&1; then
    cat "$dir/initdb.log" >&2
    die "initdb failed"
  fi
  echo "include 'godel.conf'" | as_owner tee -a "$data/postgresql.conf" >/dev/null
  touch "$dir/.initialized"
}

write_config() {
  put "$data/godel.conf" <<EOF
# Written by scripts/postgres.sh on every start: edits here are lost.
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir'
# Tests open many pools at once; the data is small.
max_connections = 300
shared_buffers = 32MB
# Parallel queries allocate in /dev/shm, which containers keep small.
max_parallel_workers_per_gather = 0
# A commit does not wait for its WAL flush: a test server needs no power-loss
# durability, and the suite runs thousands of small transactions.
synchronous_commit = off
EOF
  put "$data/pg_hba.conf" <<EOF
# Written by scripts/postgres.sh on every start: a private test server that
# listens on 127.0.0.1 only and trusts every local connection.
local all all             trust
host  all all 127.0.0.1/32 trust
EOF
}

start() {
  bin="$(find_bin)"
  { [ -n "$bin" ] && [ -x "$bin/pg_ctl" ]; } \
    || die "PostgreSQL is not installed (scripts/setup.d/15-postgres.sh installs it, as root)"
  prepare_dir
  if pid="$(running_pid)"; then
    local on
    on="$(sed -n 4p "$data/postmaster.pid")"
    [ "$on" = "$port" ] \
      || die "the server in $dir (PID $pid) listens on port $on, not $port; run '$0 stop' first"
  else
    clear_stale
    init_cluster
    write_config
    if ! as_owner "$bin/pg_ctl" -D "$data" -l "$log" -w -t 120 -s start >/dev/null; then
      tail -n 20 "$log" >&2 || true
      die "the server did not start (log: $log)"
    fi
  fi
  local i
  for i in $(seq 120); do
    "$bin/pg_isready" -q -h 127.0.0.1 -p "$port" -U postgres -d postgres && break
    [ "$i" = 120 ] && die "the server in $dir does not accept connections on 127.0.0.1:$port (log: $log)"
    sleep 0.5
  done
  [ "$(psql_admin -c "select 1 from pg_roles where rolname = 'godel'")" = 1 ] \
    || psql_admin -c 'create role godel login superuser'
  [ "$(psql_admin -c "select 1 from pg_database where datname = 'godel_test'")" = 1 ] \
    || psql_admin -c 'create database godel_test owner godel'
  echo "$url"
}

stop() {
  [ -d "$data" ] || return 0
  bin="$(find_bin)"
  [ -n "$bin" ] || die "PostgreSQL is not installed"
  prepare_dir
  running_pid >/dev/null || return 0
  as_owner "$bin/pg_ctl" -D "$data" -m fast -w -t 120 -s stop >/dev/null
}

status() {
  bin="$(find_bin)"
  { [ -n "$bin" ] && [ -x "$bin/psql" ]; } || return 1
  "$bin/psql" -X -q -At "$url" -c 'select 1' >/dev/null 2>&1 || return 1
}

reset() {
  bin="$(find_bin)"
  status || { echo "postgres.sh reset: the server is not running (postgres.sh start)" >&2; return 1; }
  psql_admin -c 'drop database if exists godel_test with (force)'
  psql_admin -c 'create database godel_test owner godel'
}

[ $# = 1 ] || usage
case "$1" in
  reset) reset ;;
  start) start ;;
  stop) stop ;;
  url) echo "$url" ;;
  status) status ;;
  *) usage ;;
esac
