package catalog_test

import (
	"io/fs"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"timestore/internal/catalog"
	"timestore/internal/testutil/pgtest"
)

func TestMigrateTwiceIsIdempotent(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	store := pgtest.NewStore(t) // migrated once already
	require.NoError(t, store.Migrate(ctx))
	require.NoError(t, store.Migrate(ctx))
	_, err := store.CreateDataset(ctx, testDataset("after_migrate"), "test")
	require.NoError(t, err)
}

func TestMigrateConcurrentlyOnEmptyDatabase(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	url := pgtest.NewEmptyDatabaseURL(t)
	const n = 3
	stores := make([]*catalog.Store, n)
	for i := range stores {
		s, err := catalog.Open(ctx, url)
		require.NoError(t, err)
		t.Cleanup(s.Close)
		stores[i] = s
	}
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i, s := range stores {
		wg.Go(func() { errs[i] = s.Migrate(ctx) })
	}
	wg.Wait()
	for _, err := range errs {
		require.NoError(t, err)
	}

	var version int64
	var schema string
	require.NoError(t, stores[0].Pool().QueryRow(ctx, `
		SELECT max(version_id), (SELECT schemaname FROM pg_tables WHERE tablename = 'goose_db_version')
		FROM timestore.goose_db_version`).Scan(&version, &schema))
	entries, err := fs.ReadDir(catalog.Migrations(), ".")
	require.NoError(t, err)
	require.Equal(t, int64(len(entries)), version, "every migration applied once")
	require.Equal(t, "timestore", schema)
}
