package cli_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"

	"timestore/internal/cli"
	"timestore/internal/testutil/pgtest"
	"timestore/internal/testutil/testserver"
)

type run struct {
	code           int
	stdout, stderr string
}

func runCLI(t *testing.T, server string, args ...string) run {
	t.Helper()
	var out, errb bytes.Buffer
	code := cli.Execute(context.Background(), append([]string{"--server", server}, args...), &out, &errb)
	return run{code, out.String(), errb.String()}
}

func TestCLIWorkflow(t *testing.T) {
	t.Parallel()
	b := testserver.Start(t, testserver.Options{})
	url := b.HTTP.URL
	dir := t.TempDir()

	r := runCLI(t, url, "dataset", "create", "cpu", "--columns", "ts:timestamp,host:varchar,value:double", "--time-column", "ts", "--partition", "day")
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, "cpu")

	csvPath := filepath.Join(dir, "cpu.csv")
	require.NoError(t, os.WriteFile(csvPath, []byte("ts,host,value\n2024-05-01T10:00:00Z,web-1,0.25\n2024-05-01T10:00:10Z,web-2,0.75\n2024-05-02T09:30:00Z,web-1,0.5\n"), 0o600))
	r = runCLI(t, url, "ingest", "cpu", csvPath)
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, "ingested 3 rows into 2 partitions")
	one := filepath.Join(dir, "one.csv")
	require.NoError(t, os.WriteFile(one, []byte("ts,host,value\n2024-04-30T10:00:00Z,web-3,1\n"), 0o600))
	r = runCLI(t, url, "dataset", "create", "solo", "--columns", "ts:timestamp,host:varchar,value:double", "--time-column", "ts")
	require.Equal(t, 0, r.code, r.stderr)
	r = runCLI(t, url, "ingest", "solo", one)
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, "ingested 1 row into 1 partition of solo")

	r = runCLI(t, url, "query", "cpu", "--sql", "SELECT host, count(*) AS n FROM cpu GROUP BY host ORDER BY host", "-o", "csv")
	require.Equal(t, 0, r.code, r.stderr)
	require.Equal(t, "host,n\nweb-1,2\nweb-2,1\n", r.stdout)

	r = runCLI(t, url, "query", "cpu", "--from", "2024-05-02", "--sql", "SELECT count(*) AS n FROM cpu", "-o", "json")
	require.Equal(t, 0, r.code, r.stderr)
	var qr struct{ Rows [][]any }
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &qr))
	require.Equal(t, [][]any{{float64(1)}}, qr.Rows)

	r = runCLI(t, url, "partitions", "list", "cpu")
	require.Equal(t, 0, r.code, r.stderr)
	require.Equal(t, 3, len(strings.Split(strings.TrimSpace(r.stdout), "\n")), r.stdout) // header + 2

	r = runCLI(t, url, "dataset", "show", "cpu", "-o", "json")
	require.Equal(t, 0, r.code, r.stderr)
	var d struct {
		ManifestVersion int64 `json:"manifest_version"`
		Totals          struct{ Rows int64 }
	}
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &d))
	require.EqualValues(t, 1, d.ManifestVersion)
	require.EqualValues(t, 3, d.Totals.Rows)

	policyPath := filepath.Join(dir, "policy.json")
	require.NoError(t, os.WriteFile(policyPath, []byte(`{"retention":{"max_age":"30d"}}`), 0o600))
	r = runCLI(t, url, "dataset", "set-policy", "cpu", "--file", policyPath)
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, `"30d"`)
	// The answer of a policy change carries the dataset's totals too.
	r = runCLI(t, url, "dataset", "set-policy", "cpu", "--file", policyPath, "-o", "json")
	require.Equal(t, 0, r.code, r.stderr)
	d.Totals.Rows = 0
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &d))
	require.EqualValues(t, 3, d.Totals.Rows, r.stdout)

	r = runCLI(t, url, "dataset", "list", "-o", "csv")
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, "cpu,ts,day,local,1")
	// JSON lists have the shape of the HTTP answer, as every list command's.
	r = runCLI(t, url, "dataset", "list", "-o", "json")
	require.Equal(t, 0, r.code, r.stderr)
	var list struct{ Datasets []struct{ Name string } }
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &list), r.stdout)
	require.Len(t, list.Datasets, 2)

	// Exit codes: 2 for the caller's mistakes, 1 when the server is unreachable.
	bad := filepath.Join(dir, "bad.csv")
	require.NoError(t, os.WriteFile(bad, []byte("ts,host,value\n2024-05-01T10:00:00Z,web-1,abc\n"), 0o600))
	r = runCLI(t, url, "ingest", "cpu", bad)
	require.Equal(t, 2, r.code)
	require.Contains(t, r.stderr, `"value"`)
	r = runCLI(t, url, "query", "cpu", "--sql", "SELECT * FROM read_csv('/etc/passwd')")
	require.Equal(t, 2, r.code)
	r = runCLI(t, url, "query", "cpu", "--from", "2024-05-02", "--to", "2024-05-02", "--sql", "SELECT count(*) FROM cpu")
	require.Equal(t, 2, r.code)
	require.Contains(t, r.stderr, "the range [from, to) is empty (HTTP 400 bad_request)")
	r = runCLI(t, url, "dataset", "show", "nope")
	require.Equal(t, 2, r.code)
	require.Contains(t, r.stderr, "not found")
	r = runCLI(t, url, "dataset", "create", "x", "--columns", "ts")
	require.Equal(t, 2, r.code)
	r = runCLI(t, url, "bogus")
	require.Equal(t, 2, r.code)
	r = runCLI(t, "http://127.0.0.1:1", "dataset", "list")
	require.Equal(t, 1, r.code)
	require.Contains(t, r.stderr, "cannot reach the timestore server at http://127.0.0.1:1")
	require.Contains(t, r.stderr, "--server or TIMESTORE_SERVER")

	// Off a terminal, a delete needs --yes.
	r = runCLI(t, url, "dataset", "delete", "cpu")
	require.Equal(t, 2, r.code, r.stderr)
	require.Contains(t, r.stderr, "--yes")
	r = runCLI(t, url, "dataset", "delete", "cpu", "--yes")
	require.Equal(t, 0, r.code, r.stderr)
}

// Usage errors exit 2 before anything is sent: the server URL here answers
// nothing, so a command that got as far as a request would exit 1.
func TestCLIUsageErrors(t *testing.T) {
	t.Parallel()
	const nowhere = "http://127.0.0.1:1"
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"dataset", "bogus"}, `unknown command "bogus" for "timestore dataset"`},
		{[]string{"jobs", "bogus", "x"}, `unknown command "bogus" for "timestore jobs"`},
		{[]string{"holds", "bogus"}, `unknown command "bogus" for "timestore holds"`},
		{[]string{"dataset", "list", "-o", "xml"}, `output format "xml"`},
		{[]string{"ingest", "cpu"}, "accepts 2 arg(s), received 1\nusage: timestore ingest NAME FILE"},
		{[]string{"dataset", "show", "cpu", "-o", "yaml"}, `output format "yaml"`},
		{[]string{"serve", "--token", "secret"}, "--token is a client flag"},
		{[]string{"migrate", "-o", "json"}, "--output is a client flag"},
		{[]string{"config", "--config", filepath.Join(t.TempDir(), "missing.yaml")}, "--config: stat"},
	} {
		var r run
		if slices.Contains([]string{"serve", "migrate", "config"}, tc.args[0]) {
			var out, errb bytes.Buffer
			code := cli.Execute(context.Background(), tc.args, &out, &errb)
			r = run{code, out.String(), errb.String()}
		} else {
			r = runCLI(t, nowhere, tc.args...)
		}
		require.Equal(t, 2, r.code, "%v: %s", tc.args, r.stderr)
		require.Contains(t, r.stderr, tc.want, tc.args)
	}
	// Server commands do not offer the client flags they refuse.
	for _, name := range []string{"serve", "migrate", "config"} {
		var out, errb bytes.Buffer
		require.Equal(t, 0, cli.Execute(context.Background(), []string{name, "--help"}, &out, &errb), errb.String())
		require.Contains(t, out.String(), "--database-url", name)
		require.NotContains(t, out.String(), "--token", name)
	}
	r0 := runCLI(t, nowhere, "dataset", "list", "--help")
	require.Contains(t, r0.stdout, "--token")
	// A group alone prints its help.
	r := runCLI(t, nowhere, "dataset")
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, "Available Commands")
}

// A query that fails after its CSV answer began (the query's time limit
// reached while rows are still being sent): the server can say so only in
// the trailers after the rows sent (api.streamCSV). The CLI must not exit 0
// with a truncated answer. DuckDB materializes results before the first row,
// so the real server fails this way only on timing; the handler here
// answers as api.streamCSV does.
func TestCLIQueryFailsWhileStreaming(t *testing.T) {
	t.Parallel()
	var fail atomic.Bool
	fail.Store(true)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		require.Equal(t, "text/csv", r.Header.Get("Accept"))
		w.Header().Set("Content-Type", "text/csv; charset=utf-8")
		w.Header().Set("Trailer", "Timestore-Error, Timestore-Error-Code")
		w.WriteHeader(http.StatusOK)
		fmt.Fprint(w, "n\n1\n2\n")
		if fail.Load() {
			w.Header().Set("Timestore-Error", "the request took longer than its time limit")
			w.Header().Set("Timestore-Error-Code", "timeout")
		}
	}))
	t.Cleanup(srv.Close)

	r := runCLI(t, srv.URL, "query", "cpu", "--sql", "SELECT n FROM cpu", "-o", "csv")
	require.Equal(t, 1, r.code, r.stderr)
	require.Equal(t, "n\n1\n2\n", r.stdout)
	require.Contains(t, r.stderr, "the query failed after its answer began (the rows before are incomplete): the request took longer than its time limit")
	require.Contains(t, r.stderr, "timeout")

	fail.Store(false)
	r = runCLI(t, srv.URL, "query", "cpu", "--sql", "SELECT n FROM cpu", "-o", "csv")
	require.Equal(t, 0, r.code, r.stderr)
	require.Equal(t, "n\n1\n2\n", r.stdout)
}

// `timestore config` shows the settings the server would use, defaults of
// unset ones included, secrets redacted; without a database URL it still
// prints them, then names the problem (exit 2).
func TestCLIConfigShowsEffectiveSettings(t *testing.T) {
	t.Setenv("TIMESTORE_DATABASE_URL", "postgres://app:s3cret@127.0.0.1:5432/ts")
	t.Setenv("TIMESTORE_JOBS_MAX_ATTEMPTS", "3")
	var out, errb bytes.Buffer
	code := cli.Execute(context.Background(), []string{"config", "--config", ""}, &out, &errb)
	require.Equal(t, 0, code, errb.String())
	for _, want := range []string{"max_attempts: 3", "max_workers: 2", "job_timeout: 4m0s", "reconcile_schedule: '@every 6h'",
		fmt.Sprintf("duckdb_threads: %d", runtime.NumCPU()), "workers: true"} {
		require.Contains(t, out.String(), want)
	}
	require.NotContains(t, out.String(), "s3cret")

	t.Setenv("TIMESTORE_DATABASE_URL", "")
	out.Reset()
	errb.Reset()
	code = cli.Execute(context.Background(), []string{"config", "--config", ""}, &out, &errb)
	require.Equal(t, 2, code)
	require.Contains(t, out.String(), "max_workers: 2")
	require.Contains(t, errb.String(), "database URL is required")
}

// migrate says what it applied, and is idempotent.
func TestCLIMigrate(t *testing.T) {
	t.Parallel()
	url := pgtest.NewEmptyDatabaseURL(t)
	migrate := func() run {
		var out, errb bytes.Buffer
		code := cli.Execute(context.Background(), []string{"migrate", "--config", "", "--database-url", url}, &out, &errb)
		return run{code, out.String(), errb.String()}
	}
	r := migrate()
	require.Equal(t, 0, r.code, r.stderr)
	require.Regexp(t, `^applied [1-9][0-9]* catalog and [1-9][0-9]* job queue migrations; catalog schema version [1-9][0-9]*\n$`, r.stdout)
	r = migrate()
	require.Equal(t, 0, r.code, r.stderr)
	require.Regexp(t, `^catalog is up to date \(schema version [1-9][0-9]*\)\n$`, r.stdout)
}
