package storage_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"timestore/internal/storage"
	"timestore/internal/testutil/s3test"
)

func TestNewTargets(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dataDir := t.TempDir()
	coldDir := t.TempDir()
	srv := s3test.Start(t)
	ts, err := storage.NewTargets(ctx, dataDir, map[string]string{
		"cold":    "file://" + coldDir,
		"archive": srv.NewBucket(t),
	})
	require.NoError(t, err)
	defer func() { require.NoError(t, ts.Close()) }()

	require.Equal(t, []string{"archive", "cold", "local"}, ts.Names())

	local, err := ts.Get("local")
	require.NoError(t, err)
	want := filepath.Join(dataDir, "objects")
	require.Equal(t, want, local.LocalDir)
	require.True(t, filepath.IsAbs(local.LocalDir))
	info, err := os.Stat(want)
	require.NoError(t, err)
	require.True(t, info.IsDir())

	cold, err := ts.Get("cold")
	require.NoError(t, err)
	require.Equal(t, coldDir, cold.LocalDir)

	archive, err := ts.Get("archive")
	require.NoError(t, err)
	require.Empty(t, archive.LocalDir)
	require.NoError(t, archive.Check(ctx))

	src, _ := writeRandomFile(t, t.TempDir(), 4096)
	for _, tgt := range []*storage.Target{local, cold, archive} {
		size, sum, err := tgt.PutFile(ctx, "sales/2024-05-01/a.parquet", src)
		require.NoError(t, err, tgt.String())
		require.NoError(t, tgt.Verify(ctx, "sales/2024-05-01/a.parquet", size, sum), tgt.String())
	}

	_, err = ts.Get("nope")
	require.ErrorIs(t, err, storage.ErrUnknownTarget)
	require.Contains(t, err.Error(), `"nope"`)
	require.Contains(t, err.Error(), "archive, cold, local")
}

func TestNewTargetsRejects(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for name, urls := range map[string]map[string]string{
		"reserved local":   {"local": "mem://"},
		"upper case":       {"Cold": "mem://"},
		"leading digit":    {"1cold": "mem://"},
		"dash":             {"co-ld": "mem://"},
		"empty":            {"": "mem://"},
		"too long":         {"a123456789012345678901234567890123456789012345678901234567890123": "mem://"},
		"unknown scheme":   {"cold": "ftp://host/dir"},
		"missing file dir": {"cold": "file:///definitely/not/here"},
		"bad s3 parameter": {"cold": "s3://b?region=us-east-1&nonsense=1"},
	} {
		_, err := storage.NewTargets(ctx, t.TempDir(), urls)
		require.Error(t, err, name)
	}
	_, err := storage.NewTargets(ctx, "", nil)
	require.Error(t, err)
	require.NoError(t, storage.ValidateTargetName("a"))
	require.NoError(t, storage.ValidateTargetName("a12345678901234567890123456789012345678901234567890123456789012"))
}

func TestNewTargetsOddDataDir(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dataDir := filepath.Join(t.TempDir(), "with space %41 #x")
	ts, err := storage.NewTargets(ctx, dataDir, nil)
	require.NoError(t, err)
	defer ts.Close()
	local, err := ts.Get(storage.LocalTargetName)
	require.NoError(t, err)
	require.Equal(t, filepath.Join(dataDir, "objects"), local.LocalDir)
	src, _ := writeRandomFile(t, t.TempDir(), 10)
	_, _, err = local.PutFile(ctx, "a/b.parquet", src)
	require.NoError(t, err)
	require.FileExists(t, filepath.Join(dataDir, "objects", "a", "b.parquet"))
}
