package storage

import (
	"container/list"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"golang.org/x/sync/singleflight"
)

// CacheDownloadTimeoutDefault bounds one download into the cache.
const CacheDownloadTimeoutDefault = 30 * time.Minute

// cacheFetchAttempts bounds how often Fetch downloads an object whose cache
// file another fetch evicted before this one could pin it. That only happens
// when pinned files fill the whole cache.
const cacheFetchAttempts = 3

// cacheFileRE matches the names of cache files: 64 hex digits and the
// extension of the object key, if it matches cacheExtRE.
var (
	cacheFileRE = regexp.MustCompile(`^[0-9a-f]{64}(\.[A-Za-z0-9_-]{1,16})?$`)
	cacheExtRE  = regexp.MustCompile(`^\.[A-Za-z0-9_-]{1,16}$`)
)

// Cache is a size-bounded local copy of objects from remote targets, for
// readers such as DuckDB that can only read local files. Objects of targets
// with a LocalDir are read in place and never copied.
//
// Each object is downloaded once, even when many Fetches ask for it at the
// same time. A fetched file is pinned until its release function is called;
// when the cache holds more than its budget, the least recently used unpinned
// files are removed. Pinned files are never removed, so the cache may exceed
// its budget while everything in it is in use. The cache directory belongs to
// the Cache: it survives restarts, and NewCache rebuilds the index from it.
type Cache struct {
	dir             string
	maxBytes        int64
	logger          *slog.Logger
	downloadTimeout time.Duration

	flights singleflight.Group

	mu      sync.Mutex
	entries map[string]*cacheEntry
	lru     *list.List // of *cacheEntry, most recently used first
	size    int64
	// overWarned is set while the cache is over budget with everything
	// pinned, so that the condition is logged once rather than on every
	// eviction pass.
	overWarned bool

	metrics cacheMetrics
}

type cacheEntry struct {
	name string
	size int64
	pins int
	elem *list.Element
	// verified is set once the file's bytes were checked against the
	// object's checksum in this process: at download, or on the first hit
	// of a file found in the directory at start-up.
	verified bool
}

type cacheMetrics struct {
	hits            prometheus.Counter
	misses          prometheus.Counter
	downloadedBytes prometheus.Counter
	evictions       prometheus.Counter
	bytes           prometheus.Gauge
	files           prometheus.Gauge
}

func newCacheMetrics(reg prometheus.Registerer, maxBytes int64) cacheMetrics {
	f := promauto.With(reg)
	maxGauge := f.NewGauge(prometheus.GaugeOpts{
		Name: "timestore_storage_cache_max_bytes",
		Help: "Budget of the local cache of remote objects, in bytes.",
	})
	maxGauge.Set(float64(maxBytes))
	return cacheMetrics{
		hits: f.NewCounter(prometheus.CounterOpts{
			Name: "timestore_storage_cache_hits_total",
			Help: "Fetches of remote objects served from the local cache.",
		}),
		misses: f.NewCounter(prometheus.CounterOpts{
			Name: "timestore_storage_cache_misses_total",
			Help: "Fetches of remote objects that were not in the local cache.",
		}),
		downloadedBytes: f.NewCounter(prometheus.CounterOpts{
			Name: "timestore_storage_cache_downloaded_bytes_total",
			Help: "Bytes downloaded from remote targets into the local cache.",
		}),
		evictions: f.NewCounter(prometheus.CounterOpts{
			Name: "timestore_storage_cache_evictions_total",
			Help: "Files removed from the local cache to stay within its budget.",
		}),
		bytes: f.NewGauge(prometheus.GaugeOpts{
			Name: "timestore_storage_cache_bytes",
			Help: "Bytes currently held in the local cache.",
		}),
		files: f.NewGauge(prometheus.GaugeOpts{
			Name: "timestore_storage_cache_files",
			Help: "Files currently held in the local cache.",
		}),
	}
}

// CacheOption configures a Cache.
type CacheOption func(*Cache)

// WithCacheLogger sets the logger. Defaults to slog.Default().
func WithCacheLogger(l *slog.Logger) CacheOption {
	return func(c *Cache) { c.logger = l }
}

// WithCacheDownloadTimeout bounds each download. Defaults to
// CacheDownloadTimeoutDefault.
func WithCacheDownloadTimeout(d time.Duration) CacheOption {
	return func(c *Cache) { c.downloadTimeout = d }
}

// NewCache opens the cache in dir (created if needed), holding at most
// maxBytes of unpinned files. Files already in dir are indexed, least
// recently written first to go; partial downloads left by a crash are
// removed. Metrics are registered with reg unless it is nil; like promauto,
// NewCache panics if reg already holds them.
func NewCache(dir string, maxBytes int64, reg prometheus.Registerer, opts ...CacheOption) (*Cache, error) {
	if dir == "" {
		return nil, errors.New("storage cache: directory not set")
	}
	if maxBytes <= 0 {
		return nil, fmt.Errorf("storage cache: size budget must be positive, got %d", maxBytes)
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("storage cache: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("storage cache: %w", err)
	}
	c := &Cache{
		dir:             dir,
		maxBytes:        maxBytes,
		logger:          slog.Default(),
		downloadTimeout: CacheDownloadTimeoutDefault,
		entries:         make(map[string]*cacheEntry),
		lru:             list.New(),
	}
	for _, o := range opts {
		o(c)
	}
	c.logger = c.logger.With("component", "storage.cache")
	c.metrics = newCacheMetrics(reg, maxBytes)
	if err := c.load(); err != nil {
		return nil, fmt.Errorf("storage cache: %w", err)
	}
	return c, nil
}

// load rebuilds the index from the files in the cache directory.
func (c *Cache) load() error {
	des, err := os.ReadDir(c.dir)
	if err != nil {
		return err
	}
	type found struct {
		name    string
		size    int64
		modTime time.Time
	}
	var files []found
	for _, de := range des {
		name := de.Name()
		if strings.HasSuffix(name, tempSuffix) {
			if err := os.Remove(filepath.Join(c.dir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
				c.logger.Warn("remove partial cache download", "file", name, "error", err)
			}
			continue
		}
		if !de.Type().IsRegular() || !cacheFileRE.MatchString(name) {
			continue
		}
		info, err := de.Info()
		if err != nil {
			continue
		}
		files = append(files, found{name: name, size: info.Size(), modTime: info.ModTime()})
	}
	// Oldest first, so that after PushFront the newest is the most recent.
	slices.SortFunc(files, func(a, b found) int { return a.modTime.Compare(b.modTime) })
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, f := range files {
		c.insertLocked(f.name, f.size)
	}
	c.evictLocked()
	if len(files) > 0 {
		c.logger.Info("cache index rebuilt", "files", len(c.entries), "bytes", c.size)
	}
	return nil
}

// Dir returns the cache directory.
func (c *Cache) Dir() string { return c.dir }

// Size returns the bytes currently held by the cache.
func (c *Cache) Size() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.size
}

// Fetch returns a local path from which the object key of target t can be
// read, and a function to call once the reader is done with it. For targets
// with a LocalDir it is the object's own file, read in place rather than
// through the target's Bucket, and release does nothing.
// Otherwise the object is downloaded into the cache unless it is there
// already; concurrent Fetches of one object share one download. The file is
// pinned, so it is not evicted, until release is called; release may be
// called more than once.
//
// A positive size and a non-empty checksum ("sha256:<hex>") are checked
// against the downloaded bytes; a mismatch fails with an error wrapping
// ErrMismatch and nothing is cached. The checksum is part of the cache file's
// identity, so an object rewritten under the same key is downloaded again
// when fetched with its new checksum.
func (c *Cache) Fetch(ctx context.Context, t *Target, key string, size int64, checksum string) (path string, release func(), err error) {
	if err := ValidateKey(key); err != nil {
		return "", nil, err
	}
	if checksum != "" {
		if err := ValidateChecksum(checksum); err != nil {
			return "", nil, err
		}
		checksum = strings.ToLower(checksum)
	}
	if t.LocalDir != "" {
		p := filepath.Join(t.LocalDir, filepath.FromSlash(key))
		if _, err := os.Stat(p); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				err = fmt.Errorf("%w: %w", ErrNotExist, err)
			}
			return "", nil, fmt.Errorf("fetch %s from target %s: %w", key, t.Name, err)
		}
		return p, func() {}, nil
	}

	name := cacheFileName(t.Name, key, checksum)
	p := filepath.Join(c.dir, name)
	for attempt := 0; ; attempt++ {
		if e := c.pin(name); e != nil {
			// A cache file is checked when it is downloaded; on a hit, a
			// file gone or of the wrong size (truncated, or damaged behind
			// the cache's back, e.g. before a restart) is dropped and
			// downloaded again rather than handed to a reader.
			if fi, err := os.Stat(p); err != nil || fi.Size() != e.size || (size > 0 && fi.Size() != size) {
				c.logger.Warn("cache file missing or of the wrong size; downloading it again", "target", t.Name, "key", key, "error", err)
				c.invalidate(e)
				continue
			}
			// A file from before a restart is checked once, on its first
			// use: it may have been damaged while no process watched.
			if checksum != "" && !c.isVerified(e) {
				if err := VerifyFile(p, -1, checksum); err != nil {
					c.logger.Warn("cache file does not match its checksum; downloading it again", "target", t.Name, "key", key, "error", err)
					c.invalidate(e)
					continue
				}
				c.setVerified(e)
			}
			if attempt == 0 {
				c.metrics.hits.Inc()
				now := time.Now()
				_ = os.Chtimes(p, now, now) // keep the recency across restarts
			}
			return p, c.releaser(e), nil
		}
		if attempt == 0 {
			c.metrics.misses.Inc()
		}
		if attempt == cacheFetchAttempts {
			return "", nil, fmt.Errorf("fetch %s from target %s: cache file evicted before it could be used %d times; the cache budget (%d bytes) is too small for the files in use", key, t.Name, attempt, c.maxBytes)
		}
		ch := c.flights.DoChan(name, func() (any, error) {
			return nil, c.fill(ctx, t, key, size, checksum, name)
		})
		select {
		case <-ctx.Done():
			return "", nil, fmt.Errorf("fetch %s from target %s: %w", key, t.Name, ctx.Err())
		case res := <-ch:
			if res.Err != nil {
				return "", nil, fmt.Errorf("fetch %s from target %s: %w", key, t.Name, res.Err)
			}
		}
	}
}

// FetchVerified is Fetch followed by a check of the file's bytes against
// size and checksum, also for objects of local targets (read in place) and
// for cache hits (whose bytes Fetch checks only by size): for readers that
// rewrite the bytes under a new checksum, so that damage must not pass
// them. A mismatch releases the file and fails with an error wrapping
// ErrMismatch.
func (c *Cache) FetchVerified(ctx context.Context, t *Target, key string, size int64, checksum string) (string, func(), error) {
	path, release, err := c.Fetch(ctx, t, key, size, checksum)
	if err != nil {
		return "", nil, err
	}
	if err := VerifyFile(path, size, checksum); err != nil {
		release()
		return "", nil, fmt.Errorf("%s/%s does not match its recorded size and checksum: %w", t.Name, key, err)
	}
	return path, release, nil
}

// pin pins and returns the entry called name, if the cache has it.
func (c *Cache) pin(name string) *cacheEntry {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[name]
	if !ok {
		return nil
	}
	e.pins++
	c.lru.MoveToFront(e.elem)
	// The entry may have just been inserted by fill, which leaves eviction
	// to the first fetch that pins it.
	c.evictLocked()
	return e
}

func (c *Cache) isVerified(e *cacheEntry) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return e.verified
}

func (c *Cache) setVerified(e *cacheEntry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e.verified = true
}

// invalidate drops the pinned entry e from the index and removes its file,
// releasing the caller's pin; readers that still hold it keep their open
// file. The next Fetch downloads the object again.
func (c *Cache) invalidate(e *cacheEntry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e.pins--
	if c.entries[e.name] != e {
		return
	}
	delete(c.entries, e.name)
	c.lru.Remove(e.elem)
	c.size -= e.size
	if err := os.Remove(filepath.Join(c.dir, e.name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		c.logger.Warn("remove damaged cache file", "file", e.name, "error", err)
	}
	c.updateGaugesLocked()
}

func (c *Cache) releaser(e *cacheEntry) func() {
	var once sync.Once
	return func() {
		once.Do(func() {
			c.mu.Lock()
			defer c.mu.Unlock()
			e.pins--
			if e.pins == 0 {
				c.evictLocked()
			}
		})
	}
}

// fill downloads the object into the cache file name and indexes it,
// unpinned; the fetches waiting for it pin it. It runs once per name at a
// time and is not cancelled when the fetch that started it gives up, since
// other fetches may be waiting for the same file.
func (c *Cache) fill(ctx context.Context, t *Target, key string, size int64, checksum, name string) error {
	c.mu.Lock()
	_, ok := c.entries[name]
	c.mu.Unlock()
	if ok {
		return nil // a previous flight finished between our lookup and this one
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.downloadTimeout)
	defer cancel()
	dst := filepath.Join(c.dir, name)
	wantSize := size
	if wantSize <= 0 {
		wantSize = -1
	}
	n, _, err := t.download(ctx, key, dst, func(n int64, sum string) error {
		c.metrics.downloadedBytes.Add(float64(n))
		return checkObject(n, sum, wantSize, checksum)
	})
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.entries[name]; ok {
		// Cannot happen while flights are keyed by name, but keep the
		// accounting right if it does.
		c.size -= e.size
		c.lru.Remove(e.elem)
		delete(c.entries, name)
	}
	c.insertLocked(name, n).verified = checksum != ""
	return nil
}

func (c *Cache) insertLocked(name string, size int64) *cacheEntry {
	e := &cacheEntry{name: name, size: size}
	e.elem = c.lru.PushFront(e)
	c.entries[name] = e
	c.size += size
	c.updateGaugesLocked()
	return e
}

// evictLocked removes least recently used unpinned files until the cache is
// within its budget, or only pinned files are left.
func (c *Cache) evictLocked() {
	for el := c.lru.Back(); el != nil && c.size > c.maxBytes; {
		e := el.Value.(*cacheEntry)
		prev := el.Prev()
		if e.pins == 0 {
			if err := os.Remove(filepath.Join(c.dir, e.name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
				// Keep the entry: its bytes are still on disk.
				c.logger.Warn("evict cache file", "file", e.name, "error", err)
			} else {
				c.lru.Remove(el)
				delete(c.entries, e.name)
				c.size -= e.size
				c.metrics.evictions.Inc()
			}
		}
		el = prev
	}
	c.updateGaugesLocked()
	if c.size <= c.maxBytes {
		c.overWarned = false
		return
	}
	if !c.overWarned {
		c.overWarned = true
		c.logger.Warn("cache over budget: every remaining file is in use", "bytes", c.size, "max_bytes", c.maxBytes, "files", len(c.entries))
	}
}

func (c *Cache) updateGaugesLocked() {
	c.metrics.bytes.Set(float64(c.size))
	c.metrics.files.Set(float64(len(c.entries)))
}

// cacheFileName derives a cache file name from the target, key and checksum
// (which may be empty): a SHA-256 in hex, plus the key's extension so that
// readers that sniff formats by extension still work.
func cacheFileName(target, key, checksum string) string {
	h := sha256.New()
	h.Write([]byte(target))
	h.Write([]byte{0})
	h.Write([]byte(key))
	h.Write([]byte{0})
	h.Write([]byte(checksum))
	name := hex.EncodeToString(h.Sum(nil))
	ext := path.Ext(key)
	if cacheExtRE.MatchString(ext) {
		name += ext
	}
	return name
}
