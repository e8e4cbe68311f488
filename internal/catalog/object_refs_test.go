package catalog_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"timestore/internal/catalog"
)

func TestObjectReferenced(t *testing.T) {
	b := setup(t)
	f := file(0, 1, 100)
	ok, err := b.store.ObjectReferenced(b.ctx, f.Target, f.Key)
	require.NoError(t, err)
	require.False(t, ok)
	added := b.commit(t, catalog.Change{Add: []catalog.PartitionFile{f}}).Added
	ok, err = b.store.ObjectReferenced(b.ctx, f.Target, f.Key)
	require.NoError(t, err)
	require.True(t, ok)
	ok, err = b.store.ObjectReferenced(b.ctx, "other", f.Key)
	require.NoError(t, err)
	require.False(t, ok)
	// Removed partitions still reference their object until it is purged.
	b.commit(t, catalog.Change{Operation: catalog.OpRetention, Remove: []int64{added[0].ID}})
	ok, err = b.store.ObjectReferenced(b.ctx, f.Target, f.Key)
	require.NoError(t, err)
	require.True(t, ok)
}

func TestObjectRefsCoverDeletedNamesakes(t *testing.T) {
	b := setup(t)
	live := b.commit(t, catalog.Change{Add: []catalog.PartitionFile{file(0, 1, 10), file(1, 1, 20)}}).Added
	b.commit(t, catalog.Change{Operation: catalog.OpRetention, Remove: []int64{live[1].ID}})
	require.NoError(t, b.store.DeleteDataset(b.ctx, "metrics", "test"))
	_, err := b.store.CreateDataset(b.ctx, testDataset("metrics"), "test")
	require.NoError(t, err)
	fresh := b.commit(t, catalog.Change{Add: []catalog.PartitionFile{file(2, 1, 30)}}).Added

	refs, err := b.store.ObjectRefs(b.ctx, "metrics")
	require.NoError(t, err)
	require.Len(t, refs, 3)
	byID := map[int64]catalog.ObjectRef{}
	for _, r := range refs {
		byID[r.PartitionID] = r
	}
	require.Equal(t, catalog.StateRemoved, byID[live[0].ID].State, "removed by the delete")
	require.Equal(t, catalog.StateRemoved, byID[live[1].ID].State)
	require.Equal(t, catalog.StateLive, byID[fresh[0].ID].State)
	require.Equal(t, fresh[0].Key, byID[fresh[0].ID].Key)
	require.Equal(t, int64(30), byID[fresh[0].ID].SizeBytes)

	refs, err = b.store.ObjectRefs(b.ctx, "nope")
	require.NoError(t, err)
	require.Empty(t, refs)
}
