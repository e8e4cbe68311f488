package catalog

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

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
