package storage_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sync/errgroup"

	"timestore/internal/storage"
	"timestore/internal/testutil/s3test"
)

// targetKinds are the kinds of target every conformance test runs against.
var targetKinds = []struct {
	name string
	open func(t *testing.T) *storage.Target
}{
	{"file", openFileTarget},
	{"s3", openS3Target},
	{"mem", openMemTarget},
}

func openFileTarget(t *testing.T) *storage.Target {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "objects")
	tgt, err := storage.NewTarget(context.Background(), "files", "file://"+dir+"?create_dir=true")
	require.NoError(t, err)
	require.Equal(t, dir, tgt.LocalDir)
	t.Cleanup(func() { require.NoError(t, tgt.Bucket.Close()) })
	return tgt
}

func openS3Target(t *testing.T) *storage.Target {
	t.Helper()
	srv := s3test.Start(t)
	tgt, err := storage.NewTarget(context.Background(), "remote", srv.NewBucket(t))
	require.NoError(t, err)
	require.Empty(t, tgt.LocalDir)
	t.Cleanup(func() { require.NoError(t, tgt.Bucket.Close()) })
	return tgt
}

func openMemTarget(t *testing.T) *storage.Target {
	t.Helper()
	tgt, err := storage.NewTarget(context.Background(), "mem", "mem://")
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, tgt.Bucket.Close()) })
	return tgt
}

// writeRandomFile writes n random bytes to a new file in dir.
func writeRandomFile(t *testing.T, dir string, n int) (string, []byte) {
	t.Helper()
	data := make([]byte, n)
	_, err := rand.Read(data)
	require.NoError(t, err)
	f, err := os.CreateTemp(dir, "src-*.bin")
	require.NoError(t, err)
	_, err = f.Write(data)
	require.NoError(t, err)
	require.NoError(t, f.Close())
	return f.Name(), data
}

// requireCleanDir fails if dir holds gocloud sidecar or temporary files.
func requireCleanDir(t *testing.T, dir string) {
	t.Helper()
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		require.NoError(t, err)
		name := d.Name()
		require.False(t, strings.HasSuffix(name, ".attrs"), "sidecar file %s", p)
		require.False(t, strings.HasSuffix(name, ".tmp"), "temporary file %s", p)
		return nil
	})
	require.NoError(t, err)
}

func TestTargetRoundTrip(t *testing.T) {
	t.Parallel()
	for _, kind := range targetKinds {
		t.Run(kind.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			tgt := kind.open(t)
			tmp := t.TempDir()

			sizes := []int{0, 1, 100 << 10}
			if kind.name == "s3" {
				sizes = append(sizes, 11<<20) // several upload parts
			}
			for i, n := range sizes {
				src, data := writeRandomFile(t, tmp, n)
				key := storage.PartitionKey("sales", storage.WindowDay, testDay, storage.NewObjectID())
				wantSize, wantSum, err := storage.Checksum(src)
				require.NoError(t, err)

				size, sum, err := tgt.PutFile(ctx, key, src)
				require.NoError(t, err)
				require.Equal(t, int64(n), size)
				require.Equal(t, wantSize, size)
				require.Equal(t, wantSum, sum)
				require.True(t, strings.HasPrefix(sum, "sha256:"))

				info, err := tgt.Attributes(ctx, key)
				require.NoError(t, err)
				require.Equal(t, key, info.Key)
				require.Equal(t, int64(n), info.Size)
				require.False(t, info.ModTime.IsZero())

				dst := filepath.Join(tmp, "dst", "copy.parquet")
				require.NoError(t, os.MkdirAll(filepath.Dir(dst), 0o755))
				gotSize, gotSum, err := tgt.GetFile(ctx, key, dst)
				require.NoError(t, err)
				require.Equal(t, size, gotSize)
				require.Equal(t, sum, gotSum)
				got, err := os.ReadFile(dst)
				require.NoError(t, err)
				require.True(t, bytes.Equal(data, got), "content of size %d differs", n)

				require.NoError(t, tgt.Verify(ctx, key, size, sum))
				require.NoError(t, tgt.Verify(ctx, key, -1, ""))
				require.ErrorIs(t, tgt.Verify(ctx, key, size+1, sum), storage.ErrMismatch)
				other := "sha256:" + strings.Repeat("0", 64)
				require.ErrorIs(t, tgt.Verify(ctx, key, size, other), storage.ErrMismatch)
				require.ErrorIs(t, tgt.Verify(ctx, key, -1, other), storage.ErrMismatch)
				require.Error(t, tgt.Verify(ctx, key, size, "md5:abc"))

				if tgt.LocalDir != "" {
					direct, err := os.ReadFile(filepath.Join(tgt.LocalDir, filepath.FromSlash(key)))
					require.NoError(t, err)
					require.True(t, bytes.Equal(data, direct))
				}

				require.NoError(t, tgt.Delete(ctx, key), "object %d", i)
				_, err = tgt.Attributes(ctx, key)
				require.ErrorIs(t, err, storage.ErrNotExist)
			}
			if tgt.LocalDir != "" {
				requireCleanDir(t, tgt.LocalDir)
			}
		})
	}
}

func TestTargetNotExist(t *testing.T) {
	t.Parallel()
	for _, kind := range targetKinds {
		t.Run(kind.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			tgt := kind.open(t)
			key := "nope/missing.parquet"

			_, err := tgt.Attributes(ctx, key)
			require.ErrorIs(t, err, storage.ErrNotExist)

			err = tgt.Delete(ctx, key)
			require.ErrorIs(t, err, storage.ErrNotExist)
			require.Contains(t, err.Error(), tgt.Name)

			require.ErrorIs(t, tgt.Verify(ctx, key, 1, ""), storage.ErrNotExist)

			dir := t.TempDir()
			_, _, err = tgt.GetFile(ctx, key, filepath.Join(dir, "x.parquet"))
			require.ErrorIs(t, err, storage.ErrNotExist)
			entries, err := os.ReadDir(dir)
			require.NoError(t, err)
			require.Empty(t, entries, "GetFile left files behind")

			_, _, err = tgt.PutFile(ctx, "a/b.parquet", filepath.Join(dir, "no-such-file"))
			require.ErrorIs(t, err, fs.ErrNotExist)
			require.NotErrorIs(t, err, storage.ErrNotExist)
		})
	}
}

func TestTargetList(t *testing.T) {
	t.Parallel()
	for _, kind := range targetKinds {
		t.Run(kind.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			tgt := kind.open(t)
			src, _ := writeRandomFile(t, t.TempDir(), 10)
			keys := []string{
				"sales/2024-05-02/b.parquet",
				"sales/2024-05-01/a.parquet",
				"sales2/2024-05-01/c.parquet",
				"exports/sales/_manifest.json",
			}
			for _, k := range keys {
				_, _, err := tgt.PutFile(ctx, k, src)
				require.NoError(t, err)
			}
			list := func(prefix string) []string {
				var got []string
				err := tgt.List(ctx, prefix, func(o storage.ObjectInfo) error {
					require.Equal(t, int64(10), o.Size)
					require.False(t, o.ModTime.IsZero())
					got = append(got, o.Key)
					return nil
				})
				require.NoError(t, err)
				return got
			}
			require.Equal(t, []string{
				"exports/sales/_manifest.json",
				"sales/2024-05-01/a.parquet",
				"sales/2024-05-02/b.parquet",
				"sales2/2024-05-01/c.parquet",
			}, list(""))
			require.Equal(t, []string{"sales/2024-05-01/a.parquet", "sales/2024-05-02/b.parquet"}, list("sales/"))
			require.Equal(t, []string{
				"sales/2024-05-01/a.parquet",
				"sales/2024-05-02/b.parquet",
				"sales2/2024-05-01/c.parquet",
			}, list("sales"))
			require.Empty(t, list("nothing/"))

			// fn's error stops the listing and comes back as is.
			stop := storage.ErrInjected
			n := 0
			err := tgt.List(ctx, "", func(storage.ObjectInfo) error { n++; return stop })
			require.ErrorIs(t, err, stop)
			require.Equal(t, 1, n)

			require.ErrorIs(t, tgt.List(ctx, "../", func(storage.ObjectInfo) error { return nil }), storage.ErrInvalidKey)
			require.ErrorIs(t, tgt.List(ctx, "/abs", func(storage.ObjectInfo) error { return nil }), storage.ErrInvalidKey)
			require.NoError(t, tgt.Check(ctx))
			if tgt.LocalDir != "" {
				requireCleanDir(t, tgt.LocalDir)
			}
		})
	}
}

// TestTargetUploadAtomic checks that an upload whose source breaks off
// leaves neither a partial object nor a temporary file, and keeps the
// previous object under the key.
func TestTargetUploadAtomic(t *testing.T) {
	t.Parallel()
	for _, kind := range targetKinds {
		t.Run(kind.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			tgt := kind.open(t)
			faulty := storage.NewFaultyBucket(tgt.Bucket)
			ft := &storage.Target{Name: tgt.Name, Bucket: faulty, LocalDir: tgt.LocalDir}
			tmp := t.TempDir()
			v1, _ := writeRandomFile(t, tmp, 1000)
			// On S3, break off after two full upload parts (8 MiB each), so
			// that an incomplete multipart upload is exercised.
			v2Size, breakAt := 3<<20, int64(1<<20)
			if kind.name == "s3" {
				v2Size, breakAt = 20<<20, 17<<20
			}
			v2, _ := writeRandomFile(t, tmp, v2Size)

			key := "sales/2024-05-01/obj.parquet"
			size1, sum1, err := ft.PutFile(ctx, key, v1)
			require.NoError(t, err)

			faulty.Inject(storage.Fault{Op: storage.OpUpload, Nth: 2, Stream: true, AfterBytes: breakAt})
			faulty.Inject(storage.Fault{Op: storage.OpUpload, Nth: 3, Stream: true, AfterBytes: breakAt})
			_, _, err = ft.PutFile(ctx, key, v2)
			require.ErrorIs(t, err, storage.ErrInjected)
			require.NoError(t, ft.Verify(ctx, key, size1, sum1), "previous object must survive")

			fresh := "sales/2024-05-01/fresh.parquet"
			_, _, err = ft.PutFile(ctx, fresh, v2)
			require.ErrorIs(t, err, storage.ErrInjected)
			_, err = ft.Attributes(ctx, fresh)
			require.ErrorIs(t, err, storage.ErrNotExist, "no partial object")

			var keys []string
			require.NoError(t, ft.List(ctx, "", func(o storage.ObjectInfo) error { keys = append(keys, o.Key); return nil }))
			require.Equal(t, []string{key}, keys)

			// A cancelled context aborts the upload too.
			cctx, cancel := context.WithCancel(ctx)
			cancel()
			_, _, err = ft.PutFile(cctx, fresh, v2)
			require.Error(t, err)
			_, err = ft.Attributes(ctx, fresh)
			require.ErrorIs(t, err, storage.ErrNotExist)

			if tgt.LocalDir != "" {
				requireCleanDir(t, tgt.LocalDir)
			}
		})
	}
}

func TestTargetRejectsInvalidKeys(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tgt := openFileTarget(t)
	faulty := storage.NewFaultyBucket(tgt.Bucket)
	ft := &storage.Target{Name: tgt.Name, Bucket: faulty, LocalDir: tgt.LocalDir}
	src, _ := writeRandomFile(t, t.TempDir(), 10)
	outside := filepath.Join(filepath.Dir(tgt.LocalDir), "escaped")

	for _, key := range []string{"../escaped", "a/../../escaped", "/abs", "a//b", "", `a\b`, "ünï"} {
		_, _, err := ft.PutFile(ctx, key, src)
		require.ErrorIs(t, err, storage.ErrInvalidKey, key)
		_, _, err = ft.GetFile(ctx, key, filepath.Join(t.TempDir(), "x"))
		require.ErrorIs(t, err, storage.ErrInvalidKey, key)
		require.ErrorIs(t, ft.Delete(ctx, key), storage.ErrInvalidKey, key)
		require.ErrorIs(t, ft.Verify(ctx, key, -1, ""), storage.ErrInvalidKey, key)
		_, err = ft.Attributes(ctx, key)
		require.ErrorIs(t, err, storage.ErrInvalidKey, key)
	}
	require.Zero(t, faulty.Calls(storage.OpAny), "invalid keys must not reach the bucket")
	_, err := os.Stat(outside)
	require.ErrorIs(t, err, fs.ErrNotExist)
}

// TestFileTargetHidesTempFiles checks that temporary upload files are not
// listed, and that NewTargets removes stale ones.
func TestFileTargetHidesTempFiles(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dataDir := t.TempDir()
	objects := filepath.Join(dataDir, "objects")
	dir := filepath.Join(objects, "sales", "2024-05-01")
	require.NoError(t, os.MkdirAll(dir, 0o755))
	real := filepath.Join(dir, "a.parquet")
	stale := filepath.Join(dir, "b.parquet.18c2f0e1a2b3c4d5.tmp")
	fresh := filepath.Join(dir, "c.parquet.18c2f0e1a2b3c4d6.tmp")
	for _, p := range []string{real, stale, fresh} {
		require.NoError(t, os.WriteFile(p, []byte("x"), 0o644))
	}
	old := testDay.AddDate(-1, 0, 0)
	require.NoError(t, os.Chtimes(stale, old, old))

	ts, err := storage.NewTargets(ctx, dataDir, nil)
	require.NoError(t, err)
	defer ts.Close()
	local, err := ts.Get(storage.LocalTargetName)
	require.NoError(t, err)

	var keys []string
	require.NoError(t, local.List(ctx, "", func(o storage.ObjectInfo) error { keys = append(keys, o.Key); return nil }))
	require.Equal(t, []string{"sales/2024-05-01/a.parquet"}, keys)
	_, err = os.Stat(stale)
	require.ErrorIs(t, err, fs.ErrNotExist, "stale temporary file removed")
	_, err = os.Stat(fresh)
	require.NoError(t, err, "recent temporary file kept: an upload may be writing it")
}

// ClockOffset measures the target's clock against the one given, and leaves
// no probe behind.
func TestClockOffset(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	targets, err := storage.NewTargets(ctx, t.TempDir(), nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = targets.Close() })
	tg, err := targets.Get(storage.LocalTargetName)
	require.NoError(t, err)
	off, err := tg.ClockOffset(ctx, time.Now)
	require.NoError(t, err)
	require.InDelta(t, 0, off.Seconds(), 1)
	off, err = tg.ClockOffset(ctx, func() time.Time { return time.Now().Add(2 * time.Hour) })
	require.NoError(t, err)
	require.InDelta(t, -2*time.Hour.Seconds(), off.Seconds(), 1, "a host two hours ahead")
	var keys []string
	require.NoError(t, tg.List(ctx, "", func(o storage.ObjectInfo) error { keys = append(keys, o.Key); return nil }))
	require.Empty(t, keys)
}

// Probes made at once (several processes on one host, several reconciles
// in one process) do not delete each other's probe before it is read: with
// one key per host, a probe's read found it deleted by another's cleanup.
// A probe left behind long ago is deleted by a later probe.
func TestClockOffsetConcurrentAndStale(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := t.TempDir()
	targets, err := storage.NewTargets(ctx, dir, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = targets.Close() })
	tg, err := targets.Get(storage.LocalTargetName)
	require.NoError(t, err)

	const probers, rounds = 8, 25
	var g errgroup.Group
	for range probers {
		g.Go(func() error {
			for range rounds {
				if _, err := tg.ClockOffset(ctx, time.Now); err != nil {
					return err
				}
			}
			return nil
		})
	}
	require.NoError(t, g.Wait())

	stale := storage.ClockProbePrefix + "gone-host-1-00"
	require.NoError(t, tg.Bucket.Upload(ctx, stale, strings.NewReader("timestore clock probe\n")))
	var path string
	require.NoError(t, filepath.WalkDir(dir, func(p string, de os.DirEntry, err error) error {
		if err == nil && !de.IsDir() && strings.HasSuffix(p, "gone-host-1-00") {
			path = p
		}
		return nil
	}))
	require.NotEmpty(t, path, "the stale probe's file")
	old := time.Now().Add(-2 * storage.ClockProbeMaxAge)
	require.NoError(t, os.Chtimes(path, old, old))
	_, err = tg.ClockOffset(ctx, time.Now)
	require.NoError(t, err)
	var keys []string
	require.NoError(t, tg.List(ctx, "", func(o storage.ObjectInfo) error { keys = append(keys, o.Key); return nil }))
	require.Empty(t, keys, "every probe deleted, the stale one too")
}
