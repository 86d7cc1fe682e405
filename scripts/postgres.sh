#!/usr/bin/env bash
# A real PostgreSQL server on loopback for the store tests (and for trying a shared-state
# daemon by hand). Installs Debian's postgresql when missing, starts the cluster without an
# init system, and creates a role and database. Idempotent. Prints the database URL last.
#
#   scripts/postgres.sh            # -> postgres://containarium:...@127.0.0.1:5432/containarium_test
set -euo pipefail
log() { printf '==> %s\n' "$*" >&2; }
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }

ROLE=${CONTAINARIUM_PG_ROLE:-containarium}
DB=${CONTAINARIUM_PG_DB:-containarium_test}
PASSFILE=/var/lib/containarium/test-pg.password

if ! command -v pg_ctlcluster >/dev/null 2>&1 || ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
  log "installing postgresql"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null
fi
version=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
if ! pg_lsclusters -h | awk -v v="$version" '$1 == v && $2 == "main"' | grep -q .; then
  log "creating cluster $version/main"
  pg_createcluster "$version" main >/dev/null
fi
if ! pg_lsclusters -h | awk -v v="$version" '$1 == v && $2 == "main" {print $4}' | grep -q online; then
  log "starting PostgreSQL $version"
  # A stale pid file from a machine that lost its processes blocks the start.
  pidfile=/var/lib/postgresql/$version/main/postmaster.pid
  if [ -f "$pidfile" ] && ! kill -0 "$(head -n 1 "$pidfile")" 2>/dev/null; then rm -f "$pidfile"; fi
  pg_ctlcluster "$version" main start
fi
port=$(pg_lsclusters -h | awk -v v="$version" '$1 == v && $2 == "main" {print $3}')

mkdir -p "$(dirname "$PASSFILE")"
if [ ! -s "$PASSFILE" ]; then
  (umask 077; head -c 24 /dev/urandom | base64 | tr -d '/+=' > "$PASSFILE")
fi
pass=$(cat "$PASSFILE")
# ROLE and DB are operator-chosen identifiers; the password is generated (letters and digits only).
su postgres -c "psql -q -v ON_ERROR_STOP=1 -p $port" >/dev/null <<SQL
SELECT format('CREATE ROLE %I LOGIN', '$ROLE') WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$ROLE') \gexec
ALTER ROLE "$ROLE" PASSWORD '$pass' CREATEDB;
SELECT format('CREATE DATABASE %I OWNER %I', '$DB', '$ROLE') WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$DB') \gexec
SQL
echo "postgres://$ROLE:$pass@127.0.0.1:$port/$DB"
