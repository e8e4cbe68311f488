package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"timestore/internal/cli"
	"timestore/internal/client"
	"timestore/internal/testutil/testserver"
)

// runCLI runs the timestore CLI against server and returns its exit code,
// standard output and standard error.
func runCLI(t *testing.T, server string, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := cli.Execute(context.Background(), append([]string{"--server", server}, args...), &out, &errb)
	return code, out.String(), errb.String()
}

// TestMaintenanceThroughCLI triggers a job, follows it, and finds it in the
// job list, its details, the lifecycle status and the audit log.
func TestMaintenanceThroughCLI(t *testing.T) {
	// Not parallel: its in-process server holds full connection pools, and
	// this binary runs the crash scenarios 24 at a time (crashParallel);
	// sequential tests run before the parallel ones, never beside them.
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
