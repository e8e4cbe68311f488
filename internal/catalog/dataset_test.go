package catalog_test

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"timestore/internal/catalog"
	"timestore/internal/policy"
)

func TestCreateDataset(t *testing.T) {
	b := setup(t)

	require.NotZero(t, b.ds.ID)
	require.Equal(t, int64(0), b.ds.ManifestVersion)
	require.False(t, b.ds.CreatedAt.IsZero())

	got, err := b.store.GetDataset(b.ctx, "metrics")
	require.NoError(t, err)
	require.Equal(t, b.ds, got)
	require.Equal(t, policy.Duration(30*24*3600e9), got.Policy.Retention.MaxAge)

	byID, err := b.store.GetDatasetByID(b.ctx, b.ds.ID)
	require.NoError(t, err)
	require.Equal(t, b.ds, byID)

	versions, err := b.store.ManifestVersions(b.ctx, b.ds.ID, 0)
	require.NoError(t, err)
	require.Len(t, versions, 1)
	require.Equal(t, int64(0), versions[0].Version)
	require.Equal(t, catalog.OpCreate, versions[0].Operation)

	entries, err := b.store.ListAudit(b.ctx, catalog.AuditFilter{Dataset: "metrics", Action: catalog.ActionDatasetCreate})
	require.NoError(t, err)
	require.Len(t, entries, 1)
	require.Equal(t, "test", entries[0].Actor)
	require.Equal(t, "ts", entries[0].Details["time_column"])

	_, err = b.store.CreateDataset(b.ctx, testDataset("metrics"), "test")
	require.ErrorIs(t, err, catalog.ErrExists)

	_, err = b.store.CreateDataset(b.ctx, testDataset("alpha"), "test")
	require.NoError(t, err)
	list, err := b.store.ListDatasets(b.ctx)
	require.NoError(t, err)
	require.Len(t, list, 2)
	require.Equal(t, "alpha", list[0].Name)
	require.Equal(t, "metrics", list[1].Name)
}

func TestCreateDatasetValidation(t *testing.T) {
	b := setup(t)
	for name, mutate := range map[string]func(*catalog.Dataset){
		"bad name":          func(d *catalog.Dataset) { d.Name = "Bad-Name" },
		"no columns":        func(d *catalog.Dataset) { d.Columns = nil },
		"unknown type":      func(d *catalog.Dataset) { d.Columns[1].Type = "text" },
		"missing time col":  func(d *catalog.Dataset) { d.TimeColumn = "nope" },
		"time col not time": func(d *catalog.Dataset) { d.TimeColumn = "host" },
		"bad window":        func(d *catalog.Dataset) { d.Partition = "week" },
		"bad policy":        func(d *catalog.Dataset) { d.Policy.Retention.MaxBytes = -1 },
	} {
		t.Run(name, func(t *testing.T) {
			d := testDataset("other")
			mutate(&d)
			_, err := b.store.CreateDataset(b.ctx, d, "test")
			require.ErrorIs(t, err, catalog.ErrInvalid)
		})
	}
	list, err := b.store.ListDatasets(b.ctx)
	require.NoError(t, err)
	require.Len(t, list, 1)
}

func TestGetDatasetNotFound(t *testing.T) {
	b := setup(t)
	_, err := b.store.GetDataset(b.ctx, "nope")
	require.ErrorIs(t, err, catalog.ErrNotFound)
	require.EqualError(t, err, `get dataset "nope": not found`)
	_, err = b.store.GetDatasetByID(b.ctx, b.ds.ID+1000)
	require.ErrorIs(t, err, catalog.ErrNotFound)
}

func TestUpdatePolicy(t *testing.T) {
	b := setup(t)
	b.commit(t, catalog.Change{Add: []catalog.PartitionFile{file(0, 10, 100)}})

	p := policy.Policy{Compaction: &policy.Compaction{MinInputFiles: 8}}
	d, err := b.store.UpdatePolicy(b.ctx, "metrics", p, "alice")
	require.NoError(t, err)
	require.Equal(t, p, d.Policy)
	require.Equal(t, int64(1), d.ManifestVersion, "set_policy does not bump the manifest version")

	got, err := b.store.GetDataset(b.ctx, "metrics")
	require.NoError(t, err)
	require.Equal(t, p, got.Policy)

	entries, err := b.store.ListAudit(b.ctx, catalog.AuditFilter{Action: catalog.ActionDatasetSetPolicy})
	require.NoError(t, err)
	require.Len(t, entries, 1)
	require.Equal(t, "alice", entries[0].Actor)
	require.Contains(t, entries[0].Details, "old")
	require.Contains(t, entries[0].Details, "new")

	_, err = b.store.UpdatePolicy(b.ctx, "metrics", policy.Policy{Compaction: &policy.Compaction{MinInputFiles: 1}}, "alice")
	require.ErrorIs(t, err, catalog.ErrInvalid)
	_, err = b.store.UpdatePolicy(b.ctx, "nope", p, "alice")
	require.ErrorIs(t, err, catalog.ErrNotFound)
}

func TestDeleteDataset(t *testing.T) {
	b := setup(t)
	res := b.commit(t, catalog.Change{Add: []catalog.PartitionFile{file(0, 10, 100), file(1, 20, 200)}})
	b.commit(t, catalog.Change{Remove: []int64{res.Added[0].ID}, Operation: catalog.OpRetention})

	require.NoError(t, b.store.DeleteDataset(b.ctx, "metrics", "bob"))

	_, err := b.store.GetDataset(b.ctx, "metrics")
	require.ErrorIs(t, err, catalog.ErrNotFound)
	_, err = b.store.Partitions(b.ctx, "metrics", catalog.StateLive)
	require.ErrorIs(t, err, catalog.ErrNotFound)
	require.ErrorIs(t, b.store.DeleteDataset(b.ctx, "metrics", "bob"), catalog.ErrNotFound)
	_, err = b.store.Commit(b.ctx, catalog.Change{Dataset: "metrics", Operation: catalog.OpIngest, Add: []catalog.PartitionFile{file(2, 1, 1)}})
	require.ErrorIs(t, err, catalog.ErrNotFound)

	// The delete is version 3; every partition live before it is removed in it.
	live, err := b.store.SnapshotAt(b.ctx, b.ds.ID, 3, nil, nil)
	require.NoError(t, err)
	require.Empty(t, live)
	before, err := b.store.SnapshotAt(b.ctx, b.ds.ID, 2, nil, nil)
	require.NoError(t, err)
	require.Equal(t, []int64{res.Added[1].ID}, ids(before))
	totals, err := b.store.DatasetTotals(b.ctx, b.ds.ID)
	require.NoError(t, err)
	require.Equal(t, catalog.Totals{}, totals)

	versions, err := b.store.ManifestVersions(b.ctx, b.ds.ID, 1)
	require.NoError(t, err)
	require.Equal(t, int64(3), versions[0].Version)
	require.Equal(t, catalog.OpDelete, versions[0].Operation)
	require.Equal(t, "bob", versions[0].Actor)

	entries, err := b.store.ListAudit(b.ctx, catalog.AuditFilter{Action: catalog.ActionDatasetDelete})
	require.NoError(t, err)
	require.Len(t, entries, 1)
	require.Equal(t, []int64{res.Added[1].ID}, entries[0].Partitions)
	require.Equal(t, int64(200), entries[0].Bytes)

	// The name can be reused; the new dataset starts afresh.
	again, err := b.store.CreateDataset(b.ctx, testDataset("metrics"), "test")
	require.NoError(t, err)
	require.NotEqual(t, b.ds.ID, again.ID)
	require.Equal(t, int64(0), again.ManifestVersion)
	parts, err := b.store.Partitions(b.ctx, "metrics", catalog.PartitionsStateAll)
	require.NoError(t, err)
	require.Empty(t, parts)
}

// A dataset under an active retention hold is not deleted: the sweep would
// destroy the held data and a deleted dataset cannot be restored.
func TestDeleteDatasetRefusedUnderHold(t *testing.T) {
	b := setup(t)
	b.commit(t, catalog.Change{Add: []catalog.PartitionFile{file(0, 10, 100)}})
	h, err := b.store.AddHold(b.ctx, "metrics", day(0), day(1), "legal", "alice")
	require.NoError(t, err)
	version, audits := b.version(t), b.auditCount(t)

	err = b.store.DeleteDataset(b.ctx, "metrics", "bob")
	require.ErrorIs(t, err, catalog.ErrConflict)
	require.Contains(t, err.Error(), fmt.Sprintf("active retention holds [%d]", h.ID))
	require.Equal(t, version, b.version(t), "nothing changed")
	require.Equal(t, audits, b.auditCount(t))
	totals, err := b.store.DatasetTotals(b.ctx, b.ds.ID)
	require.NoError(t, err)
	require.EqualValues(t, 10, totals.Rows)

	_, err = b.store.ReleaseHold(b.ctx, h.ID, "alice")
	require.NoError(t, err)
	require.NoError(t, b.store.DeleteDataset(b.ctx, "metrics", "bob"))
}
