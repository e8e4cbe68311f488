package jobs_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/riverqueue/river"
	"github.com/stretchr/testify/require"

	"timestore/internal/catalog"
	"timestore/internal/jobs"
	"timestore/internal/policy"
	"timestore/internal/testutil/pgtest"
)

func compactionEvery(spec string) policy.Policy {
	return policy.Policy{Compaction: &policy.Compaction{Schedule: spec}}
}

func TestScheduleTickEnqueuesWhenDueAndNotBefore(t *testing.T) {
	b := setup(t, setupOpts{policy: compactionEvery("@every 10m")})
	t0 := b.clock.Now()

	// First sight of the schedule: next run is one period away.
	n, err := b.svc.ScheduleTick(b.ctx)
	require.NoError(t, err)
	require.Zero(t, n)
	st, err := b.svc.Lifecycle(b.ctx, "metrics")
	require.NoError(t, err)
	c := kindStatus(t, st, jobs.KindCompaction)
	require.True(t, c.Enabled)
	require.Equal(t, "@every 10m", c.Schedule)
	require.NotNil(t, c.NextRun)
	require.True(t, c.NextRun.Equal(t0.Add(10*time.Minute)), "next run %s", c.NextRun)

	b.clock.Set(t0.Add(10*time.Minute - time.Second))
	n, err = b.svc.ScheduleTick(b.ctx)
	require.NoError(t, err)
	require.Zero(t, n, "not due yet")
	list, err := b.svc.List(b.ctx, jobs.JobFilter{})
	require.NoError(t, err)
	require.Empty(t, list)

	b.clock.Set(t0.Add(10 * time.Minute))
	n, err = b.svc.ScheduleTick(b.ctx)
	require.NoError(t, err)
	require.Equal(t, 1, n, "due")
	list, err = b.svc.List(b.ctx, jobs.JobFilter{})
	require.NoError(t, err)
	require.Len(t, list, 1)
	require.Equal(t, jobs.KindCompaction, list[0].Kind)
	require.Equal(t, jobs.TriggerSchedule, list[0].Trigger)
	require.Equal(t, "metrics", list[0].Dataset)
	require.InDelta(t, 1, metricValue(t, b.reg, "timestore_scheduler_enqueued_total", "kind", "compaction"), 0)

	// The same tick again enqueues nothing: next run moved on.
	n, err = b.svc.ScheduleTick(b.ctx)
	require.NoError(t, err)
	require.Zero(t, n)
	states, err := b.store.ScheduleStates(b.ctx, b.ds.ID)
	require.NoError(t, err)
	require.Len(t, states, 1)
	require.True(t, states[0].NextRunAt.Equal(t0.Add(20*time.Minute)))
	require.Equal(t, &list[0].ID, states[0].LastJobID)
	require.NotNil(t, states[0].LastEnqueuedAt)

	// Due again while the first job still waits: no second job.
	b.clock.Set(t0.Add(20 * time.Minute))
	n, err = b.svc.ScheduleTick(b.ctx)
	require.NoError(t, err)
	require.Zero(t, n, "a pending job of the kind absorbs the run")
	list, err = b.svc.List(b.ctx, jobs.JobFilter{})
	require.NoError(t, err)
	require.Len(t, list, 1)
	states, err = b.store.ScheduleStates(b.ctx, b.ds.ID)
	require.NoError(t, err)
	require.True(t, states[0].NextRunAt.Equal(t0.Add(30*time.Minute)))
}

func TestScheduleTickFollowsPolicyChanges(t *testing.T) {
	b := setup(t, setupOpts{policy: compactionEvery("@every 1h")})
	t0 := b.clock.Now()
	n, err := b.svc.ScheduleTick(b.ctx)
	require.NoError(t, err)
	require.Zero(t, n)

	// A shorter schedule takes effect on the next tick, without a restart.
	_, err = b.store.UpdatePolicy(b.ctx, "metrics", compactionEvery("@every 10m"), "test")
	require.NoError(t, err)
	b.clock.Set(t0.Add(time.Minute))
	n, err = b.svc.ScheduleTick(b.ctx)
	require.NoError(t, err)
	require.Zero(t, n)
	st, err := b.svc.Lifecycle(b.ctx, "metrics")
	require.NoError(t, err)
	c := kindStatus(t, st, jobs.KindCompaction)
	require.Equal(t, "@every 10m", c.Schedule)
	require.True(t, c.NextRun.Equal(t0.Add(11*time.Minute)), "next run %s", c.NextRun)

	b.clock.Set(t0.Add(11 * time.Minute))
	n, err = b.svc.ScheduleTick(b.ctx)
	require.NoError(t, err)
	require.Equal(t, 1, n, "due under the new schedule, long before the old one")

	// Disabling compaction removes the schedule.
	disabled := false
	_, err = b.store.UpdatePolicy(b.ctx, "metrics", policy.Policy{Compaction: &policy.Compaction{Enabled: &disabled}}, "test")
	require.NoError(t, err)
	b.clock.Set(t0.Add(time.Hour))
	n, err = b.svc.ScheduleTick(b.ctx)
	require.NoError(t, err)
	require.Zero(t, n)
	states, err := b.store.ScheduleStates(b.ctx, b.ds.ID)
	require.NoError(t, err)
	require.Empty(t, states)
	st, err = b.svc.Lifecycle(b.ctx, "metrics")
	require.NoError(t, err)
	c = kindStatus(t, st, jobs.KindCompaction)
	require.False(t, c.Enabled)
	require.Nil(t, c.NextRun)
	require.Equal(t, 1, c.Backlog, "the job enqueued before stays")

	// A deleted dataset's state goes too.
	other := b.createDataset(t, "other", compactionEvery("@every 10m"))
	_, err = b.svc.ScheduleTick(b.ctx)
	require.NoError(t, err)
	states, err = b.store.ScheduleStates(b.ctx, other.ID)
	require.NoError(t, err)
	require.Len(t, states, 1)
	require.NoError(t, b.store.DeleteDataset(b.ctx, "other", "test"))
	_, err = b.svc.ScheduleTick(b.ctx)
	require.NoError(t, err)
	states, err = b.store.ScheduleStates(b.ctx, other.ID)
	require.NoError(t, err)
	require.Empty(t, states)
}

func TestScheduleTickSchedulesReconcileForEveryDataset(t *testing.T) {
	b := setup(t, setupOpts{options: func(o *jobs.Options) {
		o.Tasks = []jobs.Task{newFakeTask(jobs.KindCompaction), newFakeTask(jobs.KindReconcile)}
		o.ReconcileSchedule = "@every 1h"
	}})
	t0 := b.clock.Now()
	_, err := b.svc.ScheduleTick(b.ctx)
	require.NoError(t, err)
	b.clock.Set(t0.Add(time.Hour))
	n, err := b.svc.ScheduleTick(b.ctx)
	require.NoError(t, err)
	require.Equal(t, 1, n, "reconcile only: the policy has no compaction section")
	list, err := b.svc.List(b.ctx, jobs.JobFilter{})
	require.NoError(t, err)
	require.Len(t, list, 1)
	require.Equal(t, jobs.KindReconcile, list[0].Kind)
}

// Two processes on one database tick at the same moment: every due job is
// enqueued exactly once.
func TestConcurrentScheduleTicksEnqueueOnce(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	dbURL := pgtest.NewDatabaseURL(t)
	open := func() *catalog.Store {
		st, err := catalog.Open(ctx, dbURL)
		require.NoError(t, err)
		t.Cleanup(st.Close)
		return st
	}
	storeA, storeB := open(), open()
	require.NoError(t, jobs.Migrate(ctx, storeA.Pool()))
	clock := newFakeClock()
	task := newFakeTask(jobs.KindCompaction)
	logs := &syncBuffer{}
	nodeA, _ := newService(t, storeA, task, clock, logs, false, nil)
	nodeB, _ := newService(t, storeB, task, clock, logs, false, nil)

	const datasets = 12
	b := &bundle{ctx: ctx, store: storeA}
	for i := range datasets {
		b.createDataset(t, fmt.Sprintf("ds%02d", i), compactionEvery("@every 10m"))
	}
	t0 := clock.Now()

	tickBoth := func() int {
		var wg sync.WaitGroup
		counts := make([]int, 2)
		for i, node := range []*jobs.Service{nodeA, nodeB} {
			wg.Go(func() {
				n, err := node.ScheduleTick(ctx)
				require.NoError(t, err)
				counts[i] = n
			})
		}
		wg.Wait()
		return counts[0] + counts[1]
	}
	require.Zero(t, tickBoth(), "first sight: nothing due")
	clock.Set(t0.Add(10 * time.Minute))
	require.Equal(t, datasets, tickBoth())

	list, err := nodeA.List(ctx, jobs.JobFilter{Limit: 1000})
	require.NoError(t, err)
	require.Len(t, list, datasets)
	seen := map[string]bool{}
	for _, j := range list {
		require.False(t, seen[j.Dataset], "two jobs for %s", j.Dataset)
		seen[j.Dataset] = true
	}
	require.Zero(t, tickBoth(), "nothing due after the run")
}

// The scheduler runs as River's periodic job on a started Service and its
// jobs are worked.
func TestPeriodicSchedulerEnqueuesAndRunsDueJobs(t *testing.T) {
	b := setup(t, setupOpts{
		workers: true,
		policy:  compactionEvery("@every 1s"),
		options: func(o *jobs.Options) {
			o.Now = time.Now
			o.SchedulerInterval = time.Second
		},
	})
	deadline := time.Now().Add(waitTimeout)
	for {
		list, err := b.svc.List(b.ctx, jobs.JobFilter{Kind: jobs.KindCompaction, State: "completed"})
		require.NoError(t, err)
		if len(list) > 0 {
			require.Equal(t, jobs.TriggerSchedule, list[0].Trigger)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no scheduled compaction completed within %s", waitTimeout)
		}
		select {
		case <-time.After(50 * time.Millisecond):
		case <-b.ctx.Done():
			t.Fatal(b.ctx.Err())
		}
	}
	sched, err := b.svc.List(b.ctx, jobs.JobFilter{Kind: jobs.KindScheduler})
	require.NoError(t, err)
	require.NotEmpty(t, sched)
	all, err := b.svc.List(b.ctx, jobs.JobFilter{})
	require.NoError(t, err)
	for _, j := range all {
		require.NotEqual(t, jobs.KindScheduler, j.Kind, "scheduler jobs are listed only on request")
	}
	require.GreaterOrEqual(t, metricValue(t, b.reg, "timestore_job_runs_total", "kind", "scheduler", "outcome", "success"), 1.0)
}

// Finished scheduler jobs older than the retention are deleted; recent ones,
// unfinished ones and lifecycle jobs of any age are kept.
func TestPruneSchedulerJobs(t *testing.T) {
	b := setup(t, setupOpts{})
	client := b.svc.Client()
	insert := func(args river.JobArgs) int64 {
		res, err := client.Insert(b.ctx, args, nil)
		require.NoError(t, err)
		return res.Job.ID
	}
	finish := func(id int64, ago time.Duration) {
		_, err := b.store.Pool().Exec(b.ctx, `UPDATE river_job SET state = 'completed', finalized_at = now() - make_interval(secs => $2) WHERE id = $1`,
			id, ago.Seconds())
		require.NoError(t, err)
	}
	oldDone, recentDone, waiting := insert(jobs.SchedulerArgs{}), insert(jobs.SchedulerArgs{}), insert(jobs.SchedulerArgs{})
	finish(oldDone, 2*time.Hour)
	finish(recentDone, time.Minute)
	oldLifecycle := insert(jobs.CompactionArgs{DatasetArgs: jobs.DatasetArgs{Dataset: "metrics", DatasetID: b.ds.ID}})
	finish(oldLifecycle, 2*time.Hour)

	n, err := b.svc.PruneSchedulerJobs(b.ctx, time.Hour)
	require.NoError(t, err)
	require.Equal(t, 1, n)
	var left []int64
	rows, err := b.store.Pool().Query(b.ctx, `SELECT id FROM river_job ORDER BY id`)
	require.NoError(t, err)
	for rows.Next() {
		var id int64
		require.NoError(t, rows.Scan(&id))
		left = append(left, id)
	}
	require.NoError(t, rows.Err())
	require.Equal(t, []int64{recentDone, waiting, oldLifecycle}, left)
}
