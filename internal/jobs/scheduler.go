package jobs

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/robfig/cron/v3"

	"timestore/internal/catalog"
	"timestore/internal/policy"
)

// kindSchedule is when the policy wants a kind to run for a dataset.
type kindSchedule struct {
	kind string
	spec string
}

// policySchedule reports the schedule a dataset's policy gives a kind, and
// whether the policy enables the kind at all:
//
//   - compaction, export: when the section is present and not disabled;
//     schedule from the section or policy.CompactionScheduleDefault /
//     policy.ExportScheduleDefault;
//   - retention: when the section is present; its schedule or
//     policy.RetentionScheduleDefault;
//   - reconcile: for every dataset, on reconcileSpec, unless that is
//     ReconcileScheduleOff;
//   - sweep: retention and compaction enqueue sweeps as follow-ups
//     (EnqueueTx), and operators can trigger them; a backstop sweep runs on
//     SweepScheduleDefault for every dataset, so that removals whose
//     follow-up was lost, and deleted datasets, are swept too.
func policySchedule(p policy.Policy, kind, reconcileSpec string) (spec string, enabled bool) {
	orDefault := func(s, def string) string {
		if s == "" {
			return def
		}
		return s
	}
	switch kind {
	case KindCompaction:
		if c := p.Compaction; c != nil && (c.Enabled == nil || *c.Enabled) {
			return orDefault(c.Schedule, policy.CompactionScheduleDefault), true
		}
	case KindRetention:
		if r := p.Retention; r != nil {
			return orDefault(r.Schedule, policy.RetentionScheduleDefault), true
		}
	case KindExport:
		if e := p.Export; e != nil && (e.Enabled == nil || *e.Enabled) {
			return orDefault(e.Schedule, policy.ExportScheduleDefault), true
		}
	case KindReconcile:
		if reconcileSpec != ReconcileScheduleOff {
			return reconcileSpec, true
		}
	case KindSweep:
		return SweepScheduleDefault, true
	}
	return "", false
}

// schedulesOf returns the kinds the scheduler runs for a dataset: enabled by
// its policy and with a Task in this build.
func (s *Service) schedulesOf(d catalog.Dataset) []kindSchedule {
	var out []kindSchedule
	for _, kind := range s.taskKinds() {
		if spec, ok := policySchedule(d.Policy, kind, s.opts.ReconcileSchedule); ok {
			out = append(out, kindSchedule{kind: kind, spec: spec})
		}
	}
	return out
}

// ScheduleTick enqueues the lifecycle jobs that are due, as of Options.Now,
// and returns how many it enqueued (a due job that found one of its kind and
// dataset already waiting or running is not counted). The periodic scheduler
// job calls it every Options.SchedulerInterval.
//
// For every live dataset and every kind its policy schedules, the state row
// (catalog.ScheduleState) remembers the schedule string and when the kind is
// next due. A new row, or a schedule string that differs from the policy's,
// gets next_run_at = schedule.Next(now): a policy change takes effect on the
// next tick, without a restart. When now >= next_run_at the job is inserted
// and next_run_at advances to schedule.Next(now); missed periods are not made
// up. Each (dataset, kind) is handled in its own transaction that claims the
// row with FOR UPDATE SKIP LOCKED and inserts the job with InsertTx, so
// processes ticking at once never enqueue twice. Rows of kinds a policy no
// longer schedules, and of deleted datasets, are removed.
//
// An error with one dataset or kind does not stop the others; all errors are
// returned joined.
func (s *Service) ScheduleTick(ctx context.Context) (int, error) {
	now := s.opts.Now().UTC()
	datasets, err := s.store.ListDatasets(ctx)
	if err != nil {
		return 0, fmt.Errorf("schedule tick: %w", err)
	}
	enqueued := 0
	var errs []error
	for _, d := range datasets {
		scheds := s.schedulesOf(d)
		kinds := make([]string, 0, len(scheds))
		for _, ks := range scheds {
			kinds = append(kinds, ks.kind)
		}
		if _, err := s.store.RetainSchedules(ctx, d.ID, kinds); err != nil {
			errs = append(errs, err)
			continue
		}
		for _, ks := range scheds {
			sched, err := policy.ParseSchedule(ks.spec)
			if err != nil {
				// Policies are validated when stored; an invalid one here
				// predates a stricter parser.
				errs = append(errs, fmt.Errorf("dataset %q %s: %w", d.Name, ks.kind, err))
				continue
			}
			ok, err := s.tickOne(ctx, d, ks, sched, now)
			if err != nil {
				errs = append(errs, fmt.Errorf("dataset %q %s: %w", d.Name, ks.kind, err))
				continue
			}
			if ok {
				enqueued++
			}
		}
	}
	if _, err := s.store.PruneDeletedSchedules(ctx); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return enqueued, fmt.Errorf("schedule tick: %w", err)
	}
	return enqueued, nil
}

// tickOne handles one (dataset, kind) in one transaction and reports whether
// it inserted a job.
func (s *Service) tickOne(ctx context.Context, d catalog.Dataset, ks kindSchedule, sched cron.Schedule, now time.Time) (bool, error) {
	inserted := false
	var jobID int64
	err := s.store.InScheduleTx(ctx, func(ctx context.Context, stx *catalog.ScheduleTx) error {
		st, created, ok, err := stx.Claim(ctx, d.ID, ks.kind, catalog.ScheduleState{Schedule: ks.spec, NextRunAt: sched.Next(now)})
		if err != nil || !ok || created {
			return err
		}
		if st.Schedule != ks.spec {
			st.Schedule, st.NextRunAt = ks.spec, sched.Next(now)
			return stx.Save(ctx, st)
		}
		if now.Before(st.NextRunAt) {
			return nil
		}
		res, err := s.insertTx(ctx, stx.Tx(), ks.kind, DatasetArgs{Dataset: d.Name, DatasetID: d.ID, Trigger: TriggerSchedule})
		if err != nil {
			return err
		}
		st.NextRunAt = sched.Next(now)
		if !res.UniqueSkippedAsDuplicate {
			at := now
			st.LastEnqueuedAt, st.LastJobID = &at, &res.Job.ID
			inserted, jobID = true, res.Job.ID
		}
		return stx.Save(ctx, st)
	})
	if err != nil {
		return false, err
	}
	if inserted {
		s.metrics.enqueued.WithLabelValues(ks.kind).Inc()
		s.log.InfoContext(ctx, "scheduled job enqueued", "job_id", jobID, "kind", ks.kind, "dataset", d.Name, "schedule", ks.spec)
	}
	return inserted, nil
}
