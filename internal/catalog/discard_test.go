package catalog_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"timestore/internal/catalog"
	"timestore/internal/testutil/pgtest"
)

// DiscardUploads waits out a manifest change still committing: an object
// that change references is kept, whatever its writer believes; the others
// are returned for deletion, each with an audit record.
func TestDiscardUploadsWaitsForCommitInFlight(t *testing.T) {
	b := setup(t)
	committed := file(0, 10, 100)
	other := file(1, 10, 200)

	pgtest.SlowCommits(t, b.store.Pool(), 700*time.Millisecond)
	done := make(chan error, 1)
	go func() {
		_, err := b.store.Commit(b.ctx, catalog.Change{Dataset: b.ds.Name, Operation: catalog.OpIngest, Actor: "test",
			Add: []catalog.PartitionFile{committed}})
		done <- err
	}()
	pgtest.WaitCommitInFlight(t, b.store.Pool(), 20*time.Second)

	uploads := []catalog.Upload{
		{Target: committed.Target, Key: committed.Key, Bytes: committed.SizeBytes},
		{Target: other.Target, Key: other.Key, Bytes: other.SizeBytes},
	}
	discard, err := b.store.DiscardUploads(b.ctx, b.ds.ID, b.ds.Name, "job:7", "test discard", uploads)
	require.NoError(t, err)
	// Had it not waited, the partition of the commit in flight would not
	// have been visible yet, and both objects would be returned.
	require.Equal(t, uploads[1:], discard, "only the object no partition references")
	require.NoError(t, <-done, "the commit in flight")

	entries, err := b.store.ListAudit(b.ctx, catalog.AuditFilter{Action: catalog.ActionDiscardUpload})
	require.NoError(t, err)
	require.Len(t, entries, 1)
	require.Equal(t, "job:7", entries[0].Actor)
	require.Equal(t, b.ds.Name, entries[0].Dataset)
	require.EqualValues(t, 200, entries[0].Bytes)
	require.Equal(t, other.Key, entries[0].Details["key"])

	// Nothing uploaded, nothing to do.
	discard, err = b.store.DiscardUploads(b.ctx, b.ds.ID, b.ds.Name, "job:7", "test", nil)
	require.NoError(t, err)
	require.Empty(t, discard)
}
