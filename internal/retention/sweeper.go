package retention

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"timestore/internal/faultpoint"

	"timestore/internal/catalog"
	"timestore/internal/storage"
)

// Sweeping is two phases, each safe to repeat and to interrupt anywhere:
//
//  1. Purge (catalog.Store.PurgeRemoved), one transaction per batch: lock
//     the dataset row FOR NO KEY UPDATE, read the versions pinned by
//     unexpired query leases, and mark purged the removed partitions whose
//     removal is older than the grace period and that are live in no
//     pinned version; one "retention.purge" audit row each. From then on a
//     partition can no longer be restored, and no new snapshot can contain
//     it (it is not live, and LeasedSnapshot waits for the row lock).
//  2. Delete, after the commit: delete the object of every purged
//     partition whose deletion is not yet recorded, then record it
//     (object_deleted_at). An object already gone counts as deleted.
//
// A crash after 1 leaves purged partitions with objects pending: every
// sweep runs phase 2 for all of them, not only for its own batch. A crash
// in 2 before the record only repeats a deletion. A failed deletion stays
// pending and fails the sweep, which the job harness retries with backoff.
// The partitions_object unique index makes sure that the object of a
// purged partition is referenced by no other partition.

// DatasetSweep is what a sweep did to one dataset.
type DatasetSweep struct {
	ID      int64  `json:"id"`
	Name    string `json:"name"`
	Deleted bool   `json:"deleted"`
	// Grace is the dataset's grace period and Cutoff the removal time up to
	// which partitions qualified (now - grace).
	Grace  string    `json:"grace"`
	Cutoff time.Time `json:"cutoff"`
	// Purged partitions and their bytes (phase 1).
	Purged      int   `json:"purged"`
	PurgedBytes int64 `json:"purged_bytes"`
	// ObjectsDeleted counts deletions done by this sweep (phase 2, also of
	// objects purged by earlier sweeps), of which AlreadyGone found no
	// object; DeleteErrors counts failures (left pending).
	ObjectsDeleted int `json:"objects_deleted"`
	AlreadyGone    int `json:"already_gone"`
	DeleteErrors   int `json:"delete_errors"`
	// KeptByGrace and KeptByLease count removed partitions left for later.
	KeptByGrace     int        `json:"kept_by_grace"`
	KeptByLease     int        `json:"kept_by_lease"`
	PinnedVersions  []int64    `json:"pinned_versions"`
	NextGraceExpiry *time.Time `json:"next_grace_expiry,omitempty"`
	// PurgeSeconds and DeleteSeconds are the wall times of the two phases.
	PurgeSeconds  float64 `json:"purge_seconds"`
	DeleteSeconds float64 `json:"delete_seconds"`
}

// SweepResult is what a sweep did.
type SweepResult struct {
	Dataset  string         `json:"dataset"`
	Datasets []DatasetSweep `json:"datasets"`
	// Sums over Datasets.
	Purged         int   `json:"purged"`
	PurgedBytes    int64 `json:"purged_bytes"`
	ObjectsDeleted int   `json:"objects_deleted"`
	AlreadyGone    int   `json:"already_gone"`
	DeleteErrors   int   `json:"delete_errors"`
	KeptByGrace    int   `json:"kept_by_grace"`
	KeptByLease    int   `json:"kept_by_lease"`
	// NextSweepIn, when positive, is when partitions kept back become
	// eligible or their leases are worth checking again.
	NextSweepIn time.Duration `json:"-"`
}

// KeptBack reports whether removed partitions were left for a later sweep.
func (r SweepResult) KeptBack() bool { return r.KeptByGrace+r.KeptByLease > 0 }

// Sweep purges and deletes what may go of every dataset named dataset (the
// live one and deleted ones of that name) and of every deleted dataset:
// the job harness runs jobs only for live datasets, so the sweep of any
// dataset also finishes the datasets that were deleted. A deleted
// dataset's own policy (grace) still applies, and so do leases on it.
//
// A removed partition is purged when its removal (removed_at) is at or
// before now - grace and no unexpired query lease pins a manifest version
// in which it was live. A grace of 0 is safe for running queries (their
// leases keep their partitions) but leaves no time to restore.
//
// Errors with one dataset do not stop the others; they are returned joined
// after all datasets were tried, with the result of what was done.
func (s *Service) Sweep(ctx context.Context, dataset string, ro RunOptions) (SweepResult, error) {
	ro = ro.withDefaults(s)
	res := SweepResult{Dataset: dataset, Datasets: []DatasetSweep{}}
	named, err := s.opts.Store.DatasetsToSweep(ctx, dataset)
	if err != nil {
		return res, fmt.Errorf("sweep %s: %w", dataset, err)
	}
	var deleted []catalog.SweepDataset
	if dataset != "" {
		if deleted, err = s.opts.Store.DatasetsToSweep(ctx, ""); err != nil {
			return res, fmt.Errorf("sweep %s: %w", dataset, err)
		}
	}
	seen := map[int64]bool{}
	var errs []error
	for _, d := range append(named, deleted...) {
		if seen[d.ID] {
			continue
		}
		seen[d.ID] = true
		ds, err := s.sweepOne(ctx, d, ro)
		res.Datasets = append(res.Datasets, ds)
		res.Purged += ds.Purged
		res.PurgedBytes += ds.PurgedBytes
		res.ObjectsDeleted += ds.ObjectsDeleted
		res.AlreadyGone += ds.AlreadyGone
		res.DeleteErrors += ds.DeleteErrors
		res.KeptByGrace += ds.KeptByGrace
		res.KeptByLease += ds.KeptByLease
		if ds.KeptByLease > 0 {
			res.NextSweepIn = minPositive(res.NextSweepIn, s.opts.LeaseRecheck)
		}
		if ds.NextGraceExpiry != nil {
			wait := ds.NextGraceExpiry.Add(Grace(d.Policy)).Sub(s.opts.Now()) + time.Second
			res.NextSweepIn = minPositive(res.NextSweepIn, max(wait, time.Second))
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("dataset %s (id %d): %w", d.Name, d.ID, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return res, fmt.Errorf("sweep %s: %w", dataset, err)
	}
	return res, nil
}

func minPositive(a, b time.Duration) time.Duration {
	if a <= 0 || (b > 0 && b < a) {
		return b
	}
	return a
}

// sweepOne runs both phases for one dataset.
// maxSweepRounds bounds how often one sweep of a dataset starts over
// because its manifest changed while it ran.
const maxSweepRounds = 5

func (s *Service) sweepOne(ctx context.Context, d catalog.SweepDataset, ro RunOptions) (ds DatasetSweep, err error) {
	log := ro.Logger.With("dataset", d.Name, "dataset_id", d.ID)
	grace := Grace(d.Policy)
	ds = DatasetSweep{ID: d.ID, Name: d.Name, Deleted: d.Deleted, Grace: grace.String(), PinnedVersions: []int64{}}
	// A manifest change that removes partitions enqueues a sweep in its own
	// transaction, but River drops that sweep as a duplicate while this one
	// runs. So when the manifest moved during a round, sweep again: the next
	// round purges what became purgeable or counts it as kept back (and the
	// job snoozes until then). What changes after the last check waits for
	// the next sweep (at the latest the hourly backstop sweep).
	version := d.ManifestVersion
	for round := 1; ; round++ {
		if err := s.sweepRound(ctx, d, grace, ro, &ds, log); err != nil {
			return ds, err
		}
		cur, err := s.opts.Store.GetDatasetByID(ctx, d.ID)
		if err != nil {
			if errors.Is(err, catalog.ErrNotFound) {
				break
			}
			return ds, err
		}
		if cur.ManifestVersion == version || round == maxSweepRounds || ds.DeleteErrors > 0 {
			break
		}
		log.InfoContext(ctx, "manifest changed during the sweep; sweeping again", "from_version", version,
			"to_version", cur.ManifestVersion, "round", round+1)
		version = cur.ManifestVersion
	}
	if ds.DeleteErrors > 0 {
		return ds, fmt.Errorf("%d objects of purged partitions could not be deleted; they stay pending and the next sweep tries again", ds.DeleteErrors)
	}
	if ds.ObjectsDeleted > 0 || ds.KeptByGrace+ds.KeptByLease > 0 {
		log.InfoContext(ctx, "sweep finished", "objects_deleted", ds.ObjectsDeleted, "already_gone", ds.AlreadyGone,
			"kept_by_grace", ds.KeptByGrace, "kept_by_lease", ds.KeptByLease)
	}
	return ds, nil
}

// sweepRound purges what may go and deletes the objects of every purged
// partition still pending, adding to ds.
func (s *Service) sweepRound(ctx context.Context, d catalog.SweepDataset, grace time.Duration, ro RunOptions, ds *DatasetSweep, log *slog.Logger) error {
	cutoff := s.opts.Now().Add(-grace)
	ds.Cutoff = cutoff.UTC()

	// Phase 1: purge, in batches, each its own transaction.
	start := time.Now()
	purged, purgedBytes := 0, int64(0)
	for {
		b, err := s.opts.Store.PurgeRemoved(ctx, d.ID, cutoff, s.opts.SweepBatchSize, ro.Actor)
		if err != nil {
			return err
		}
		var bytes int64
		for _, p := range b.Purged {
			bytes += p.SizeBytes
		}
		purged += len(b.Purged)
		purgedBytes += bytes
		s.metrics.purgedParts.WithLabelValues(d.Name).Add(float64(len(b.Purged)))
		s.metrics.purgedBytes.WithLabelValues(d.Name).Add(float64(bytes))
		ds.KeptByGrace, ds.KeptByLease, ds.NextGraceExpiry = b.KeptByGrace, b.KeptByLease, b.NextGraceExpiry
		ds.PinnedVersions = b.PinnedVersions
		if !b.More || len(b.Purged) == 0 {
			break
		}
	}
	ds.Purged += purged
	ds.PurgedBytes += purgedBytes
	if purged > 0 {
		log.InfoContext(ctx, "partitions purged", "purged", purged, "bytes", purgedBytes, "grace", grace,
			"pinned_versions", ds.PinnedVersions, "actor", ro.Actor)
	}
	ds.PurgeSeconds += time.Since(start).Seconds()

	// Phase 2: delete the objects of every purged partition still pending.
	start = time.Now()
	defer func() { ds.DeleteSeconds += time.Since(start).Seconds() }()
	var after int64
	for {
		pending, err := s.opts.Store.PendingObjectDeletes(ctx, d.ID, after, s.opts.SweepBatchSize)
		if err != nil {
			return err
		}
		if len(pending) == 0 {
			return nil
		}
		after = pending[len(pending)-1].ID
		if err := faultpoint.Hit(ctx, faultpoint.SweepBeforeDelete); err != nil {
			return err
		}
		done, gone, failed := s.deleteObjects(ctx, pending, log)
		ds.ObjectsDeleted += len(done)
		ds.AlreadyGone += gone
		ds.DeleteErrors += len(failed)
		if err := faultpoint.Hit(ctx, faultpoint.SweepBeforeCommit); err != nil {
			return err
		}
		// Record what is gone even if ctx ended meanwhile: it is cheaper
		// than deleting again.
		mctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.opts.DeleteTimeout)
		err = s.opts.Store.MarkObjectsDeleted(mctx, done)
		cancel()
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
}

// deleteObjects deletes the objects of purged partitions, DeleteConcurrency
// at a time. It returns the ids whose object is gone (deleted now, or
// already: gone counts those) and the ids that failed.
func (s *Service) deleteObjects(ctx context.Context, parts []catalog.Partition, log *slog.Logger) (done []int64, gone int, failed []int64) {
	var mu sync.Mutex
	sem := make(chan struct{}, s.opts.DeleteConcurrency)
	var wg sync.WaitGroup
	for _, p := range parts {
		if ctx.Err() != nil {
			break
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			err := s.deleteObject(ctx, p)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				done = append(done, p.ID)
			case errors.Is(err, storage.ErrNotExist):
				done = append(done, p.ID)
				gone++
			default:
				failed = append(failed, p.ID)
				s.metrics.deleteErrors.WithLabelValues(p.Target).Inc()
				log.WarnContext(ctx, "delete object of purged partition; it stays pending", "partition", p.ID,
					"target", p.Target, "key", p.Key, "error", err)
			}
		}()
	}
	wg.Wait()
	return done, gone, failed
}

func (s *Service) deleteObject(ctx context.Context, p catalog.Partition) error {
	t, err := s.opts.Targets.Get(p.Target)
	if err != nil {
		return err
	}
	dctx, cancel := context.WithTimeout(ctx, s.opts.DeleteTimeout)
	defer cancel()
	if err := t.Delete(dctx, p.Key); err != nil {
		return err
	}
	return faultpoint.Hit(ctx, faultpoint.SweepMidDelete)
}
