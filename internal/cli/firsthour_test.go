package cli_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"timestore/internal/config"
	"timestore/internal/testutil/testserver"
)

// The first hour of a new user: each message says what was wrong and what
// to do instead.
func TestCLIFirstHourMessages(t *testing.T) {
	t.Parallel()
	b := testserver.Start(t, testserver.Options{NoWorkers: true})
	url := b.HTTP.URL
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, []byte(content), 0o600))
		return p
	}

	// An unknown dataset: named, with the command that lists the others.
	for _, args := range [][]string{
		{"dataset", "show", "nope"},
		{"ingest", "nope", write("one.csv", "ts,v\n2024-05-01T10:00:00Z,1\n")},
		{"dataset", "set-policy", "nope", "--file", write("empty.json", `{}`)},
		{"query", "nope", "--sql", "SELECT 1"},
		{"partitions", "list", "nope"},
		{"maintenance", "run", "retention", "--dataset", "nope", "--dry-run"},
		{"maintenance", "status", "nope"},
	} {
		r := runCLI(t, url, args...)
		require.Equal(t, 2, r.code, "%v: %s", args, r.stderr)
		require.Contains(t, r.stderr, `dataset "nope" not found: list datasets with "timestore dataset list"`, args)
		require.Contains(t, r.stderr, "HTTP 404 not_found", args)
		require.NotContains(t, r.stderr, "snapshot dataset", args)
	}

	// --server without a scheme means http://; a wrong scheme is refused.
	r := runCLI(t, strings.TrimPrefix(url, "http://"), "dataset", "list")
	require.Equal(t, 0, r.code, r.stderr)
	r = runCLI(t, "ftp://127.0.0.1:1", "dataset", "list")
	require.Equal(t, 2, r.code, r.stderr)
	require.Contains(t, r.stderr, `scheme "ftp" is not http or https; want a URL such as http://127.0.0.1:8080`)

	// An unknown storage target: the known ones and how to add one.
	r = runCLI(t, url, "dataset", "create", "cpu", "--columns", "ts:timestamp,v:double", "--time-column", "ts", "--target", "cold")
	require.Equal(t, 2, r.code, r.stderr)
	for _, want := range []string{`unknown storage target "cold"`, "known targets: local", "TIMESTORE_TARGET_COLD=", "docs/configuration.md"} {
		require.Contains(t, r.stderr, want)
	}
	r = runCLI(t, url, "dataset", "create", "cpu", "--columns", "ts:timestamp,v:double", "--time-column", "ts",
		"--policy-file", write("export.json", `{"export":{"target":"archive"}}`))
	require.Equal(t, 2, r.code, r.stderr)
	require.Contains(t, r.stderr, "policy.export.target")
	require.Contains(t, r.stderr, "TIMESTORE_TARGET_ARCHIVE=")

	// Policy errors name the field and suggest the form.
	r = runCLI(t, url, "dataset", "create", "cpu", "--columns", "ts:timestamp,v:double", "--time-column", "ts",
		"--policy-file", write("days.json", `{"retention":{"max_age":"30 days"}}`))
	require.Equal(t, 2, r.code, r.stderr)
	require.Contains(t, r.stderr, `policy.retention.max_age: invalid duration "30 days"`)
	require.Contains(t, r.stderr, `write "30d"`)
	r = runCLI(t, url, "dataset", "list", "-o", "json")
	require.Equal(t, 0, r.code, r.stderr)
	require.JSONEq(t, `{"datasets":[]}`, r.stdout, "a refused dataset is not created")

	// A policy file that is not JSON: where.
	r = runCLI(t, url, "dataset", "create", "cpu", "--columns", "ts:timestamp,v:double", "--time-column", "ts",
		"--policy-file", write("broken.json", "{\n  \"retention\": {\"max_age\": 30d}\n}\n"))
	require.Equal(t, 2, r.code, r.stderr)
	require.Contains(t, r.stderr, "broken.json: not valid JSON at line 2, column 30")
	require.Contains(t, r.stderr, "docs/policy.md")

	// Sizes with units, weeks; dataset update is set-policy.
	r = runCLI(t, url, "dataset", "create", "cpu", "--columns", "ts:timestamp,v:double", "--time-column", "ts")
	require.Equal(t, 0, r.code, r.stderr)
	r = runCLI(t, url, "dataset", "update", "cpu", "--file", write("ok.json", `{"retention":{"max_bytes":"10GB","max_age":"1w"},"compaction":{"target_file_bytes":"64MiB"}}`), "-o", "json")
	require.Equal(t, 0, r.code, r.stderr)
	var d struct {
		Policy struct {
			Retention struct {
				MaxAge   string `json:"max_age"`
				MaxBytes int64  `json:"max_bytes"`
			}
			Compaction struct {
				TargetFileBytes int64 `json:"target_file_bytes"`
			}
		}
	}
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &d), r.stdout)
	require.Equal(t, int64(10_000_000_000), d.Policy.Retention.MaxBytes)
	require.Equal(t, "7d", d.Policy.Retention.MaxAge)
	require.Equal(t, int64(64<<20), d.Policy.Compaction.TargetFileBytes)
	r = runCLI(t, url, "dataset", "set-policy", "cpu", "--file", write("bytes.json", `{"retention":{"max_bytes":"10G"}}`))
	require.Equal(t, 2, r.code, r.stderr)
	require.Contains(t, r.stderr, `policy.retention.max_bytes: invalid size "10G": "G" is ambiguous: say GB (powers of 1000) or GiB (powers of 1024)`)

	// The policy commands' help points at docs/policy.md and summarises the format.
	for _, c := range [][]string{{"dataset", "create", "--help"}, {"dataset", "set-policy", "--help"}, {"dataset", "update", "--help"}} {
		r = runCLI(t, url, c...)
		require.Equal(t, 0, r.code, r.stderr)
		for _, want := range []string{"docs/policy.md", `"30d"`, `"1w"`, `"10GB"`, `"512MiB"`, "@every 15m"} {
			require.Contains(t, r.stdout, want, c)
		}
	}

	// dataset list shows partitions, rows and bytes.
	r = runCLI(t, url, "ingest", "cpu", write("rows.csv", "ts,v\n2024-05-01T10:00:00Z,1\n2024-05-01T11:00:00Z,2\n"))
	require.Equal(t, 0, r.code, r.stderr)
	r = runCLI(t, url, "dataset", "list")
	require.Equal(t, 0, r.code, r.stderr)
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	require.Len(t, lines, 2, r.stdout)
	require.Equal(t, []string{"NAME", "TIME_COLUMN", "PARTITION", "TARGET", "MANIFEST_VERSION", "PARTITIONS", "ROWS", "BYTES"}, strings.Fields(lines[0]))
	require.Regexp(t, `^cpu\s+ts\s+day\s+local\s+1\s+1\s+2\s+[0-9.]+ (B|KiB)$`, lines[1])
	r = runCLI(t, url, "dataset", "list", "-o", "csv")
	require.Equal(t, 0, r.code, r.stderr)
	require.Regexp(t, `\ncpu,ts,day,local,1,1,2,[1-9][0-9]*\n$`, r.stdout)

	// Destructive commands off a terminal need --yes; nothing is changed without it.
	r = runCLI(t, url, "dataset", "delete", "cpu")
	require.Equal(t, 2, r.code, r.stderr)
	require.Contains(t, r.stderr, `delete dataset "cpu" and all its data: refusing without --yes, because standard input is not a terminal`)
	r = runCLI(t, url, "dataset", "show", "cpu")
	require.Equal(t, 0, r.code, "the dataset is still there: %s", r.stderr)
	r = runCLI(t, url, "holds", "release", "1")
	require.Equal(t, 2, r.code, r.stderr)
	require.Contains(t, r.stderr, "release hold 1")
	require.Contains(t, r.stderr, "pass --yes")
	r = runCLI(t, url, "dataset", "delete", "cpu", "--yes")
	require.Equal(t, 0, r.code, r.stderr)
}

// A 401 says how to pass the token.
func TestCLIUnauthorizedSaysHowToPassToken(t *testing.T) {
	t.Parallel()
	b := testserver.Start(t, testserver.Options{NoWorkers: true, Configure: func(c *config.Config) { c.Token = "s3cret-token" }})
	for _, args := range [][]string{{"dataset", "list", "--token", ""}, {"dataset", "list", "--token", "wrong"}} {
		r := runCLI(t, b.HTTP.URL, args...)
		require.Equal(t, 2, r.code, r.stderr)
		for _, want := range []string{"HTTP 401 unauthorized", "--token", "TIMESTORE_TOKEN", "Authorization: Bearer"} {
			require.Contains(t, r.stderr, want, args)
		}
	}
	r := runCLI(t, b.HTTP.URL, "dataset", "list", "--token", "s3cret-token")
	require.Equal(t, 0, r.code, r.stderr)
}

// Dry runs and --wait print for people with -o table; jobs list has the
// scheduled time; a sweep waiting for its grace period shows as waiting,
// not as an error.
func TestCLIMaintenanceHumanOutput(t *testing.T) {
	t.Parallel()
	b := testserver.Start(t, testserver.Options{})
	url := b.HTTP.URL
	dir := t.TempDir()
	csvPath := filepath.Join(dir, "old.csv")
	require.NoError(t, os.WriteFile(csvPath, []byte("ts,v\n2024-05-01T10:00:00Z,1\n2024-05-02T10:00:00Z,2\n"), 0o600))
	policyPath := filepath.Join(dir, "policy.json")
	require.NoError(t, os.WriteFile(policyPath, []byte(`{"retention":{"max_age":"4w","grace":"1h","schedule":"@yearly"}}`), 0o600))
	r := runCLI(t, url, "dataset", "create", "cpu", "--columns", "ts:timestamp,v:double", "--time-column", "ts", "--policy-file", policyPath)
	require.Equal(t, 0, r.code, r.stderr)
	r = runCLI(t, url, "ingest", "cpu", csvPath)
	require.Equal(t, 0, r.code, r.stderr)

	r = runCLI(t, url, "maintenance", "run", "retention", "--dataset", "cpu", "--dry-run")
	require.Equal(t, 0, r.code, r.stderr)
	require.True(t, strings.HasPrefix(r.stdout, "dry run of retention on cpu: nothing was changed\n"), r.stdout)
	require.NotContains(t, r.stdout, `{"`, "no JSON line")
	require.Regexp(t, `(?m)^policy\.max_age:\s+28d$`, r.stdout)
	require.Regexp(t, `(?m)^remove\.rows:\s+2$`, r.stdout)
	require.Contains(t, r.stdout, "\nselected (2):\n")
	require.Regexp(t, `(?m)^ID\s+WINDOW_START\s+TIME_MIN\s+TIME_MAX\s+ROWS\s+BYTES\s+RULE$`, r.stdout)
	require.Regexp(t, `(?m)^[0-9]+\s+2024-05-01T00:00:00Z\s+.*\s+1\s+[0-9]+\s+max_age$`, r.stdout)
	d, err := b.Client.GetDataset(t.Context(), "cpu")
	require.NoError(t, err)
	require.EqualValues(t, 1, d.ManifestVersion, "the dry run changed nothing")
	r = runCLI(t, url, "maintenance", "run", "retention", "--dataset", "cpu", "--dry-run", "-o", "json")
	require.Equal(t, 0, r.code, r.stderr)
	require.True(t, json.Valid([]byte(r.stdout)), r.stdout)

	r = runCLI(t, url, "maintenance", "run", "retention", "--dataset", "cpu", "--wait")
	require.Equal(t, 0, r.code, r.stderr)
	progress := strings.Split(strings.TrimSpace(r.stderr), "\n")
	require.Regexp(t, `^job [0-9]+: retention of cpu: available$`, progress[0])
	require.Regexp(t, `^job [0-9]+: completed \(attempt 1 of [0-9]+\)$`, progress[len(progress)-1])
	for i := 1; i < len(progress); i++ {
		require.NotEqual(t, progress[i-1], progress[i], "a line repeated: %q", r.stderr)
	}
	require.NotContains(t, r.stdout, `{"`, "the job's summary for people, not a JSON line: %s", r.stdout)

	// Retention enqueued a sweep; within the grace period it waits.
	r = runCLI(t, url, "maintenance", "run", "sweep", "--dataset", "cpu", "--wait")
	require.Equal(t, 0, r.code, r.stderr)
	require.Regexp(t, `(?m)^job [0-9]+: scheduled: waiting until 20[0-9-]+T[0-9:]+Z: 2 removed partitions kept back \(grace 2, leases 0\)`, r.stderr)
	require.NotContains(t, r.stderr, "JobSnoozeError")
	r = runCLI(t, url, "jobs", "list", "--kind", "sweep", "--dataset", "cpu")
	require.Equal(t, 0, r.code, r.stderr)
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	require.Equal(t, []string{"ID", "KIND", "DATASET", "STATE", "ATTEMPT", "CREATED_AT", "SCHEDULED_AT", "FINISHED_AT", "LAST_ERROR", "WAITING"}, strings.Fields(lines[0]))
	require.Len(t, lines, 2, r.stdout)
	require.Regexp(t, `^([0-9]+)\s+sweep\s+cpu\s+scheduled\s+\S+\s+\S+\s+(\S+)\s+-\s+waiting until (\S+): 2 removed partitions kept back`, lines[1])
	m := regexp.MustCompile(`^([0-9]+)\s+sweep\s+cpu\s+scheduled\s+\S+\s+\S+\s+(\S+)\s+-\s+waiting until (\S+):`).FindStringSubmatch(lines[1])
	require.Equal(t, m[2], m[3], "scheduled_at is when it waits until")
	require.NotContains(t, r.stdout, "JobSnoozeError")
	r = runCLI(t, url, "jobs", "show", m[1])
	require.Equal(t, 0, r.code, r.stderr)
	require.Regexp(t, `(?m)^note:\s+waiting until `+regexp.QuoteMeta(m[3])+`: 2 removed partitions kept back`, r.stdout)
	require.NotContains(t, r.stdout, "JobSnoozeError")
	require.NotContains(t, r.stdout, "error (attempt")
}
