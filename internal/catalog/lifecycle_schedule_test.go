package catalog_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"timestore/internal/catalog"
)

func TestScheduleClaimCreatesLocksAndSkips(t *testing.T) {
	b := setup(t)
	next := time.Date(2025, 6, 1, 12, 10, 0, 0, time.UTC)
	init := catalog.ScheduleState{Schedule: "@every 10m", NextRunAt: next}

	// The first claim creates the row.
	err := b.store.InScheduleTx(b.ctx, func(ctx context.Context, tx *catalog.ScheduleTx) error {
		st, created, ok, err := tx.Claim(ctx, b.ds.ID, "compaction", init)
		require.NoError(t, err)
		require.True(t, created)
		require.True(t, ok)
		require.Equal(t, b.ds.ID, st.DatasetID)
		require.True(t, st.NextRunAt.Equal(next))
		require.Nil(t, st.LastJobID)
		return nil
	})
	require.NoError(t, err)

	// While one transaction holds the row, another skips it rather than wait.
	held := make(chan struct{})
	release := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- b.store.InScheduleTx(b.ctx, func(ctx context.Context, tx *catalog.ScheduleTx) error {
			st, created, ok, err := tx.Claim(ctx, b.ds.ID, "compaction", init)
			if err != nil || created || !ok {
				close(held)
				return err
			}
			id := int64(42)
			at := next
			st.LastJobID, st.LastEnqueuedAt, st.NextRunAt = &id, &at, next.Add(10*time.Minute)
			if err := tx.Save(ctx, st); err != nil {
				close(held)
				return err
			}
			close(held)
			<-release
			return nil
		})
	}()
	<-held
	err = b.store.InScheduleTx(b.ctx, func(ctx context.Context, tx *catalog.ScheduleTx) error {
		_, created, ok, err := tx.Claim(ctx, b.ds.ID, "compaction", init)
		require.NoError(t, err)
		require.False(t, created)
		require.False(t, ok, "locked by the other transaction")
		return nil
	})
	require.NoError(t, err)
	close(release)
	require.NoError(t, <-done)

	// Once committed, the change is what the next claim sees.
	states, err := b.store.ScheduleStates(b.ctx, b.ds.ID)
	require.NoError(t, err)
	require.Len(t, states, 1)
	require.Equal(t, int64(42), *states[0].LastJobID)
	require.True(t, states[0].NextRunAt.Equal(next.Add(10*time.Minute)))

	// Retain drops kinds no longer scheduled; deleted datasets are pruned.
	n, err := b.store.RetainSchedules(b.ctx, b.ds.ID, []string{"compaction"})
	require.NoError(t, err)
	require.Zero(t, n)
	require.NoError(t, b.store.DeleteDataset(b.ctx, b.ds.Name, "test"))
	n, err = b.store.PruneDeletedSchedules(b.ctx)
	require.NoError(t, err)
	require.Equal(t, int64(1), n)
	n, err = b.store.RetainSchedules(b.ctx, b.ds.ID, nil)
	require.NoError(t, err)
	require.Zero(t, n)
}
