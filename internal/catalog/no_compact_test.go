package catalog_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"timestore/internal/catalog"
)

func TestSetNoCompact(t *testing.T) {
	b := setup(t)
	added := b.commit(t, catalog.Change{Add: []catalog.PartitionFile{file(0, 1, 100), file(0, 1, 200), file(1, 1, 300)}}).Added
	p0, p1, p2 := added[0].ID, added[1].ID, added[2].ID
	version := b.version(t)

	require.NoError(t, b.store.SetNoCompact(b.ctx, "metrics", []int64{p1, p0}, true, "alice"))
	parts, err := b.store.Partitions(b.ctx, "metrics", catalog.StateLive)
	require.NoError(t, err)
	marks := map[int64]bool{}
	for _, p := range parts {
		marks[p.ID] = p.NoCompact
	}
	require.Equal(t, map[int64]bool{p0: true, p1: true, p2: false}, marks)
	require.Equal(t, version, b.version(t), "not a manifest change")

	entries, err := b.store.ListAudit(b.ctx, catalog.AuditFilter{Action: catalog.ActionPartitionSetNoCompact})
	require.NoError(t, err)
	require.Len(t, entries, 1)
	require.Equal(t, "alice", entries[0].Actor)
	require.Equal(t, "metrics", entries[0].Dataset)
	require.Equal(t, []int64{p0, p1}, entries[0].Partitions)
	require.EqualValues(t, 300, entries[0].Bytes)
	require.Equal(t, map[string]any{"no_compact": true, "changed": float64(2)}, entries[0].Details)

	// Clearing: only p1 changes.
	require.NoError(t, b.store.SetNoCompact(b.ctx, "metrics", []int64{p1, p2}, false, "bob"))
	entries, err = b.store.ListAudit(b.ctx, catalog.AuditFilter{Action: catalog.ActionPartitionSetNoCompact})
	require.NoError(t, err)
	require.Len(t, entries, 2)
	require.Equal(t, map[string]any{"no_compact": false, "changed": float64(1)}, entries[0].Details)

	// Errors change nothing.
	before := b.auditCount(t)
	require.ErrorIs(t, b.store.SetNoCompact(b.ctx, "metrics", nil, true, "x"), catalog.ErrInvalid)
	require.ErrorIs(t, b.store.SetNoCompact(b.ctx, "metrics", []int64{p2, p2}, true, "x"), catalog.ErrInvalid)
	require.ErrorIs(t, b.store.SetNoCompact(b.ctx, "nope", []int64{p2}, true, "x"), catalog.ErrNotFound)
	require.ErrorIs(t, b.store.SetNoCompact(b.ctx, "metrics", []int64{p2, 1 << 40}, true, "x"), catalog.ErrNotFound)
	b.commit(t, catalog.Change{Operation: catalog.OpRetention, Remove: []int64{p0}})
	before++ // the retention commit's row
	require.ErrorIs(t, b.store.SetNoCompact(b.ctx, "metrics", []int64{p2, p0}, true, "x"), catalog.ErrConflict)
	require.Equal(t, before, b.auditCount(t))
	parts, err = b.store.Partitions(b.ctx, "metrics", catalog.StateLive)
	require.NoError(t, err)
	for _, p := range parts {
		require.False(t, p.NoCompact, "partition %d", p.ID)
	}
}

// TestRequireCompactable checks the in-transaction guard a compaction commit
// runs: a partition marked after the plan makes the commit conflict.
func TestRequireCompactable(t *testing.T) {
	b := setup(t)
	added := b.commit(t, catalog.Change{Add: []catalog.PartitionFile{file(0, 1, 100), file(0, 1, 200)}}).Added
	ids := []int64{added[0].ID, added[1].ID}
	compact := catalog.Change{
		Dataset: "metrics", Operation: catalog.OpCompaction, Actor: "job:1",
		Remove: ids, Add: []catalog.PartitionFile{file(0, 2, 300)},
		InTx: func(ctx context.Context, tx catalog.Tx, _ int64, _ []catalog.Partition) error {
			return catalog.RequireCompactable(ctx, tx, ids)
		},
	}
	require.NoError(t, b.store.SetNoCompact(b.ctx, "metrics", ids[1:], true, "alice"))
	version := b.version(t)
	_, err := b.store.Commit(b.ctx, compact)
	require.ErrorIs(t, err, catalog.ErrConflict)
	require.Equal(t, version, b.version(t))

	require.NoError(t, b.store.SetNoCompact(b.ctx, "metrics", ids[1:], false, "alice"))
	res, err := b.store.Commit(b.ctx, compact)
	require.NoError(t, err)
	require.Equal(t, version+1, res.Version)
}
