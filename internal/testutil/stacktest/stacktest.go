// Package stacktest builds the real components that package tests run around
// one dataset: a fresh Postgres catalog, the local target or an S3 target on
// the package's shared versitygw, a read cache, ingest and query.
package stacktest

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"timestore/internal/catalog"
	"timestore/internal/engine"
	"timestore/internal/ingest"
	"timestore/internal/query"
	"timestore/internal/storage"
	"timestore/internal/testutil/pgtest"
	"timestore/internal/testutil/s3test"
)

// RemoteTargetName names the S3 target.
const RemoteTargetName = "remote"

// Stack is the real components around one dataset.
type Stack struct {
	Ctx        context.Context
	Store      *catalog.Store
	Targets    *storage.Targets
	Target     *storage.Target // the dataset's target
	TargetName string
	Cache      *storage.Cache
	Ingest     *ingest.Service
	Query      *query.Service
	Dataset    catalog.Dataset // as created
}

// TargetName is the name of the S3 target when remote, else of the local one.
func TargetName(remote bool) string {
	if remote {
		return RemoteTargetName
	}
	return storage.LocalTargetName
}

// New makes the stack on the local target, or on a fresh bucket of the
// shared versitygw when remote, and creates ds there (New sets ds.Target).
// Ingest and query run on eng; everything is closed or removed when t ends.
func New(t testing.TB, eng *engine.Engine, remote bool, ds catalog.Dataset) *Stack {
	t.Helper()
	ctx := t.Context()
	store := pgtest.NewStore(t)
	urls := map[string]string{}
	if remote {
		urls[RemoteTargetName] = s3test.StartShared().NewBucket(t)
	}
	targets, err := storage.NewTargets(ctx, t.TempDir(), urls)
	require.NoError(t, err)
	t.Cleanup(func() { _ = targets.Close() })
	cache, err := storage.NewCache(t.TempDir(), 1<<30, nil)
	require.NoError(t, err)
	name := TargetName(remote)
	ds.Target = name
	ds, err = store.CreateDataset(ctx, ds, "test")
	require.NoError(t, err)
	target, err := targets.Get(name)
	require.NoError(t, err)
	return &Stack{
		Ctx: ctx, Store: store, Targets: targets, Target: target, TargetName: name, Cache: cache, Dataset: ds,
		Ingest: ingest.New(ingest.Options{Store: store, Targets: targets, Engine: eng, TempDir: t.TempDir()}),
		Query:  query.New(query.Options{Store: store, Targets: targets, Cache: cache, Engine: eng}),
	}
}

// BothTargets runs fn as a parallel subtest on the local target and on S3,
// each named after its target.
func BothTargets(t *testing.T, fn func(t *testing.T, remote bool)) {
	t.Helper()
	for _, remote := range []bool{false, true} {
		t.Run(TargetName(remote), func(t *testing.T) {
			t.Parallel()
			fn(t, remote)
		})
	}
}
