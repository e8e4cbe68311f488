package catalog_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"timestore/internal/catalog"
)

func TestHoldsAddListRelease(t *testing.T) {
	b := setup(t)
	from, to := day(1), day(3)
	h, err := b.store.AddHold(b.ctx, "metrics", from, to, "legal", "alice")
	require.NoError(t, err)
	require.Equal(t, "metrics", h.Dataset)
	require.Equal(t, from, h.From)
	require.Equal(t, to, h.To)
	require.True(t, h.Active())

	for _, tc := range []struct {
		from, to time.Time
		reason   string
	}{
		{day(2), day(2), "x"},
		{day(3), day(2), "x"},
		{time.Time{}, day(2), "x"},
		{day(1), day(2), "  "},
	} {
		_, err := b.store.AddHold(b.ctx, "metrics", tc.from, tc.to, tc.reason, "alice")
		require.ErrorIs(t, err, catalog.ErrInvalid)
	}
	_, err = b.store.AddHold(b.ctx, "nope", from, to, "x", "alice")
	require.ErrorIs(t, err, catalog.ErrNotFound)

	other, err := b.store.CreateDataset(b.ctx, testDataset("other"), "test")
	require.NoError(t, err)
	h2, err := b.store.AddHold(b.ctx, other.Name, from, to, "other", "bob")
	require.NoError(t, err)
	all, err := b.store.Holds(b.ctx, "", false)
	require.NoError(t, err)
	require.Equal(t, []catalog.Hold{h, h2}, all)
	mine, err := b.store.Holds(b.ctx, "metrics", false)
	require.NoError(t, err)
	require.Equal(t, []catalog.Hold{h}, mine)

	rel, err := b.store.ReleaseHold(b.ctx, h.ID, "carol")
	require.NoError(t, err)
	require.False(t, rel.Active())
	require.Equal(t, "carol", rel.ReleasedBy)
	_, err = b.store.ReleaseHold(b.ctx, h.ID, "carol")
	require.ErrorIs(t, err, catalog.ErrConflict)
	_, err = b.store.ReleaseHold(b.ctx, 1<<40, "carol")
	require.ErrorIs(t, err, catalog.ErrNotFound)
	mine, err = b.store.Holds(b.ctx, "metrics", false)
	require.NoError(t, err)
	require.Empty(t, mine)
	mine, err = b.store.Holds(b.ctx, "metrics", true)
	require.NoError(t, err)
	require.Equal(t, []catalog.Hold{rel}, mine)

	// A held dataset cannot be deleted; once released, it can, and the
	// holds of a deleted dataset are not listed.
	require.ErrorIs(t, b.store.DeleteDataset(b.ctx, other.Name, "test"), catalog.ErrConflict)
	rel2, err := b.store.ReleaseHold(b.ctx, h2.ID, "carol")
	require.NoError(t, err)
	require.NoError(t, b.store.DeleteDataset(b.ctx, other.Name, "test"))
	all, err = b.store.Holds(b.ctx, "", true)
	require.NoError(t, err)
	require.Equal(t, []catalog.Hold{rel}, all)
	require.False(t, rel2.Active())

	adds, err := b.store.ListAudit(b.ctx, catalog.AuditFilter{Action: catalog.ActionHoldAdd})
	require.NoError(t, err)
	require.Len(t, adds, 2)
	rels, err := b.store.ListAudit(b.ctx, catalog.AuditFilter{Action: catalog.ActionHoldRelease})
	require.NoError(t, err)
	require.Len(t, rels, 2)
	require.Equal(t, "carol", rels[0].Actor)
}

func TestRequireNotHeldInCommit(t *testing.T) {
	b := setup(t)
	res := b.commit(t, catalog.Change{Add: []catalog.PartitionFile{file(1, 10, 100), file(2, 10, 100)}})
	_, err := b.store.AddHold(b.ctx, "metrics", day(2).Add(22*time.Hour), day(3), "x", "alice")
	require.NoError(t, err)
	v := b.version(t)
	remove := func(id int64) error {
		_, err := b.store.Commit(b.ctx, catalog.Change{
			Dataset: "metrics", Operation: catalog.OpRetention, Actor: "test", Remove: []int64{id},
			InTx: func(ctx context.Context, tx catalog.Tx, _ int64, _ []catalog.Partition) error {
				return catalog.RequireNotHeld(ctx, tx, b.ds.ID, []int64{id})
			},
		})
		return err
	}
	require.ErrorIs(t, remove(res.Added[1].ID), catalog.ErrConflict)
	require.Equal(t, v, b.version(t))
	require.NoError(t, remove(res.Added[0].ID))
}
