package cli_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"timestore/internal/cli"
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

	r = runCLI(t, url, "dataset", "list", "-o", "csv")
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, "cpu,ts,day,local,1")

	// Exit codes: 2 for the caller's mistakes, 1 when the server is unreachable.
	bad := filepath.Join(dir, "bad.csv")
	require.NoError(t, os.WriteFile(bad, []byte("ts,host,value\n2024-05-01T10:00:00Z,web-1,abc\n"), 0o600))
	r = runCLI(t, url, "ingest", "cpu", bad)
	require.Equal(t, 2, r.code)
	require.Contains(t, r.stderr, `"value"`)
	r = runCLI(t, url, "query", "cpu", "--sql", "SELECT * FROM read_csv('/etc/passwd')")
	require.Equal(t, 2, r.code)
	r = runCLI(t, url, "dataset", "show", "nope")
	require.Equal(t, 2, r.code)
	require.Contains(t, r.stderr, "not found")
	r = runCLI(t, url, "dataset", "create", "x", "--columns", "ts")
	require.Equal(t, 2, r.code)
	r = runCLI(t, url, "bogus")
	require.Equal(t, 2, r.code)
	r = runCLI(t, "http://127.0.0.1:1", "dataset", "list")
	require.Equal(t, 1, r.code)

	r = runCLI(t, url, "dataset", "delete", "cpu")
	require.Equal(t, 0, r.code, r.stderr)
}
