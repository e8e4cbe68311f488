package catalog

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// RunInTx runs fn in one read-committed transaction, committing when fn
// returns nil. It is for work that spans the catalog and River's tables, such
// as inserting a job (River's InsertTx) together with its audit row
// (AppendAuditTx).
func (s *Store) RunInTx(ctx context.Context, fn func(ctx context.Context, tx Tx) error) error {
	return s.inTx(ctx, readCommitted, func(tx pgx.Tx) error { return fn(ctx, tx) })
}

// AppendAuditTx appends one entry to the audit log inside tx, so that it is
// recorded only if tx commits. Time defaults to the database clock.
func (s *Store) AppendAuditTx(ctx context.Context, tx Tx, e AuditEntry) error {
	if err := insertAudit(ctx, tx, e); err != nil {
		return fmt.Errorf("append audit %q: %w", e.Action, err)
	}
	return nil
}

// JobCount is how many unfinished River jobs of one kind a dataset has.
type JobCount struct {
	Kind string
	// Dataset is the job's args->>'dataset' ("" when the args have none).
	Dataset string
	Count   int64
}

// UnfinishedJobs counts the River jobs (table river_job, in the default
// schema) of the given kinds that are not finalized — available, pending,
// retryable, running or scheduled — per kind and args->>'dataset'. A
// positive datasetID counts only jobs whose args carry that dataset_id.
func (s *Store) UnfinishedJobs(ctx context.Context, kinds []string, datasetID int64) ([]JobCount, error) {
	rows, err := s.pool.Query(ctx, `
		SELECT kind, coalesce(args->>'dataset', ''), count(*)
		FROM river_job
		WHERE state IN ('available', 'pending', 'retryable', 'running', 'scheduled')
		  AND kind = ANY($1)
		  AND ($2::bigint <= 0 OR args @> jsonb_build_object('dataset_id', $2::bigint))
		GROUP BY 1, 2
		ORDER BY 1, 2`, kinds, datasetID)
	counts, err := collect(rows, err, func(row pgx.Row) (JobCount, error) {
		var c JobCount
		err := row.Scan(&c.Kind, &c.Dataset, &c.Count)
		return c, err
	})
	if err != nil {
		return nil, fmt.Errorf("count unfinished jobs: %w", err)
	}
	return counts, nil
}
