package catalog_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"timestore/internal/catalog"
	"timestore/internal/testutil/pgtest"
)

// Leases taken through a store opened WithLeaseNode record the node;
// ReleaseNodeLeases ends exactly those, with an audit row per dataset, and
// the versions they pinned are free at once.
func TestReleaseNodeLeases(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	dbURL := pgtest.NewDatabaseURL(t)
	open := func(node string) *catalog.Store {
		t.Helper()
		u := dbURL
		if node != "" {
			var err error
			u, err = catalog.WithLeaseNode(dbURL, node)
			require.NoError(t, err)
		}
		s, err := catalog.Open(ctx, u)
		require.NoError(t, err)
		t.Cleanup(s.Close)
		return s
	}
	nodeA, nodeB, plain := open("node-a"), open("node-b"), open("")
	ds, err := plain.CreateDataset(ctx, testDataset("metrics"), "test")
	require.NoError(t, err)
	other, err := plain.CreateDataset(ctx, testDataset("other"), "test")
	require.NoError(t, err)
	_, err = plain.Commit(ctx, catalog.Change{Dataset: "metrics", Operation: catalog.OpIngest, Actor: "test",
		Add: []catalog.PartitionFile{file(0, 1, 1)}})
	require.NoError(t, err)

	// Node A: a lease by AcquireLease and one by LeasedSnapshot, on two datasets.
	a1, err := nodeA.AcquireLease(ctx, ds.ID, 1, "query", time.Hour)
	require.NoError(t, err)
	_, a2, err := nodeA.LeasedSnapshot(ctx, "other", nil, nil, "export job:7", time.Hour)
	require.NoError(t, err)
	b1, err := nodeB.AcquireLease(ctx, ds.ID, 0, "query", time.Hour)
	require.NoError(t, err)
	p1, err := plain.AcquireLease(ctx, other.ID, 0, "query", time.Hour)
	require.NoError(t, err)

	nodes := map[int64]*string{}
	rows, err := plain.Pool().Query(ctx, `SELECT id, node FROM timestore.query_leases`)
	require.NoError(t, err)
	for rows.Next() {
		var id int64
		var node *string
		require.NoError(t, rows.Scan(&id, &node))
		nodes[id] = node
	}
	require.NoError(t, rows.Err())
	require.Equal(t, "node-a", *nodes[a1])
	require.Equal(t, "node-a", *nodes[a2])
	require.Equal(t, "node-b", *nodes[b1])
	require.Nil(t, nodes[p1], "a connection without a node records none")

	released, err := nodeA.ReleaseNodeLeases(ctx, "node-a", "node:node-a")
	require.NoError(t, err)
	require.Len(t, released, 2)
	require.Equal(t, catalog.ReleasedLease{ID: a1, DatasetID: ds.ID, Dataset: "metrics", ManifestVersion: 1, Holder: "query"}, released[0])
	require.Equal(t, catalog.ReleasedLease{ID: a2, DatasetID: other.ID, Dataset: "other", ManifestVersion: 0, Holder: "export job:7"}, released[1])

	pinned, err := plain.PinnedVersions(ctx, ds.ID, time.Time{})
	require.NoError(t, err)
	require.Equal(t, []int64{0}, pinned, "node A's lease on version 1 no longer pins it; node B's stays")
	pinned, err = plain.PinnedVersions(ctx, other.ID, time.Time{})
	require.NoError(t, err)
	require.Equal(t, []int64{0}, pinned, "the lease without a node stays")

	for _, name := range []string{"metrics", "other"} {
		entries, err := plain.ListAudit(ctx, catalog.AuditFilter{Dataset: name, Action: catalog.ActionReleaseLeases})
		require.NoError(t, err)
		require.Len(t, entries, 1, "audit rows of dataset %s", name)
		require.Equal(t, "node:node-a", entries[0].Actor)
		require.Equal(t, "node-a", entries[0].Details["node"])
	}

	again, err := nodeA.ReleaseNodeLeases(ctx, "node-a", "node:node-a")
	require.NoError(t, err)
	require.Empty(t, again)

	_, err = catalog.WithLeaseNode(dbURL, "a b")
	require.Error(t, err)
	kv, err := catalog.WithLeaseNode("host=127.0.0.1 user=postgres", "node-a")
	require.NoError(t, err)
	require.Equal(t, "host=127.0.0.1 user=postgres timestore.node=node-a", kv)
}
