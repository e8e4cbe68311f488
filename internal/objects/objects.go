// Package objects moves the objects of a lifecycle step between local files
// and storage targets, the same crash-safe way for every writer (ingest,
// compaction, export):
//
//   - Fetch makes stored objects readable locally (through the read cache
//     for remote targets), each checked against its recorded size and
//     checksum first: what a step reads it may rewrite under a fresh
//     checksum, so damage must stop it there.
//   - Upload puts local files on a target, several at once, and returns
//     every put it started, the failed ones too: a put that failed may
//     still have landed (a lost acknowledgement).
//   - Uploads ties the uploads of one manifest change to the catalog's
//     discard protocol: when the change does not take them, Discard deletes
//     them only after catalog.DiscardUploads waited out a commit in flight,
//     kept what the manifest references and audited each deletion. If the
//     catalog cannot tell, nothing is deleted; reconcile reclaims orphans.
//
// Write before reference: objects are uploaded before the manifest change
// that references them; dereference before delete: an upload is deleted
// only once the catalog shows that nothing references it.
//
// docs/design.md ("The object plumbing") says who uses which helper and why.
package objects

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"timestore/internal/catalog"
	"timestore/internal/storage"
)

// ConcurrencyDefault is how many objects Fetch and Upload move at once when
// given no positive concurrency.
const ConcurrencyDefault = 4

// Stored is an object on a target with its recorded size and checksum.
type Stored struct {
	Target   *storage.Target
	Key      string
	Size     int64
	Checksum string
	// Name says what the object is, in errors ("partition 12").
	Name string
}

// Partitions returns the objects of parts, each on its target, for Fetch
// (named "partition ID" in errors). A partition on a target this process
// does not know is an error naming the partition.
func Partitions(targets *storage.Targets, parts []catalog.Partition) ([]Stored, error) {
	objs := make([]Stored, len(parts))
	for i, p := range parts {
		t, err := targets.Get(p.Target)
		if err != nil {
			return nil, fmt.Errorf("partition %d: %w", p.ID, err)
		}
		objs[i] = Stored{Target: t, Key: p.Key, Size: p.SizeBytes, Checksum: p.Checksum, Name: fmt.Sprintf("partition %d", p.ID)}
	}
	return objs, nil
}

// Fetch makes every object readable locally, at most concurrency at once,
// each checked against its size and checksum (storage.Cache.FetchVerified):
// a damaged object fails with an error wrapping storage.ErrMismatch, a
// missing one with storage.ErrNotExist. It returns the local paths in the
// order of objs, pinned until release is called. release is never nil and
// safe to call more than once; on error the paths are already released.
func Fetch(ctx context.Context, cache *storage.Cache, objs []Stored, concurrency int) (paths []string, release func(), err error) {
	paths = make([]string, len(objs))
	releases := make([]func(), len(objs))
	var once sync.Once
	release = func() {
		once.Do(func() {
			for _, r := range releases {
				if r != nil {
					r()
				}
			}
		})
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(positive(concurrency))
	for i, o := range objs {
		g.Go(func() error {
			path, rel, err := cache.FetchVerified(gctx, o.Target, o.Key, o.Size, o.Checksum)
			if err != nil {
				return fmt.Errorf("fetch %s (%s/%s): %w", o.Name, o.Target.Name, o.Key, err)
			}
			paths[i], releases[i] = path, rel
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		release()
		return nil, release, err
	}
	return paths, release, nil
}

// File is a local file to upload under Key.
type File struct {
	Path string
	Key  string
	// Size, when positive, is the file's size: a put that sends another
	// number of bytes fails with an error wrapping storage.ErrMismatch.
	Size int64
}

// Put is a file put on a target.
type Put struct {
	Key string
	// Size and Checksum are what the target received; zero when the put
	// failed (it may have landed all the same).
	Size     int64
	Checksum string
}

// Upload puts every file on target, at most concurrency at once. On
// success it returns one Put per file, in order. On error it stops starting
// puts and returns every put it started, the failed ones included with a
// zero Size: a failed put may have landed, so the caller must discard all
// of them (Uploads does).
func Upload(ctx context.Context, target *storage.Target, files []File, concurrency int) ([]Put, error) {
	puts := make([]Put, len(files))
	started := make([]bool, len(files))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(positive(concurrency))
	for i, f := range files {
		g.Go(func() error {
			if err := gctx.Err(); err != nil {
				return err // another put failed: do not start this one
			}
			started[i] = true
			puts[i].Key = f.Key
			size, sum, err := target.PutFile(gctx, f.Key, f.Path)
			if err != nil {
				return fmt.Errorf("upload %s: %w", f.Key, err)
			}
			if f.Size > 0 && size != f.Size {
				return fmt.Errorf("upload %s: %w: sent %d bytes, the file has %d", f.Key, storage.ErrMismatch, size, f.Size)
			}
			puts[i].Size, puts[i].Checksum = size, sum
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		var landed []Put
		for i, p := range puts {
			if started[i] {
				landed = append(landed, p)
			}
		}
		return landed, err
	}
	return puts, nil
}

// Discarder is the catalog's discard protocol; *catalog.Store has it.
type Discarder interface {
	DiscardUploads(ctx context.Context, datasetID int64, dataset, actor, reason string, uploads []catalog.Upload) ([]catalog.Upload, error)
}

var _ Discarder = (*catalog.Store)(nil)

// Uploads are the objects uploaded for one manifest change of a dataset:
// Upload puts them and remembers every put it started, Discard deletes them
// if the change did not take them. Fill in the fields, then use it from one
// goroutine at a time.
type Uploads struct {
	// Store runs the discard protocol. Required.
	Store Discarder
	// Dataset is the dataset the change is for (its ID and Name). Required.
	Dataset catalog.Dataset
	// Target receives the objects. Required.
	Target *storage.Target
	// Actor is recorded in the audit rows of discarded objects.
	Actor string
	// Concurrency is how many puts run at once. Defaults to
	// ConcurrencyDefault.
	Concurrency int
	// DiscardTimeout bounds Discard, which runs detached from its context
	// so that a cancelled step still cleans up. Defaults to 30 seconds.
	DiscardTimeout time.Duration
	// Logger defaults to discarding.
	Logger *slog.Logger

	puts []Put
}

// Upload puts files on the target (see Upload) and remembers every put it
// started for Discard.
func (u *Uploads) Upload(ctx context.Context, files []File) ([]Put, error) {
	puts, err := Upload(ctx, u.Target, files, u.Concurrency)
	u.puts = append(u.puts, puts...)
	return puts, err
}

// Discard deletes every object Upload put (or may have put) unless the
// manifest references it, for a change that failed, whose outcome is
// unknown, or that was not needed after all (reason says which, in the
// audit log):
//
//  1. catalog.DiscardUploads waits out a change of the dataset still in
//     flight, keeps the objects a partition references (their change
//     committed after all) and audits the deletion of the others.
//  2. Each of those is deleted; one already gone counts as deleted.
//
// If step 1 fails, nothing is deleted: the objects are left for reconcile,
// since deleting a referenced object loses data and an orphan is harmless.
// Failed deletions are logged and left for reconcile too. Discard forgets
// the uploads: calling it again does nothing.
func (u *Uploads) Discard(ctx context.Context, reason string) {
	puts := u.puts
	u.puts = nil
	if len(puts) == 0 {
		return
	}
	log := u.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	timeout := u.DiscardTimeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	defer cancel()
	uploads := make([]catalog.Upload, len(puts))
	for i, p := range puts {
		uploads[i] = catalog.Upload{Target: u.Target.Name, Key: p.Key, Bytes: p.Size}
	}
	discard, err := u.Store.DiscardUploads(dctx, u.Dataset.ID, u.Dataset.Name, u.Actor, reason, uploads)
	if err != nil {
		log.WarnContext(ctx, "left uploaded objects in place: the catalog could not tell whether the manifest references them; reconcile reclaims them if not",
			"dataset", u.Dataset.Name, "target", u.Target.Name, "objects", len(uploads), "error", err)
		return
	}
	if kept := len(uploads) - len(discard); kept > 0 {
		log.WarnContext(ctx, "the commit reported as failed did commit: its objects are kept",
			"dataset", u.Dataset.Name, "target", u.Target.Name, "objects", kept)
	}
	for _, d := range discard {
		if err := u.Target.Delete(dctx, d.Key); err != nil && !errors.Is(err, storage.ErrNotExist) {
			log.WarnContext(ctx, "could not delete an unreferenced upload; reconcile will reclaim it",
				"target", u.Target.Name, "key", d.Key, "error", err)
		}
	}
}

func positive(n int) int {
	if n <= 0 {
		return ConcurrencyDefault
	}
	return n
}
