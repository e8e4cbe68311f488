// Package retention keeps each dataset's storage bounded without losing data
// a reader still uses, data under a hold, or data an operator did not mean to
// lose. It works in the two phases of Thanos' deletion:
//
//   - retention (job kind "retention") evaluates the dataset's policy — a
//     pure selection, Evaluate — and applies it as one manifest change that
//     marks the selected partitions removed, with one audit row per
//     partition, and enqueues a sweep in the same transaction. Until the
//     sweep purges them, removed partitions can be restored (Restore).
//   - the sweeper (job kind "sweep") purges removed partitions once their
//     removal is older than the dataset's grace period and no query lease
//     pins a manifest version in which they were live, then deletes their
//     objects.
//
// Holds (AddHold) keep time ranges of a dataset from being removed.
//
// The rules it follows (partition life cycle, locks, leases, audited deletion): docs/design.md.
// RetentionTask and SweepTask (task.go) are the two jobs.
package retention

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"

	"timestore/internal/catalog"
	"timestore/internal/policy"
)

// Rules that select a partition for removal.
const (
	RuleMaxAge   = "max_age"
	RuleMaxBytes = "max_bytes"
)

// Reasons a partition a rule selected is kept.
const (
	KeptByHold          = "hold"
	KeptByMinKeep       = "min_keep"
	KeptByRequireExport = "require_export"
)

// NoteNoExport is the plan's note when require_export is set and no export
// exists yet to vouch for any data.
const NoteNoExport = "require_export is set and no export has verified this data yet: nothing is removed"

// Hold is a retention hold (see catalog.Hold).
type Hold = catalog.Hold

// Grace is a policy's grace period: retention.grace, or policy.GraceDefault
// when unset. Zero is allowed: removed partitions are swept as soon as no
// query lease pins them.
func Grace(p policy.Policy) time.Duration {
	if p.Retention != nil && p.Retention.Grace != nil {
		return max(p.Retention.Grace.Std(), 0)
	}
	return policy.GraceDefault.Std()
}

// PlannedPartition is a partition in a plan.
type PlannedPartition struct {
	ID          int64     `json:"id"`
	WindowStart time.Time `json:"window_start"`
	TimeMin     time.Time `json:"time_min"`
	TimeMax     time.Time `json:"time_max"`
	Rows        int64     `json:"rows"`
	Bytes       int64     `json:"bytes"`
	// Rule is the rule that selects it (or, for a kept partition, would
	// have): RuleMaxAge or RuleMaxBytes.
	Rule string `json:"rule,omitempty"`
}

// KeptPartition is a partition a rule would select but a protection keeps.
type KeptPartition struct {
	PlannedPartition
	// Reasons are the protections that keep it: KeptByHold, KeptByMinKeep,
	// KeptByRequireExport.
	Reasons []string `json:"reasons"`
	// Holds are the ids of the active holds it overlaps.
	Holds []int64 `json:"holds,omitempty"`
}

// Plan is the outcome of evaluating a retention policy: what to remove and
// what is kept back. It changes nothing by itself.
type Plan struct {
	Dataset string `json:"dataset"`
	// ManifestVersion is the version the plan was made from.
	ManifestVersion int64 `json:"manifest_version"`
	// Now is the evaluation time; the cutoffs derive from it.
	Now time.Time `json:"now"`
	// Policy is the retention policy evaluated (nil: none, nothing is removed).
	Policy *policy.Retention `json:"policy"`
	// AgeCutoff (now - max_age): partitions whose time_max is before it are
	// selected by max_age. KeepCutoff (now - min_keep): partitions whose
	// time_max is at or after it are never selected.
	AgeCutoff  *time.Time `json:"age_cutoff,omitempty"`
	KeepCutoff *time.Time `json:"keep_cutoff,omitempty"`
	// Selected are the partitions to remove, oldest first.
	Selected []PlannedPartition `json:"selected"`
	// KeptBack are the partitions a rule would select but a protection
	// keeps, oldest first. For max_bytes, only as many as the rule would
	// have needed are listed.
	KeptBack []KeptPartition `json:"kept_back"`
	// Live sums the live partitions; Remove what Selected removes; Remain
	// what stays live; Held the live partitions overlapping an active hold
	// (selected or not).
	Live   catalog.Totals `json:"live"`
	Remove catalog.Totals `json:"remove"`
	Remain catalog.Totals `json:"remain"`
	Held   catalog.Totals `json:"held"`
	// KeptBackTotals sums KeptBack.
	KeptBackTotals catalog.Totals `json:"kept_back_totals"`
	// BytesOverBudget is how far the remaining live bytes exceed max_bytes
	// because protected data cannot go (0 when within budget or no max_bytes).
	BytesOverBudget int64 `json:"bytes_over_budget"`
	// Notes explain what the plan could not do.
	Notes []string `json:"notes"`
}

// IDs returns the ids of the selected partitions.
func (p Plan) IDs() []int64 {
	ids := make([]int64, len(p.Selected))
	for i, s := range p.Selected {
		ids[i] = s.ID
	}
	return ids
}

// Evaluate selects the live partitions of parts that a retention policy
// removes at now. It is a pure function.
//
//   - max_age selects partitions whose time_max is before now - max_age.
//   - max_bytes selects, oldest first (by time_max, then id), further
//     partitions until the live bytes that remain are at most max_bytes.
//   - min_keep is a floor: a partition whose time_max is at or after
//     now - min_keep is never selected, not even to meet max_bytes.
//   - A partition overlapping an active hold (time_min < to, time_max >=
//     from) is never selected.
//   - With require_export, a partition that no verified export covers is
//     never selected; exportCovered reports coverage, and nil means no
//     export exists yet, so nothing is selected (the plan's notes say why).
//
// Protected partitions are skipped, not stopped at: max_bytes goes on to
// the next oldest partition that may go, so the budget is met when it can
// be; when it cannot, BytesOverBudget says by how much. Only whole
// partitions are selected: a partition straddling a cutoff (time_min
// before it, time_max not) is kept until all its rows are beyond it.
// Partitions that are not live are ignored.
func Evaluate(parts []catalog.Partition, pol *policy.Retention, holds []Hold, exportCovered func(catalog.Partition) bool, now time.Time) Plan {
	plan := Plan{Now: now, Policy: pol, Selected: []PlannedPartition{}, KeptBack: []KeptPartition{}, Notes: []string{}}
	live := make([]catalog.Partition, 0, len(parts))
	for _, p := range parts {
		if p.State() == catalog.StateLive {
			live = append(live, p)
		}
	}
	slices.SortFunc(live, func(a, b catalog.Partition) int {
		return cmp.Or(a.TimeMax.Compare(b.TimeMax), cmp.Compare(a.ID, b.ID))
	})
	active := make([]Hold, 0, len(holds))
	for _, h := range holds {
		if h.Active() {
			active = append(active, h)
		}
	}
	heldBy := func(p catalog.Partition) []int64 {
		var ids []int64
		for _, h := range active {
			if h.Overlaps(p) {
				ids = append(ids, h.ID)
			}
		}
		return ids
	}
	for _, p := range live {
		add(&plan.Live, p)
		if len(heldBy(p)) > 0 {
			add(&plan.Held, p)
		}
	}
	plan.Remain = plan.Live
	if pol == nil || (pol.MaxAge <= 0 && pol.MaxBytes <= 0) {
		plan.Notes = append(plan.Notes, "the policy sets neither max_age nor max_bytes: nothing is removed")
		return plan
	}
	if pol.MaxAge > 0 {
		c := now.Add(-pol.MaxAge.Std())
		plan.AgeCutoff = &c
	}
	if pol.MinKeep > 0 {
		c := now.Add(-pol.MinKeep.Std())
		plan.KeepCutoff = &c
	}
	if pol.RequireExport && exportCovered == nil {
		plan.Notes = append(plan.Notes, NoteNoExport)
	}

	remaining := plan.Live.Bytes // what stays live if the selection is applied
	shadow := remaining          // remaining, less what max_bytes was refused
	for _, p := range live {
		rule := ""
		switch {
		case plan.AgeCutoff != nil && p.TimeMax.Before(*plan.AgeCutoff):
			rule = RuleMaxAge
		case pol.MaxBytes > 0 && remaining > pol.MaxBytes:
			rule = RuleMaxBytes
		}
		if rule == "" {
			continue
		}
		var reasons []string
		holdIDs := heldBy(p)
		if len(holdIDs) > 0 {
			reasons = append(reasons, KeptByHold)
		}
		if plan.KeepCutoff != nil && !p.TimeMax.Before(*plan.KeepCutoff) {
			reasons = append(reasons, KeptByMinKeep)
		}
		if pol.RequireExport && (exportCovered == nil || !exportCovered(p)) {
			reasons = append(reasons, KeptByRequireExport)
		}
		pp := planned(p, rule)
		if len(reasons) > 0 {
			if rule == RuleMaxBytes {
				if shadow <= pol.MaxBytes {
					continue // the rule would not have needed this one
				}
				shadow -= p.SizeBytes
			}
			plan.KeptBack = append(plan.KeptBack, KeptPartition{PlannedPartition: pp, Reasons: reasons, Holds: holdIDs})
			add(&plan.KeptBackTotals, p)
			continue
		}
		plan.Selected = append(plan.Selected, pp)
		add(&plan.Remove, p)
		remaining -= p.SizeBytes
		shadow -= p.SizeBytes
	}
	plan.Remain = catalog.Totals{
		Partitions: plan.Live.Partitions - plan.Remove.Partitions,
		Rows:       plan.Live.Rows - plan.Remove.Rows,
		Bytes:      plan.Live.Bytes - plan.Remove.Bytes,
	}
	if pol.MaxBytes > 0 && plan.Remain.Bytes > pol.MaxBytes {
		plan.BytesOverBudget = plan.Remain.Bytes - pol.MaxBytes
		plan.Notes = append(plan.Notes, fmt.Sprintf(
			"max_bytes %d cannot be met: %d bytes remain because the rest is protected (%s)",
			pol.MaxBytes, plan.Remain.Bytes, strings.Join(keptReasons(plan.KeptBack), ", ")))
	}
	return plan
}

func planned(p catalog.Partition, rule string) PlannedPartition {
	return PlannedPartition{
		ID: p.ID, WindowStart: p.WindowStart, TimeMin: p.TimeMin, TimeMax: p.TimeMax,
		Rows: p.RowCount, Bytes: p.SizeBytes, Rule: rule,
	}
}

func add(t *catalog.Totals, p catalog.Partition) {
	t.Partitions++
	t.Rows += p.RowCount
	t.Bytes += p.SizeBytes
}

// keptReasons lists the distinct reasons of kept partitions, or "min_keep"
// when none was listed (the floor keeps everything newer).
func keptReasons(kept []KeptPartition) []string {
	var out []string
	for _, k := range kept {
		for _, r := range k.Reasons {
			if !slices.Contains(out, r) {
				out = append(out, r)
			}
		}
	}
	if len(out) == 0 {
		out = append(out, KeptByMinKeep)
	}
	slices.Sort(out)
	return out
}
