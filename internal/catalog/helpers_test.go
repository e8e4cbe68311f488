package catalog_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"timestore/internal/catalog"
	"timestore/internal/policy"
	"timestore/internal/testutil/pgtest"
)

// bundle is what most tests need: a store on a database of their own and one dataset.
type bundle struct {
	ctx   context.Context
	store *catalog.Store
	ds    catalog.Dataset
}

func setup(t *testing.T) *bundle {
	t.Helper()
	t.Parallel()
	ctx := t.Context()
	store := pgtest.NewStore(t)
	ds, err := store.CreateDataset(ctx, testDataset("metrics"), "test")
	require.NoError(t, err)
	return &bundle{ctx: ctx, store: store, ds: ds}
}

func testDataset(name string) catalog.Dataset {
	return catalog.Dataset{
		Name: name,
		Columns: []catalog.Column{
			{Name: "ts", Type: catalog.TypeTimestamp},
			{Name: "host", Type: catalog.TypeVarchar},
			{Name: "value", Type: catalog.TypeDouble},
		},
		TimeColumn: "ts",
		Partition:  catalog.WindowDay,
		Target:     "local",
		Policy:     policy.Policy{Retention: &policy.Retention{MaxAge: policy.Duration(30 * 24 * time.Hour)}},
	}
}

var day0 = time.Date(2024, 3, 1, 0, 0, 0, 0, time.UTC)

// day returns the start of day i after day0.
func day(i int) time.Time { return day0.AddDate(0, 0, i) }

var keySeq atomic.Int64

// file describes a partition file covering the 1st to the 23rd hour of day i.
func file(i int, rows, size int64) catalog.PartitionFile {
	min := "a"
	return catalog.PartitionFile{
		WindowStart: day(i),
		TimeMin:     day(i).Add(time.Hour),
		TimeMax:     day(i).Add(23 * time.Hour),
		RowCount:    rows,
		SizeBytes:   size,
		Target:      "local",
		Key:         fmt.Sprintf("metrics/%d/part-%d.parquet", i, keySeq.Add(1)),
		Checksum:    "sha256:00",
		Stats:       []catalog.ColumnStats{{Column: "host", Min: &min, Max: &min, NullCount: 1}},
	}
}

// commit applies ch to the bundle's dataset and requires success.
func (b *bundle) commit(t *testing.T, ch catalog.Change) catalog.CommitResult {
	t.Helper()
	if ch.Dataset == "" {
		ch.Dataset = b.ds.Name
	}
	if ch.Operation == "" {
		ch.Operation = catalog.OpIngest
	}
	if ch.Actor == "" {
		ch.Actor = "test"
	}
	res, err := b.store.Commit(b.ctx, ch)
	require.NoError(t, err)
	return res
}

// version returns the dataset's current manifest version.
func (b *bundle) version(t *testing.T) int64 {
	t.Helper()
	d, err := b.store.GetDataset(b.ctx, b.ds.Name)
	require.NoError(t, err)
	return d.ManifestVersion
}

// auditCount counts all audit rows.
func (b *bundle) auditCount(t *testing.T) int {
	t.Helper()
	entries, err := b.store.ListAudit(b.ctx, catalog.AuditFilter{Limit: catalog.ListLimitMax})
	require.NoError(t, err)
	return len(entries)
}

func ids(parts []catalog.Partition) []int64 {
	out := make([]int64, len(parts))
	for i, p := range parts {
		out[i] = p.ID
	}
	return out
}

func itoa(i int64) string { return fmt.Sprint(i) }
