#!/usr/bin/env bash
# Runs timestore on this machine: starts Postgres if none answers, creates the
# catalog database when it is missing (the default "timestore", or the one
# TIMESTORE_DATABASE_URL names), builds the binary, applies migrations and
# serves on TIMESTORE_LISTEN (default 127.0.0.1:8080). Extra arguments go to
# "serve".
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

# ensure_database creates the database a postgres:// URL names unless it
# exists, connecting to the server's "postgres" database with the same
# credentials and parameters.
ensure_database() {
	local url=$1 base db query
	base=${url%%\?*}
	query=${url#"$base"}
	db=${base##*/}
	case "$base" in
	postgres://*/* | postgresql://*/*) ;;
	*) log "TIMESTORE_DATABASE_URL names no database; not creating one"; return 0 ;;
	esac
	if ! [[ "$db" =~ ^[A-Za-z_][A-Za-z0-9_-]*$ ]]; then
		log "database name \"$db\" is not a plain name; create it yourself if it is missing"
		return 0
	fi
	local admin="${base%/*}/postgres$query"
	if ! psql "$admin" -tAc "SELECT 1 FROM pg_database WHERE datname='$db'" | grep -q 1; then
		log "creating database $db"
		psql "$admin" -qc "CREATE DATABASE \"$db\""
	fi
}

ensure_postgres
if [ -z "${TIMESTORE_DATABASE_URL:-}" ]; then
	export TIMESTORE_DATABASE_URL="postgres://postgres@$PG_HOST:$PG_PORT/timestore?sslmode=disable"
fi
ensure_database "$TIMESTORE_DATABASE_URL"
export TIMESTORE_LOG_FORMAT=${TIMESTORE_LOG_FORMAT:-text}
mkdir -p bin
log "building bin/timestore"
go build -o bin/timestore ./cmd/timestore
bin/timestore migrate
exec bin/timestore serve "$@"
