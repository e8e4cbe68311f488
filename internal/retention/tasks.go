package retention

import (
	"context"
	"fmt"
	"time"

	"github.com/riverqueue/river"

	"timestore/internal/catalog"
	"timestore/internal/jobs"
)

// RetentionTask is the "retention" job: Plan is the dry run (Service.Plan),
// Run applies the policy (Service.Apply).
type RetentionTask struct{ s *Service }

// SweepTask is the "sweep" job: Plan previews what would be purged
// (Service.PreviewSweep), Run sweeps (Service.Sweep).
type SweepTask struct{ s *Service }

var (
	_ jobs.Task = (*RetentionTask)(nil)
	_ jobs.Task = (*SweepTask)(nil)
)

// RetentionTask returns the task of job kind "retention".
func (s *Service) RetentionTask() *RetentionTask { return &RetentionTask{s: s} }

// SweepTask returns the task of job kind "sweep".
func (s *Service) SweepTask() *SweepTask { return &SweepTask{s: s} }

// Kind implements jobs.Task.
func (t *RetentionTask) Kind() string { return jobs.KindRetention }

// Plan implements jobs.Task: the retention plan, changing nothing.
func (t *RetentionTask) Plan(ctx context.Context, dataset string) (any, error) {
	return t.s.Plan(ctx, dataset)
}

// Run implements jobs.Task: apply the policy. A second conflict returns an
// error wrapping jobs.ErrConflict (the job completes; the next run starts
// from the new manifest).
func (t *RetentionTask) Run(ctx context.Context, dataset string, job jobs.JobContext) (map[string]any, error) {
	id := job.ID
	res, err := t.s.Apply(ctx, dataset, RunOptions{Actor: job.Actor, JobID: &id, Logger: job.Logger})
	return res.Summary(), err
}

// Kind implements jobs.Task.
func (t *SweepTask) Kind() string { return jobs.KindSweep }

// Plan implements jobs.Task: what a sweep would purge now, changing nothing.
func (t *SweepTask) Plan(ctx context.Context, dataset string) (any, error) {
	return t.s.PreviewSweep(ctx, dataset)
}

// Run implements jobs.Task: sweep the dataset (and deleted datasets). When
// removed partitions were left for later — their grace has not passed, or a
// query lease pins them — the job snoozes (river.JobSnooze) until the
// earliest of them qualifies, or LeaseRecheck for leases: the sweep runs
// again by itself without consuming an attempt. Meanwhile, a sweep that
// retention or compaction enqueue for the dataset finds the snoozed job
// (jobs are unique per kind and dataset), which covers their removals too.
// Failed deletions return an error: River retries with backoff.
func (t *SweepTask) Run(ctx context.Context, dataset string, job jobs.JobContext) (map[string]any, error) {
	res, err := t.s.Sweep(ctx, dataset, RunOptions{Actor: job.Actor, Logger: job.Logger})
	if err != nil {
		return res.Summary(), err
	}
	if res.KeptBack() && res.NextSweepIn > 0 {
		return res.Summary(), fmt.Errorf("%d removed partitions kept back (grace %d, leases %d): sweep again in %s: %w",
			res.KeptByGrace+res.KeptByLease, res.KeptByGrace, res.KeptByLease, res.NextSweepIn.Round(time.Second),
			river.JobSnooze(res.NextSweepIn))
	}
	return res.Summary(), nil
}

// SweepPlan is the dry run of a sweep: per dataset, what would be purged now.
type SweepPlan struct {
	Dataset  string             `json:"dataset"`
	Datasets []DatasetSweepPlan `json:"datasets"`
}

// DatasetSweepPlan is what a sweep would do to one dataset now.
type DatasetSweepPlan struct {
	ID      int64     `json:"id"`
	Name    string    `json:"name"`
	Deleted bool      `json:"deleted"`
	Grace   string    `json:"grace"`
	Cutoff  time.Time `json:"cutoff"`
	// Purge lists the partitions that would be purged (their objects deleted).
	Purge       []PlannedPartition `json:"purge"`
	PurgeTotals catalog.Totals     `json:"purge_totals"`
	// PendingDeletes counts objects of earlier purges not yet deleted.
	PendingDeletes  int        `json:"pending_deletes"`
	KeptByGrace     int        `json:"kept_by_grace"`
	KeptByLease     int        `json:"kept_by_lease"`
	PinnedVersions  []int64    `json:"pinned_versions"`
	NextGraceExpiry *time.Time `json:"next_grace_expiry,omitempty"`
}

// PreviewSweep returns what Sweep would purge now, changing nothing.
func (s *Service) PreviewSweep(ctx context.Context, dataset string) (SweepPlan, error) {
	plan := SweepPlan{Dataset: dataset, Datasets: []DatasetSweepPlan{}}
	named, err := s.opts.Store.DatasetsToSweep(ctx, dataset)
	if err != nil {
		return plan, err
	}
	deleted, err := s.opts.Store.DatasetsToSweep(ctx, "")
	if err != nil {
		return plan, err
	}
	seen := map[int64]bool{}
	for _, d := range append(named, deleted...) {
		if seen[d.ID] {
			continue
		}
		seen[d.ID] = true
		grace := Grace(d.Policy)
		cutoff := s.opts.Now().Add(-grace)
		pv, err := s.opts.Store.PreviewPurge(ctx, d.ID, cutoff)
		if err != nil {
			return plan, err
		}
		dp := DatasetSweepPlan{
			ID: d.ID, Name: d.Name, Deleted: d.Deleted, Grace: grace.String(), Cutoff: cutoff.UTC(),
			Purge: []PlannedPartition{}, PendingDeletes: pv.PendingDeletes, KeptByGrace: pv.KeptByGrace,
			KeptByLease: pv.KeptByLease, PinnedVersions: pv.PinnedVersions, NextGraceExpiry: pv.NextGraceExpiry,
		}
		for _, p := range pv.Eligible {
			dp.Purge = append(dp.Purge, planned(p, ""))
			add(&dp.PurgeTotals, p)
		}
		plan.Datasets = append(plan.Datasets, dp)
	}
	return plan, nil
}
