#!/usr/bin/env bash
# Runs timestore's whole test suite on a fresh machine: starts Postgres if none
# answers, installs the S3 server the tests use, checks formatting, go vet and
# staticcheck, then runs go test.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

ensure_postgres
ensure_versitygw
ensure_test_tools
ensure_staticcheck
ensure_goimports
export TIMESTORE_TEST_DATABASE_URL=${TIMESTORE_TEST_DATABASE_URL:-postgres://postgres@$PG_HOST:$PG_PORT/postgres?sslmode=disable}

# Imports grouped as goimports -local timestore writes them: standard library,
# then other modules, then timestore's own packages, each group sorted. The
# check names the files it would change; `goimports -local timestore -w FILE`
# fixes one.
log "goimports"
unformatted=$("$GOIMPORTS" -local timestore -l cmd internal bench)
if [ -n "$unformatted" ]; then
	log "imports not formatted (fix with: $GOIMPORTS -local timestore -w FILE):"
	printf '    %s\n' $unformatted >&2
	exit 1
fi
log "go vet"
go vet ./...
log "staticcheck"
"$STATICCHECK" ./...
log "go test"
go test -count=1 -timeout 30m "$@" ./...

# Short, bounded fuzzing of the hostile-input surfaces (their seed corpora
# already ran above as ordinary tests). TIMESTORE_FUZZTIME=0 skips this step.
# The default is a count of inputs, not a duration: with a duration, Go 1.26's
# fuzz coordinator can report a spurious "context deadline exceeded" failure
# when the time runs out while a worker is mid-input (golang/go#75804, fixed
# in Go 1.27). 500 inputs take about 5 s for the slowest targets here.
fuzztime=${TIMESTORE_FUZZTIME:-500x}
if [ "$fuzztime" != 0 ]; then
	log "go test -fuzz ($fuzztime per target)"
	for target in internal/policy:FuzzParseDuration internal/policy:FuzzParsePolicy \
		internal/storage:FuzzValidateKey internal/engine:FuzzPrepareIngest internal/engine:FuzzQuerySandbox; do
		go test -run '^$' -fuzz "^${target#*:}\$" -fuzztime "$fuzztime" "./${target%%:*}"
	done
fi
