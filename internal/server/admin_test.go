package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"timestore/internal/cli"
	"timestore/internal/client"
	"timestore/internal/testutil/testserver"
)

func runCLI(t *testing.T, server string, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := cli.Execute(context.Background(), append([]string{"--server", server}, args...), &out, &errb)
	return code, out.String(), errb.String()
}

// TestMaintenanceThroughCLI triggers a job, follows it, and finds it in the
// job list, its details, the lifecycle status and the audit log.
func TestMaintenanceThroughCLI(t *testing.T) {
	t.Parallel()
	b := testserver.Start(t, testserver.Options{})
	ctx := context.Background()
	b.CreateCPU(t, "cpu", "local", "day")
	_, err := b.Client.Ingest(ctx, "cpu", "csv", strings.NewReader(testserver.Encode("csv", testserver.GenRows(10, time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC), time.Hour))), "")
	require.NoError(t, err)
	u := b.HTTP.URL

	// Dry run: a plan, and nothing changes (no job, no audit row).
	auditBefore, err := b.Client.Audit(ctx, "cpu", "", 0)
	require.NoError(t, err)
	code, out, errs := runCLI(t, u, "maintenance", "run", "reconcile", "--dataset", "cpu", "--dry-run")
	require.Equal(t, 0, code, errs)
	require.Contains(t, out, "orphans")
	jobsList, err := b.Client.Jobs(ctx, client.JobFilter{Dataset: "cpu"})
	require.NoError(t, err)
	require.Empty(t, jobsList)
	auditAfter, err := b.Client.Audit(ctx, "cpu", "", 0)
	require.NoError(t, err)
	require.Equal(t, auditBefore, auditAfter)

	code, out, errs = runCLI(t, u, "maintenance", "run", "reconcile", "--dataset", "cpu", "--wait", "-o", "json")
	require.Equal(t, 0, code, errs)
	require.Contains(t, errs, "completed")
	var job client.Job
	require.NoError(t, json.Unmarshal([]byte(out), &job))
	require.Equal(t, "completed", job.State)
	require.Equal(t, "reconcile", job.Kind)

	code, out, errs = runCLI(t, u, "jobs", "list", "--dataset", "cpu", "-o", "csv")
	require.Equal(t, 0, code, errs)
	require.Contains(t, out, strconv.FormatInt(job.ID, 10)+",reconcile,cpu,completed")
	code, out, errs = runCLI(t, u, "jobs", "show", strconv.FormatInt(job.ID, 10))
	require.Equal(t, 0, code, errs)
	require.Contains(t, out, "completed")
	code, out, errs = runCLI(t, u, "maintenance", "status", "cpu", "-o", "json")
	require.Equal(t, 0, code, errs)
	require.Contains(t, out, `"last_job_id": `+strconv.FormatInt(job.ID, 10))
	code, out, errs = runCLI(t, u, "audit", "--dataset", "cpu", "--action", "maintenance.trigger", "-o", "json")
	require.Equal(t, 0, code, errs)
	require.Contains(t, out, `"maintenance.trigger"`)
	require.Contains(t, out, `"api:admin"`)

	// Errors: unknown kind (usage), unknown dataset, unknown job.
	code, _, _ = runCLI(t, u, "maintenance", "run", "defrag", "--dataset", "cpu")
	require.Equal(t, 2, code)
	code, _, errs = runCLI(t, u, "maintenance", "run", "reconcile", "--dataset", "nope")
	require.Equal(t, 2, code, errs)
	code, _, _ = runCLI(t, u, "jobs", "show", "999999")
	require.Equal(t, 2, code)
}

// TestMetricsPassPromtool checks a live server's whole exposition.
func TestMetricsPassPromtool(t *testing.T) {
	t.Parallel()
	promtool, err := exec.LookPath("promtool")
	require.NoError(t, err, "promtool is missing: apt-get install prometheus (scripts/test.sh does this)")
	b := testserver.Start(t, testserver.Options{})
	ctx := context.Background()
	b.CreateCPU(t, "cpu", "local", "day")
	_, err = b.Client.Ingest(ctx, "cpu", "csv", strings.NewReader(testserver.Encode("csv", testserver.GenRows(10, time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC), time.Hour))), "")
	require.NoError(t, err)
	_, err = b.Client.Query(ctx, "cpu", client.QueryRequest{SQL: "SELECT count(*) FROM cpu"})
	require.NoError(t, err)
	trig, err := b.Client.RunMaintenance(ctx, "reconcile", "cpu")
	require.NoError(t, err)
	waitJobState(t, b.Client, trig.JobID, "completed")

	resp, err := http.Get(b.HTTP.URL + "/metrics")
	require.NoError(t, err)
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.NoError(t, err)
	for _, name := range []string{
		"timestore_ingest_rows_total", "timestore_query_duration_seconds", "timestore_job_runs_total",
		"timestore_job_duration_seconds", "timestore_job_last_success_timestamp_seconds", "timestore_partitions",
		"timestore_partition_bytes", "timestore_http_requests_total", "timestore_missing_objects",
	} {
		require.Contains(t, string(body), "\n"+name, name)
	}
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = bytes.NewReader(body)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "promtool check metrics:\n%s", out)
	require.Empty(t, strings.TrimSpace(string(out)), "promtool lint findings")
}

func waitJobState(t *testing.T, c *client.Client, id int64, want string) client.Job {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		j, err := c.Job(context.Background(), id)
		require.NoError(t, err)
		if j.State == want {
			return j
		}
		require.False(t, j.Finished(), "job %d ended %s, want %s: %+v", id, j.State, want, j.Errors)
		require.True(t, time.Now().Before(deadline), "job %d still %s after 60s", id, j.State)
		time.Sleep(50 * time.Millisecond)
	}
}

// TestJobSpans checks that a job run through the API produces the expected spans.
func TestJobSpans(t *testing.T) {
	t.Parallel()
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	tb := testserver.Start(t, testserver.Options{TracerProvider: tp})
	ctx := context.Background()
	_, err := tb.Client.CreateDataset(ctx, client.CreateDataset{Name: "cpu", Columns: testserver.CPUColumns, TimeColumn: "ts"})
	require.NoError(t, err)
	_, err = tb.Client.Ingest(ctx, "cpu", "csv", strings.NewReader("ts,host,value\n2024-01-01T00:00:00Z,a,1\n"), "")
	require.NoError(t, err)
	trig, err := tb.Client.RunMaintenance(ctx, "reconcile", "cpu")
	require.NoError(t, err)
	waitJobState(t, tb.Client, trig.JobID, "completed")
	require.NoError(t, tp.ForceFlush(ctx))

	names := map[string]int{}
	for _, s := range rec.Ended() {
		names[s.Name()]++
	}
	for _, want := range []string{
		"POST /v1/datasets/{name}/rows", "POST /admin/v1/maintenance",
		"duckdb.prepare_ingest", "storage.upload", "river.work/reconcile", "storage.list",
	} {
		require.Positive(t, names[want], "no span %q among %v", want, names)
	}
}

// TestJobsUIShowsJob loads the River UI in headless Chromium and finds a job in it.
func TestJobsUIShowsJob(t *testing.T) {
	t.Parallel()
	chromium, err := exec.LookPath("chromium")
	require.NoError(t, err, "chromium is missing: apt-get install chromium (scripts/test.sh does this)")
	b := testserver.Start(t, testserver.Options{})
	ctx := context.Background()
	b.CreateCPU(t, "uidemo", "local", "day")
	trig, err := b.Client.RunMaintenance(ctx, "reconcile", "uidemo")
	require.NoError(t, err)
	waitJobState(t, b.Client, trig.JobID, "completed")

	profile := t.TempDir()
	shot := filepath.Join(profile, "jobs.png")
	run := func(args ...string) string {
		cctx, cancel := context.WithTimeout(ctx, 90*time.Second)
		defer cancel()
		base := []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
			"--disable-background-networking", "--disable-component-update", "--disable-sync",
			"--user-data-dir=" + profile, "--virtual-time-budget=15000", "--window-size=1400,900"}
		out, err := exec.CommandContext(cctx, chromium, append(base, args...)...).Output()
		require.NoError(t, err)
		return string(out)
	}
	page := b.HTTP.URL + "/admin/ui/jobs/" + strconv.FormatInt(trig.JobID, 10)
	dom := run("--dump-dom", page)
	require.Contains(t, dom, "reconcile", "the job page does not show the job's kind")
	require.Contains(t, dom, "uidemo", "the job page does not show the job's dataset")
	run("--screenshot="+shot, page)
	if dir := os.Getenv("TIMESTORE_TEST_ARTIFACTS"); dir != "" {
		b, _ := os.ReadFile(shot)
		os.WriteFile(filepath.Join(dir, "jobs-ui.png"), b, 0o644)
	}
	st, err := os.Stat(shot)
	require.NoError(t, err)
	require.Greater(t, st.Size(), int64(10000), "screenshot is suspiciously small")
}
