// Package jobs runs timestore's lifecycle jobs on River: one job kind per
// lifecycle operation (compaction, retention, sweep, export, reconcile), a
// periodic scheduler that enqueues what each dataset's policy makes due, and
// the admin operations on jobs (trigger, dry run, list, show, retry, cancel,
// lifecycle status).
//
// The domain work plugs in through Task: the harness owns queues, retries,
// timeouts, uniqueness, logging, metrics and the audit of admin operations;
// a Task only plans and runs. A kind without a registered Task is a valid
// kind that this build cannot run (ErrUnsupported).
//
// Every lifecycle package builds its Task the same way (internal/export/task.go
// is the model): a task.go holds a small type whose Kind, Plan and Run call
// the package's domain type (Exporter.Plan, Exporter.Run with RunOptions),
// map its errors onto ErrConflict, Halt or river.JobSnooze, and render its
// result as the kind's typed summary (a struct with JSON tags). Nothing
// job-shaped leaks into the domain code.
//
// Every job is unique per (kind, dataset) while it is pending, scheduled,
// available, retryable or running, so triggering twice, or a schedule firing
// while a manual run waits, yields one job. Tasks must be safe to run twice:
// a job whose process died is rescued and run again (see
// Options.RescueAfter).
//
// How a lifecycle job is built (Task, outcomes, uniqueness, fault points) is in docs/design.md.
package jobs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"

	"timestore/internal/catalog"
)

// Lifecycle job kinds.
const (
	KindCompaction = "compaction"
	KindRetention  = "retention"
	KindSweep      = "sweep"
	KindExport     = "export"
	KindReconcile  = "reconcile"
	// KindScheduler is the internal periodic job that enqueues due lifecycle
	// jobs. Operators cannot trigger it.
	KindScheduler = "scheduler"
)

// Kinds returns the lifecycle job kinds an operator can run, in a fixed order.
func Kinds() []string {
	return []string{KindCompaction, KindRetention, KindSweep, KindExport, KindReconcile}
}

// Queues.
const (
	// QueueMaintenance runs the lifecycle jobs.
	QueueMaintenance = "maintenance"
	// QueueScheduler runs only the scheduler, so a backlog of lifecycle jobs
	// never delays it.
	QueueScheduler = "scheduler"
)

// Triggers: why a job was enqueued (JobInfo.Trigger).
const (
	TriggerManual   = "manual"
	TriggerSchedule = "schedule"
	TriggerFollowup = "followup"
)

// Outcomes of a job run, recorded in the job's output ("outcome") and in the
// metric timestore_job_runs_total.
const (
	// OutcomeSuccess: Run returned no error.
	OutcomeSuccess = "success"
	// OutcomeConflict: Run returned an ErrConflict error (the manifest
	// changed under it) or the dataset no longer exists. The job completes;
	// the next run starts from the new state.
	OutcomeConflict = "conflict"
	// OutcomeSnoozed: Run did what it could and asked, with river.JobSnooze,
	// to run again later (e.g. a sweep waiting for a grace period or a
	// lease); it is neither a success nor a failure and uses no attempt.
	OutcomeSnoozed = "snoozed"
	// OutcomeError: Run failed; River retries with backoff until the job's
	// attempts are exhausted, then discards it.
	OutcomeError = "error"
	// OutcomeCancelled: Run returned a Halt error (an invariant violation),
	// or the job was cancelled while it ran. It will not run again by itself.
	OutcomeCancelled = "cancelled"
)

// Audit actions written by the admin operations.
const (
	ActionTrigger = "maintenance.trigger"
	ActionRetry   = "job.retry"
	ActionCancel  = "job.cancel"
)

// Errors. Test for them with errors.Is.
var (
	// ErrNotFound: no such dataset, or no such timestore job. It is
	// catalog.ErrNotFound.
	ErrNotFound = catalog.ErrNotFound
	// ErrConflict, wrapped in an error from Task.Run, makes the job complete
	// with OutcomeConflict instead of failing. It is catalog.ErrConflict,
	// which Store.Commit returns when a change no longer applies.
	ErrConflict = catalog.ErrConflict
	// ErrInvalid: a malformed request, such as an unknown job state in a
	// filter. It is catalog.ErrInvalid.
	ErrInvalid = catalog.ErrInvalid
	// ErrUnknownKind: the kind is not one of Kinds().
	ErrUnknownKind = errors.New("unknown job kind")
	// ErrUnsupported: the kind is valid but no Task for it is registered in
	// this build ("compaction is not available in this build").
	ErrUnsupported = errors.New("not available in this build")
	// ErrState: the job's state does not allow the operation (retry of a
	// running job, cancel of a completed one, retry while another job of the
	// same kind and dataset is pending).
	ErrState = errors.New("job state does not allow this")
)

// Task is the domain work of one job kind.
type Task interface {
	// Kind is one of Kinds().
	Kind() string
	// Plan computes what Run would do now, changing nothing (a dry run). The
	// result is returned to the operator as JSON.
	Plan(ctx context.Context, dataset string) (any, error)
	// Run does the work and returns its summary: a struct of the kind's own
	// type with JSON tags (compaction.Summary, export.Summary, ...), also
	// when it returns an error (what was done before it). The harness
	// records it as the "summary" of the job's output. Return an error
	// wrapping ErrConflict when the manifest changed under the run (the job
	// completes, outcome "conflict"), Halt(err) for an invariant violation
	// (the job is cancelled and never retried), anything else to have River
	// retry with backoff. Run must be safe to repeat.
	Run(ctx context.Context, dataset string, job JobContext) (any, error)
}

// JobContext describes the job a Task runs in.
type JobContext struct {
	// ID is the River job id.
	ID int64
	// Attempt counts from 1.
	Attempt int
	// Actor is what the task records as the actor of its changes: "job:<id>".
	Actor string
	// Logger carries job_id, kind and dataset.
	Logger *slog.Logger
	// DatasetID is the id of the dataset, checked to be live when the job
	// started.
	DatasetID int64
	// Trigger is why the job was enqueued (Trigger* constants).
	Trigger string
}

// Halt marks err as an invariant violation: the job is cancelled instead of
// retried, timestore_job_invariant_violations_total is incremented and the
// error is logged at error level. Halt(nil) is nil.
func Halt(err error) error {
	if err == nil {
		return nil
	}
	return &haltError{err: err}
}

// IsHalt reports whether err was marked by Halt.
func IsHalt(err error) bool {
	var h *haltError
	return errors.As(err, &h)
}

type haltError struct{ err error }

func (h *haltError) Error() string { return "invariant violation: " + h.err.Error() }
func (h *haltError) Unwrap() error { return h.err }

// unsupportedError says that a kind has no Task in this build.
type unsupportedError struct{ kind string }

func (e unsupportedError) Error() string { return e.kind + " is not available in this build" }
func (e unsupportedError) Is(target error) bool {
	return target == ErrUnsupported
}

// validKind checks that kind is one of Kinds().
func validKind(kind string) error {
	if !slices.Contains(Kinds(), kind) {
		return fmt.Errorf("%w %q (want compaction, retention, sweep, export or reconcile)", ErrUnknownKind, kind)
	}
	return nil
}
