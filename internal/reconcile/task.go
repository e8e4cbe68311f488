package reconcile

import (
	"context"

	"timestore/internal/jobs"
)

// Task is the "reconcile" job: Plan is the dry run (a Reconcile that deletes
// nothing), Run reconciles, deleting orphans.
type Task struct{ rec *Reconciler }

var _ jobs.Task = (*Task)(nil)

// Task returns the task of job kind "reconcile", for jobs.Options.Tasks.
func (rec *Reconciler) Task() *Task { return &Task{rec: rec} }

// Kind implements jobs.Task.
func (t *Task) Kind() string { return jobs.KindReconcile }

// Plan implements jobs.Task: the Report of a reconcile that deletes nothing.
func (t *Task) Plan(ctx context.Context, dataset string) (any, error) {
	return t.rec.Reconcile(ctx, dataset, true, "", t.rec.opts.Logger.With("kind", jobs.KindReconcile, "dataset", dataset))
}

// Run implements jobs.Task: reconcile, deleting orphans. The summary is the
// Report, also with an error (what was done before it).
func (t *Task) Run(ctx context.Context, dataset string, job jobs.JobContext) (any, error) {
	return t.rec.Reconcile(ctx, dataset, false, job.Actor, job.Logger)
}
