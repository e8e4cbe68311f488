package s3test_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"gocloud.dev/blob"
	_ "gocloud.dev/blob/s3blob"

	"timestore/internal/testutil/s3test"
)

func TestMain(m *testing.M) {
	s3test.SetCredentialsEnv()
	code := m.Run()
	s3test.StopShared()
	os.Exit(code)
}

func TestServer(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := s3test.Start(t)
	require.True(t, strings.HasPrefix(srv.Endpoint, "http://127.0.0.1:"), srv.Endpoint)

	u1 := srv.NewBucket(t)
	u2 := srv.NewBucket(t)
	require.NotEqual(t, u1, u2)
	require.Contains(t, u1, "endpoint="+srv.Endpoint)
	require.Contains(t, u1, "use_path_style=true")

	b, err := blob.OpenBucket(ctx, u1)
	require.NoError(t, err)
	defer b.Close()
	require.NoError(t, b.WriteAll(ctx, "a/b.txt", []byte("hello"), nil))
	got, err := b.ReadAll(ctx, "a/b.txt")
	require.NoError(t, err)
	require.Equal(t, "hello", string(got))

	// The posix backend keeps objects as files under Dir/BUCKET.
	bucket := strings.TrimPrefix(u1[:strings.Index(u1, "?")], "s3://")
	onDisk, err := os.ReadFile(filepath.Join(srv.Dir, bucket, "a", "b.txt"))
	require.NoError(t, err)
	require.Equal(t, "hello", string(onDisk))

	// Buckets are separate.
	b2, err := blob.OpenBucket(ctx, u2)
	require.NoError(t, err)
	defer b2.Close()
	ok, err := b2.Exists(ctx, "a/b.txt")
	require.NoError(t, err)
	require.False(t, ok)
}

func TestServerStopRestart(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := s3test.Start(t)
	u := srv.NewBucket(t)
	b, err := blob.OpenBucket(ctx, u)
	require.NoError(t, err)
	defer b.Close()
	require.NoError(t, b.WriteAll(ctx, "k", []byte("v1"), nil))
	endpoint := srv.Endpoint

	srv.Stop()
	srv.Stop() // idempotent
	// The AWS SDK retries refused connections for a few seconds; don't wait
	// for it.
	downCtx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	_, err = b.ReadAll(downCtx, "k")
	require.Error(t, err, "S3 is down")

	srv.Restart()
	require.Equal(t, endpoint, srv.Endpoint, "same port")
	got, err := b.ReadAll(ctx, "k")
	require.NoError(t, err)
	require.Equal(t, "v1", string(got), "data kept across restarts")
}

// TestBinaryMissing is not parallel: it changes the environment.
func TestBinaryMissing(t *testing.T) {
	t.Setenv(s3test.BinaryEnv, filepath.Join(t.TempDir(), "no-versitygw"))
	_, err := s3test.Binary()
	require.Error(t, err)
	require.Contains(t, err.Error(), s3test.BinaryEnv)
}

func TestBinaryFound(t *testing.T) {
	t.Parallel()
	p, err := s3test.Binary()
	require.NoError(t, err)
	require.True(t, filepath.IsAbs(p), p)
}

func TestStartShared(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := s3test.StartShared()
	require.Same(t, srv, s3test.StartShared())
	b, err := blob.OpenBucket(ctx, srv.NewBucket(t))
	require.NoError(t, err)
	defer b.Close()
	require.NoError(t, b.WriteAll(ctx, "k", []byte("v"), nil))
}
