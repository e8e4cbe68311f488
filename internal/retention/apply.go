package retention

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"slices"
	"strings"

	"timestore/internal/faultpoint"

	"timestore/internal/catalog"
	"timestore/internal/policy"
)

// ActionRemove is the audit action written once per partition retention
// removes (beside the "partition.retention" row of the change itself).
const ActionRemove = catalog.ActionRetentionRemove

// RunOptions identify who runs a retention change, a sweep or a restore.
type RunOptions struct {
	// Actor is recorded in the manifest versions and audit rows: "job:<id>"
	// for jobs, the user otherwise. Defaults to "retention".
	Actor string
	// JobID is the River job, if any.
	JobID *int64
	// Logger defaults to the Service's.
	Logger *slog.Logger
}

func (ro RunOptions) withDefaults(s *Service) RunOptions {
	if ro.Actor == "" {
		ro.Actor = "retention"
	}
	if ro.Logger == nil {
		ro.Logger = s.log
	}
	return ro
}

// Plan evaluates the dataset's retention policy against its current live
// manifest and active holds, and returns what Apply would remove now. It
// changes nothing (it only sets the held gauges).
func (s *Service) Plan(ctx context.Context, dataset string) (Plan, error) {
	plan, _, err := s.plan(ctx, dataset)
	return plan, err
}

func (s *Service) plan(ctx context.Context, dataset string) (Plan, int64, error) {
	snap, holds, err := s.opts.Store.RetentionSnapshot(ctx, dataset)
	if err != nil {
		return Plan{}, 0, fmt.Errorf("plan retention of %s: %w", dataset, err)
	}
	ds := snap.Dataset
	var covered func(catalog.Partition) bool
	if r := ds.Policy.Retention; r != nil && r.RequireExport && s.opts.ExportCovered != nil {
		if covered, err = s.opts.ExportCovered(ctx, ds); err != nil {
			return Plan{}, 0, fmt.Errorf("plan retention of %s: exports: %w", dataset, err)
		}
	}
	plan := Evaluate(snap.Partitions, ds.Policy.Retention, holds, covered, s.opts.Now())
	plan.Dataset = ds.Name
	plan.ManifestVersion = snap.Version
	s.metrics.heldBytes.WithLabelValues(ds.Name).Set(float64(plan.Held.Bytes))
	s.metrics.heldRows.WithLabelValues(ds.Name).Set(float64(plan.Held.Rows))
	return plan, ds.ID, nil
}

// ApplyResult is what Apply did.
type ApplyResult struct {
	Dataset string `json:"dataset"`
	// Plan is the plan that was applied (after a re-plan, the second one).
	Plan Plan `json:"plan"`
	// Version is the manifest version of the change; 0 when nothing was removed.
	Version int64 `json:"manifest_version"`
	// Removed sums the removed partitions.
	Removed catalog.Totals `json:"removed"`
	// Replanned: the first commit conflicted (a partition was no longer
	// live or came under a hold) and the plan was made again.
	Replanned bool `json:"replanned"`
	// SweepEnqueued: a sweep was enqueued (with the change, or because
	// removed partitions were waiting for one).
	SweepEnqueued bool `json:"sweep_enqueued"`
}

// Apply plans and applies the dataset's retention policy: one manifest
// change (operation "retention") marks the selected partitions removed. In
// the same transaction it checks that none of them overlaps an active hold
// (a hold added since the plan), writes one ActionRemove audit row per
// partition (actor, rule, rows, bytes) and enqueues a sweep
// (Options.EnqueueSweep). If the change conflicts — a partition is no
// longer live, or came under a hold — it plans once more from the new
// manifest; a second conflict returns an error wrapping catalog.ErrConflict.
// When nothing is to be removed but earlier removals still wait for the
// sweeper, a sweep is enqueued anyway (a backstop for a lost sweep job).
func (s *Service) Apply(ctx context.Context, dataset string, ro RunOptions) (ApplyResult, error) {
	ro = ro.withDefaults(s)
	res := ApplyResult{Dataset: dataset}
	for attempt := 1; ; attempt++ {
		plan, datasetID, err := s.plan(ctx, dataset)
		if err != nil {
			return res, err
		}
		res.Plan = plan
		if len(plan.Selected) == 0 {
			res.SweepEnqueued, err = s.enqueuePendingSweep(ctx, datasetID, dataset)
			return res, err
		}
		if err := faultpoint.Hit(ctx, faultpoint.RetentionBeforeCommit); err != nil {
			return res, err
		}
		version, err := s.commitPlan(ctx, plan, datasetID, ro)
		if errors.Is(err, catalog.ErrConflict) && attempt == 1 {
			ro.Logger.InfoContext(ctx, "retention change conflicted; planning again", "dataset", dataset, "error", err)
			res.Replanned = true
			continue
		}
		if err != nil {
			return res, fmt.Errorf("apply retention to %s: %w", dataset, err)
		}
		if err := faultpoint.Hit(ctx, faultpoint.RetentionAfterCommit); err != nil {
			return res, err
		}
		res.Version = version
		res.Removed = plan.Remove
		res.SweepEnqueued = s.opts.EnqueueSweep != nil
		s.metrics.removedParts.WithLabelValues(dataset).Add(float64(plan.Remove.Partitions))
		s.metrics.removedBytes.WithLabelValues(dataset).Add(float64(plan.Remove.Bytes))
		ro.Logger.InfoContext(ctx, "retention applied", "dataset", dataset, "manifest_version", version,
			"partitions", plan.Remove.Partitions, "rows", plan.Remove.Rows, "bytes", plan.Remove.Bytes,
			"kept_back", plan.KeptBackTotals.Partitions, "actor", ro.Actor)
		return res, nil
	}
}

// commitPlan removes the plan's selected partitions in one manifest change.
func (s *Service) commitPlan(ctx context.Context, plan Plan, datasetID int64, ro RunOptions) (int64, error) {
	ids := plan.IDs()
	byRule := map[string]int{}
	for _, p := range plan.Selected {
		byRule[p.Rule]++
	}
	res, err := s.opts.Store.Commit(ctx, catalog.Change{
		Dataset:   plan.Dataset,
		Operation: catalog.OpRetention,
		Actor:     ro.Actor,
		JobID:     ro.JobID,
		Remove:    ids,
		Reason:    describePolicy(plan.Policy),
		Summary: map[string]any{
			"planned_version": plan.ManifestVersion,
			"removed_by_rule": byRule,
			"rows":            plan.Remove.Rows,
			"bytes":           plan.Remove.Bytes,
			"kept_back":       plan.KeptBackTotals.Partitions,
			"evaluated_at":    plan.Now.UTC(),
		},
		InTx: func(ctx context.Context, tx catalog.Tx, version int64, _ []catalog.Partition) error {
			if err := catalog.RequireNotHeld(ctx, tx, datasetID, ids); err != nil {
				return err
			}
			// The policy may have changed since the plan (a policy change
			// takes the same row lock): the plan must not outlive it.
			d, err := catalog.DatasetTx(ctx, tx, datasetID)
			if err != nil {
				return err
			}
			if !reflect.DeepEqual(d.Policy.Retention, plan.Policy) {
				return fmt.Errorf("%w: the retention policy changed after the plan", catalog.ErrConflict)
			}
			entries := make([]catalog.AuditEntry, len(plan.Selected))
			for i, p := range plan.Selected {
				entries[i] = catalog.AuditEntry{
					Actor:      ro.Actor,
					Action:     ActionRemove,
					Dataset:    plan.Dataset,
					Partitions: []int64{p.ID},
					Bytes:      p.Bytes,
					Reason:     p.Rule,
					Details: map[string]any{
						"rule": p.Rule, "rows": p.Rows, "bytes": p.Bytes, "manifest_version": version,
						"time_min": p.TimeMin, "time_max": p.TimeMax, "window_start": p.WindowStart, "job_id": ro.JobID,
					},
				}
			}
			if err := s.opts.Store.AppendAuditBatchTx(ctx, tx, entries); err != nil {
				return err
			}
			if s.opts.EnqueueSweep != nil {
				return s.opts.EnqueueSweep(ctx, tx, datasetID, plan.Dataset)
			}
			return nil
		},
	})
	if err != nil {
		return 0, err
	}
	return res.Version, nil
}

// enqueuePendingSweep enqueues a sweep when removed partitions of the
// dataset still wait for one.
func (s *Service) enqueuePendingSweep(ctx context.Context, datasetID int64, dataset string) (bool, error) {
	if s.opts.EnqueueSweep == nil {
		return false, nil
	}
	pending, err := s.opts.Store.SweepPending(ctx, datasetID)
	if err != nil || !pending {
		return false, err
	}
	err = s.opts.Store.RunInTx(ctx, func(ctx context.Context, tx catalog.Tx) error {
		return s.opts.EnqueueSweep(ctx, tx, datasetID, dataset)
	})
	if err != nil {
		return false, fmt.Errorf("enqueue sweep of %s: %w", dataset, err)
	}
	return true, nil
}

// describePolicy renders the rules of a retention policy for the audit log.
func describePolicy(r *policy.Retention) string {
	if r == nil {
		return "retention policy: none"
	}
	var parts []string
	if r.MaxAge > 0 {
		parts = append(parts, "max_age "+r.MaxAge.String())
	}
	if r.MaxBytes > 0 {
		parts = append(parts, fmt.Sprintf("max_bytes %d", r.MaxBytes))
	}
	if r.MinKeep > 0 {
		parts = append(parts, "min_keep "+r.MinKeep.String())
	}
	if r.RequireExport {
		parts = append(parts, "require_export")
	}
	return "retention policy: " + strings.Join(parts, ", ")
}

// RestoreResult is what Restore did.
type RestoreResult struct {
	Dataset string `json:"dataset"`
	// Version is the manifest version in which the partitions are live again.
	Version  int64          `json:"manifest_version"`
	Restored []int64        `json:"restored"`
	Totals   catalog.Totals `json:"totals"`
	// RemovedAgainByPolicy lists restored partitions that the dataset's
	// retention policy selects again now: the next retention run removes
	// them unless a hold covers them or the policy changes.
	RemovedAgainByPolicy []int64  `json:"removed_again_by_policy,omitempty"`
	Notes                []string `json:"notes,omitempty"`
}

// Restore makes removed, not yet purged partitions of a live dataset live
// again, in one manifest change (operation "restore", audited as
// "partition.restore" with the partitions and their bytes).
//
// Only partitions removed by retention can be restored: the inputs of a
// compaction live on in its output, and restoring them would duplicate
// rows. Errors: catalog.ErrInvalid (no ids), catalog.ErrNotFound (no such
// live dataset), catalog.ErrConflict (a partition is live, purged — its
// object is gone —, not in the dataset, or was not removed by retention).
func (s *Service) Restore(ctx context.Context, dataset string, ids []int64, ro RunOptions) (RestoreResult, error) {
	ro = ro.withDefaults(s)
	res := RestoreResult{Dataset: dataset}
	if len(ids) == 0 {
		return res, fmt.Errorf("restore partitions of %s: %w", dataset, invalidf("partition_ids: at least one id is required"))
	}
	ids = slices.Clone(ids)
	slices.Sort(ids)
	for attempt := 1; ; attempt++ {
		version, removed, err := s.opts.Store.RemovedPartitions(ctx, dataset, ids)
		if err != nil {
			return res, fmt.Errorf("restore partitions of %s: %w", dataset, err)
		}
		var totals catalog.Totals
		for _, r := range removed {
			if r.RemovalOperation != catalog.OpRetention {
				return res, fmt.Errorf("restore partitions of %s: %w: partition %d was removed by %s in version %d, not by retention; "+
					"only partitions removed by retention can be restored", dataset, catalog.ErrConflict, r.ID, r.RemovalOperation, *r.RemovedInVersion)
			}
			add(&totals, r.Partition)
		}
		var errStale = errors.New("the manifest changed since the partitions were read")
		cr, err := s.opts.Store.Commit(ctx, catalog.Change{
			Dataset:   dataset,
			Operation: catalog.OpRestore,
			Actor:     ro.Actor,
			JobID:     ro.JobID,
			Restore:   ids,
			Reason:    "restore",
			Summary:   map[string]any{"restored": len(ids), "rows": totals.Rows, "bytes": totals.Bytes},
			InTx: func(ctx context.Context, tx catalog.Tx, v int64, _ []catalog.Partition) error {
				// Commit checked that every id is removed and not purged; the
				// version check makes sure that each was removed by the
				// change RemovedPartitions saw.
				if v != version+1 {
					return fmt.Errorf("%w: %w", catalog.ErrConflict, errStale)
				}
				return nil
			},
		})
		if errors.Is(err, errStale) && attempt == 1 {
			continue
		}
		if err != nil {
			return res, fmt.Errorf("restore partitions of %s: %w", dataset, err)
		}
		res.Version, res.Restored, res.Totals = cr.Version, ids, totals
		break
	}
	ro.Logger.InfoContext(ctx, "partitions restored", "dataset", dataset, "partitions", res.Restored,
		"rows", res.Totals.Rows, "bytes", res.Totals.Bytes, "manifest_version", res.Version, "actor", ro.Actor)
	if plan, err := s.Plan(ctx, dataset); err == nil {
		for _, p := range plan.Selected {
			if slices.Contains(res.Restored, p.ID) {
				res.RemovedAgainByPolicy = append(res.RemovedAgainByPolicy, p.ID)
			}
		}
		if len(res.RemovedAgainByPolicy) > 0 {
			res.Notes = append(res.Notes, "the retention policy selects some restored partitions again: "+
				"add a hold over their time range (or change the policy) before the next retention run")
		}
	}
	return res, nil
}

// invalidf makes an error that wraps catalog.ErrInvalid.
func invalidf(format string, a ...any) error {
	return fmt.Errorf("%w: %s", catalog.ErrInvalid, fmt.Sprintf(format, a...))
}
