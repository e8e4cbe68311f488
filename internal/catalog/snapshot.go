package catalog

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// overlaps prunes partitions to those that may hold rows in [$from, $to); a
// NULL bound is open. The placeholders are filled in by the caller.
const overlaps = `($%[1]d::timestamptz IS NULL OR time_max >= $%[1]d) AND ($%[2]d::timestamptz IS NULL OR time_min < $%[2]d)`

// Snapshot returns the dataset and its live partitions at its current manifest
// version, read in one consistent snapshot. When from or to is set, only
// partitions that may hold rows in [from, to) are returned (time_max >= from,
// time_min < to). Partitions are ordered by time_min, then id.
func (s *Store) Snapshot(ctx context.Context, name string, from, to *time.Time) (Snapshot, error) {
	var snap Snapshot
	err := s.inTx(ctx, consistentRead, func(tx pgx.Tx) error {
		var err error
		snap, err = readSnapshot(ctx, tx, name, "", from, to)
		return err
	})
	if err != nil {
		return Snapshot{}, fmt.Errorf("snapshot dataset %q: %w", name, err)
	}
	return snap, nil
}

// LeasedSnapshot is Snapshot plus a query lease on the snapshot's version for
// holder, taken in the same transaction, and returns the lease id (release it
// with ReleaseLease). The dataset row is read FOR SHARE, which waits for a
// manifest change in progress and blocks the next one until the lease is
// committed: a sweeper that locks the dataset row before it reads the leases
// therefore either sees this lease, or has purged before this snapshot was
// taken, in which case the purged partitions are not in it. No window is left
// in which a file this reader will open can be swept.
func (s *Store) LeasedSnapshot(ctx context.Context, name string, from, to *time.Time, holder string, ttl time.Duration) (Snapshot, int64, error) {
	if ttl <= 0 {
		return Snapshot{}, 0, fmt.Errorf("snapshot dataset %q: %w", name, invalid(fmt.Errorf("lease ttl must be positive, not %s", ttl)))
	}
	var snap Snapshot
	var lease int64
	err := s.inTx(ctx, readCommitted, func(tx pgx.Tx) error {
		var err error
		if snap, err = readSnapshot(ctx, tx, name, forShare, from, to); err != nil {
			return err
		}
		return tx.QueryRow(ctx, `
			INSERT INTO timestore.query_leases (dataset_id, manifest_version, holder, expires_at)
			VALUES ($1, $2, $3, clock_timestamp() + $4 * interval '1 microsecond')
			RETURNING id`, snap.Dataset.ID, snap.Version, holder, ttl.Microseconds()).Scan(&lease)
	})
	if err != nil {
		return Snapshot{}, 0, fmt.Errorf("snapshot dataset %q: %w", name, err)
	}
	return snap, lease, nil
}

func readSnapshot(ctx context.Context, tx pgx.Tx, name, lock string, from, to *time.Time) (Snapshot, error) {
	d, err := readDataset(ctx, tx, liveByName, name, lock)
	if err != nil {
		return Snapshot{}, err
	}
	rows, err := tx.Query(ctx, `
		SELECT `+partitionColumns+` FROM timestore.partitions
		WHERE dataset_id = $1 AND removed_in_version IS NULL AND `+fmt.Sprintf(overlaps, 2, 3)+`
		ORDER BY time_min, id`,
		d.ID, from, to)
	parts, err := collect(rows, err, scanPartition)
	if err != nil {
		return Snapshot{}, err
	}
	return Snapshot{Dataset: d, Version: d.ManifestVersion, Partitions: parts}, nil
}

// SnapshotAt returns the partitions live in version of a dataset's manifest:
// added_in_version <= version and not removed in or before it. from and to
// prune as in Snapshot. It works for deleted datasets too (readers holding a
// lease may still need them). An unknown dataset, or a version it has not
// reached, returns ErrNotFound.
//
// A partition restored after a removal is live again from its original
// added_in_version on: SnapshotAt reports it live in the versions between its
// removal and its restore as well.
func (s *Store) SnapshotAt(ctx context.Context, datasetID, version int64, from, to *time.Time) ([]Partition, error) {
	var parts []Partition
	err := s.inTx(ctx, consistentRead, func(tx pgx.Tx) error {
		d, err := readDataset(ctx, tx, anyByID, datasetID, "")
		if err != nil {
			return err
		}
		if version < 0 || version > d.ManifestVersion {
			return fmt.Errorf("version %d (current is %d): %w", version, d.ManifestVersion, ErrNotFound)
		}
		rows, err := tx.Query(ctx, `
			SELECT `+partitionColumns+` FROM timestore.partitions
			WHERE dataset_id = $1 AND added_in_version <= $2
			  AND (removed_in_version IS NULL OR removed_in_version > $2)
			  AND `+fmt.Sprintf(overlaps, 3, 4)+`
			ORDER BY time_min, id`,
			datasetID, version, from, to)
		parts, err = collect(rows, err, scanPartition)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("snapshot dataset %d at version %d: %w", datasetID, version, err)
	}
	return parts, nil
}
