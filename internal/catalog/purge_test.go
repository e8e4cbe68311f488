package catalog_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"timestore/internal/catalog"
)

func TestPurgeRemovedHonoursLeasesAndGrace(t *testing.T) {
	b := setup(t)
	p1 := b.commit(t, catalog.Change{Add: []catalog.PartitionFile{file(1, 10, 100)}}).Added[0] // v1
	p2 := b.commit(t, catalog.Change{Add: []catalog.PartitionFile{file(2, 20, 200)}}).Added[0] // v2
	p3 := b.commit(t, catalog.Change{Add: []catalog.PartitionFile{file(3, 30, 300)}}).Added[0] // v3
	b.commit(t, catalog.Change{Operation: catalog.OpRetention, Remove: []int64{p1.ID}})        // v4
	b.commit(t, catalog.Change{Operation: catalog.OpCompaction, Remove: []int64{p2.ID}})       // v5

	// p1 is live at v1..v3, p2 at v2..v4. A lease on v1 pins p1 only; an
	// expired lease on v4 pins nothing.
	_, err := b.store.AcquireLease(b.ctx, b.ds.ID, 1, "reader", time.Minute)
	require.NoError(t, err)
	_, err = b.store.AcquireLease(b.ctx, b.ds.ID, 4, "reader", time.Microsecond)
	require.NoError(t, err)

	// Before the grace period has passed for any, nothing goes.
	batch, err := b.store.PurgeRemoved(b.ctx, b.ds.ID, time.Now().Add(-time.Hour), 10, "job:1")
	require.NoError(t, err)
	require.Empty(t, batch.Purged)
	require.Equal(t, 2, batch.KeptByGrace)
	require.NotNil(t, batch.NextGraceExpiry)
	pv, err := b.store.PreviewPurge(b.ctx, b.ds.ID, time.Now().Add(time.Minute))
	require.NoError(t, err)
	require.Equal(t, []int64{p2.ID}, ids(pv.Eligible))
	require.Equal(t, 1, pv.KeptByLease)

	audits := b.auditCount(t)
	batch, err = b.store.PurgeRemoved(b.ctx, b.ds.ID, time.Now().Add(time.Minute), 10, "job:1")
	require.NoError(t, err)
	require.Equal(t, []int64{p2.ID}, ids(batch.Purged))
	require.Equal(t, []int64{1}, batch.PinnedVersions)
	require.Equal(t, 1, batch.KeptByLease)
	require.Zero(t, batch.KeptByGrace)
	require.False(t, batch.More)
	require.Equal(t, audits+1, b.auditCount(t))
	purge, err := b.store.ListAudit(b.ctx, catalog.AuditFilter{Action: catalog.ActionRetentionPurge})
	require.NoError(t, err)
	require.Len(t, purge, 1)
	require.Equal(t, "job:1", purge[0].Actor)
	require.Equal(t, []int64{p2.ID}, purge[0].Partitions)
	require.Equal(t, int64(200), purge[0].Bytes)

	// Purged, it cannot be restored.
	_, err = b.store.Commit(b.ctx, catalog.Change{Dataset: "metrics", Operation: catalog.OpRestore, Restore: []int64{p2.ID}})
	require.ErrorIs(t, err, catalog.ErrConflict)

	// The object deletion is pending until recorded.
	pending, err := b.store.PendingObjectDeletes(b.ctx, b.ds.ID, 0, 10)
	require.NoError(t, err)
	require.Equal(t, []int64{p2.ID}, ids(pending))
	require.NoError(t, b.store.MarkObjectsDeleted(b.ctx, []int64{p2.ID, p3.ID}))
	pending, err = b.store.PendingObjectDeletes(b.ctx, b.ds.ID, 0, 10)
	require.NoError(t, err)
	require.Empty(t, pending)
	live, err := b.store.Partitions(b.ctx, "metrics", catalog.StateLive)
	require.NoError(t, err)
	require.Equal(t, []int64{p3.ID}, ids(live), "marking a live partition's object deleted does nothing")

	pendingSweep, err := b.store.SweepPending(b.ctx, b.ds.ID)
	require.NoError(t, err)
	require.True(t, pendingSweep, "p1 still waits")

	// The batch limit: More says there is more.
	_, err = b.store.PurgeRemoved(b.ctx, b.ds.ID, time.Now(), 0, "job:1")
	require.ErrorIs(t, err, catalog.ErrInvalid)
}

func TestPurgeRemovedBatches(t *testing.T) {
	b := setup(t)
	var files []catalog.PartitionFile
	for i := range 5 {
		files = append(files, file(i, 1, 10))
	}
	added := b.commit(t, catalog.Change{Add: files}).Added
	b.commit(t, catalog.Change{Operation: catalog.OpRetention, Remove: ids(added)})
	var purged []int64
	for {
		batch, err := b.store.PurgeRemoved(b.ctx, b.ds.ID, time.Now().Add(time.Minute), 2, "job:1")
		require.NoError(t, err)
		require.LessOrEqual(t, len(batch.Purged), 2)
		purged = append(purged, ids(batch.Purged)...)
		if !batch.More {
			break
		}
	}
	require.ElementsMatch(t, ids(added), purged)
	var got []int64
	after := int64(0)
	for {
		page, err := b.store.PendingObjectDeletes(b.ctx, b.ds.ID, after, 2)
		require.NoError(t, err)
		if len(page) == 0 {
			break
		}
		got = append(got, ids(page)...)
		after = page[len(page)-1].ID
	}
	require.Equal(t, ids(added), got)
}

func TestRemovedPartitionsAndDatasetsToSweep(t *testing.T) {
	b := setup(t)
	added := b.commit(t, catalog.Change{Add: []catalog.PartitionFile{file(1, 1, 10), file(2, 1, 10), file(3, 1, 10)}}).Added
	b.commit(t, catalog.Change{Operation: catalog.OpRetention, Remove: []int64{added[0].ID}})
	b.commit(t, catalog.Change{Operation: catalog.OpCompaction, Remove: []int64{added[1].ID}})
	v, removed, err := b.store.RemovedPartitions(b.ctx, "metrics", ids(added))
	require.NoError(t, err)
	require.Equal(t, b.version(t), v)
	require.Len(t, removed, 2)
	require.Equal(t, catalog.OpRetention, removed[0].RemovalOperation)
	require.Equal(t, catalog.OpCompaction, removed[1].RemovalOperation)
	_, _, err = b.store.RemovedPartitions(b.ctx, "nope", nil)
	require.ErrorIs(t, err, catalog.ErrNotFound)

	named, err := b.store.DatasetsToSweep(b.ctx, "metrics")
	require.NoError(t, err)
	require.Len(t, named, 1)
	require.False(t, named[0].Deleted)
	deleted, err := b.store.DatasetsToSweep(b.ctx, "")
	require.NoError(t, err)
	require.Empty(t, deleted)

	require.NoError(t, b.store.DeleteDataset(b.ctx, "metrics", "test"))
	_, err = b.store.CreateDataset(b.ctx, testDataset("metrics"), "test")
	require.NoError(t, err)
	deleted, err = b.store.DatasetsToSweep(b.ctx, "")
	require.NoError(t, err)
	require.Len(t, deleted, 1)
	require.True(t, deleted[0].Deleted)
	require.Equal(t, b.ds.ID, deleted[0].ID)
	named, err = b.store.DatasetsToSweep(b.ctx, "metrics")
	require.NoError(t, err)
	require.Len(t, named, 1, "the new dataset has nothing to sweep")
	require.Equal(t, b.ds.ID, named[0].ID)
}
