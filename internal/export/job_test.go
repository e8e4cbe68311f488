package export_test

import (
	"encoding/json"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"timestore/internal/catalog"
	"timestore/internal/client"
	"timestore/internal/config"
	"timestore/internal/export"
	"timestore/internal/jobs"
	"timestore/internal/storage"
	"timestore/internal/testutil/testserver"
)

// TestExportJob runs the export as a lifecycle job of a complete server:
// the dry run lists the due windows; the first attempt fails on an injected
// upload failure and records no verified export; River retries the job,
// which then succeeds.
func TestExportJob(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	dataDir := t.TempDir()
	var store *catalog.Store
	var fb *storage.FaultyBucket
	b := testserver.Start(t, testserver.Options{
		Configure: func(c *config.Config) { c.DataDir = dataDir },
		Jobs: func(jo *jobs.Options) {
			// The exporter reads and writes the server's local target
			// through a Targets of its own on the same directory, whose
			// bucket fails the first upload.
			targets, err := storage.NewTargets(ctx, dataDir, nil)
			require.NoError(t, err)
			t.Cleanup(func() { _ = targets.Close() })
			local, err := targets.Get(storage.LocalTargetName)
			require.NoError(t, err)
			fb = storage.NewFaultyBucket(local.Bucket)
			require.NoError(t, targets.SetBucket(storage.LocalTargetName, fb))
			fb.FailNth(storage.OpUpload, 1, nil)
			cache, err := storage.NewCache(t.TempDir(), 1<<30, nil)
			require.NoError(t, err)
			x, err := export.New(export.Options{Store: jo.Store, Targets: targets, Cache: cache, Engine: testEngine,
				TempDir: t.TempDir(), Now: func() time.Time { return runNow }})
			require.NoError(t, err)
			// Replace the server's own export task, if it has one.
			jo.Tasks = slices.DeleteFunc(jo.Tasks, func(t jobs.Task) bool { return t.Kind() == jobs.KindExport })
			jo.Tasks = append(jo.Tasks, x.Task())
			store = jo.Store
		},
	})
	c := b.Client
	_, err := c.CreateDataset(ctx, client.CreateDataset{
		Name: "cpu", TimeColumn: "ts", Partition: "day",
		Columns: []client.Column{{Name: "ts", Type: "timestamp"}, {Name: "n", Type: "bigint"}},
		Policy:  json.RawMessage(`{"export":{"target":"local","after":"1d","window":"day"}}`),
	})
	require.NoError(t, err)
	_, err = c.Ingest(ctx, "cpu", "csv", strings.NewReader("ts,n\n2024-03-01T10:00:00Z,1\n2024-03-01T11:00:00Z,2\n2024-03-02T10:00:00Z,3\n"), "")
	require.NoError(t, err)

	raw, err := c.DryRun(ctx, jobs.KindExport, "cpu")
	require.NoError(t, err)
	var plan export.Plan
	require.NoError(t, json.Unmarshal(raw, &plan), string(raw))
	require.Equal(t, []string{"2024-03-01", "2024-03-02"}, labels(plan.Due), string(raw))
	require.EqualValues(t, 3, plan.Totals.Rows)
	require.Equal(t, `"1d"`, string(mustJSON(t, plan.Settings.After)))

	tr, err := c.RunMaintenance(ctx, jobs.KindExport, "cpu")
	require.NoError(t, err)
	var job client.Job
	require.Eventually(t, func() bool {
		job, err = c.Job(ctx, tr.JobID)
		require.NoError(t, err)
		return job.Finished()
	}, time.Minute, 50*time.Millisecond)
	require.Equal(t, "completed", job.State, string(job.Output))
	require.Equal(t, 2, job.Attempt, "the first attempt failed, River retried")
	require.Len(t, job.Errors, 1)
	require.Contains(t, job.Errors[0].Error, "injected")
	require.Equal(t, 1, fb.Failures(storage.OpUpload))

	xs, err := store.ListExports(ctx, "cpu", "")
	require.NoError(t, err)
	require.Len(t, xs, 2)
	for _, x := range xs {
		require.Equal(t, catalog.ExportVerified, x.State)
		require.Equal(t, "job:"+strconv.FormatInt(tr.JobID, 10), x.Actor)
	}
	require.Equal(t, 2, xs[0].Attempts, "the retry reused the failed attempt's record")
	audit, err := c.Audit(ctx, "cpu", catalog.ActionExportVerified, 10)
	require.NoError(t, err)
	require.Len(t, audit, 2)
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	require.NoError(t, err)
	return b
}
