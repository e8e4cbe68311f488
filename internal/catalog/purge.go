package catalog

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
)

// Audit actions of retention and the sweeper.
const (
	// ActionRetentionRemove is written once per partition that retention
	// removes, beside the "partition.retention" row of the change.
	ActionRetentionRemove = "retention.remove"
	// ActionRetentionPurge is written once per partition the sweeper purges.
	ActionRetentionPurge = "retention.purge"
)

// RemovedPartition is a partition that is removed but not purged, with the
// operation of the manifest change that removed it.
type RemovedPartition struct {
	Partition
	// RemovalOperation is the operation (Op* constant) of the manifest
	// version that removed the partition, e.g. OpRetention or OpCompaction.
	RemovalOperation string
}

// RemovedPartitions reads, in one consistent view, a live dataset's current
// manifest version and those of ids that are removed and not purged, with
// the operation that removed each. Ids that are live, purged or not in the
// dataset are left out. Errors: ErrNotFound (no such live dataset).
func (s *Store) RemovedPartitions(ctx context.Context, dataset string, ids []int64) (int64, []RemovedPartition, error) {
	var version int64
	var out []RemovedPartition
	err := s.inTx(ctx, consistentRead, func(tx pgx.Tx) error {
		d, err := readDataset(ctx, tx, liveByName, dataset, "")
		if err != nil {
			return err
		}
		version = d.ManifestVersion
		rows, err := tx.Query(ctx, `
			SELECT `+qualified("p", partitionColumns)+`, coalesce(v.operation, '')
			FROM timestore.partitions p
			LEFT JOIN timestore.manifest_versions v ON v.dataset_id = p.dataset_id AND v.version = p.removed_in_version
			WHERE p.id = ANY($1) AND p.dataset_id = $2 AND p.removed_in_version IS NOT NULL AND p.purged_at IS NULL
			ORDER BY p.id`, ids, d.ID)
		out, err = collect(rows, err, func(row pgx.Row) (RemovedPartition, error) {
			var r RemovedPartition
			var err error
			r.Partition, err = scanPartitionPlus(row, &r.RemovalOperation)
			return r, err
		})
		return err
	})
	if err != nil {
		return 0, nil, fmt.Errorf("removed partitions of dataset %q: %w", dataset, err)
	}
	return version, out, nil
}

// SweepDataset is a dataset (live or deleted) that has work for the sweeper.
type SweepDataset struct {
	Dataset
	// Deleted is true for a deleted dataset; its policy (grace) still applies.
	Deleted bool
}

// DatasetsToSweep returns the datasets the sweeper has work for: removed
// partitions not yet purged, or purged partitions whose object is not yet
// deleted. With a name, it returns every dataset of that name (the live one
// and deleted ones: a name can be reused after a delete); with "", only
// deleted datasets of any name. Ordered by id.
func (s *Store) DatasetsToSweep(ctx context.Context, name string) ([]SweepDataset, error) {
	rows, err := s.pool.Query(ctx, `
		SELECT `+datasetColumns+`, deleted_at IS NOT NULL FROM timestore.datasets d
		WHERE ($1 = '' AND d.deleted_at IS NOT NULL OR $1 <> '' AND d.name = $1)
		  AND (EXISTS (SELECT 1 FROM timestore.partitions p
		               WHERE p.dataset_id = d.id AND p.removed_in_version IS NOT NULL AND p.purged_at IS NULL)
		    OR EXISTS (SELECT 1 FROM timestore.partitions p
		               WHERE p.dataset_id = d.id AND p.purged_at IS NOT NULL AND p.object_deleted_at IS NULL))
		ORDER BY d.id`, name)
	ds, err := collect(rows, err, func(row pgx.Row) (SweepDataset, error) {
		var d SweepDataset
		var err error
		d.Dataset, err = scanDatasetPlus(row, &d.Deleted)
		return d, err
	})
	if err != nil {
		return nil, fmt.Errorf("datasets to sweep: %w", err)
	}
	return ds, nil
}

// PurgeBatch is what one PurgeRemoved transaction did.
type PurgeBatch struct {
	// Purged are the partitions marked purged; their objects are still to
	// delete (see PendingObjectDeletes, MarkObjectsDeleted).
	Purged []Partition
	// PinnedVersions are the manifest versions pinned by unexpired query
	// leases when the batch was taken.
	PinnedVersions []int64
	// KeptByGrace counts removed partitions left because they were removed
	// after the cutoff; NextGraceExpiry is the earliest removed_at among
	// them (the cutoff must pass it before they qualify).
	KeptByGrace     int
	NextGraceExpiry *time.Time
	// KeptByLease counts removed partitions past the cutoff left because
	// they are live in a pinned version.
	KeptByLease int
	// More reports that eligible partitions remain beyond the batch limit.
	More bool
}

// PurgeRemoved is the first phase of a sweep of one dataset (live or
// deleted). In one transaction it locks the dataset row FOR NO KEY UPDATE,
// reads the versions pinned by unexpired query leases (database clock),
// and marks purged (purged_at = now()) at most limit of the removed, not yet
// purged partitions that were removed at or before removedBefore and are
// not live in any pinned version (live at v: added_in_version <= v <
// removed_in_version), oldest removal first; it writes one
// ActionRetentionPurge audit row per partition, as actor.
//
// The lock is the one LeasedSnapshot reads FOR SHARE before it records its
// lease: a lease is either committed before this transaction reads the
// leases, or taken after it commits, from a manifest in which the purged
// partitions are no longer live. Delete the objects only after this
// returns, then call MarkObjectsDeleted. Errors: ErrNotFound (no dataset
// with that id), ErrInvalid (limit < 1).
func (s *Store) PurgeRemoved(ctx context.Context, datasetID int64, removedBefore time.Time, limit int, actor string) (PurgeBatch, error) {
	if limit < 1 {
		return PurgeBatch{}, fmt.Errorf("purge removed partitions of dataset %d: %w", datasetID, invalid(fmt.Errorf("limit must be positive, not %d", limit)))
	}
	var b PurgeBatch
	err := s.inTx(ctx, readCommitted, func(tx pgx.Tx) error {
		d, err := readDataset(ctx, tx, anyByID, datasetID, forNoKeyUpdate)
		if err != nil {
			return err
		}
		if b.PinnedVersions, err = leasedVersions(ctx, tx, datasetID); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, `
			WITH eligible AS (`+eligibleSQL+` FOR UPDATE)
			UPDATE timestore.partitions SET purged_at = now()
			FROM eligible WHERE id = eligible.pid
			RETURNING `+partitionColumns,
			datasetID, removedBefore, b.PinnedVersions, limit)
		if b.Purged, err = collect(rows, err, scanPartition); err != nil {
			return fmt.Errorf("mark partitions purged: %w", err)
		}
		slices.SortFunc(b.Purged, func(x, y Partition) int {
			return cmp.Or(x.RemovedAt.Compare(*y.RemovedAt), cmp.Compare(x.ID, y.ID))
		})
		kept, err := countKept(ctx, tx, datasetID, removedBefore, b.PinnedVersions)
		if err != nil {
			return fmt.Errorf("count kept partitions: %w", err)
		}
		b.KeptByGrace, b.NextGraceExpiry, b.KeptByLease = kept.byGrace, kept.nextGraceExpiry, kept.byLease
		b.More = kept.eligible > 0
		entries := make([]AuditEntry, len(b.Purged))
		for i, p := range b.Purged {
			entries[i] = AuditEntry{
				Actor:      actor,
				Action:     ActionRetentionPurge,
				Dataset:    d.Name,
				Partitions: []int64{p.ID},
				Bytes:      p.SizeBytes,
				Details: map[string]any{
					"target": p.Target, "key": p.Key, "rows": p.RowCount,
					"added_in_version": p.AddedInVersion, "removed_in_version": p.RemovedInVersion,
					"removed_at": p.RemovedAt, "time_min": p.TimeMin, "time_max": p.TimeMax,
				},
			}
		}
		return insertAuditBatch(ctx, tx, entries)
	})
	if err != nil {
		return PurgeBatch{}, fmt.Errorf("purge removed partitions of dataset %d: %w", datasetID, err)
	}
	return b, nil
}

// eligibleSQL selects (as pid) at most $4 removed, not purged partitions of
// dataset $1 removed at or before $2 and live in none of the versions $3,
// oldest removal first.
const eligibleSQL = `
	SELECT id AS pid FROM timestore.partitions
	WHERE dataset_id = $1 AND removed_in_version IS NOT NULL AND purged_at IS NULL
	  AND removed_at <= $2
	  AND NOT EXISTS (SELECT 1 FROM unnest($3::bigint[]) AS l(version)
	                  WHERE l.version >= added_in_version AND l.version < removed_in_version)
	ORDER BY removed_at, id
	LIMIT $4`

// keptSQL counts the removed, not purged partitions of dataset $1 that were
// removed after $2 (and the earliest such removal), those removed at or
// before $2 that are live in one of the versions $3, and those that are not.
const keptSQL = `
	WITH r AS (
		SELECT removed_at, EXISTS (SELECT 1 FROM unnest($3::bigint[]) AS l(version)
		                           WHERE l.version >= added_in_version AND l.version < removed_in_version) AS pinned
		FROM timestore.partitions
		WHERE dataset_id = $1 AND removed_in_version IS NOT NULL AND purged_at IS NULL
	)
	SELECT count(*) FILTER (WHERE removed_at > $2),
	       min(removed_at) FILTER (WHERE removed_at > $2),
	       count(*) FILTER (WHERE removed_at <= $2 AND pinned),
	       count(*) FILTER (WHERE removed_at <= $2 AND NOT pinned)
	FROM r`

// leasedVersions returns the manifest versions of a dataset pinned by
// unexpired query leases (database clock), ascending.
func leasedVersions(ctx context.Context, tx pgx.Tx, datasetID int64) ([]int64, error) {
	var versions []int64
	if err := tx.QueryRow(ctx, `
		SELECT coalesce(array_agg(DISTINCT manifest_version ORDER BY manifest_version), '{}')
		FROM timestore.query_leases
		WHERE dataset_id = $1 AND expires_at > now()`, datasetID).Scan(&versions); err != nil {
		return nil, fmt.Errorf("read query leases: %w", err)
	}
	return versions, nil
}

// keptCounts is what keptSQL counts: removed, not purged partitions kept by
// the grace period (and the earliest removal among them), those kept by a
// pinned version, and those eligible now.
type keptCounts struct {
	byGrace         int
	nextGraceExpiry *time.Time
	byLease         int
	eligible        int
}

// countKept runs keptSQL for a dataset, a cutoff and the pinned versions.
func countKept(ctx context.Context, tx pgx.Tx, datasetID int64, removedBefore time.Time, pinned []int64) (keptCounts, error) {
	var k keptCounts
	if err := tx.QueryRow(ctx, keptSQL, datasetID, removedBefore, pinned).Scan(
		&k.byGrace, &k.nextGraceExpiry, &k.byLease, &k.eligible); err != nil {
		return keptCounts{}, err
	}
	k.nextGraceExpiry = utcPtr(k.nextGraceExpiry)
	return k, nil
}

// PurgePreview is what PurgeRemoved would do now, without a limit.
type PurgePreview struct {
	// Eligible are the partitions PurgeRemoved would purge, oldest removal first.
	Eligible        []Partition
	PinnedVersions  []int64
	KeptByGrace     int
	NextGraceExpiry *time.Time
	KeptByLease     int
	// PendingDeletes counts purged partitions whose object is not yet deleted.
	PendingDeletes int
}

// PreviewPurge reads, in one consistent view and without locking or
// changing anything, what PurgeRemoved would purge now (the dry run of a
// sweep). A lease taken or released meanwhile can change the outcome.
func (s *Store) PreviewPurge(ctx context.Context, datasetID int64, removedBefore time.Time) (PurgePreview, error) {
	var pv PurgePreview
	err := s.inTx(ctx, consistentRead, func(tx pgx.Tx) error {
		if _, err := readDataset(ctx, tx, anyByID, datasetID, ""); err != nil {
			return err
		}
		var err error
		if pv.PinnedVersions, err = leasedVersions(ctx, tx, datasetID); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, `
			WITH eligible AS (`+eligibleSQL+`)
			SELECT `+partitionColumns+` FROM timestore.partitions JOIN eligible ON id = eligible.pid
			ORDER BY removed_at, id`, datasetID, removedBefore, pv.PinnedVersions, math.MaxInt32)
		if pv.Eligible, err = collect(rows, err, scanPartition); err != nil {
			return err
		}
		kept, err := countKept(ctx, tx, datasetID, removedBefore, pv.PinnedVersions)
		if err != nil {
			return err
		}
		pv.KeptByGrace, pv.NextGraceExpiry, pv.KeptByLease = kept.byGrace, kept.nextGraceExpiry, kept.byLease
		return tx.QueryRow(ctx, `
			SELECT count(*) FROM timestore.partitions
			WHERE dataset_id = $1 AND purged_at IS NOT NULL AND object_deleted_at IS NULL`, datasetID).Scan(&pv.PendingDeletes)
	})
	if err != nil {
		return PurgePreview{}, fmt.Errorf("preview purge of dataset %d: %w", datasetID, err)
	}
	return pv, nil
}

// PendingObjectDeletes returns up to limit purged partitions of a dataset
// whose object the sweeper has not yet recorded as deleted, with ids above
// afterID, ordered by id (page with the last id).
func (s *Store) PendingObjectDeletes(ctx context.Context, datasetID, afterID int64, limit int) ([]Partition, error) {
	rows, err := s.pool.Query(ctx, `
		SELECT `+partitionColumns+` FROM timestore.partitions
		WHERE dataset_id = $1 AND purged_at IS NOT NULL AND object_deleted_at IS NULL AND id > $2
		ORDER BY id
		LIMIT $3`, datasetID, afterID, max(limit, 1))
	parts, err := collect(rows, err, scanPartition)
	if err != nil {
		return nil, fmt.Errorf("pending object deletes of dataset %d: %w", datasetID, err)
	}
	return parts, nil
}

// MarkObjectsDeleted records that the objects of purged partitions are gone
// from their targets. Ids that are not purged are left alone.
func (s *Store) MarkObjectsDeleted(ctx context.Context, ids []int64) error {
	if len(ids) == 0 {
		return nil
	}
	if _, err := s.pool.Exec(ctx, `
		UPDATE timestore.partitions SET object_deleted_at = now()
		WHERE id = ANY($1) AND purged_at IS NOT NULL AND object_deleted_at IS NULL`, ids); err != nil {
		return fmt.Errorf("mark %d objects deleted: %w", len(ids), err)
	}
	return nil
}

// SweepPending reports whether a dataset has removed partitions not yet
// purged, or purged ones whose object is not yet deleted.
func (s *Store) SweepPending(ctx context.Context, datasetID int64) (bool, error) {
	var pending bool
	if err := s.pool.QueryRow(ctx, `
		SELECT EXISTS (SELECT 1 FROM timestore.partitions
		               WHERE dataset_id = $1 AND removed_in_version IS NOT NULL AND purged_at IS NULL)
		    OR EXISTS (SELECT 1 FROM timestore.partitions
		               WHERE dataset_id = $1 AND purged_at IS NOT NULL AND object_deleted_at IS NULL)`,
		datasetID).Scan(&pending); err != nil {
		return false, fmt.Errorf("sweep pending in dataset %d: %w", datasetID, err)
	}
	return pending, nil
}
