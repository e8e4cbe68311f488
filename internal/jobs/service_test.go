package jobs_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/riverqueue/river"
	"github.com/stretchr/testify/require"

	"timestore/internal/catalog"
	"timestore/internal/jobs"
	"timestore/internal/testutil/pgtest"
)

func TestTriggerRunsJobAndRecordsIt(t *testing.T) {
	b := setup(t, setupOpts{workers: true})

	job, dup, err := b.svc.Trigger(b.ctx, jobs.KindCompaction, "metrics", "alice")
	require.NoError(t, err)
	require.False(t, dup)
	require.Equal(t, jobs.KindCompaction, job.Kind)
	require.Equal(t, "metrics", job.Dataset)
	require.Equal(t, jobs.TriggerManual, job.Trigger)

	done := b.waitState(t, job.ID, "completed")
	require.Equal(t, 1, done.Attempt)
	require.NotNil(t, done.FinishedAt)
	require.Empty(t, done.Errors)
	require.Equal(t, jobs.OutcomeSuccess, done.Outcome)
	var out struct {
		Outcome string         `json:"outcome"`
		Trigger string         `json:"trigger"`
		Summary map[string]any `json:"summary"`
	}
	require.NoError(t, json.Unmarshal(done.Output, &out))
	require.Equal(t, jobs.OutcomeSuccess, out.Outcome)
	require.Equal(t, jobs.TriggerManual, out.Trigger)
	require.EqualValues(t, 3, out.Summary["merged"])

	// The task saw the job's identity.
	runs := b.task.runsOf("metrics")
	require.Len(t, runs, 1)
	require.Equal(t, job.ID, runs[0].job.ID)
	require.Equal(t, "job:"+itoa(job.ID), runs[0].job.Actor)
	require.Equal(t, b.ds.ID, runs[0].job.DatasetID)
	require.Equal(t, 1, runs[0].job.Attempt)

	// The trigger is audited with the job id.
	entries, err := b.store.ListAudit(b.ctx, catalog.AuditFilter{Action: jobs.ActionTrigger})
	require.NoError(t, err)
	require.Len(t, entries, 1)
	require.Equal(t, "alice", entries[0].Actor)
	require.Equal(t, "metrics", entries[0].Dataset)
	require.EqualValues(t, job.ID, entries[0].Details["job_id"])
	require.Equal(t, false, entries[0].Details["duplicate"])

	// Logs carry job id, kind and dataset, the task's own lines too.
	for _, msg := range []string{"fake task running", "job finished"} {
		line := b.logs.lineWith(msg)
		require.NotEmpty(t, line, "no log line %q in:\n%s", msg, b.logs.String())
		require.Contains(t, line, `"job_id":`+itoa(job.ID))
		require.Contains(t, line, `"kind":"compaction"`)
		require.Contains(t, line, `"dataset":"metrics"`)
	}

	// Metrics.
	require.InDelta(t, 1, metricValue(t, b.reg, "timestore_job_runs_total", "kind", "compaction", "outcome", "success"), 0)
	n, err := testutil.GatherAndCount(b.reg, "timestore_job_last_success_timestamp_seconds", "timestore_job_duration_seconds")
	require.NoError(t, err)
	require.GreaterOrEqual(t, n, 2)

	// Lifecycle shows the run.
	st, err := b.svc.Lifecycle(b.ctx, "metrics")
	require.NoError(t, err)
	c := kindStatus(t, st, jobs.KindCompaction)
	require.True(t, c.Available)
	require.False(t, c.Enabled, "no compaction section in the policy")
	require.Equal(t, jobs.OutcomeSuccess, c.LastStatus)
	require.Equal(t, &job.ID, c.LastJobID)
	require.NotNil(t, c.LastRun)
	require.Zero(t, c.Backlog)
	r := kindStatus(t, st, jobs.KindRetention)
	require.False(t, r.Available)
	require.Nil(t, r.LastRun)

	// JSON shape of the API.
	raw, err := json.Marshal(done)
	require.NoError(t, err)
	var shape map[string]any
	require.NoError(t, json.Unmarshal(raw, &shape))
	for _, k := range []string{"id", "kind", "dataset", "state", "attempt", "max_attempts", "errors", "created_at", "scheduled_at", "finished_at", "output", "trigger"} {
		require.Contains(t, shape, k)
	}
}

func TestTriggerTwiceWhilePendingMakesOneJob(t *testing.T) {
	b := setup(t, setupOpts{}) // insert-only: jobs stay pending
	other := b.createDataset(t, "other", b.ds.Policy)

	first, dup, err := b.svc.Trigger(b.ctx, jobs.KindCompaction, "metrics", "alice")
	require.NoError(t, err)
	require.False(t, dup)
	require.Equal(t, "available", first.State)
	second, dup, err := b.svc.Trigger(b.ctx, jobs.KindCompaction, "metrics", "bob")
	require.NoError(t, err)
	require.True(t, dup)
	require.Equal(t, first.ID, second.ID)
	third, dup, err := b.svc.Trigger(b.ctx, jobs.KindCompaction, other.Name, "bob")
	require.NoError(t, err)
	require.False(t, dup, "another dataset gets a job of its own")
	require.NotEqual(t, first.ID, third.ID)

	list, err := b.svc.List(b.ctx, jobs.JobFilter{Dataset: "metrics"})
	require.NoError(t, err)
	require.Len(t, list, 1)
	require.Equal(t, first.ID, list[0].ID)
	list, err = b.svc.List(b.ctx, jobs.JobFilter{Kind: jobs.KindCompaction, State: "available"})
	require.NoError(t, err)
	require.Equal(t, []int64{third.ID, first.ID}, ids(list), "newest first")
	list, err = b.svc.List(b.ctx, jobs.JobFilter{Kind: jobs.KindReconcile})
	require.NoError(t, err)
	require.Empty(t, list)
	list, err = b.svc.List(b.ctx, jobs.JobFilter{Limit: 1})
	require.NoError(t, err)
	require.Len(t, list, 1)

	entries, err := b.store.ListAudit(b.ctx, catalog.AuditFilter{Dataset: "metrics", Action: jobs.ActionTrigger})
	require.NoError(t, err)
	require.Len(t, entries, 2, "every trigger is audited, duplicates too")
	require.Equal(t, true, entries[0].Details["duplicate"])

	// Backlog: the lifecycle status and the scrape-time gauge.
	st, err := b.svc.Lifecycle(b.ctx, "metrics")
	require.NoError(t, err)
	require.Equal(t, 1, kindStatus(t, st, jobs.KindCompaction).Backlog)
	require.NoError(t, testutil.GatherAndCompare(b.reg, strings.NewReader(`
# HELP timestore_job_backlog Lifecycle jobs not finished (available, pending, retryable, running or scheduled), by kind and dataset; read from River's table at scrape time.
# TYPE timestore_job_backlog gauge
timestore_job_backlog{dataset="metrics",kind="compaction"} 1
timestore_job_backlog{dataset="other",kind="compaction"} 1
`), "timestore_job_backlog"))

	// A cancelled job no longer blocks a new one; retrying it then would
	// make two, which is refused.
	_, err = b.svc.Cancel(b.ctx, first.ID, "alice")
	require.NoError(t, err)
	fresh, dup, err := b.svc.Trigger(b.ctx, jobs.KindCompaction, "metrics", "alice")
	require.NoError(t, err)
	require.False(t, dup)
	require.NotEqual(t, first.ID, fresh.ID)
	_, err = b.svc.Retry(b.ctx, first.ID, "alice")
	require.ErrorIs(t, err, jobs.ErrState)
	require.Contains(t, err.Error(), `another compaction job of dataset "metrics"`)
}

func TestTriggerAndDryRunErrors(t *testing.T) {
	b := setup(t, setupOpts{})

	_, _, err := b.svc.Trigger(b.ctx, "vacuum", "metrics", "alice")
	require.ErrorIs(t, err, jobs.ErrUnknownKind)
	_, _, err = b.svc.Trigger(b.ctx, jobs.KindRetention, "metrics", "alice")
	require.ErrorIs(t, err, jobs.ErrUnsupported)
	require.EqualError(t, err, "retention is not available in this build")
	_, _, err = b.svc.Trigger(b.ctx, jobs.KindCompaction, "nope", "alice")
	require.ErrorIs(t, err, jobs.ErrNotFound)
	_, err = b.svc.DryRun(b.ctx, jobs.KindExport, "metrics")
	require.ErrorIs(t, err, jobs.ErrUnsupported)
	_, err = b.svc.DryRun(b.ctx, jobs.KindCompaction, "nope")
	require.ErrorIs(t, err, jobs.ErrNotFound)
	_, err = b.svc.List(b.ctx, jobs.JobFilter{State: "stuck"})
	require.ErrorIs(t, err, jobs.ErrInvalid)
	_, err = b.svc.List(b.ctx, jobs.JobFilter{Kind: "vacuum"})
	require.ErrorIs(t, err, jobs.ErrUnknownKind)
	_, err = b.svc.Get(b.ctx, 987654)
	require.ErrorIs(t, err, jobs.ErrNotFound)
	_, err = b.svc.Lifecycle(b.ctx, "nope")
	require.ErrorIs(t, err, jobs.ErrNotFound)

	plan, err := b.svc.DryRun(b.ctx, jobs.KindCompaction, "metrics")
	require.NoError(t, err)
	require.Equal(t, map[string]any{"dataset": "metrics", "would_merge": 3}, plan)
	list, err := b.svc.List(b.ctx, jobs.JobFilter{})
	require.NoError(t, err)
	require.Empty(t, list, "a dry run enqueues nothing")
	require.Empty(t, b.task.runsOf("metrics"))
}

func TestFailingJobIsDiscardedAndRetryRunsItAgain(t *testing.T) {
	b := setup(t, setupOpts{workers: true, options: func(o *jobs.Options) { o.MaxAttempts = 2 }})
	b.task.setErr(errors.New("disk on fire"))

	job, _, err := b.svc.Trigger(b.ctx, jobs.KindCompaction, "metrics", "alice")
	require.NoError(t, err)
	require.Equal(t, 2, job.MaxAttempts)
	failed := b.waitState(t, job.ID, "discarded")
	require.Equal(t, 2, failed.Attempt)
	require.Len(t, failed.Errors, 2)
	for i, e := range failed.Errors {
		require.Equal(t, i+1, e.Attempt)
		require.Contains(t, e.Error, "disk on fire")
		require.False(t, e.At.IsZero())
	}
	require.Equal(t, jobs.OutcomeError, failed.Outcome)
	require.InDelta(t, 2, metricValue(t, b.reg, "timestore_job_runs_total", "kind", "compaction", "outcome", "error"), 0)
	require.NotEmpty(t, b.logs.lineWith("job failed on its last attempt", `"job_id":`+itoa(job.ID)))

	st, err := b.svc.Lifecycle(b.ctx, "metrics")
	require.NoError(t, err)
	c := kindStatus(t, st, jobs.KindCompaction)
	require.Equal(t, "discarded", c.LastStatus)
	require.Contains(t, c.LastError, "disk on fire")

	// The fault is gone; a retry runs the job again.
	b.task.setErr(nil)
	retried, err := b.svc.Retry(b.ctx, job.ID, "bob")
	require.NoError(t, err)
	require.Equal(t, "available", retried.State)
	done := b.waitState(t, job.ID, "completed")
	require.Equal(t, 3, done.Attempt)
	require.Equal(t, jobs.OutcomeSuccess, done.Outcome)
	require.Len(t, done.Errors, 2, "the failed attempts stay visible")
	require.Len(t, b.task.runsOf("metrics"), 3)

	entries, err := b.store.ListAudit(b.ctx, catalog.AuditFilter{Action: jobs.ActionRetry})
	require.NoError(t, err)
	require.Len(t, entries, 1)
	require.Equal(t, "bob", entries[0].Actor)
	require.Equal(t, "metrics", entries[0].Dataset)
	require.Equal(t, "discarded", entries[0].Details["previous_state"])

	st, err = b.svc.Lifecycle(b.ctx, "metrics")
	require.NoError(t, err)
	c = kindStatus(t, st, jobs.KindCompaction)
	require.Equal(t, jobs.OutcomeSuccess, c.LastStatus)
	require.Empty(t, c.LastError)

	// A completed job cannot be cancelled.
	_, err = b.svc.Cancel(b.ctx, job.ID, "bob")
	require.ErrorIs(t, err, jobs.ErrState)
}

func TestCancelScheduledJobNeverRuns(t *testing.T) {
	b := setup(t, setupOpts{workers: true})
	other := b.createDataset(t, "other", b.ds.Policy)

	res, err := b.svc.Client().Insert(b.ctx,
		jobs.CompactionArgs{DatasetArgs: jobs.DatasetArgs{Dataset: "metrics", DatasetID: b.ds.ID, Trigger: jobs.TriggerManual}},
		&river.InsertOpts{Queue: jobs.QueueMaintenance, ScheduledAt: time.Now().Add(time.Hour)})
	require.NoError(t, err)
	job, err := b.svc.Get(b.ctx, res.Job.ID)
	require.NoError(t, err)
	require.Equal(t, "scheduled", job.State)

	cancelled, err := b.svc.Cancel(b.ctx, job.ID, "alice")
	require.NoError(t, err)
	require.Equal(t, "cancelled", cancelled.State)
	require.NotNil(t, cancelled.FinishedAt)
	again, err := b.svc.Cancel(b.ctx, job.ID, "alice")
	require.NoError(t, err, "cancelling a cancelled job is a no-op")
	require.Equal(t, "cancelled", again.State)

	entries, err := b.store.ListAudit(b.ctx, catalog.AuditFilter{Action: jobs.ActionCancel})
	require.NoError(t, err)
	require.Len(t, entries, 1)
	require.Equal(t, "alice", entries[0].Actor)
	require.Equal(t, "scheduled", entries[0].Details["previous_state"])

	// Workers are busy with other jobs meanwhile; the cancelled one stays put.
	next, _, err := b.svc.Trigger(b.ctx, jobs.KindCompaction, other.Name, "alice")
	require.NoError(t, err)
	b.waitState(t, next.ID, "completed")
	require.Empty(t, b.task.runsOf("metrics"))
	final, err := b.svc.Get(b.ctx, job.ID)
	require.NoError(t, err)
	require.Equal(t, "cancelled", final.State)
	require.Zero(t, final.Attempt)
	st, err := b.svc.Lifecycle(b.ctx, "metrics")
	require.NoError(t, err)
	require.Equal(t, "cancelled", kindStatus(t, st, jobs.KindCompaction).LastStatus)
}

func TestHaltCancelsJobAndCountsViolation(t *testing.T) {
	b := setup(t, setupOpts{workers: true})
	b.task.setErr(jobs.Halt(errors.New("output rows 9 != input rows 10")))

	job, _, err := b.svc.Trigger(b.ctx, jobs.KindCompaction, "metrics", "alice")
	require.NoError(t, err)
	halted := b.waitState(t, job.ID, "cancelled")
	require.Equal(t, 1, halted.Attempt, "a halted job is not retried")
	require.Equal(t, jobs.OutcomeCancelled, halted.Outcome)
	require.Len(t, halted.Errors, 1)
	require.Contains(t, halted.Errors[0].Error, "invariant violation: output rows 9 != input rows 10")

	require.NoError(t, testutil.GatherAndCompare(b.reg, strings.NewReader(`
# HELP timestore_job_invariant_violations_total Lifecycle jobs halted on an invariant violation (cancelled, not retried), by kind.
# TYPE timestore_job_invariant_violations_total counter
timestore_job_invariant_violations_total{kind="compaction"} 1
timestore_job_invariant_violations_total{kind="scheduler"} 0
`), "timestore_job_invariant_violations_total"))
	require.InDelta(t, 1, metricValue(t, b.reg, "timestore_job_runs_total", "kind", "compaction", "outcome", "cancelled"), 0)
	line := b.logs.lineWith("invariant violation", `"level":"ERROR"`)
	require.Contains(t, line, `"job_id":`+itoa(job.ID))
}

func TestConflictCompletesJob(t *testing.T) {
	b := setup(t, setupOpts{workers: true})
	b.task.setErr(fmt.Errorf("commit compaction: %w: partition 7 is no longer live", catalog.ErrConflict))

	job, _, err := b.svc.Trigger(b.ctx, jobs.KindCompaction, "metrics", "alice")
	require.NoError(t, err)
	done := b.waitState(t, job.ID, "completed")
	require.Equal(t, jobs.OutcomeConflict, done.Outcome)
	require.Contains(t, string(done.Output), "partition 7 is no longer live")
	require.InDelta(t, 1, metricValue(t, b.reg, "timestore_job_runs_total", "kind", "compaction", "outcome", "conflict"), 0)

	// A job whose dataset was deleted meanwhile completes as a conflict too.
	require.NoError(t, b.store.DeleteDataset(b.ctx, "metrics", "test"))
	b.task.setErr(nil)
	res, err := b.svc.Client().Insert(b.ctx,
		jobs.CompactionArgs{DatasetArgs: jobs.DatasetArgs{Dataset: "metrics", DatasetID: b.ds.ID}},
		&river.InsertOpts{Queue: jobs.QueueMaintenance})
	require.NoError(t, err)
	gone := b.waitState(t, res.Job.ID, "completed")
	require.Equal(t, jobs.OutcomeConflict, gone.Outcome)
	require.Contains(t, string(gone.Output), "no longer exists")
	require.Len(t, b.task.runsOf("metrics"), 1)
}

func TestEnqueueTxFollowsTheManifestTransaction(t *testing.T) {
	b := setup(t, setupOpts{})
	file := catalog.PartitionFile{
		WindowStart: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC),
		TimeMin:     time.Date(2025, 1, 1, 1, 0, 0, 0, time.UTC),
		TimeMax:     time.Date(2025, 1, 1, 2, 0, 0, 0, time.UTC),
		RowCount:    1, SizeBytes: 1, Target: "local", Checksum: "sha256:00",
	}

	// Rolled back: no job.
	file.Key = "metrics/2025-01-01/a.parquet"
	_, err := b.store.Commit(b.ctx, catalog.Change{
		Dataset: "metrics", Operation: catalog.OpIngest, Actor: "test", Add: []catalog.PartitionFile{file},
		InTx: func(ctx context.Context, tx catalog.Tx, _ int64, _ []catalog.Partition) error {
			if err := b.svc.EnqueueTx(ctx, tx, jobs.KindCompaction, "metrics", b.ds.ID, jobs.TriggerFollowup); err != nil {
				return err
			}
			return errors.New("changed my mind")
		},
	})
	require.Error(t, err)
	list, err := b.svc.List(b.ctx, jobs.JobFilter{})
	require.NoError(t, err)
	require.Empty(t, list)

	// Committed: one job, and a second follow-up finds it.
	for range 2 {
		file.Key = "metrics/2025-01-01/" + fmt.Sprint(time.Now().UnixNano()) + ".parquet"
		_, err = b.store.Commit(b.ctx, catalog.Change{
			Dataset: "metrics", Operation: catalog.OpIngest, Actor: "test", Add: []catalog.PartitionFile{file},
			InTx: func(ctx context.Context, tx catalog.Tx, _ int64, _ []catalog.Partition) error {
				return b.svc.EnqueueTx(ctx, tx, jobs.KindCompaction, "metrics", b.ds.ID, jobs.TriggerFollowup)
			},
		})
		require.NoError(t, err)
	}
	list, err = b.svc.List(b.ctx, jobs.JobFilter{})
	require.NoError(t, err)
	require.Len(t, list, 1)
	require.Equal(t, jobs.TriggerFollowup, list[0].Trigger)
}

func TestMigrateIsIdempotentAndConcurrencySafe(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	store, err := catalog.Open(ctx, pgtest.NewDatabaseURL(t))
	require.NoError(t, err)
	t.Cleanup(store.Close)

	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Go(func() { errs[i] = jobs.Migrate(ctx, store.Pool()) })
	}
	wg.Wait()
	for _, err := range errs {
		require.NoError(t, err)
	}
	require.NoError(t, jobs.Migrate(ctx, store.Pool()))
	var n int
	require.NoError(t, store.Pool().QueryRow(ctx, `SELECT count(*) FROM river_job`).Scan(&n))
	require.Zero(t, n)
}

func TestOptionsValidate(t *testing.T) {
	t.Parallel()
	store := &catalog.Store{}
	for _, tc := range []struct {
		name string
		opts jobs.Options
		want string
	}{
		{"no store", jobs.Options{}, "Store is required"},
		{"timeout not below rescue", jobs.Options{Store: store, JobTimeout: 5 * time.Minute, RescueAfter: 5 * time.Minute}, "must be shorter than RescueAfter"},
		{"default timeout above rescue", jobs.Options{Store: store, RescueAfter: time.Minute}, "must be shorter than RescueAfter"},
		{"two tasks of a kind", jobs.Options{Store: store, Tasks: []jobs.Task{newFakeTask("export"), newFakeTask("export")}}, "two tasks for kind export"},
		{"task of an unknown kind", jobs.Options{Store: store, Tasks: []jobs.Task{newFakeTask("vacuum")}}, "unknown job kind"},
		{"bad reconcile schedule", jobs.Options{Store: store, ReconcileSchedule: "sometimes"}, "ReconcileSchedule"},
		{"scheduler too often", jobs.Options{Store: store, SchedulerInterval: time.Millisecond}, "SchedulerInterval"},
		{"workers", jobs.Options{Store: store, MaxWorkers: -1}, "MaxWorkers"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.ErrorContains(t, tc.opts.Validate(), tc.want)
		})
	}
	require.NoError(t, jobs.Options{Store: store, ReconcileSchedule: jobs.ReconcileScheduleOff}.Validate())
}

func ids(list []jobs.JobInfo) []int64 {
	out := make([]int64, len(list))
	for i, j := range list {
		out[i] = j.ID
	}
	return out
}

func kindStatus(t *testing.T, st jobs.LifecycleStatus, kind string) jobs.KindStatus {
	t.Helper()
	for _, k := range st.Kinds {
		if k.Kind == kind {
			return k
		}
	}
	t.Fatalf("no kind %s in %+v", kind, st)
	return jobs.KindStatus{}
}
