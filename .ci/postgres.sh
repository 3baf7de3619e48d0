#!/usr/bin/env bash
# Installs and starts a local PostgreSQL for the store conformance tests and benchmarks, on a
# fresh Debian machine (as root, or with sudo). Idempotent: running it again finds the package
# installed, the cluster running and the role and database present, and changes nothing.
#
# Prints one line on stdout, for `eval`:
#   export DATABASE_URL=postgres://nanovm:<password>@127.0.0.1:<port>/nanovm
# Everything else goes to stderr. Usage in CI:
#   eval "$(.ci/postgres.sh)"
set -euo pipefail

log() { printf '%s\n' "postgres.sh: $*" >&2; }

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
# The password of a throwaway local test database that only listens on localhost.
PASSWORD="${NANOVM_PG_PASSWORD:-nanovm-ci}"

if ! command -v pg_ctlcluster >/dev/null 2>&1 || ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
  log "installing the postgresql package"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq >&2
  # Quiet, but errors still reach stderr.
  $SUDO apt-get install -y -qq postgresql >/dev/null
fi

# The newest installed server version (Debian ships one; this also copes with several).
VERSION=$(ls -1 /usr/lib/postgresql | sort -V | tail -n 1)
if [ -z "$VERSION" ]; then
  log "error: no PostgreSQL server under /usr/lib/postgresql"
  exit 1
fi

# A package installed inside a container may not have created its default cluster.
if ! $SUDO pg_lsclusters -h 2>/dev/null | awk '{print $1" "$2}' | grep -qx "$VERSION main"; then
  log "creating cluster $VERSION/main"
  $SUDO pg_createcluster "$VERSION" main >&2
fi

status=$($SUDO pg_lsclusters -h | awk -v v="$VERSION" '$1 == v && $2 == "main" {print $4}')
if [ "$status" != "online" ]; then
  log "starting cluster $VERSION/main"
  $SUDO pg_ctlcluster "$VERSION" main start >&2
fi
PORT=$($SUDO pg_lsclusters -h | awk -v v="$VERSION" '$1 == v && $2 == "main" {print $3}')

psql_admin() {
  # `runuser` needs no PAM session setup and exists on every Debian; `cd /` avoids
  # "could not change directory" noise when the caller's directory is not readable by postgres.
  (cd / && $SUDO runuser -u postgres -- psql -p "$PORT" -v ON_ERROR_STOP=1 -qAt "$@")
}

# Wait until the server accepts connections (a fresh start takes a moment).
for _ in $(seq 1 50); do
  if psql_admin -c 'select 1' >/dev/null 2>&1; then break; fi
  sleep 0.2
done
psql_admin -c 'select 1' >/dev/null

if [ "$(psql_admin -c "select 1 from pg_roles where rolname = 'nanovm'")" != "1" ]; then
  log "creating role nanovm"
  psql_admin -c "create role nanovm login password '$PASSWORD'"
else
  psql_admin -c "alter role nanovm login password '$PASSWORD'"
fi
if [ "$(psql_admin -c "select 1 from pg_database where datname = 'nanovm'")" != "1" ]; then
  log "creating database nanovm"
  psql_admin -c "create database nanovm owner nanovm"
fi
# The conformance tests create one schema per test; PostgreSQL 15+ no longer lets every role
# create objects in `public`, and the owner of the database may create schemas anyway.
psql_admin -d nanovm -c "grant all on schema public to nanovm"

log "PostgreSQL $VERSION ready on 127.0.0.1:$PORT, database nanovm"
echo "export DATABASE_URL=postgres://nanovm:$PASSWORD@127.0.0.1:$PORT/nanovm"
