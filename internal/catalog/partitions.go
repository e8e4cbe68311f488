package catalog

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// PartitionsStateAll selects partitions in every state (see Store.Partitions).
const PartitionsStateAll = "all"

// Partitions lists a live dataset's partitions in one state: StateLive (also
// for ""), StateRemoved (removed, not purged), StatePurged or
// PartitionsStateAll; ordered by time_min, then id.
func (s *Store) Partitions(ctx context.Context, name, state string) ([]Partition, error) {
	var cond string
	switch state {
	case StateLive, "":
		cond = `removed_in_version IS NULL`
	case StateRemoved:
		cond = `removed_in_version IS NOT NULL AND purged_at IS NULL`
	case StatePurged:
		cond = `purged_at IS NOT NULL`
	case PartitionsStateAll:
		cond = `TRUE`
	default:
		return nil, fmt.Errorf("list partitions of dataset %q: %w", name,
			invalid(fmt.Errorf("state must be live, removed, purged or all, not %q", state)))
	}
	parts, err := listOfLiveDataset(ctx, s, name, scanPartition, `
		SELECT `+partitionColumns+` FROM timestore.partitions
		WHERE dataset_id = $1 AND `+cond+`
		ORDER BY time_min, id`)
	if err != nil {
		return nil, fmt.Errorf("list partitions of dataset %q: %w", name, err)
	}
	return parts, nil
}

// DatasetTotals sums the live partitions of a dataset (zero for an unknown id).
func (s *Store) DatasetTotals(ctx context.Context, datasetID int64) (Totals, error) {
	var t Totals
	err := s.pool.QueryRow(ctx, `
		SELECT count(*), coalesce(sum(row_count), 0)::bigint, coalesce(sum(size_bytes), 0)::bigint
		FROM timestore.partitions
		WHERE dataset_id = $1 AND removed_in_version IS NULL`, datasetID).Scan(&t.Partitions, &t.Rows, &t.Bytes)
	if err != nil {
		return Totals{}, fmt.Errorf("totals of dataset %d: %w", datasetID, err)
	}
	return t, nil
}

// lockPartitions locks the partitions ids of a dataset (in any state) FOR
// UPDATE until the transaction ends, in id order so that two transactions
// locking overlapping sets cannot deadlock, and returns them by id. Ids
// that are not partitions of the dataset are absent from the map.
func lockPartitions(ctx context.Context, tx pgx.Tx, datasetID int64, ids []int64) (map[int64]Partition, error) {
	rows, err := tx.Query(ctx, `
		SELECT `+partitionColumns+` FROM timestore.partitions
		WHERE id = ANY($1) AND dataset_id = $2
		ORDER BY id
		FOR UPDATE`, ids, datasetID)
	found, err := collect(rows, err, scanPartition)
	if err != nil {
		return nil, fmt.Errorf("read partitions: %w", err)
	}
	byID := make(map[int64]Partition, len(found))
	for _, p := range found {
		byID[p.ID] = p
	}
	return byID, nil
}
