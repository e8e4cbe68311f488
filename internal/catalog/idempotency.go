package catalog

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// LookupIdempotency returns what the first change with this Idempotency-Key
// did to the dataset, and whether there was one.
func (s *Store) LookupIdempotency(ctx context.Context, datasetID int64, key string) (IdempotencyRecord, bool, error) {
	rec, found, err := lookupIdempotency(ctx, s.pool, datasetID, key)
	if err != nil {
		return IdempotencyRecord{}, false, fmt.Errorf("look up idempotency key %q of dataset %d: %w", key, datasetID, err)
	}
	return rec, found, nil
}

func lookupIdempotency(ctx context.Context, db querier, datasetID int64, key string) (IdempotencyRecord, bool, error) {
	rows, err := db.Query(ctx, `
		SELECT `+idempotencyColumns+` FROM timestore.idempotency_keys
		WHERE dataset_id = $1 AND key = $2`, datasetID, key)
	recs, err := collect(rows, err, scanIdempotency)
	if err != nil || len(recs) == 0 {
		return IdempotencyRecord{}, false, err
	}
	return recs[0], true, nil
}

const idempotencyColumns = `key, request_hash, manifest_version, rows_written, partitions_written, created_at`

func scanIdempotency(row pgx.Row) (IdempotencyRecord, error) {
	var r IdempotencyRecord
	err := row.Scan(&r.Key, &r.RequestHash, &r.Version, &r.RowsWritten, &r.PartitionsWritten, &r.CreatedAt)
	r.CreatedAt = r.CreatedAt.UTC()
	return r, err
}

// queueIdempotency queues, in a manifest change's pipeline, the statement
// recording what the first change with key did to the dataset.
func queueIdempotency(p *commitPipeline, datasetID int64, key, requestHash string, version, rowsWritten, partitionsWritten int64) {
	p.exec(fmt.Sprintf("record idempotency key %q", key), `
		INSERT INTO timestore.idempotency_keys
			(dataset_id, key, request_hash, manifest_version, rows_written, partitions_written)
		VALUES ($1, $2, $3, $4, $5, $6)`,
		datasetID, key, requestHash, version, rowsWritten, partitionsWritten)
}
