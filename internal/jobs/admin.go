package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"

	"timestore/internal/catalog"
)

// Limits of List.
const (
	// ListLimitDefault is how many jobs List returns when no limit is given.
	ListLimitDefault = 100
	// ListLimitMax is the most jobs List returns at once.
	ListLimitMax = 1000
)

// JobInfo is a job as the admin API shows it.
type JobInfo struct {
	ID      int64  `json:"id"`
	Kind    string `json:"kind"`
	Dataset string `json:"dataset"`
	// Trigger is why the job was enqueued: manual, schedule or followup.
	Trigger string `json:"trigger,omitempty"`
	// State is River's: available, scheduled, pending, running, retryable,
	// completed, discarded or cancelled.
	State       string     `json:"state"`
	Attempt     int        `json:"attempt"`
	MaxAttempts int        `json:"max_attempts"`
	Errors      []JobError `json:"errors"`
	CreatedAt   time.Time  `json:"created_at"`
	ScheduledAt time.Time  `json:"scheduled_at"`
	FinishedAt  *time.Time `json:"finished_at"`
	// Outcome is the outcome of the last attempt, from the output
	// (Outcome* constants); empty before the first attempt ends.
	Outcome string `json:"outcome,omitempty"`
	// Waiting, for a job that did its work and asked to run again later
	// (OutcomeSnoozed: a sweep waiting for a grace period, an export
	// continuing), says until when and why: "waiting until T: reason". It is
	// not an error; Output then has "reason" instead of "error".
	Waiting string `json:"waiting,omitempty"`
	// Output is what the last attempt recorded: {"outcome", "trigger",
	// "summary" (from Task.Run), "error"}.
	Output json.RawMessage `json:"output,omitempty"`
}

// JobError is one failed attempt.
type JobError struct {
	At      time.Time `json:"at"`
	Attempt int       `json:"attempt"`
	Error   string    `json:"error"`
}

// Finished reports whether the job is in a final state.
func (j JobInfo) Finished() bool {
	switch rivertype.JobState(j.State) {
	case rivertype.JobStateCompleted, rivertype.JobStateCancelled, rivertype.JobStateDiscarded:
		return true
	}
	return false
}

// JobFilter selects jobs for List; zero fields match everything.
type JobFilter struct {
	// State is one of River's job states.
	State string
	// Kind is a lifecycle kind or "scheduler". Without it, List returns
	// lifecycle jobs only (not the scheduler's).
	Kind string
	// Dataset is a dataset name; jobs of deleted datasets of that name match too.
	Dataset string
	// Limit caps the result: ListLimitDefault when zero, at most ListLimitMax.
	Limit int
}

// Trigger enqueues a job of kind for a dataset now, and records a
// "maintenance.trigger" audit row for actor in the same transaction. If a job
// of the same kind and dataset is already waiting or running, that job is
// returned with duplicate = true and no new one is made.
//
// Errors: ErrUnknownKind, ErrUnsupported, ErrNotFound (no such live dataset).
func (s *Service) Trigger(ctx context.Context, kind, dataset, actor string) (_ JobInfo, duplicate bool, _ error) {
	if _, err := s.task(kind); err != nil {
		return JobInfo{}, false, err
	}
	d, err := s.store.GetDataset(ctx, dataset)
	if err != nil {
		return JobInfo{}, false, err
	}
	var res *rivertype.JobInsertResult
	err = s.store.RunInTx(ctx, func(ctx context.Context, tx catalog.Tx) error {
		res, err = s.insertTx(ctx, tx, kind, DatasetArgs{Dataset: d.Name, DatasetID: d.ID, Trigger: TriggerManual})
		if err != nil {
			return err
		}
		return s.store.AppendAuditTx(ctx, tx, catalog.AuditEntry{
			Actor:   actor,
			Action:  ActionTrigger,
			Dataset: d.Name,
			Details: map[string]any{"kind": kind, "job_id": res.Job.ID, "duplicate": res.UniqueSkippedAsDuplicate},
		})
	})
	if err != nil {
		return JobInfo{}, false, fmt.Errorf("trigger %s of dataset %q: %w", kind, dataset, err)
	}
	s.log.InfoContext(ctx, "job triggered", "job_id", res.Job.ID, "kind", kind, "dataset", d.Name,
		"actor", actor, "duplicate", res.UniqueSkippedAsDuplicate)
	return jobInfo(res.Job), res.UniqueSkippedAsDuplicate, nil
}

// DryRun returns what a job of kind would do to the dataset now (Task.Plan),
// changing nothing.
//
// Errors: ErrUnknownKind, ErrUnsupported, ErrNotFound.
func (s *Service) DryRun(ctx context.Context, kind, dataset string) (any, error) {
	t, err := s.task(kind)
	if err != nil {
		return nil, err
	}
	if _, err := s.store.GetDataset(ctx, dataset); err != nil {
		return nil, err
	}
	plan, err := t.Plan(ctx, dataset)
	if err != nil {
		return nil, fmt.Errorf("plan %s of dataset %q: %w", kind, dataset, err)
	}
	return plan, nil
}

// List returns the jobs matching f, newest first.
//
// Errors: ErrUnknownKind, ErrInvalid (unknown state).
func (s *Service) List(ctx context.Context, f JobFilter) ([]JobInfo, error) {
	limit := f.Limit
	if limit <= 0 {
		limit = ListLimitDefault
	}
	p := river.NewJobListParams().OrderBy(river.JobListOrderByID, river.SortOrderDesc).First(min(limit, ListLimitMax))
	switch {
	case f.Kind == "":
		p = p.Kinds(Kinds()...)
	case f.Kind == KindScheduler:
		p = p.Kinds(KindScheduler)
	default:
		if err := validKind(f.Kind); err != nil {
			return nil, err
		}
		p = p.Kinds(f.Kind)
	}
	if f.State != "" {
		if !slices.Contains(rivertype.JobStates(), rivertype.JobState(f.State)) {
			return nil, fmt.Errorf("%w: job state %q (want one of %v)", ErrInvalid, f.State, rivertype.JobStates())
		}
		p = p.States(rivertype.JobState(f.State))
	}
	if f.Dataset != "" {
		filter, err := json.Marshal(map[string]string{"dataset": f.Dataset})
		if err != nil {
			return nil, err
		}
		// A containment test, which River's GIN index on args serves.
		p = p.Where("args @> @ts_args_filter::jsonb", river.NamedArgs{"ts_args_filter": string(filter)})
	}
	res, err := s.client.JobList(ctx, p)
	if err != nil {
		return nil, fmt.Errorf("list jobs: %w", err)
	}
	out := make([]JobInfo, 0, len(res.Jobs))
	for _, row := range res.Jobs {
		out = append(out, jobInfo(row))
	}
	return out, nil
}

// Get returns a timestore job. Unknown ids, and jobs of kinds that are not
// timestore's, return ErrNotFound.
func (s *Service) Get(ctx context.Context, id int64) (JobInfo, error) {
	row, err := s.client.JobGet(ctx, id)
	if err := own(row, err, id); err != nil {
		return JobInfo{}, err
	}
	return jobInfo(row), nil
}

// Retry makes a job that is not running available to run again now (a
// discarded or cancelled one gets one more attempt if it has used all of
// them) and records a "job.retry" audit row for actor, atomically.
//
// Errors: ErrNotFound, ErrState (the job is running, or another job of the
// same kind and dataset is waiting or running).
func (s *Service) Retry(ctx context.Context, id int64, actor string) (JobInfo, error) {
	var out JobInfo
	err := s.store.RunInTx(ctx, func(ctx context.Context, tx catalog.Tx) error {
		row, err := s.client.JobGetTx(ctx, tx, id)
		if err := own(row, err, id); err != nil {
			return err
		}
		if row.State == rivertype.JobStateRunning {
			return fmt.Errorf("%w: job %d is running", ErrState, id)
		}
		updated, err := s.client.JobRetryTx(ctx, tx, id)
		if isUniqueViolation(err) {
			a := args(row)
			return fmt.Errorf("%w: another %s job of dataset %q is already waiting or running", ErrState, row.Kind, a.Dataset)
		}
		if err != nil {
			return err
		}
		if updated.State == rivertype.JobStateRunning {
			return fmt.Errorf("%w: job %d is running", ErrState, id)
		}
		out = jobInfo(updated)
		return s.store.AppendAuditTx(ctx, tx, catalog.AuditEntry{
			Actor:   actor,
			Action:  ActionRetry,
			Dataset: out.Dataset,
			Details: map[string]any{"job_id": id, "kind": row.Kind, "previous_state": string(row.State)},
		})
	})
	if err != nil {
		return JobInfo{}, fmt.Errorf("retry job %d: %w", id, err)
	}
	s.log.InfoContext(ctx, "job retried", "job_id", id, "kind", out.Kind, "dataset", out.Dataset, "actor", actor)
	return out, nil
}

// Cancel cancels a job and records a "job.cancel" audit row for actor,
// atomically. A waiting job is cancelled at once and never runs; a running
// job has its context cancelled and stays "running" until its worker returns.
// Cancelling a cancelled job changes nothing and succeeds.
//
// Errors: ErrNotFound, ErrState (the job is completed or discarded).
func (s *Service) Cancel(ctx context.Context, id int64, actor string) (JobInfo, error) {
	var out JobInfo
	changed := false
	err := s.store.RunInTx(ctx, func(ctx context.Context, tx catalog.Tx) error {
		row, err := s.client.JobGetTx(ctx, tx, id)
		if err := own(row, err, id); err != nil {
			return err
		}
		switch row.State {
		case rivertype.JobStateCancelled:
			out = jobInfo(row)
			return nil
		case rivertype.JobStateCompleted, rivertype.JobStateDiscarded:
			return fmt.Errorf("%w: job %d is already %s", ErrState, id, row.State)
		}
		updated, err := s.client.JobCancelTx(ctx, tx, id)
		if err != nil {
			return err
		}
		out, changed = jobInfo(updated), true
		return s.store.AppendAuditTx(ctx, tx, catalog.AuditEntry{
			Actor:   actor,
			Action:  ActionCancel,
			Dataset: out.Dataset,
			Details: map[string]any{"job_id": id, "kind": row.Kind, "previous_state": string(row.State)},
		})
	})
	if err != nil {
		return JobInfo{}, fmt.Errorf("cancel job %d: %w", id, err)
	}
	if changed {
		s.log.InfoContext(ctx, "job cancelled", "job_id", id, "kind", out.Kind, "dataset", out.Dataset, "actor", actor)
	}
	return out, nil
}

// own maps River's answer for job id onto ErrNotFound when there is no job or
// it is not one of timestore's kinds.
func own(row *rivertype.JobRow, err error, id int64) error {
	if errors.Is(err, rivertype.ErrNotFound) || (err == nil && row.Kind != KindScheduler && validKind(row.Kind) != nil) {
		return fmt.Errorf("job %d: %w", id, ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("get job %d: %w", id, err)
	}
	return nil
}

// isUniqueViolation reports whether err is Postgres refusing a duplicate
// unique job (River's unique index).
func isUniqueViolation(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "23505"
}

// args decodes a lifecycle job's args; the scheduler's decode to zero.
func args(row *rivertype.JobRow) DatasetArgs {
	var a DatasetArgs
	_ = json.Unmarshal(row.EncodedArgs, &a)
	return a
}

// jobInfo converts River's row.
func jobInfo(row *rivertype.JobRow) JobInfo {
	a := args(row)
	info := JobInfo{
		ID:          row.ID,
		Kind:        row.Kind,
		Dataset:     a.Dataset,
		Trigger:     a.Trigger,
		State:       string(row.State),
		Attempt:     row.Attempt,
		MaxAttempts: row.MaxAttempts,
		Errors:      make([]JobError, 0, len(row.Errors)),
		CreatedAt:   row.CreatedAt.UTC(),
		ScheduledAt: row.ScheduledAt.UTC(),
	}
	if row.FinalizedAt != nil {
		t := row.FinalizedAt.UTC()
		info.FinishedAt = &t
	}
	for _, e := range row.Errors {
		info.Errors = append(info.Errors, JobError{At: e.At.UTC(), Attempt: e.Attempt, Error: e.Error})
	}
	if out := row.Output(); len(out) > 0 && string(out) != "null" {
		info.Output = json.RawMessage(out)
		var o struct {
			Outcome string `json:"outcome"`
		}
		if json.Unmarshal(out, &o) == nil {
			info.Outcome = o.Outcome
		}
		if info.Outcome == OutcomeSnoozed {
			info.Output, info.Waiting = snoozed(info, out)
		}
	}
	return info
}

// snoozeSuffix is how River's JobSnoozeError renders ("JobSnoozeError: 1h0m0.9s"),
// appended to a snoozing task's reason by error wrapping.
const snoozeSuffix = ": JobSnoozeError: "

// snoozed rewrites the output of a snoozed attempt: its "error" (the task's
// reason wrapping River's snooze request) becomes "reason", without River's
// internal wording, and, while the job waits, the wait is described as
// "waiting until T: reason".
func snoozed(info JobInfo, out []byte) (json.RawMessage, string) {
	var o map[string]any
	if json.Unmarshal(out, &o) != nil {
		return out, ""
	}
	reason, _ := o["error"].(string)
	if i := strings.Index(reason, snoozeSuffix); i >= 0 {
		reason = reason[:i]
	} else {
		reason = strings.TrimPrefix(reason, snoozeSuffix[2:])
	}
	delete(o, "error")
	if reason != "" {
		o["reason"] = reason
	}
	rewritten, err := json.Marshal(o)
	if err != nil {
		return out, ""
	}
	switch rivertype.JobState(info.State) {
	case rivertype.JobStateScheduled, rivertype.JobStateAvailable:
	default:
		return rewritten, ""
	}
	waiting := "waiting until " + info.ScheduledAt.Format(time.RFC3339)
	if reason != "" {
		waiting += ": " + reason
	}
	return rewritten, waiting
}
