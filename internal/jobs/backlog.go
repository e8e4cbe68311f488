package jobs

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// jobCount is how many unfinished River jobs of one kind a dataset has.
type jobCount struct {
	Kind string
	// Dataset is the job's args->>'dataset' ("" when the args have none).
	Dataset string
	Count   int64
}

// unfinishedJobs counts the River jobs (table river_job, in the default
// schema of Options.Pool) of the given kinds that are not finalized —
// available, pending, retryable, running or scheduled — per kind and
// args->>'dataset'. A positive datasetID counts only jobs whose args carry
// that dataset_id. It reads River's table directly: River's client lists
// jobs, but does not count them by an args field.
func (s *Service) unfinishedJobs(ctx context.Context, kinds []string, datasetID int64) ([]jobCount, error) {
	rows, err := s.opts.Pool.Query(ctx, `
		SELECT kind, coalesce(args->>'dataset', ''), count(*)
		FROM river_job
		WHERE state IN ('available', 'pending', 'retryable', 'running', 'scheduled')
		  AND kind = ANY($1)
		  AND ($2::bigint <= 0 OR args @> jsonb_build_object('dataset_id', $2::bigint))
		GROUP BY 1, 2
		ORDER BY 1, 2`, kinds, datasetID)
	if err != nil {
		return nil, fmt.Errorf("count unfinished jobs: %w", err)
	}
	counts, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (jobCount, error) {
		var c jobCount
		err := row.Scan(&c.Kind, &c.Dataset, &c.Count)
		return c, err
	})
	if err != nil {
		return nil, fmt.Errorf("count unfinished jobs: %w", err)
	}
	return counts, nil
}
