package storage_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"timestore/internal/storage"
)

// faultySetup returns a target over a FaultyBucket wrapping a mem bucket,
// and a source file of 1000 bytes.
func faultySetup(t *testing.T) (*storage.Target, *storage.FaultyBucket, string) {
	t.Helper()
	tgt := openMemTarget(t)
	faulty := storage.NewFaultyBucket(tgt.Bucket)
	src, _ := writeRandomFile(t, t.TempDir(), 1000)
	return &storage.Target{Name: "faulty", Bucket: faulty}, faulty, src
}

func TestFaultyBucketNth(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tgt, faulty, src := faultySetup(t)
	boom := errors.New("boom")
	faulty.FailNth(storage.OpUpload, 2, boom)

	_, _, err := tgt.PutFile(ctx, "a/1.parquet", src)
	require.NoError(t, err)
	_, _, err = tgt.PutFile(ctx, "a/2.parquet", src)
	require.ErrorIs(t, err, boom)
	_, _, err = tgt.PutFile(ctx, "a/3.parquet", src)
	require.NoError(t, err)

	require.Equal(t, 3, faulty.Calls(storage.OpUpload))
	require.Equal(t, 1, faulty.Failures(storage.OpUpload))
	require.Equal(t, 2, faulty.Calls(storage.OpAttributes)) // PutFile checks the size
	require.Equal(t, 5, faulty.Calls(storage.OpAny))
	_, err = tgt.Attributes(ctx, "a/2.parquet")
	require.ErrorIs(t, err, storage.ErrNotExist)
}

func TestFaultyBucketAfterAndSwitch(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tgt, faulty, src := faultySetup(t)
	_, _, err := tgt.PutFile(ctx, "a/1.parquet", src)
	require.NoError(t, err)
	faulty.Reset() // PutFile called Attributes already

	faulty.FailAfter(storage.OpAttributes, 2, nil)
	for i := range 2 {
		_, err := tgt.Attributes(ctx, "a/1.parquet")
		require.NoError(t, err, "call %d", i)
	}
	for range 3 {
		_, err := tgt.Attributes(ctx, "a/1.parquet")
		require.ErrorIs(t, err, storage.ErrInjected)
	}

	faulty.Reset()
	require.Zero(t, faulty.Calls(storage.OpAny))
	_, err = tgt.Attributes(ctx, "a/1.parquet")
	require.NoError(t, err)

	// A switch: everything fails until it is turned off.
	down := errors.New("storage down")
	restore := faulty.FailAlways(storage.OpAny, down)
	require.ErrorIs(t, tgt.Verify(ctx, "a/1.parquet", -1, ""), down)
	require.ErrorIs(t, tgt.List(ctx, "", func(storage.ObjectInfo) error { return nil }), down)
	require.ErrorIs(t, tgt.Delete(ctx, "a/1.parquet"), down)
	_, _, err = tgt.GetFile(ctx, "a/1.parquet", filepath.Join(t.TempDir(), "x"))
	require.ErrorIs(t, err, down)
	restore()
	require.NoError(t, tgt.Verify(ctx, "a/1.parquet", 1000, ""))
	// After the Reset: one good Attributes, four failed calls, and a
	// Verify of two calls.
	require.Equal(t, 7, faulty.Calls(storage.OpAny))
	require.Equal(t, 4, faulty.Failures(storage.OpAny))
}

// TestFaultyBucketLate checks lost acknowledgements: the operation happens
// but the caller sees an error.
func TestFaultyBucketLate(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tgt, faulty, src := faultySetup(t)
	remove := faulty.Inject(storage.Fault{Op: storage.OpUpload, Late: true})
	_, _, err := tgt.PutFile(ctx, "a/1.parquet", src)
	require.ErrorIs(t, err, storage.ErrInjected)
	remove()
	_, err = tgt.Attributes(ctx, "a/1.parquet")
	require.NoError(t, err, "the upload happened")

	faulty.Inject(storage.Fault{Op: storage.OpDelete, Nth: 1, Late: true})
	require.ErrorIs(t, tgt.Delete(ctx, "a/1.parquet"), storage.ErrInjected)
	_, err = tgt.Attributes(ctx, "a/1.parquet")
	require.ErrorIs(t, err, storage.ErrNotExist, "the delete happened")
}

func TestFaultyBucketStreamRead(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tgt, faulty, src := faultySetup(t)
	size, sum, err := tgt.PutFile(ctx, "a/1.parquet", src)
	require.NoError(t, err)

	faulty.Inject(storage.Fault{Op: storage.OpNewReader, Nth: 1, Stream: true, AfterBytes: 500})
	dir := t.TempDir()
	dst := filepath.Join(dir, "copy.parquet")
	_, _, err = tgt.GetFile(ctx, "a/1.parquet", dst)
	require.ErrorIs(t, err, storage.ErrInjected)
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Empty(t, entries, "no partial download left")

	// The fault was for the first read only.
	gotSize, gotSum, err := tgt.GetFile(ctx, "a/1.parquet", dst)
	require.NoError(t, err)
	require.Equal(t, size, gotSize)
	require.Equal(t, sum, gotSum)
}

func TestFaultyBucketOnTargets(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	ts, err := storage.NewTargets(ctx, t.TempDir(), nil)
	require.NoError(t, err)
	defer ts.Close()
	local, err := ts.Get(storage.LocalTargetName)
	require.NoError(t, err)
	faulty := storage.NewFaultyBucket(local.Bucket)
	require.NoError(t, ts.SetBucket(storage.LocalTargetName, faulty))
	require.ErrorIs(t, ts.SetBucket("nope", faulty), storage.ErrUnknownTarget)

	wrapped, err := ts.Get(storage.LocalTargetName)
	require.NoError(t, err)
	require.Same(t, faulty, wrapped.Bucket)
	require.Equal(t, local.LocalDir, wrapped.LocalDir)
	require.Equal(t, local.String(), wrapped.String())

	faulty.FailNth(storage.OpUpload, 1, nil)
	src, _ := writeRandomFile(t, t.TempDir(), 10)
	_, _, err = wrapped.PutFile(ctx, "x/y.parquet", src)
	require.ErrorIs(t, err, storage.ErrInjected)
	require.True(t, strings.Contains(err.Error(), "local"), err.Error())
	_, _, err = wrapped.PutFile(ctx, "x/y.parquet", src)
	require.NoError(t, err)
}
