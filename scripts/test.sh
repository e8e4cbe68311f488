#!/usr/bin/env bash
# Runs timestore's whole test suite on a fresh machine: starts Postgres if none
# answers, installs the S3 server the tests use, then runs go test.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

ensure_postgres
ensure_versitygw
ensure_test_tools
export TIMESTORE_TEST_DATABASE_URL=${TIMESTORE_TEST_DATABASE_URL:-postgres://postgres@$PG_HOST:$PG_PORT/postgres?sslmode=disable}

log "go vet"
go vet ./...
log "go test"
go test -count=1 -timeout 30m "$@" ./...
