package jobs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"strconv"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"
)

// taskWorker is the River worker of every lifecycle kind: it hands the job to
// the kind's Task.
type taskWorker[T datasetJob] struct {
	river.WorkerDefaults[T]
	s *Service
}

// Work implements river.Worker.
func (w *taskWorker[T]) Work(ctx context.Context, job *river.Job[T]) error {
	return w.s.work(ctx, job.JobRow, job.Args.datasetArgs())
}

// work runs one attempt of a lifecycle job and turns the Task's result into
// River's terms: nil (completed), an error (retried), or JobCancel (never
// again). It records the output, logs with job_id, kind and dataset, and
// updates the metrics.
func (s *Service) work(ctx context.Context, row *rivertype.JobRow, args DatasetArgs) error {
	kind := row.Kind
	log := s.log.With("job_id", row.ID, "kind", kind, "dataset", args.Dataset)
	start := time.Now()
	output, err := s.runTask(ctx, row, args, log)
	outcome := classify(ctx, err)
	elapsed := time.Since(start)

	output.Outcome = outcome
	output.Trigger = args.Trigger
	if err != nil {
		output.Error = err.Error()
	}
	if rerr := river.RecordOutput(ctx, output); rerr != nil {
		log.WarnContext(ctx, "could not record job output", "error", rerr)
	}

	s.metrics.runs.WithLabelValues(kind, outcome).Inc()
	s.metrics.duration.WithLabelValues(kind).Observe(elapsed.Seconds())
	attrs := []any{"outcome", outcome, "attempt", row.Attempt, "max_attempts", row.MaxAttempts, "duration", elapsed}
	switch outcome {
	case OutcomeSuccess:
		s.metrics.lastSuccess.WithLabelValues(kind, args.Dataset).SetToCurrentTime()
		log.InfoContext(ctx, "job finished", attrs...)
		return nil
	case OutcomeConflict:
		log.WarnContext(ctx, "job finished with a conflict; the next run starts from the new manifest", append(attrs, "error", err)...)
		return nil
	case OutcomeSnoozed:
		s.metrics.lastSuccess.WithLabelValues(kind, args.Dataset).SetToCurrentTime()
		log.InfoContext(ctx, "job did its work and runs again later", append(attrs, "reason", err)...)
		return err
	case OutcomeCancelled:
		if IsHalt(err) {
			s.metrics.invariant.WithLabelValues(kind).Inc()
			log.ErrorContext(ctx, "job halted on an invariant violation; it will not be retried", append(attrs, "error", err)...)
			return river.JobCancel(err)
		}
		log.WarnContext(ctx, "job cancelled while running", append(attrs, "error", err)...)
		return err
	default:
		if row.Attempt >= row.MaxAttempts {
			log.ErrorContext(ctx, "job failed on its last attempt; it is discarded", append(attrs, "error", err)...)
		} else {
			log.WarnContext(ctx, "job attempt failed; River retries it with backoff", append(attrs, "error", err)...)
		}
		return err
	}
}

// taskOutput is what the harness records as the output of a lifecycle job's
// attempt (JobInfo.Output): the harness's own keys and the Task's typed
// summary, or, for a dry run, its plan.
type taskOutput struct {
	Outcome string `json:"outcome"`
	Trigger string `json:"trigger"`
	// Summary is what Task.Run returned; absent when Run was not reached.
	Summary any `json:"summary,omitempty"`
	// DryRun and Plan: a dry-run job recorded Task.Plan's result.
	DryRun bool   `json:"dry_run,omitempty"`
	Plan   any    `json:"plan,omitempty"`
	Error  string `json:"error,omitempty"`
}

// runTask checks that the dataset still exists, then runs (or, for a dry-run
// job, plans) the Task.
func (s *Service) runTask(ctx context.Context, row *rivertype.JobRow, args DatasetArgs, log *slog.Logger) (output taskOutput, err error) {
	task, err := s.task(row.Kind)
	if err != nil {
		// Only kinds with a Task have a worker; this is a programming error.
		return output, Halt(err)
	}
	d, err := s.store.GetDatasetByID(ctx, args.DatasetID)
	switch {
	case errors.Is(err, ErrNotFound) || (err == nil && d.Name != args.Dataset):
		return output, fmt.Errorf("%w: dataset %q (id %d) no longer exists", ErrConflict, args.Dataset, args.DatasetID)
	case err != nil:
		return output, err
	}
	jc := JobContext{
		ID:        row.ID,
		Attempt:   row.Attempt,
		Actor:     "job:" + strconv.FormatInt(row.ID, 10),
		Logger:    log,
		DatasetID: args.DatasetID,
		Trigger:   args.Trigger,
	}
	err = safely(log, func() error {
		if args.DryRun {
			plan, err := task.Plan(ctx, args.Dataset)
			output.DryRun, output.Plan = true, plan
			return err
		}
		summary, err := task.Run(ctx, args.Dataset, jc)
		output.Summary = summary
		return err
	})
	return output, err
}

// classify maps the result of a run onto an outcome.
func classify(ctx context.Context, err error) string {
	switch {
	case err == nil:
		return OutcomeSuccess
	case IsHalt(err), errors.Is(context.Cause(ctx), rivertype.ErrJobCancelledRemotely):
		return OutcomeCancelled
	case errors.Is(err, ErrConflict):
		return OutcomeConflict
	case errors.As(err, new(*rivertype.JobSnoozeError)):
		return OutcomeSnoozed
	default:
		return OutcomeError
	}
}

// safely runs fn, turning a panic into an error (River would recover it too,
// but then the outcome would not be recorded).
func safely(log *slog.Logger, fn func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			log.Error("job panicked", "panic", r, "stack", string(debug.Stack()))
			err = fmt.Errorf("panic: %v", r)
		}
	}()
	return fn()
}

// schedulerWorker runs ScheduleTick.
type schedulerWorker struct {
	river.WorkerDefaults[SchedulerArgs]
	s *Service
}

// Work implements river.Worker.
func (w *schedulerWorker) Work(ctx context.Context, job *river.Job[SchedulerArgs]) error {
	s := w.s
	start := time.Now()
	n, err := s.ScheduleTick(ctx)
	outcome := OutcomeSuccess
	output := map[string]any{"enqueued": n}
	if pruned, perr := s.PruneSchedulerJobs(ctx, SchedulerJobRetention); perr != nil {
		s.log.WarnContext(ctx, "prune finished scheduler jobs", "error", perr)
	} else if pruned > 0 {
		output["pruned"] = pruned
	}
	if err != nil {
		outcome = OutcomeError
		output["error"] = err.Error()
		s.log.ErrorContext(ctx, "scheduler tick failed", "job_id", job.ID, "kind", KindScheduler, "enqueued", n, "error", err)
	}
	output["outcome"] = outcome
	_ = river.RecordOutput(ctx, output)
	s.metrics.runs.WithLabelValues(KindScheduler, outcome).Inc()
	s.metrics.duration.WithLabelValues(KindScheduler).Observe(time.Since(start).Seconds())
	return err
}

// SchedulerJobRetention is how long finished scheduler jobs are kept. They
// run every SchedulerInterval and say little once done; keeping them for
// JobRetention would bury the lifecycle jobs in `jobs list` and the UI.
const SchedulerJobRetention = time.Hour

// PruneSchedulerJobs deletes scheduler jobs finalized more than olderThan ago
// and returns how many.
func (s *Service) PruneSchedulerJobs(ctx context.Context, olderThan time.Duration) (int, error) {
	res, err := s.client.JobDeleteMany(ctx, river.NewJobDeleteManyParams().
		Kinds(KindScheduler).
		States(rivertype.JobStateCompleted, rivertype.JobStateCancelled, rivertype.JobStateDiscarded).
		Where("finalized_at < now() - make_interval(secs => @secs)", river.NamedArgs{"secs": olderThan.Seconds()}).
		First(10000))
	if err != nil {
		return 0, err
	}
	return len(res.Jobs), nil
}
