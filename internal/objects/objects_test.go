package objects_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"timestore/internal/catalog"
	"timestore/internal/objects"
	"timestore/internal/storage"
	"timestore/internal/testutil/pgtest"
)

type bundle struct {
	ctx     context.Context
	store   *catalog.Store
	targets *storage.Targets
	target  *storage.Target
	faulty  *storage.FaultyBucket
	ds      catalog.Dataset
	tmp     string
}

var day = time.Date(2025, 5, 1, 0, 0, 0, 0, time.UTC)

// setup makes a dataset on the local target, whose bucket is wrapped in a
// FaultyBucket.
func setup(t *testing.T) *bundle {
	t.Helper()
	t.Parallel()
	ctx := t.Context()
	targets, err := storage.NewTargets(ctx, t.TempDir(), nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = targets.Close() })
	b := &bundle{ctx: ctx, store: pgtest.NewStore(t), targets: targets, tmp: t.TempDir()}
	b.target, err = targets.Get(storage.LocalTargetName)
	require.NoError(t, err)
	b.faulty = storage.NewFaultyBucket(b.target.Bucket)
	require.NoError(t, targets.SetBucket(b.target.Name, b.faulty))
	b.target, err = targets.Get(storage.LocalTargetName)
	require.NoError(t, err)
	b.ds, err = b.store.CreateDataset(ctx, catalog.Dataset{
		Name:       "metrics",
		Columns:    []catalog.Column{{Name: "ts", Type: catalog.TypeTimestamp}, {Name: "value", Type: catalog.TypeDouble}},
		TimeColumn: "ts", Partition: catalog.WindowDay, Target: b.target.Name,
	}, "test")
	require.NoError(t, err)
	return b
}

// files writes n local files of size bytes each, to go under fresh
// partition keys.
func (b *bundle) files(t *testing.T, n, size int) []objects.File {
	t.Helper()
	fs := make([]objects.File, n)
	for i := range fs {
		key := storage.PartitionKey(b.ds.Name, storage.WindowDay, day, storage.NewObjectID())
		path := filepath.Join(b.tmp, filepath.Base(key))
		require.NoError(t, os.WriteFile(path, make([]byte, size+i), 0o600))
		fs[i] = objects.File{Path: path, Key: key}
	}
	return fs
}

func (b *bundle) exists(t *testing.T, key string) bool {
	t.Helper()
	_, err := b.target.Attributes(b.ctx, key)
	if errors.Is(err, storage.ErrNotExist) {
		return false
	}
	require.NoError(t, err)
	return true
}

func (b *bundle) uploads() *objects.Uploads {
	return &objects.Uploads{Store: b.store, Dataset: b.ds, Target: b.target, Actor: "job:1", Concurrency: 1}
}

func (b *bundle) discardAudits(t *testing.T) []catalog.AuditEntry {
	t.Helper()
	entries, err := b.store.ListAudit(b.ctx, catalog.AuditFilter{Action: catalog.ActionDiscardUpload})
	require.NoError(t, err)
	return entries
}

// Uploaded objects come back with what the target stored and read back
// verified through Fetch, in order.
func TestUploadAndFetch(t *testing.T) {
	b := setup(t)
	files := b.files(t, 3, 100)
	puts, err := objects.Upload(b.ctx, b.target, files, 2)
	require.NoError(t, err)
	require.Len(t, puts, 3)
	stored := make([]objects.Stored, len(puts))
	for i, p := range puts {
		require.Equal(t, files[i].Key, p.Key)
		require.EqualValues(t, 100+i, p.Size)
		require.NotEmpty(t, p.Checksum)
		stored[i] = objects.Stored{Target: b.target, Key: p.Key, Size: p.Size, Checksum: p.Checksum, Name: "object"}
	}
	cache, err := storage.NewCache(t.TempDir(), 1<<20, nil)
	require.NoError(t, err)
	paths, release, err := objects.Fetch(b.ctx, cache, stored, 2)
	require.NoError(t, err)
	for i, path := range paths {
		info, err := os.Stat(path)
		require.NoError(t, err)
		require.EqualValues(t, 100+i, info.Size())
	}
	release()
	release() // safe twice

	// A recorded checksum the object does not match fails the fetch.
	stored[1].Checksum = stored[0].Checksum
	_, release, err = objects.Fetch(b.ctx, cache, stored, 2)
	require.ErrorIs(t, err, storage.ErrMismatch)
	require.ErrorContains(t, err, "fetch object")
	require.NotNil(t, release)
	release()
}

// A file whose size is given must be stored with that size.
func TestUploadChecksSize(t *testing.T) {
	b := setup(t)
	files := b.files(t, 1, 100)
	files[0].Size = 99
	_, err := objects.Upload(b.ctx, b.target, files, 1)
	require.ErrorIs(t, err, storage.ErrMismatch)
}

// A put whose acknowledgement is lost (the object landed) is returned with
// the ones that succeeded, and Discard deletes both, each audited; the
// puts never started are neither returned nor audited.
func TestDiscardTakesFailedPutsThatLanded(t *testing.T) {
	b := setup(t)
	errLost := errors.New("acknowledgement lost")
	b.faulty.Inject(storage.Fault{Op: storage.OpUpload, Nth: 2, Late: true, Err: errLost})
	files := b.files(t, 4, 100)
	u := b.uploads()
	puts, err := u.Upload(b.ctx, files)
	require.ErrorIs(t, err, errLost)
	require.Len(t, puts, 2, "one put succeeded, one failed, the others never started (concurrency 1)")
	require.Equal(t, files[1].Key, puts[1].Key)
	require.Zero(t, puts[1].Size, "the failed put's size is unknown")
	require.True(t, b.exists(t, files[1].Key), "the failed put landed")

	u.Discard(b.ctx, "test: the change failed")
	for _, f := range files {
		require.False(t, b.exists(t, f.Key), "%s left behind", f.Key)
	}
	entries := b.discardAudits(t)
	require.Len(t, entries, 2)
	for _, e := range entries {
		require.Equal(t, "job:1", e.Actor)
		require.Equal(t, "test: the change failed", e.Reason)
	}
	u.Discard(b.ctx, "again") // forgotten: nothing more to do
	require.Len(t, b.discardAudits(t), 2)
}

// An upload that the manifest references (its change committed after all)
// is kept; the others are deleted.
func TestDiscardKeepsReferencedUploads(t *testing.T) {
	b := setup(t)
	u := b.uploads()
	puts, err := u.Upload(b.ctx, b.files(t, 2, 100))
	require.NoError(t, err)
	_, err = b.store.Commit(b.ctx, catalog.Change{
		Dataset: b.ds.Name, Operation: catalog.OpIngest, Actor: "test",
		Add: []catalog.PartitionFile{{
			WindowStart: day, TimeMin: day.Add(time.Hour), TimeMax: day.Add(2 * time.Hour),
			RowCount: 1, SizeBytes: puts[0].Size, Target: b.target.Name, Key: puts[0].Key, Checksum: puts[0].Checksum,
		}},
	})
	require.NoError(t, err)
	u.Discard(b.ctx, "test: outcome unknown")
	require.True(t, b.exists(t, puts[0].Key), "a referenced upload must stay")
	require.False(t, b.exists(t, puts[1].Key))
	require.Len(t, b.discardAudits(t), 1)
}

// When the catalog cannot tell what it references, nothing is deleted (the
// objects are left for reconcile).
func TestDiscardLeavesObjectsWhenTheCatalogCannotTell(t *testing.T) {
	b := setup(t)
	u := b.uploads()
	u.Store = failingDiscarder{}
	puts, err := u.Upload(b.ctx, b.files(t, 2, 100))
	require.NoError(t, err)
	u.Discard(b.ctx, "test")
	for _, p := range puts {
		require.True(t, b.exists(t, p.Key))
	}
}

type failingDiscarder struct{}

func (failingDiscarder) DiscardUploads(context.Context, int64, string, string, string, []catalog.Upload) ([]catalog.Upload, error) {
	return nil, errors.New("catalog unreachable")
}

// Partitions finds each partition's target and names the partition in
// errors, also when its target is unknown.
func TestPartitions(t *testing.T) {
	b := setup(t)
	parts := []catalog.Partition{
		{ID: 7, PartitionFile: catalog.PartitionFile{Target: b.target.Name, Key: "a/1", SizeBytes: 10, Checksum: "sha256:x"}},
		{ID: 8, PartitionFile: catalog.PartitionFile{Target: b.target.Name, Key: "a/2", SizeBytes: 20, Checksum: "sha256:y"}},
	}
	objs, err := objects.Partitions(b.targets, parts)
	require.NoError(t, err)
	require.Equal(t, []objects.Stored{
		{Target: b.target, Key: "a/1", Size: 10, Checksum: "sha256:x", Name: "partition 7"},
		{Target: b.target, Key: "a/2", Size: 20, Checksum: "sha256:y", Name: "partition 8"},
	}, objs)

	parts[1].Target = "elsewhere"
	_, err = objects.Partitions(b.targets, parts)
	require.ErrorContains(t, err, "partition 8: ")
	require.ErrorContains(t, err, "elsewhere")
}
