package retention_test

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"timestore/internal/catalog"
	"timestore/internal/faultpoint"
	"timestore/internal/policy"
	"timestore/internal/query"
	"timestore/internal/retention"
	"timestore/internal/storage"
)

func TestApplyAndSweep(t *testing.T) {
	t.Parallel()
	bothTargets(t, func(t *testing.T, remote bool) {
		b := setup(t, remote, time.Hour)
		b.ingestDays(t, 5, 50)
		v0 := b.version(t)
		old := b.days[:2]

		res := b.apply(t, "alice")
		require.Equal(t, v0+1, res.Version)
		require.Equal(t, []int64{old[0].ID, old[1].ID}, res.Plan.IDs())
		require.Equal(t, int64(2), res.Removed.Partitions)
		require.Equal(t, old[0].SizeBytes+old[1].SizeBytes, res.Removed.Bytes)
		require.Equal(t, []int64{v0 + 1}, b.sweepVersions, "the sweep is enqueued in the change's transaction")
		require.Equal(t, b.want(2, 3, 4), b.ns(t))

		// One audit row per removed partition: who, which rule, how many bytes.
		removed := b.audit(t, retention.ActionRemove)
		require.Len(t, removed, 2)
		slices.Reverse(removed)
		for i, e := range removed {
			require.Equal(t, "alice", e.Actor)
			require.Equal(t, "cpu", e.Dataset)
			require.Equal(t, []int64{old[i].ID}, e.Partitions)
			require.Equal(t, old[i].SizeBytes, e.Bytes)
			require.Equal(t, retention.RuleMaxAge, e.Reason)
			require.Equal(t, retention.RuleMaxAge, e.Details["rule"])
			require.EqualValues(t, old[i].RowCount, e.Details["rows"])
		}
		change := b.audit(t, catalog.ActionPartitionPrefix+catalog.OpRetention)
		require.Len(t, change, 1)
		require.ElementsMatch(t, []int64{old[0].ID, old[1].ID}, change[0].Partitions)

		// Within the grace period the sweeper keeps them.
		b.sweepClock(0)
		sw := b.sweep(t, "job:7")
		require.Equal(t, 0, sw.Purged)
		require.Equal(t, 2, sw.KeptByGrace)
		require.True(t, sw.KeptBack())
		require.InDelta(t, time.Hour.Seconds(), sw.NextSweepIn.Seconds(), 60)
		for _, p := range old {
			require.True(t, b.exists(t, p))
			require.Equal(t, catalog.StateRemoved, b.partition(t, p.ID).State())
		}

		// After it, they are purged and their objects deleted.
		b.sweepClock(2 * time.Hour)
		sw = b.sweep(t, "job:8")
		require.Equal(t, 2, sw.Purged)
		require.Equal(t, old[0].SizeBytes+old[1].SizeBytes, sw.PurgedBytes)
		require.Equal(t, 2, sw.ObjectsDeleted)
		require.Equal(t, 0, sw.AlreadyGone)
		require.False(t, sw.KeptBack())
		for _, p := range old {
			require.False(t, b.exists(t, p))
			require.Equal(t, catalog.StatePurged, b.partition(t, p.ID).State())
		}
		for _, p := range b.days[2:] {
			require.True(t, b.exists(t, p))
		}
		purged := b.audit(t, catalog.ActionRetentionPurge)
		require.Len(t, purged, 2)
		for _, e := range purged {
			require.Equal(t, "job:8", e.Actor)
			require.Len(t, e.Partitions, 1)
			p := b.partition(t, e.Partitions[0])
			require.Equal(t, p.SizeBytes, e.Bytes)
			require.Equal(t, p.Key, e.Details["key"])
		}
		require.Equal(t, b.want(2, 3, 4), b.ns(t))

		// A second sweep finds nothing to do and changes nothing.
		audits := b.auditCount(t)
		sw = b.sweep(t, "job:9")
		require.Equal(t, 0, sw.Purged+sw.ObjectsDeleted+sw.KeptByGrace+sw.KeptByLease)
		require.Equal(t, audits, b.auditCount(t))

		// Metrics.
		require.Equal(t, 2.0, b.metric(t, "timestore_retention_removed_partitions_total"))
		require.Equal(t, float64(res.Removed.Bytes), b.metric(t, "timestore_retention_removed_bytes_total"))
		require.Equal(t, 2.0, b.metric(t, "timestore_sweep_purged_partitions_total"))
		require.Equal(t, float64(res.Removed.Bytes), b.metric(t, "timestore_sweep_purged_bytes_total"))

		// A third retention run has nothing to remove.
		res = b.apply(t, "alice")
		require.Zero(t, res.Version)
		require.Empty(t, res.Plan.Selected)
		require.False(t, res.SweepEnqueued)
	})
}

func TestDryRunChangesNothing(t *testing.T) {
	t.Parallel()
	bothTargets(t, func(t *testing.T, remote bool) {
		b := setup(t, remote, 0)
		b.ingestDays(t, 4, 20)
		v, objs, audits := b.version(t), b.objects(t), b.auditCount(t)

		plan, err := b.svc.RetentionTask().Plan(b.ctx, b.ds.Name)
		require.NoError(t, err)
		p := plan.(retention.Plan)
		require.Equal(t, []int64{b.days[0].ID, b.days[1].ID}, p.IDs())
		require.Equal(t, v, p.ManifestVersion)
		for _, s := range p.Selected {
			require.Equal(t, retention.RuleMaxAge, s.Rule)
			require.Positive(t, s.Rows)
			require.Positive(t, s.Bytes)
		}
		require.Equal(t, v, b.version(t))
		require.Equal(t, objs, b.objects(t))
		require.Equal(t, audits, b.auditCount(t))

		// The sweep's dry run too, with removed partitions waiting.
		b.apply(t, "test")
		v, objs, audits = b.version(t), b.objects(t), b.auditCount(t)
		b.sweepClock(time.Minute)
		sp, err := b.svc.SweepTask().Plan(b.ctx, b.ds.Name)
		require.NoError(t, err)
		require.Len(t, sp.(retention.SweepPlan).Datasets, 1)
		require.Len(t, sp.(retention.SweepPlan).Datasets[0].Purge, 2)

		require.Equal(t, v, b.version(t))
		require.Equal(t, objs, b.objects(t))
		require.Equal(t, audits, b.auditCount(t))
		removed, err := b.store.Partitions(b.ctx, b.ds.Name, catalog.StateRemoved)
		require.NoError(t, err)
		require.Len(t, removed, 2)
	})
}

// A query that runs while retention removes its partitions and a sweep with
// a grace of 0 runs completes with all its rows; the objects are deleted
// only by a sweep after the query ends.
func TestQueryOutlivesGraceZeroSweep(t *testing.T) {
	t.Parallel()
	bothTargets(t, func(t *testing.T, remote bool) {
		b := setup(t, remote, 0)
		b.ingestDays(t, 4, 200)
		old := b.days[:2]
		v := b.version(t)

		res, err := b.query.Run(b.ctx, query.Request{Dataset: b.ds.Name, SQL: "SELECT n FROM cpu ORDER BY n"})
		require.NoError(t, err)
		defer res.Close()
		require.Equal(t, v, res.Version)
		require.True(t, res.Next())
		got := []int64{res.Values()[0].(int64)}

		b.apply(t, "test")
		require.Equal(t, b.want(2, 3), b.ns(t), "new queries no longer see the removed partitions")
		b.sweepClock(time.Minute)
		sw := b.sweep(t, "test")
		require.Equal(t, 0, sw.Purged)
		require.Equal(t, 2, sw.KeptByLease)
		require.Equal(t, []int64{v}, sw.Datasets[0].PinnedVersions)
		require.Equal(t, retention.LeaseRecheckDefault, sw.NextSweepIn)
		for _, p := range old {
			require.True(t, b.exists(t, p), "an object a running query reads must stay")
		}

		for res.Next() {
			got = append(got, res.Values()[0].(int64))
		}
		require.NoError(t, res.Err())
		require.Equal(t, b.want(0, 1, 2, 3), got)
		for _, p := range old {
			require.True(t, b.exists(t, p), "the lease holds until the result is closed")
		}
		require.NoError(t, res.Close())

		sw = b.sweep(t, "test")
		require.Equal(t, 2, sw.Purged)
		require.Equal(t, 0, sw.KeptByLease)
		for _, p := range old {
			require.False(t, b.exists(t, p))
		}
		require.Equal(t, b.want(2, 3), b.ns(t))
	})
}

func TestRestore(t *testing.T) {
	t.Parallel()
	bothTargets(t, func(t *testing.T, remote bool) {
		b := setup(t, remote, time.Hour)
		b.ingestDays(t, 4, 30)
		old := b.days[:2]
		b.apply(t, "test")
		require.Equal(t, b.want(2, 3), b.ns(t))

		// Within the grace period, restore brings the rows back.
		v := b.version(t)
		rr, err := b.svc.Restore(b.ctx, b.ds.Name, []int64{old[1].ID}, retention.RunOptions{Actor: "bob"})
		require.NoError(t, err)
		require.Equal(t, v+1, rr.Version)
		require.Equal(t, []int64{old[1].ID}, rr.Restored)
		require.Equal(t, old[1].RowCount, rr.Totals.Rows)
		require.Equal(t, []int64{old[1].ID}, rr.RemovedAgainByPolicy, "the policy still selects it")
		require.Equal(t, b.want(1, 2, 3), b.ns(t))
		entries := b.audit(t, catalog.ActionPartitionPrefix+catalog.OpRestore)
		require.Len(t, entries, 1)
		require.Equal(t, "bob", entries[0].Actor)
		require.Equal(t, []int64{old[1].ID}, entries[0].Partitions)
		require.Equal(t, old[1].SizeBytes, entries[0].Bytes)

		// A hold keeps it from being removed again.
		_, err = b.svc.AddHold(b.ctx, b.ds.Name, old[1].WindowStart, old[1].WindowStart.AddDate(0, 0, 1), "legal", "bob")
		require.NoError(t, err)
		require.Empty(t, b.apply(t, "test").Plan.Selected)

		// After the purge, restore is refused with a conflict.
		b.sweepClock(2 * time.Hour)
		require.Equal(t, 1, b.sweep(t, "test").Purged)
		_, err = b.svc.Restore(b.ctx, b.ds.Name, []int64{old[0].ID}, retention.RunOptions{Actor: "bob"})
		require.ErrorIs(t, err, catalog.ErrConflict)
		require.ErrorContains(t, err, "purged")
		require.Equal(t, b.want(1, 2, 3), b.ns(t))

		// Live partitions, unknown ids and no ids are refused too.
		_, err = b.svc.Restore(b.ctx, b.ds.Name, []int64{b.days[3].ID}, retention.RunOptions{})
		require.ErrorIs(t, err, catalog.ErrConflict)
		_, err = b.svc.Restore(b.ctx, b.ds.Name, []int64{1 << 40}, retention.RunOptions{})
		require.ErrorIs(t, err, catalog.ErrConflict)
		_, err = b.svc.Restore(b.ctx, b.ds.Name, nil, retention.RunOptions{})
		require.ErrorIs(t, err, catalog.ErrInvalid)
		_, err = b.svc.Restore(b.ctx, "nope", []int64{1}, retention.RunOptions{})
		require.ErrorIs(t, err, catalog.ErrNotFound)
	})
}

// The inputs of a compaction live on in its output: restoring one would
// duplicate rows, so it is refused; the sweeper purges them like any other
// removed partition.
func TestCompactionInputsAreSweptNotRestored(t *testing.T) {
	t.Parallel()
	b := setup(t, false, 0)
	b.ingestDays(t, 3, 10)
	in := b.days[2]
	_, err := b.store.Commit(b.ctx, catalog.Change{Dataset: b.ds.Name, Operation: catalog.OpCompaction, Actor: "job:1", Remove: []int64{in.ID}})
	require.NoError(t, err)
	_, err = b.svc.Restore(b.ctx, b.ds.Name, []int64{in.ID}, retention.RunOptions{})
	require.ErrorIs(t, err, catalog.ErrConflict)
	require.ErrorContains(t, err, "removed by compaction")

	b.sweepClock(time.Minute)
	sw := b.sweep(t, "job:2")
	require.Equal(t, 1, sw.Purged)
	require.False(t, b.exists(t, in))
}

func TestSweepIsIdempotentAndCrashSafe(t *testing.T) {
	t.Parallel()
	bothTargets(t, func(t *testing.T, remote bool) {
		b := setup(t, remote, 0)
		b.ingestDays(t, 5, 10)
		b.apply(t, "test")
		old := b.days[:2]

		// An object deleted by hand counts as deleted.
		require.NoError(t, b.target.Delete(b.ctx, old[0].Key))
		b.sweepClock(time.Minute)
		sw := b.sweep(t, "test")
		require.Equal(t, 2, sw.Purged)
		require.Equal(t, 2, sw.ObjectsDeleted)
		require.Equal(t, 1, sw.AlreadyGone)
		require.False(t, b.exists(t, old[1]))
		require.Equal(t, 0, b.sweep(t, "test").ObjectsDeleted)

		// A crash between the two phases: the purge committed, the objects
		// were not deleted. The next sweep finishes the job.
		b.setRetention(t, policy.Retention{MaxAge: policy.Duration(6 * 24 * time.Hour), Grace: ptr(policy.Duration(0))})
		res := b.apply(t, "test")
		require.Equal(t, []int64{b.days[2].ID}, res.Plan.IDs())
		batch, err := b.store.PurgeRemoved(b.ctx, b.ds.ID, time.Now().Add(time.Minute), 100, "crashing-sweeper")
		require.NoError(t, err)
		require.Len(t, batch.Purged, 1)
		require.True(t, b.exists(t, b.days[2]))
		sw = b.sweep(t, "test")
		require.Equal(t, 0, sw.Purged)
		require.Equal(t, 1, sw.ObjectsDeleted)
		require.False(t, b.exists(t, b.days[2]))

		// A target failing deletions: the partition is purged, its object
		// stays pending and the sweep fails (to be retried); once the target
		// works again the next sweep deletes it.
		b.setRetention(t, policy.Retention{MaxAge: policy.Duration(5 * 24 * time.Hour), Grace: ptr(policy.Duration(0))})
		require.Equal(t, []int64{b.days[3].ID}, b.apply(t, "test").Plan.IDs())
		faulty := storage.NewFaultyBucket(b.target.Bucket)
		require.NoError(t, b.targets.SetBucket(b.target.Name, faulty))
		stop := faulty.FailAlways(storage.OpDelete, nil)
		b.sweepClock(time.Minute)
		sw, err = b.svc.Sweep(b.ctx, b.ds.Name, retention.RunOptions{})
		require.ErrorContains(t, err, "could not be deleted")
		require.Equal(t, 1, sw.Purged)
		require.Equal(t, 1, sw.DeleteErrors)
		require.True(t, b.exists(t, b.days[3]))
		require.Equal(t, catalog.StatePurged, b.partition(t, b.days[3].ID).State())
		require.Equal(t, 1.0, b.metric(t, "timestore_sweep_delete_errors_total"))
		stop()
		sw = b.sweep(t, "test")
		require.Equal(t, 1, sw.ObjectsDeleted)
		require.False(t, b.exists(t, b.days[3]))
		require.Equal(t, b.want(4), b.ns(t))

		// Exactly one purge audit row per partition, whatever happened.
		purged := map[int64]int{}
		for _, e := range b.audit(t, catalog.ActionRetentionPurge) {
			purged[e.Partitions[0]]++
		}
		require.Equal(t, map[int64]int{b.days[0].ID: 1, b.days[1].ID: 1, b.days[2].ID: 1, b.days[3].ID: 1}, purged)
	})
}

func ptr[T any](v T) *T { return &v }

func TestHolds(t *testing.T) {
	t.Parallel()
	b := setup(t, false, time.Hour)
	b.ingestDays(t, 4, 10)

	// A hold on part of day 1 keeps its partition.
	h, err := b.svc.AddHold(b.ctx, b.ds.Name, day0.AddDate(0, 0, 1).Add(12*time.Hour), day0.AddDate(0, 0, 2), "audit 2024-17", "carol")
	require.NoError(t, err)
	require.True(t, h.Active())
	require.Equal(t, "carol", h.CreatedBy)
	require.Empty(t, h.RemovedPartitions)
	res := b.apply(t, "test")
	require.Equal(t, []int64{b.days[0].ID}, res.Plan.IDs())
	require.Len(t, res.Plan.KeptBack, 1)
	require.Equal(t, b.days[1].ID, res.Plan.KeptBack[0].ID)
	require.Equal(t, []string{retention.KeptByHold}, res.Plan.KeptBack[0].Reasons)
	require.Equal(t, []int64{h.ID}, res.Plan.KeptBack[0].Holds)
	require.Equal(t, float64(b.days[1].SizeBytes), b.metric(t, "timestore_retention_held_bytes"))
	require.Equal(t, float64(b.days[1].RowCount), b.metric(t, "timestore_retention_held_rows"))

	// A hold over removed data says what can still be restored.
	h0, err := b.svc.AddHold(b.ctx, b.ds.Name, day0, day0.Add(time.Hour*2), "late hold", "carol")
	require.NoError(t, err)
	require.Equal(t, []int64{b.days[0].ID}, h0.RemovedPartitions)

	holds, err := b.svc.Holds(b.ctx, b.ds.Name, false)
	require.NoError(t, err)
	require.Len(t, holds, 2)
	all, err := b.svc.Holds(b.ctx, "", false)
	require.NoError(t, err)
	require.Equal(t, holds, all)

	// Released, it no longer protects.
	rel, err := b.svc.ReleaseHold(b.ctx, h.ID, "dave")
	require.NoError(t, err)
	require.False(t, rel.Active())
	require.Equal(t, "dave", rel.ReleasedBy)
	_, err = b.svc.ReleaseHold(b.ctx, h.ID, "dave")
	require.ErrorIs(t, err, catalog.ErrConflict)
	_, err = b.svc.ReleaseHold(b.ctx, 1<<40, "dave")
	require.ErrorIs(t, err, catalog.ErrNotFound)
	require.Equal(t, []int64{b.days[1].ID}, b.apply(t, "test").Plan.IDs())
	holds, err = b.svc.Holds(b.ctx, b.ds.Name, true)
	require.NoError(t, err)
	require.Len(t, holds, 2)

	adds := b.audit(t, retention.ActionHoldAdd)
	require.Len(t, adds, 2)
	require.Equal(t, "carol", adds[1].Actor)
	require.Equal(t, "audit 2024-17", adds[1].Reason)
	rels := b.audit(t, retention.ActionHoldRelease)
	require.Len(t, rels, 1)
	require.Equal(t, "dave", rels[0].Actor)

	// Invalid holds.
	_, err = b.svc.AddHold(b.ctx, b.ds.Name, day0, day0, "x", "carol")
	require.ErrorIs(t, err, catalog.ErrInvalid)
	_, err = b.svc.AddHold(b.ctx, b.ds.Name, day0, day0.Add(time.Hour), " ", "carol")
	require.ErrorIs(t, err, catalog.ErrInvalid)
	_, err = b.svc.AddHold(b.ctx, "nope", day0, day0.Add(time.Hour), "x", "carol")
	require.ErrorIs(t, err, catalog.ErrNotFound)
	_, err = b.svc.Holds(b.ctx, "nope", false)
	require.ErrorIs(t, err, catalog.ErrNotFound)
}

// A hold added between a plan and its commit makes the commit conflict;
// retention plans again and leaves the held partition. If that happens
// twice, the run fails with a conflict and removes nothing.
func TestHoldAddedDuringApplyReplans(t *testing.T) {
	t.Parallel()
	b := setup(t, false, time.Hour)
	b.ingestDays(t, 4, 10)
	v := b.version(t)
	added := 0
	b.clock.hook(func() {
		// Runs when the plan reads the clock: after its snapshot, before its commit.
		if added == 0 {
			added++
			_, err := b.store.AddHold(b.ctx, b.ds.Name, day0, day0.Add(time.Hour*2), "race", "eve")
			require.NoError(t, err)
		}
	})
	res, err := b.svc.Apply(b.ctx, b.ds.Name, retention.RunOptions{Actor: "test"})
	require.NoError(t, err)
	require.True(t, res.Replanned)
	require.Equal(t, []int64{b.days[1].ID}, res.Plan.IDs())
	require.Equal(t, v+1, b.version(t))

	// Each plan is overtaken by a hold on the next partition it selects.
	next := 2
	b.clock.hook(func() {
		_, err := b.store.AddHold(b.ctx, b.ds.Name, day0.AddDate(0, 0, next), day0.AddDate(0, 0, next+1), "race", "eve")
		require.NoError(t, err)
		next++
	})
	b.setRetention(t, policy.Retention{MaxAge: policy.Duration(24 * time.Hour)})
	_, err = b.svc.Apply(b.ctx, b.ds.Name, retention.RunOptions{Actor: "test"})
	require.ErrorIs(t, err, catalog.ErrConflict)
	require.Equal(t, v+1, b.version(t))
}

// A deleted dataset cannot have jobs of its own: the sweep of any dataset
// also sweeps the partitions of deleted ones, leases and grace included.
func TestSweepDeletedDatasets(t *testing.T) {
	t.Parallel()
	b := setup(t, false, time.Hour)
	b.ingestDays(t, 2, 10)
	require.NoError(t, b.store.DeleteDataset(b.ctx, "cpu", "test"))
	other, err := b.store.CreateDataset(b.ctx, catalog.Dataset{
		Name: "other", Columns: []catalog.Column{{Name: "ts", Type: catalog.TypeTimestamp}},
		TimeColumn: "ts", Partition: catalog.WindowDay, Target: "local",
	}, "test")
	require.NoError(t, err)

	// A lease on the deleted dataset's last version keeps its partitions.
	lease, err := b.store.AcquireLease(b.ctx, b.ds.ID, b.ds.ManifestVersion+2, "reader", time.Minute)
	require.NoError(t, err)
	b.sweepClock(2 * time.Hour)
	sw, err := b.svc.Sweep(b.ctx, other.Name, retention.RunOptions{Actor: "job:1"})
	require.NoError(t, err)
	require.Equal(t, 0, sw.Purged)
	require.Equal(t, 2, sw.KeptByLease)
	require.Len(t, sw.Datasets, 1)
	require.True(t, sw.Datasets[0].Deleted)
	require.Equal(t, "cpu", sw.Datasets[0].Name)

	require.NoError(t, b.store.ReleaseLease(b.ctx, lease))
	sw, err = b.svc.Sweep(b.ctx, other.Name, retention.RunOptions{Actor: "job:2"})
	require.NoError(t, err)
	require.Equal(t, 2, sw.Purged)
	for _, p := range b.days {
		require.False(t, b.exists(t, p))
	}
	require.Empty(t, b.objects(t))
	require.Len(t, b.audit(t, catalog.ActionRetentionPurge), 2)
}

// A removal committed while a sweep runs is swept by that sweep: River drops
// the follow-up sweep enqueued with the removal as a duplicate of the
// running one, so the sweep starts another round when the manifest moved.
// Not parallel: it arms a process-wide fault point hook.
func TestRemovalDuringSweepIsSwept(t *testing.T) {
	b := setup(t, false, 0)
	b.ingestDays(t, 5, 20)
	res := b.apply(t, "alice")
	require.Equal(t, int64(2), res.Removed.Partitions)

	var once sync.Once
	late := b.days[2]
	disarm := faultpoint.Arm(faultpoint.SweepBeforeDelete, func(ctx context.Context) error {
		var err error
		once.Do(func() {
			_, err = b.store.Commit(ctx, catalog.Change{
				Dataset: b.ds.Name, Operation: catalog.OpRetention, Actor: "test", Remove: []int64{late.ID},
			})
		})
		return err
	})
	t.Cleanup(disarm)

	b.sweepClock(time.Minute)
	sw := b.sweep(t, "job:1")
	require.Equal(t, 3, sw.Purged, "the partition removed during the sweep is purged by it")
	require.Equal(t, 3, sw.ObjectsDeleted)
	require.False(t, sw.KeptBack())
	for _, p := range b.days[:3] {
		require.False(t, b.exists(t, p))
		require.Equal(t, catalog.StatePurged, b.partition(t, p.ID).State())
	}
	require.Equal(t, b.want(3, 4), b.ns(t))
}

// A policy change committed between retention's plan and its commit wins:
// the commit sees it under the dataset's row lock and the run plans again
// under the new policy (here, which removes nothing).
func TestPolicyChangeBetweenPlanAndCommit(t *testing.T) {
	t.Parallel()
	b := setup(t, false, time.Hour)
	b.ingestDays(t, 5, 10)
	var once sync.Once
	b.clock.hook(func() {
		once.Do(func() {
			// An operator lengthens max_age while the job plans.
			_, err := b.store.UpdatePolicy(b.ctx, b.ds.Name, policy.Policy{Retention: &policy.Retention{
				MaxAge: policy.Duration(100 * 365 * 24 * time.Hour)}}, "operator")
			require.NoError(t, err)
		})
	})
	b.clock.Set(evalTime)
	version := b.version(t)
	res, err := b.svc.Apply(b.ctx, b.ds.Name, retention.RunOptions{Actor: "job"})
	require.NoError(t, err)
	require.True(t, res.Replanned, "the first plan conflicted with the policy change")
	require.Zero(t, res.Removed.Partitions, "removed under a policy no longer in force")
	require.Equal(t, version, b.version(t), "no manifest change")
	live, err := b.store.Partitions(b.ctx, b.ds.Name, catalog.StateLive)
	require.NoError(t, err)
	require.Len(t, live, 5)
}
