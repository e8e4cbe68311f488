package storage

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"
)

// LocalTargetName is the name of the target every Targets registry has: the
// directory "objects" under the data directory.
const LocalTargetName = "local"

// EnvTargetPrefix starts the environment variables TargetsFromEnv reads:
// TIMESTORE_TARGET_<NAME>=<url>.
const EnvTargetPrefix = "TIMESTORE_TARGET_"

// StaleTempAge is how old a temporary upload file in a file target must be
// for NewTargets to remove it as the leftover of a crashed upload.
const StaleTempAge = time.Hour

// ErrUnknownTarget is wrapped by errors about target names that are not
// configured.
var ErrUnknownTarget = errors.New("unknown storage target")

var targetNameRE = regexp.MustCompile(`^[a-z][a-z0-9_]{0,62}$`)

// ValidateTargetName checks that name matches ^[a-z][a-z0-9_]{0,62}$.
func ValidateTargetName(name string) error {
	if !targetNameRE.MatchString(name) {
		return fmt.Errorf("invalid storage target name %q: must match %s", truncate(name, 80), targetNameRE)
	}
	return nil
}

// Targets is the registry of configured storage targets. It is safe for
// concurrent use.
type Targets struct {
	mu      sync.RWMutex
	targets map[string]*Target
	// owned holds every bucket opened by NewTargets, closed by Close even
	// if SetBucket replaced it.
	owned []Bucket
}

// NewTargets opens the local target, "local" = file://<dataDir>/objects (the
// directory is created; the path is made absolute), and one target per entry
// of urls (name → gocloud.dev URL, see OpenBucket). Names must satisfy
// ValidateTargetName and may not be "local". Leftover temporary upload files
// older than StaleTempAge are removed from file targets. Buckets are opened
// without contacting remote services; use Target.Check for that.
func NewTargets(ctx context.Context, dataDir string, urls map[string]string) (*Targets, error) {
	if dataDir == "" {
		return nil, errors.New("storage targets: data directory not set")
	}
	dir, err := filepath.Abs(filepath.Join(dataDir, "objects"))
	if err != nil {
		return nil, fmt.Errorf("storage targets: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("storage targets: create local target directory: %w", err)
	}
	ts := &Targets{targets: make(map[string]*Target)}
	localURL := (&url.URL{Scheme: "file", Path: filepath.ToSlash(dir)}).String()
	local, err := NewTarget(ctx, LocalTargetName, localURL)
	if err != nil {
		return nil, fmt.Errorf("storage targets: %w", err)
	}
	ts.add(local)

	names := make([]string, 0, len(urls))
	for name := range urls {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		if name == LocalTargetName {
			_ = ts.Close()
			return nil, fmt.Errorf("storage targets: target name %q is reserved for the data directory", name)
		}
		t, err := NewTarget(ctx, name, urls[name])
		if err != nil {
			_ = ts.Close()
			return nil, fmt.Errorf("storage targets: %w", err)
		}
		ts.add(t)
	}
	for _, t := range ts.targets {
		if t.LocalDir != "" {
			removeStaleTempFiles(t.LocalDir, time.Now().Add(-StaleTempAge))
		}
	}
	return ts, nil
}

func (ts *Targets) add(t *Target) {
	ts.targets[t.Name] = t
	ts.owned = append(ts.owned, t.Bucket)
}

// Get returns the target called name, or an error wrapping ErrUnknownTarget
// that lists the known targets.
func (ts *Targets) Get(name string) (*Target, error) {
	ts.mu.RLock()
	defer ts.mu.RUnlock()
	t, ok := ts.targets[name]
	if !ok {
		return nil, fmt.Errorf("%w %q (known targets: %s)", ErrUnknownTarget, truncate(name, 80), strings.Join(ts.namesLocked(), ", "))
	}
	return t, nil
}

// Names returns the names of all targets, sorted.
func (ts *Targets) Names() []string {
	ts.mu.RLock()
	defer ts.mu.RUnlock()
	return ts.namesLocked()
}

func (ts *Targets) namesLocked() []string {
	names := make([]string, 0, len(ts.targets))
	for name := range ts.targets {
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}

// SetBucket replaces the bucket of target name, typically with a
// FaultyBucket wrapping it in tests. Later calls to Get return a new *Target
// with the same name, URL and LocalDir and bucket b; *Target values obtained
// earlier keep the old bucket. The replaced bucket stays open (Close closes
// it); b is not closed by Close unless it wraps a bucket that is.
func (ts *Targets) SetBucket(name string, b Bucket) error {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	t, ok := ts.targets[name]
	if !ok {
		return fmt.Errorf("%w %q (known targets: %s)", ErrUnknownTarget, truncate(name, 80), strings.Join(ts.namesLocked(), ", "))
	}
	c := *t
	c.Bucket = b
	ts.targets[name] = &c
	return nil
}

// Close closes every bucket NewTargets opened.
func (ts *Targets) Close() error {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	var errs []error
	for _, b := range ts.owned {
		if err := b.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	ts.owned = nil
	return errors.Join(errs...)
}

// TargetsFromEnv collects target URLs from environment entries
// ("KEY=value", as os.Environ returns them) of the form
// TIMESTORE_TARGET_<NAME>=<url>; the target name is NAME lower-cased.
// Entries with an empty NAME or URL are skipped. Names are not validated
// here; NewTargets does that, so a misspelt variable is reported rather than
// ignored.
func TargetsFromEnv(environ []string) map[string]string {
	urls := make(map[string]string)
	for _, kv := range environ {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			continue
		}
		name, ok := strings.CutPrefix(k, EnvTargetPrefix)
		if !ok || name == "" || v == "" {
			continue
		}
		urls[strings.ToLower(name)] = v
	}
	return urls
}

// removeStaleTempFiles removes fileblob's temporary upload files under dir
// that were last written before cutoff: leftovers of uploads that a crash
// interrupted. Errors are ignored; the files are invisible to List anyway.
func removeStaleTempFiles(dir string, cutoff time.Time) {
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !fileTempFile.MatchString(d.Name()) {
			return nil
		}
		if info, err := d.Info(); err == nil && info.Mode().IsRegular() && info.ModTime().Before(cutoff) {
			_ = os.Remove(p)
		}
		return nil
	})
}
