package storage_test

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"timestore/internal/storage"
)

type cacheBundle struct {
	cache  *storage.Cache
	dir    string
	reg    *prometheus.Registry
	target *storage.Target // remote-like: no LocalDir
	faulty *storage.FaultyBucket
}

func setupCache(t *testing.T, maxBytes int64) *cacheBundle {
	t.Helper()
	mem := openMemTarget(t)
	faulty := storage.NewFaultyBucket(mem.Bucket)
	dir := filepath.Join(t.TempDir(), "cache")
	reg := prometheus.NewPedanticRegistry()
	c, err := storage.NewCache(dir, maxBytes, reg)
	require.NoError(t, err)
	return &cacheBundle{
		cache:  c,
		dir:    dir,
		reg:    reg,
		target: &storage.Target{Name: "remote", Bucket: faulty},
		faulty: faulty,
	}
}

// put stores n random bytes under key and returns them with their checksum.
func (b *cacheBundle) put(t *testing.T, key string, n int) ([]byte, string) {
	t.Helper()
	src, data := writeRandomFile(t, t.TempDir(), n)
	_, sum, err := b.target.PutFile(context.Background(), key, src)
	require.NoError(t, err)
	return data, sum
}

// cached puts n random bytes under key and fetches them into the cache,
// returning the data, its checksum and the (released) cache file's path.
func (b *cacheBundle) cached(t *testing.T, key string, n int) ([]byte, string, string) {
	t.Helper()
	data, sum := b.put(t, key, n)
	p, rel, err := b.cache.Fetch(context.Background(), b.target, key, int64(len(data)), sum)
	require.NoError(t, err)
	rel()
	return data, sum, p
}

func (b *cacheBundle) metric(t *testing.T, name string) float64 {
	t.Helper()
	mfs, err := b.reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		m := mf.GetMetric()[0]
		if m.GetCounter() != nil {
			return m.GetCounter().GetValue()
		}
		return m.GetGauge().GetValue()
	}
	t.Fatalf("metric %s not registered", name)
	return 0
}

// files lists the cache directory.
func (b *cacheBundle) files(t *testing.T) []string {
	t.Helper()
	des, err := os.ReadDir(b.dir)
	require.NoError(t, err)
	var names []string
	for _, de := range des {
		names = append(names, de.Name())
	}
	return names
}

func TestCacheHitMiss(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setupCache(t, 1<<20)
	data, sum := b.put(t, "sales/2024-05-01/a.parquet", 1000)

	p, release, err := b.cache.Fetch(ctx, b.target, "sales/2024-05-01/a.parquet", 1000, sum)
	require.NoError(t, err)
	require.Equal(t, b.dir, filepath.Dir(p))
	require.True(t, strings.HasSuffix(p, ".parquet"), p)
	got, err := os.ReadFile(p)
	require.NoError(t, err)
	require.True(t, bytes.Equal(data, got))
	release()
	release() // harmless

	p2, release2, err := b.cache.Fetch(ctx, b.target, "sales/2024-05-01/a.parquet", 1000, sum)
	require.NoError(t, err)
	require.Equal(t, p, p2)
	release2()

	require.Equal(t, 1, b.faulty.Calls(storage.OpNewReader), "downloaded once")
	require.Equal(t, 1.0, b.metric(t, "timestore_storage_cache_hits_total"))
	require.Equal(t, 1.0, b.metric(t, "timestore_storage_cache_misses_total"))
	require.Equal(t, 1000.0, b.metric(t, "timestore_storage_cache_downloaded_bytes_total"))
	require.Equal(t, 1000.0, b.metric(t, "timestore_storage_cache_bytes"))
	require.Equal(t, 1.0, b.metric(t, "timestore_storage_cache_files"))
	require.Equal(t, 0.0, b.metric(t, "timestore_storage_cache_evictions_total"))
	require.Equal(t, float64(1<<20), b.metric(t, "timestore_storage_cache_max_bytes"))
	require.Equal(t, int64(1000), b.cache.Size())

	// Without size or checksum the object is fetched unverified.
	_, release3, err := b.cache.Fetch(ctx, b.target, "sales/2024-05-01/a.parquet", 0, "")
	require.NoError(t, err)
	release3()

	problems, err := testutil.GatherAndLint(b.reg)
	require.NoError(t, err)
	require.Empty(t, problems)
}

func TestCacheLocalTarget(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setupCache(t, 1<<20)
	local := openFileTarget(t)
	src, _ := writeRandomFile(t, t.TempDir(), 100)
	_, sum, err := local.PutFile(ctx, "sales/2024-05-01/a.parquet", src)
	require.NoError(t, err)

	p, release, err := b.cache.Fetch(ctx, local, "sales/2024-05-01/a.parquet", 100, sum)
	require.NoError(t, err)
	require.Equal(t, filepath.Join(local.LocalDir, "sales", "2024-05-01", "a.parquet"), p)
	release()
	require.Empty(t, b.files(t), "local objects are not copied")

	_, _, err = b.cache.Fetch(ctx, local, "sales/2024-05-01/missing.parquet", 0, "")
	require.ErrorIs(t, err, storage.ErrNotExist)
	_, _, err = b.cache.Fetch(ctx, local, "../etc/passwd", 0, "")
	require.ErrorIs(t, err, storage.ErrInvalidKey)
}

func TestCacheNotExist(t *testing.T) {
	t.Parallel()
	b := setupCache(t, 1<<20)
	_, _, err := b.cache.Fetch(context.Background(), b.target, "a/missing.parquet", 0, "")
	require.ErrorIs(t, err, storage.ErrNotExist)
	require.Empty(t, b.files(t))
}

func TestCacheEvictsLeastRecentlyUsed(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setupCache(t, 250)
	sums := map[string]string{}
	for _, k := range []string{"a", "b", "c"} {
		_, sums[k] = b.put(t, "d/"+k+".parquet", 100)
	}
	fetch := func(k string) string {
		t.Helper()
		p, release, err := b.cache.Fetch(ctx, b.target, "d/"+k+".parquet", 100, sums[k])
		require.NoError(t, err)
		release()
		return p
	}
	pa := fetch("a")
	pb := fetch("b")
	fetch("a") // a is now more recently used than b
	pc := fetch("c")

	require.NoFileExists(t, pb, "b was least recently used")
	require.FileExists(t, pa)
	require.FileExists(t, pc)
	require.Equal(t, int64(200), b.cache.Size())
	require.Equal(t, 1.0, b.metric(t, "timestore_storage_cache_evictions_total"))
	require.Equal(t, 200.0, b.metric(t, "timestore_storage_cache_bytes"))

	fetch("b")
	require.Equal(t, 4.0, b.metric(t, "timestore_storage_cache_misses_total"), "a, b, c, then b again")
	require.Equal(t, 4, b.faulty.Calls(storage.OpNewReader))
}

func TestCachePinnedFilesAreNotEvicted(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setupCache(t, 150)
	_, sumA := b.put(t, "d/a.parquet", 100)
	_, sumB := b.put(t, "d/b.parquet", 100)

	pa, releaseA, err := b.cache.Fetch(ctx, b.target, "d/a.parquet", 100, sumA)
	require.NoError(t, err)
	pb, releaseB, err := b.cache.Fetch(ctx, b.target, "d/b.parquet", 100, sumB)
	require.NoError(t, err)

	// Both pinned: over budget, nothing evicted.
	require.FileExists(t, pa)
	require.FileExists(t, pb)
	require.Equal(t, int64(200), b.cache.Size())
	require.Equal(t, 0.0, b.metric(t, "timestore_storage_cache_evictions_total"))

	// A second pin on a keeps it after the first is released.
	_, releaseA2, err := b.cache.Fetch(ctx, b.target, "d/a.parquet", 100, sumA)
	require.NoError(t, err)
	releaseA()
	require.FileExists(t, pa)

	releaseB() // b is unpinned now, and least recently used
	require.NoFileExists(t, pb)
	require.FileExists(t, pa)
	require.Equal(t, int64(100), b.cache.Size())
	releaseA2()
	require.Equal(t, int64(100), b.cache.Size(), "within budget: a stays")
}

func TestCacheChecksumMismatch(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setupCache(t, 1<<20)
	_, sum := b.put(t, "d/a.parquet", 100)
	wrong := "sha256:" + strings.Repeat("0", 64)

	_, _, err := b.cache.Fetch(ctx, b.target, "d/a.parquet", 100, wrong)
	require.ErrorIs(t, err, storage.ErrMismatch)
	_, _, err = b.cache.Fetch(ctx, b.target, "d/a.parquet", 101, sum)
	require.ErrorIs(t, err, storage.ErrMismatch)
	require.Empty(t, b.files(t), "nothing cached, no temporary file left")
	require.Zero(t, b.cache.Size())

	_, _, err = b.cache.Fetch(ctx, b.target, "d/a.parquet", 100, "md5:abc")
	require.Error(t, err)

	p, release, err := b.cache.Fetch(ctx, b.target, "d/a.parquet", 100, sum[:7]+strings.ToUpper(sum[7:]))
	require.NoError(t, err)
	defer release()
	require.FileExists(t, p)
}

// gatedBucket holds every NewReader until the gate opens.
type gatedBucket struct {
	storage.Bucket
	entered chan struct{}
	gate    chan struct{}
	once    sync.Once
}

func (g *gatedBucket) NewReader(ctx context.Context, key string) (io.ReadCloser, error) {
	g.once.Do(func() { close(g.entered) })
	<-g.gate
	return g.Bucket.NewReader(ctx, key)
}

func TestCacheConcurrentFetchesShareOneDownload(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setupCache(t, 1<<20)
	data, sum := b.put(t, "d/a.parquet", 5000)
	gated := &gatedBucket{Bucket: b.faulty, entered: make(chan struct{}), gate: make(chan struct{})}
	tgt := &storage.Target{Name: b.target.Name, Bucket: gated}

	const n = 20
	var started, done sync.WaitGroup
	paths := make([]string, n)
	errs := make([]error, n)
	releases := make([]func(), n)
	started.Add(n)
	done.Add(n)
	for i := range n {
		go func() {
			defer done.Done()
			started.Done()
			paths[i], releases[i], errs[i] = b.cache.Fetch(ctx, tgt, "d/a.parquet", 5000, sum)
		}()
	}
	started.Wait()
	<-gated.entered
	close(gated.gate)
	done.Wait()

	for i := range n {
		require.NoError(t, errs[i])
		require.Equal(t, paths[0], paths[i])
	}
	require.Equal(t, 1, b.faulty.Calls(storage.OpNewReader), "one download for all")
	require.Equal(t, float64(n), b.metric(t, "timestore_storage_cache_hits_total")+b.metric(t, "timestore_storage_cache_misses_total"))
	got, err := os.ReadFile(paths[0])
	require.NoError(t, err)
	require.True(t, bytes.Equal(data, got))
	for _, r := range releases {
		r()
	}
}

// TestCacheFetchCancelled checks that a fetch whose context ends stops
// waiting, while the download it started completes for later fetches.
func TestCacheFetchCancelled(t *testing.T) {
	t.Parallel()
	b := setupCache(t, 1<<20)
	_, sum := b.put(t, "d/a.parquet", 100)
	gated := &gatedBucket{Bucket: b.faulty, entered: make(chan struct{}), gate: make(chan struct{})}
	tgt := &storage.Target{Name: b.target.Name, Bucket: gated}

	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, _, err := b.cache.Fetch(ctx, tgt, "d/a.parquet", 100, sum)
		errc <- err
	}()
	<-gated.entered
	cancel()
	require.ErrorIs(t, <-errc, context.Canceled)
	close(gated.gate)

	p, release, err := b.cache.Fetch(context.Background(), tgt, "d/a.parquet", 100, sum)
	require.NoError(t, err)
	release()
	require.FileExists(t, p)
	require.Equal(t, 1, b.faulty.Calls(storage.OpNewReader))
}

func TestCacheSurvivesRestart(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setupCache(t, 1<<20)
	sums := map[string]string{}
	for _, k := range []string{"a", "b"} {
		_, sums[k] = b.put(t, "d/"+k+".parquet", 100)
		_, release, err := b.cache.Fetch(ctx, b.target, "d/"+k+".parquet", 100, sums[k])
		require.NoError(t, err)
		release()
	}
	// Leftovers of a crash: a partial download, and a file that is not ours.
	partial := filepath.Join(b.dir, ".0123.parquet.4567.tmp")
	require.NoError(t, os.WriteFile(partial, []byte("partial"), 0o644))
	foreign := filepath.Join(b.dir, "README")
	require.NoError(t, os.WriteFile(foreign, []byte("hi"), 0o644))

	reg := prometheus.NewPedanticRegistry()
	c2, err := storage.NewCache(b.dir, 1<<20, reg)
	require.NoError(t, err)
	require.Equal(t, int64(200), c2.Size())
	require.NoFileExists(t, partial)
	require.FileExists(t, foreign)

	_, release, err := c2.Fetch(ctx, b.target, "d/a.parquet", 100, sums["a"])
	require.NoError(t, err)
	release()
	require.Equal(t, 2, b.faulty.Calls(storage.OpNewReader), "served from the rebuilt index")
	b2 := &cacheBundle{reg: reg}
	require.Equal(t, 1.0, b2.metric(t, "timestore_storage_cache_hits_total"))

	// A smaller budget evicts at start.
	c3, err := storage.NewCache(b.dir, 150, nil)
	require.NoError(t, err)
	require.Equal(t, int64(100), c3.Size())
}

func TestCacheRemoteS3(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tgt := openS3Target(t)
	c, err := storage.NewCache(t.TempDir(), 1<<20, nil)
	require.NoError(t, err)
	src, data := writeRandomFile(t, t.TempDir(), 64<<10)
	size, sum, err := tgt.PutFile(ctx, "sales/2024-05-01/a.parquet", src)
	require.NoError(t, err)
	p, release, err := c.Fetch(ctx, tgt, "sales/2024-05-01/a.parquet", size, sum)
	require.NoError(t, err)
	defer release()
	got, err := os.ReadFile(p)
	require.NoError(t, err)
	require.True(t, bytes.Equal(data, got))
}

func TestNewCacheRejects(t *testing.T) {
	t.Parallel()
	_, err := storage.NewCache("", 100, nil)
	require.Error(t, err)
	_, err = storage.NewCache(t.TempDir(), 0, nil)
	require.Error(t, err)
	// Two caches cannot register the same metrics.
	reg := prometheus.NewRegistry()
	_, err = storage.NewCache(t.TempDir(), 100, reg)
	require.NoError(t, err)
	require.Panics(t, func() { _, _ = storage.NewCache(t.TempDir(), 100, reg) })
}

// A cache file truncated or removed behind the cache's back (a crash, a disk
// problem, an operator) is not handed to a reader: on a hit its size is
// checked, and a bad one is downloaded again, also after a restart that
// re-indexed it with its damaged size.
func TestCacheRefetchesDamagedFile(t *testing.T) {
	t.Parallel()
	b := setupCache(t, 1<<20)
	ctx := context.Background()
	const key = "ds/2024-01-01/a.parquet"
	data, sum, p := b.cached(t, key, 4096)

	// Truncated, then the cache restarted on its directory.
	require.NoError(t, os.Truncate(p, 10))
	c2, err := storage.NewCache(b.dir, 1<<20, nil)
	require.NoError(t, err)
	p2, rel2, err := c2.Fetch(ctx, b.target, key, int64(len(data)), sum)
	require.NoError(t, err)
	got, err := os.ReadFile(p2)
	require.NoError(t, err)
	require.Equal(t, data, got, "downloaded again")
	require.EqualValues(t, len(data), c2.Size(), "accounted at its real size")
	rel2()

	// Removed.
	require.NoError(t, os.Remove(p2))
	p3, rel3, err := c2.Fetch(ctx, b.target, key, int64(len(data)), sum)
	require.NoError(t, err)
	defer rel3()
	got, err = os.ReadFile(p3)
	require.NoError(t, err)
	require.Equal(t, data, got)
	require.EqualValues(t, len(data), c2.Size())
}

// A cache file damaged while no process ran (same size, other bytes) is
// caught on its first use after the restart, by its checksum, and
// downloaded again.
func TestCacheVerifiesFilesFoundAtStart(t *testing.T) {
	t.Parallel()
	b := setupCache(t, 1<<20)
	ctx := context.Background()
	const key = "ds/2024-01-01/b.parquet"
	data, sum, p := b.cached(t, key, 4096)
	bad := append([]byte(nil), data...)
	bad[100] ^= 0xff
	require.NoError(t, os.WriteFile(p, bad, 0o644))

	c2, err := storage.NewCache(b.dir, 1<<20, nil)
	require.NoError(t, err)
	p2, rel2, err := c2.Fetch(ctx, b.target, key, int64(len(data)), sum)
	require.NoError(t, err)
	defer rel2()
	got, err := os.ReadFile(p2)
	require.NoError(t, err)
	require.Equal(t, data, got, "downloaded again")
}
