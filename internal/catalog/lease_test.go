package catalog_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"timestore/internal/catalog"
)

func TestLeases(t *testing.T) {
	b := setup(t)
	b.commit(t, catalog.Change{Add: []catalog.PartitionFile{file(0, 1, 1)}})
	b.commit(t, catalog.Change{Add: []catalog.PartitionFile{file(1, 1, 1)}})

	pinned := func(now time.Time) []int64 {
		t.Helper()
		v, err := b.store.PinnedVersions(b.ctx, b.ds.ID, now)
		require.NoError(t, err)
		return v
	}
	require.Empty(t, pinned(time.Time{}))

	l1, err := b.store.AcquireLease(b.ctx, b.ds.ID, 1, "query-1", time.Minute)
	require.NoError(t, err)
	l2, err := b.store.AcquireLease(b.ctx, b.ds.ID, 2, "query-2", time.Minute)
	require.NoError(t, err)
	_, err = b.store.AcquireLease(b.ctx, b.ds.ID, 2, "query-3", time.Minute)
	require.NoError(t, err)
	require.Equal(t, []int64{1, 2}, pinned(time.Time{}))

	// Evaluated at a later instant, the leases have expired.
	require.Empty(t, pinned(time.Now().Add(2*time.Minute)))

	// Renewing extends past the original expiry.
	require.NoError(t, b.store.RenewLease(b.ctx, l1, time.Hour))
	require.Equal(t, []int64{1}, pinned(time.Now().Add(30*time.Minute)))

	require.NoError(t, b.store.ReleaseLease(b.ctx, l1))
	require.NoError(t, b.store.ReleaseLease(b.ctx, l1), "releasing twice is fine")
	require.Equal(t, []int64{2}, pinned(time.Time{}))
	require.ErrorIs(t, b.store.RenewLease(b.ctx, l1, time.Minute), catalog.ErrNotFound)
	require.NoError(t, b.store.ReleaseLease(b.ctx, l2))

	// A lease that has expired cannot be renewed.
	short, err := b.store.AcquireLease(b.ctx, b.ds.ID, 2, "query-4", time.Microsecond)
	require.NoError(t, err)
	require.ErrorIs(t, b.store.RenewLease(b.ctx, short, time.Minute), catalog.ErrNotFound)

	_, err = b.store.AcquireLease(b.ctx, b.ds.ID, 3, "query-5", time.Minute)
	require.ErrorIs(t, err, catalog.ErrNotFound, "a version not reached yet")
	_, err = b.store.AcquireLease(b.ctx, b.ds.ID+1000, 0, "query-6", time.Minute)
	require.ErrorIs(t, err, catalog.ErrNotFound)
	_, err = b.store.AcquireLease(b.ctx, b.ds.ID, 1, "query-7", 0)
	require.ErrorIs(t, err, catalog.ErrInvalid)

	// Leases are per dataset.
	other, err := b.store.CreateDataset(b.ctx, testDataset("other"), "test")
	require.NoError(t, err)
	v, err := b.store.PinnedVersions(b.ctx, other.ID, time.Time{})
	require.NoError(t, err)
	require.Empty(t, v)
}
