package catalog_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"timestore/internal/catalog"
)

func TestSnapshotAtAcrossVersions(t *testing.T) {
	b := setup(t)
	// v1: add A (day 0), B (day 1). v2: add C (day 2), remove A (a compaction).
	// v3: remove B. v4: restore B.
	v1 := b.commit(t, catalog.Change{Add: []catalog.PartitionFile{file(0, 1, 1), file(1, 1, 1)}})
	a, bb := v1.Added[0], v1.Added[1]
	v2 := b.commit(t, catalog.Change{Operation: catalog.OpCompaction, Add: []catalog.PartitionFile{file(2, 1, 1)}, Remove: []int64{a.ID}})
	c := v2.Added[0]
	b.commit(t, catalog.Change{Operation: catalog.OpRetention, Remove: []int64{bb.ID}})

	at := func(version int64, from, to *time.Time) []int64 {
		t.Helper()
		parts, err := b.store.SnapshotAt(b.ctx, b.ds.ID, version, from, to)
		require.NoError(t, err)
		return ids(parts)
	}
	ptr := func(t time.Time) *time.Time { return &t }

	require.Empty(t, at(0, nil, nil))
	require.Equal(t, []int64{a.ID, bb.ID}, at(1, nil, nil))
	require.Equal(t, []int64{bb.ID, c.ID}, at(2, nil, nil))
	require.Equal(t, []int64{c.ID}, at(3, nil, nil))

	// Time pruning: [from, to) against [time_min, time_max]; files cover 01:00-23:00.
	require.Equal(t, []int64{bb.ID}, at(1, ptr(day(1)), nil))
	require.Equal(t, []int64{a.ID}, at(1, nil, ptr(day(1))))
	require.Equal(t, []int64{a.ID}, at(1, nil, ptr(day(0).Add(time.Hour+time.Microsecond))), "to is exclusive")
	require.Empty(t, at(1, nil, ptr(day(0).Add(time.Hour))), "to is exclusive")
	require.Equal(t, []int64{bb.ID}, at(1, ptr(day(0).Add(23*time.Hour+time.Microsecond)), nil), "from after A's time_max")
	require.Equal(t, []int64{a.ID, bb.ID}, at(1, ptr(day(0).Add(23*time.Hour)), nil), "from is inclusive")
	require.Equal(t, []int64{bb.ID}, at(2, ptr(day(1).Add(2*time.Hour)), ptr(day(1).Add(3*time.Hour))))
	require.Empty(t, at(2, ptr(day(5)), ptr(day(6))))

	_, err := b.store.SnapshotAt(b.ctx, b.ds.ID, 4, nil, nil)
	require.ErrorIs(t, err, catalog.ErrNotFound, "a version not reached yet")
	_, err = b.store.SnapshotAt(b.ctx, b.ds.ID+1000, 0, nil, nil)
	require.ErrorIs(t, err, catalog.ErrNotFound)

	// Snapshot reads the current version, pruned the same way.
	snap, err := b.store.Snapshot(b.ctx, "metrics", nil, nil)
	require.NoError(t, err)
	require.Equal(t, int64(3), snap.Version)
	require.Equal(t, []int64{c.ID}, ids(snap.Partitions))
	snap, err = b.store.Snapshot(b.ctx, "metrics", ptr(day(0)), ptr(day(2)))
	require.NoError(t, err)
	require.Empty(t, snap.Partitions)
	_, err = b.store.Snapshot(b.ctx, "nope", nil, nil)
	require.ErrorIs(t, err, catalog.ErrNotFound)

	// After a restore B is live again, and so the current version equals v2's set.
	b.commit(t, catalog.Change{Operation: catalog.OpRestore, Restore: []int64{bb.ID}})
	require.Equal(t, []int64{bb.ID, c.ID}, at(4, nil, nil))
}

func TestSnapshotOrder(t *testing.T) {
	b := setup(t)
	// Added out of time order, and two files in one window.
	res := b.commit(t, catalog.Change{Add: []catalog.PartitionFile{file(3, 1, 1), file(1, 1, 1), file(2, 1, 1), file(1, 1, 1)}})
	snap, err := b.store.Snapshot(b.ctx, "metrics", nil, nil)
	require.NoError(t, err)
	require.Equal(t, []int64{res.Added[1].ID, res.Added[3].ID, res.Added[2].ID, res.Added[0].ID}, ids(snap.Partitions))
}
