#!/usr/bin/env bash
# Runs timestore on this machine: starts Postgres if none answers, creates the
# catalog database, builds the binary, applies migrations and serves on
# TIMESTORE_LISTEN (default 127.0.0.1:8080). Extra arguments go to "serve".
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

ensure_postgres
if [ -z "${TIMESTORE_DATABASE_URL:-}" ]; then
	psql -h "$PG_HOST" -p "$PG_PORT" -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname='timestore'" | grep -q 1 ||
		psql -h "$PG_HOST" -p "$PG_PORT" -U postgres -qc "CREATE DATABASE timestore"
	export TIMESTORE_DATABASE_URL="postgres://postgres@$PG_HOST:$PG_PORT/timestore?sslmode=disable"
fi
export TIMESTORE_LOG_FORMAT=${TIMESTORE_LOG_FORMAT:-text}
mkdir -p bin
log "building bin/timestore"
go build -o bin/timestore ./cmd/timestore
bin/timestore migrate
exec bin/timestore serve "$@"
