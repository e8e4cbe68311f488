package export_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/riverqueue/river/rivertype"
	"github.com/stretchr/testify/require"

	"timestore/internal/catalog"
	"timestore/internal/export"
	"timestore/internal/jobs"
)

func TestTask(t *testing.T) {
	t.Parallel()
	b := setup(t, false, func(o *export.Options) { o.RunBudget = time.Nanosecond })
	task := b.x.Task()
	require.Equal(t, jobs.KindExport, task.Kind())
	b.rows(t, 0, 10)
	b.rows(t, 1, 10)
	job := jobs.JobContext{ID: 7, Attempt: 1, Actor: "job:7"}

	plan, err := task.Plan(b.ctx, "cpu")
	require.NoError(t, err)
	require.Len(t, plan.(export.Plan).Due, 2)

	// The budget is spent after the first window: the job snoozes.
	out, err := task.Run(b.ctx, "cpu", job)
	require.IsType(t, export.Summary{}, out)
	var snooze *rivertype.JobSnoozeError
	require.ErrorAs(t, err, &snooze)
	require.Equal(t, export.ContinueAfter, snooze.Duration)
	require.Equal(t, 1, out.(export.Summary).Remaining)
	require.False(t, jobs.IsHalt(err))
	out, err = task.Run(b.ctx, "cpu", job)
	require.NoError(t, err)
	require.Equal(t, []string{"2024-03-02 v1"}, out.(export.Summary).Exported)
	xs := b.exports(t, catalog.ExportVerified)
	require.Len(t, xs, 2)
	require.Equal(t, "job:7", xs[0].Actor)
	require.Equal(t, int64(7), *xs[0].JobID)

	// Another export running: a conflict, not a failure.
	unlock, ok, err := b.store.LockExports(b.ctx, b.ds.ID)
	require.NoError(t, err)
	require.True(t, ok)
	b.rows(t, 2, 10)
	_, err = task.Run(b.ctx, "cpu", job)
	require.ErrorIs(t, err, jobs.ErrConflict)
	require.False(t, jobs.IsHalt(err))
	unlock()

	// A directory occupied by another export halts the job.
	require.NoError(t, b.store.DeleteDataset(b.ctx, "cpu", "test"))
	_, err = b.store.CreateDataset(b.ctx, catalog.Dataset{Name: "cpu", Columns: b.ds.Columns, TimeColumn: "ts",
		Partition: catalog.WindowDay, Target: b.tname, Policy: b.ds.Policy}, "test")
	require.NoError(t, err)
	b.rows(t, 0, 10)
	_, err = task.Run(b.ctx, "cpu", job)
	require.ErrorIs(t, err, export.ErrOccupied)
	require.True(t, jobs.IsHalt(err))
}

// TestSummaryJSON: the job output's keys are the ones `jobs show` has
// always shown.
func TestSummaryJSON(t *testing.T) {
	t.Parallel()
	r := export.Result{Dataset: "cpu", Exported: []export.WindowResult{{Window: "2024-03-01", Version: 2}}, Remaining: 1}
	b, err := json.Marshal(r.Summary())
	require.NoError(t, err)
	var out map[string]any
	require.NoError(t, json.Unmarshal(b, &out))
	require.Equal(t, map[string]any{"dataset": "cpu", "exported": []any{"2024-03-01 v2"}, "skipped": 0.0, "remaining": 1.0,
		"rows": 0.0, "bytes": 0.0, "lag_seconds": 0.0, "notes": nil}, out)
}
