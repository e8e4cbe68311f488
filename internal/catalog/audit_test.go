package catalog_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"timestore/internal/catalog"
)

func TestAudit(t *testing.T) {
	b := setup(t) // writes one dataset.create entry
	at := time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
	require.NoError(t, b.store.AppendAudit(b.ctx, catalog.AuditEntry{
		Time: at, Actor: "sweeper", Action: "partition.purge", Dataset: "metrics",
		Partitions: []int64{1, 2}, Bytes: 300, Reason: "grace elapsed", Details: map[string]any{"k": "v"},
	}))
	for range 3 {
		require.NoError(t, b.store.AppendAudit(b.ctx, catalog.AuditEntry{Actor: "x", Action: "other.thing", Dataset: "other"}))
	}
	require.ErrorIs(t, b.store.AppendAudit(b.ctx, catalog.AuditEntry{Actor: "x"}), catalog.ErrInvalid)

	all, err := b.store.ListAudit(b.ctx, catalog.AuditFilter{})
	require.NoError(t, err)
	require.Len(t, all, 5)
	for i := 1; i < len(all); i++ {
		require.Greater(t, all[i-1].ID, all[i].ID, "newest first")
	}

	purge, err := b.store.ListAudit(b.ctx, catalog.AuditFilter{Dataset: "metrics", Action: "partition.purge"})
	require.NoError(t, err)
	require.Len(t, purge, 1)
	e := purge[0]
	require.Equal(t, at, e.Time)
	require.Equal(t, []int64{1, 2}, e.Partitions)
	require.Equal(t, int64(300), e.Bytes)
	require.Equal(t, "grace elapsed", e.Reason)
	require.Equal(t, map[string]any{"k": "v"}, e.Details)

	page, err := b.store.ListAudit(b.ctx, catalog.AuditFilter{Dataset: "other", Limit: 2})
	require.NoError(t, err)
	require.Len(t, page, 2)
	rest, err := b.store.ListAudit(b.ctx, catalog.AuditFilter{Dataset: "other", Limit: 2, BeforeID: page[1].ID})
	require.NoError(t, err)
	require.Len(t, rest, 1)
	require.Less(t, rest[0].ID, page[1].ID)

	// Entries without partitions read back empty, not nil in the database.
	require.Empty(t, rest[0].Partitions)

	// The log is append-only.
	_, err = b.store.Pool().Exec(b.ctx, `UPDATE timestore.audit_log SET actor = 'mallory'`)
	require.ErrorContains(t, err, "append-only")
	_, err = b.store.Pool().Exec(b.ctx, `DELETE FROM timestore.audit_log`)
	require.ErrorContains(t, err, "append-only")
	_, err = b.store.Pool().Exec(b.ctx, `TRUNCATE timestore.audit_log`)
	require.ErrorContains(t, err, "append-only")
}

func TestAppendAuditBatchTx(t *testing.T) {
	b := setup(t)
	entries := []catalog.AuditEntry{
		{Actor: "a", Action: "x.one", Dataset: "metrics", Partitions: []int64{1}, Bytes: 10, Reason: "r", Details: map[string]any{"k": "v"}},
		{Actor: "b", Action: "x.two"},
	}
	require.NoError(t, b.store.RunInTx(b.ctx, func(ctx context.Context, tx catalog.Tx) error {
		return b.store.AppendAuditBatchTx(ctx, tx, entries)
	}))
	got, err := b.store.ListAudit(b.ctx, catalog.AuditFilter{Limit: 2})
	require.NoError(t, err)
	require.Len(t, got, 2)
	require.Equal(t, "x.two", got[0].Action)
	require.Empty(t, got[0].Partitions)
	require.Equal(t, "x.one", got[1].Action)
	require.Equal(t, []int64{1}, got[1].Partitions)
	require.Equal(t, int64(10), got[1].Bytes)
	require.Equal(t, map[string]any{"k": "v"}, got[1].Details)
	err = b.store.RunInTx(b.ctx, func(ctx context.Context, tx catalog.Tx) error {
		return b.store.AppendAuditBatchTx(ctx, tx, []catalog.AuditEntry{{Actor: "c"}})
	})
	require.ErrorIs(t, err, catalog.ErrInvalid)
}
