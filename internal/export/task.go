package export

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/riverqueue/river"

	"timestore/internal/jobs"
)

// ContinueAfter is how soon a job whose run spent its budget with windows
// left runs again (it snoozes, which costs no attempt).
const ContinueAfter = time.Second

// Task is the "export" job: Plan is the dry run (the due windows with their
// rows and bytes), Run exports them.
type Task struct{ exp *Exporter }

var _ jobs.Task = (*Task)(nil)

// Task returns the task of job kind "export", for jobs.Options.Tasks.
func (exp *Exporter) Task() *Task { return &Task{exp: exp} }

// Kind implements jobs.Task.
func (t *Task) Kind() string { return jobs.KindExport }

// Plan implements jobs.Task: the due windows, changing nothing.
func (t *Task) Plan(ctx context.Context, dataset string) (any, error) {
	return t.exp.Plan(ctx, dataset)
}

// Run implements jobs.Task and returns a Summary, also with an error. A
// damaged archive, a window directory occupied by another export, or an
// export that fails its own verification halts the job (retrying cannot
// help); another export of the dataset running is a conflict; any other
// failure is retried by River, and the retry reuses the failed attempt's
// record. When the run's budget is spent with windows left, the job snoozes
// and continues.
func (t *Task) Run(ctx context.Context, dataset string, job jobs.JobContext) (any, error) {
	id := job.ID
	res, err := t.exp.Run(ctx, dataset, RunOptions{Actor: job.Actor, JobID: &id, Logger: job.Logger})
	switch {
	case errors.Is(err, ErrArchive) || errors.Is(err, ErrVerify) || errors.Is(err, ErrOccupied):
		return res.Summary(), jobs.Halt(err)
	case err != nil:
		return res.Summary(), err
	case res.Remaining > 0:
		return res.Summary(), fmt.Errorf("%d windows left after the run's budget: continue in %s: %w",
			res.Remaining, ContinueAfter, river.JobSnooze(ContinueAfter))
	}
	return res.Summary(), nil
}

// Summary is a run as recorded in its job's output.
type Summary struct {
	Dataset string `json:"dataset"`
	// Exported names the verified versions, "WINDOW vVERSION", in order.
	Exported   []string `json:"exported"`
	Skipped    int      `json:"skipped"`
	Remaining  int      `json:"remaining"`
	Rows       int64    `json:"rows"`
	Bytes      int64    `json:"bytes"`
	LagSeconds float64  `json:"lag_seconds"`
	Notes      []string `json:"notes"`
}

// Summary renders r as a job's output.
func (r Result) Summary() Summary {
	windows := make([]string, len(r.Exported))
	for i, w := range r.Exported {
		windows[i] = fmt.Sprintf("%s v%d", w.Window, w.Version)
	}
	return Summary{
		Dataset: r.Dataset, Exported: windows, Skipped: r.Skipped, Remaining: r.Remaining,
		Rows: r.Rows, Bytes: r.Bytes, LagSeconds: r.LagSeconds, Notes: r.Notes,
	}
}
