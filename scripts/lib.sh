# Shared by scripts/run.sh and scripts/test.sh: start what timestore needs.
# shellcheck shell=bash

TIMESTORE_CACHE=${TIMESTORE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/timestore}
VERSITYGW_VERSION=v1.8.0
STATICCHECK_VERSION=v0.8.2
GOIMPORTS_VERSION=v0.52.0
PG_BIN=${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}
PG_HOST=127.0.0.1
PG_PORT=${TIMESTORE_PG_PORT:-5432}

log() { printf '==> %s\n' "$*" >&2; }

pg_answers() {
	if command -v pg_isready >/dev/null 2>&1; then
		pg_isready -q -h "$PG_HOST" -p "$PG_PORT" -t 2
	else
		(exec 3<>"/dev/tcp/$PG_HOST/$PG_PORT") 2>/dev/null
	fi
}

# ensure_postgres makes a Postgres answer on 127.0.0.1:$PG_PORT with trust auth
# for user postgres: the machine's own if it runs, else a throwaway cluster.
ensure_postgres() {
	if pg_answers; then
		log "using the Postgres at $PG_HOST:$PG_PORT"
		return 0
	fi
	if [ -z "$PG_BIN" ] || [ ! -x "$PG_BIN/initdb" ]; then
		log "no Postgres answers at $PG_HOST:$PG_PORT and no initdb found; install postgresql (apt-get install postgresql)"
		return 1
	fi
	local dir=${TIMESTORE_PG_DIR:-/tmp/timestore-pg}
	local as=()
	if [ "$(id -u)" = 0 ]; then as=(runuser -u postgres --); fi
	if [ ! -f "$dir/PG_VERSION" ]; then
		log "starting a throwaway Postgres cluster in $dir"
		mkdir -p "$dir"
		[ "$(id -u)" = 0 ] && chown postgres:postgres "$dir"
		"${as[@]}" "$PG_BIN/initdb" -D "$dir" -U postgres --auth=trust -E UTF8 >/dev/null
	fi
	"${as[@]}" "$PG_BIN/pg_ctl" -D "$dir" -l "$dir/server.log" -w -t 60 \
		-o "-h $PG_HOST -p $PG_PORT -k /tmp -c max_connections=300 -c fsync=off" start >/dev/null
	pg_answers || { log "Postgres did not start; see $dir/server.log"; return 1; }
}

# ensure_versitygw installs the S3 server the integration tests run, once.
ensure_versitygw() {
	local bin="$TIMESTORE_CACHE/bin/versitygw"
	if [ ! -x "$bin" ]; then
		log "installing versitygw $VERSITYGW_VERSION into $TIMESTORE_CACHE/bin (about 2 minutes, once)"
		mkdir -p "$TIMESTORE_CACHE/bin"
		GOBIN="$TIMESTORE_CACHE/bin" go install "github.com/versity/versitygw/cmd/versitygw@$VERSITYGW_VERSION"
	fi
	export TIMESTORE_VERSITYGW="$bin"
}

# go_tool_pinned NAME PACKAGE VERSION installs a Go tool at a pinned version
# into the cache, once, as NAME-VERSION, and prints its path.
go_tool_pinned() {
	local name=$1 pkg=$2 version=$3
	local bin="$TIMESTORE_CACHE/bin/$name-$version"
	if [ ! -x "$bin" ]; then
		log "installing $name $version into $TIMESTORE_CACHE/bin (once)"
		mkdir -p "$TIMESTORE_CACHE/bin"
		local tmp
		tmp=$(mktemp -d)
		GOBIN="$tmp" go install "$pkg@$version" >&2
		mv "$tmp/$name" "$bin"
		rmdir "$tmp"
	fi
	printf '%s\n' "$bin"
}

# ensure_staticcheck installs staticcheck (pinned) into the same cache.
ensure_staticcheck() {
	STATICCHECK=$(go_tool_pinned staticcheck honnef.co/go/tools/cmd/staticcheck "$STATICCHECK_VERSION")
}

# ensure_goimports installs goimports (golang.org/x/tools, pinned) into the same cache.
ensure_goimports() {
	GOIMPORTS=$(go_tool_pinned goimports golang.org/x/tools/cmd/goimports "$GOIMPORTS_VERSION")
}

# ensure_test_tools installs the Debian packages the tests drive: promtool
# (package prometheus) checks metrics and alert rules; chromium loads the jobs UI.
ensure_test_tools() {
	local missing=()
	command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
	command -v chromium >/dev/null 2>&1 || missing+=(chromium)
	[ ${#missing[@]} -eq 0 ] && return 0
	if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
		log "missing ${missing[*]}: install them (Debian: apt-get install ${missing[*]})"
		return 1
	fi
	log "installing ${missing[*]} from Debian's packages (once)"
	apt-get update -qq >/dev/null
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}
