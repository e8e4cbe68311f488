package server_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"timestore/internal/client"
	"timestore/internal/testutil/testserver"
)

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
	testserver.WaitJobState(t, b.Client, trig.JobID, "completed")

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
	testserver.WaitJobState(t, tb.Client, trig.JobID, "completed")
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
