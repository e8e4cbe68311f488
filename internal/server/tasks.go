package server

import (
	"context"
	"errors"

	"timestore/internal/compaction"
	"timestore/internal/jobs"
)

// compactionTask adapts the compactor to the job harness: a merge whose output
// does not hold its inputs' rows is an invariant violation (halt, not retry).
type compactionTask struct{ c *compaction.Compactor }

var _ jobs.Task = compactionTask{}

func (t compactionTask) Kind() string { return jobs.KindCompaction }

func (t compactionTask) Plan(ctx context.Context, dataset string) (any, error) {
	return t.c.Plan(ctx, dataset)
}

func (t compactionTask) Run(ctx context.Context, dataset string, j jobs.JobContext) (map[string]any, error) {
	out, err := t.c.RunJob(ctx, dataset, j.ID, j.Attempt, j.Actor, j.Logger)
	if errors.Is(err, compaction.ErrVerify) {
		err = jobs.Halt(err)
	}
	return out, err
}
