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

// Run implements jobs.Task: apply the policy, returning an ApplySummary
// (also with an error). A second conflict returns an
// error wrapping jobs.ErrConflict (the job completes; the next run starts
// from the new manifest).
func (t *RetentionTask) Run(ctx context.Context, dataset string, job jobs.JobContext) (any, error) {
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

// Run implements jobs.Task: sweep the dataset (and deleted datasets),
// returning a SweepSummary (also with an error). When
// removed partitions were left for later — their grace has not passed, or a
// query lease pins them — the job snoozes (river.JobSnooze) until the
// earliest of them qualifies, or LeaseRecheck for leases: the sweep runs
// again by itself without consuming an attempt. Meanwhile, a sweep that
// retention or compaction enqueue for the dataset finds the snoozed job
// (jobs are unique per kind and dataset), which covers their removals too.
// Failed deletions return an error: River retries with backoff.
func (t *SweepTask) Run(ctx context.Context, dataset string, job jobs.JobContext) (any, error) {
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

// ApplySummary is a retention run as recorded in its job's output.
type ApplySummary struct {
	Dataset         string         `json:"dataset"`
	PlannedVersion  int64          `json:"planned_version"`
	ManifestVersion int64          `json:"manifest_version"`
	Removed         catalog.Totals `json:"removed"`
	// RemovedByRule counts the removed partitions by the rule that selected
	// them; RemovedIDs lists them.
	RemovedByRule map[string]int `json:"removed_by_rule"`
	RemovedIDs    []int64        `json:"removed_ids"`
	KeptBack      catalog.Totals `json:"kept_back"`
	// KeptBackReasons counts the partitions kept back by reason.
	KeptBackReasons map[string]int `json:"kept_back_reasons"`
	Held            catalog.Totals `json:"held"`
	Remain          catalog.Totals `json:"remain"`
	BytesOverBudget int64          `json:"bytes_over_budget"`
	Notes           []string       `json:"notes"`
	Replanned       bool           `json:"replanned"`
	SweepEnqueued   bool           `json:"sweep_enqueued"`
}

// Summary renders r as a job's output.
func (r ApplyResult) Summary() ApplySummary {
	byRule := map[string]int{}
	for _, p := range r.Plan.Selected {
		byRule[p.Rule]++
	}
	kept := map[string]int{}
	for _, k := range r.Plan.KeptBack {
		for _, reason := range k.Reasons {
			kept[reason]++
		}
	}
	return ApplySummary{
		Dataset:         r.Dataset,
		PlannedVersion:  r.Plan.ManifestVersion,
		ManifestVersion: r.Version,
		Removed:         r.Removed,
		RemovedByRule:   byRule,
		RemovedIDs:      r.Plan.IDs(),
		KeptBack:        r.Plan.KeptBackTotals,
		KeptBackReasons: kept,
		Held:            r.Plan.Held,
		Remain:          r.Plan.Remain,
		BytesOverBudget: r.Plan.BytesOverBudget,
		Notes:           r.Plan.Notes,
		Replanned:       r.Replanned,
		SweepEnqueued:   r.SweepEnqueued,
	}
}

// SweepSummary is a sweep as recorded in its job's output: the
// SweepResult with NextSweepIn in seconds and as a duration.
type SweepSummary struct {
	SweepResult
	NextSweepInSeconds float64 `json:"next_sweep_in_s"`
	NextSweepAfter     string  `json:"next_sweep_after"`
}

// Summary renders r as a job's output.
func (r SweepResult) Summary() SweepSummary {
	return SweepSummary{SweepResult: r, NextSweepInSeconds: r.NextSweepIn.Seconds(), NextSweepAfter: r.NextSweepIn.String()}
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
