package retention

import (
	"context"
	"time"

	"timestore/internal/catalog"
)

// Audit actions of holds.
const (
	ActionHoldAdd     = catalog.ActionHoldAdd
	ActionHoldRelease = catalog.ActionHoldRelease
)

// HoldResult is a hold just added.
type HoldResult struct {
	Hold
	// RemovedPartitions are partitions overlapping the hold that retention
	// had removed before it was added and that the sweeper has not purged
	// yet: the hold does not bring them back, Restore does. (Compaction
	// inputs are left out: their rows live on.)
	RemovedPartitions []int64 `json:"removed_partitions,omitempty"`
}

// AddHold adds an active hold on [from, to) of a live dataset, audited as
// "hold.add". From then on retention removes no partition that overlaps
// it; a retention run planned before the hold and committed after it
// conflicts and plans again. Errors: catalog.ErrNotFound,
// catalog.ErrInvalid (from not before to, no reason).
func (s *Service) AddHold(ctx context.Context, dataset string, from, to time.Time, reason, actor string) (HoldResult, error) {
	h, err := s.opts.Store.AddHold(ctx, dataset, from, to, reason, actor)
	if err != nil {
		return HoldResult{}, err
	}
	res := HoldResult{Hold: h}
	removed, err := s.opts.Store.Partitions(ctx, dataset, catalog.StateRemoved)
	var overlapping []int64
	for _, p := range removed {
		if h.Overlaps(p) {
			overlapping = append(overlapping, p.ID)
		}
	}
	var byRetention []catalog.RemovedPartition
	if err == nil && len(overlapping) > 0 {
		_, byRetention, err = s.opts.Store.RemovedPartitions(ctx, dataset, overlapping)
	}
	if err != nil {
		s.log.WarnContext(ctx, "hold added; could not list removed partitions it overlaps", "hold", h.ID, "error", err)
		return res, nil
	}
	for _, p := range byRetention {
		if p.RemovalOperation == catalog.OpRetention {
			res.RemovedPartitions = append(res.RemovedPartitions, p.ID)
		}
	}
	s.log.InfoContext(ctx, "retention hold added", "hold", h.ID, "dataset", dataset, "from", h.From, "to", h.To,
		"reason", reason, "actor", actor, "removed_partitions", res.RemovedPartitions)
	return res, nil
}

// Holds lists the active holds of a live dataset, or of all live datasets
// when dataset is "", with released ones too when includeReleased.
func (s *Service) Holds(ctx context.Context, dataset string, includeReleased bool) ([]Hold, error) {
	return s.opts.Store.Holds(ctx, dataset, includeReleased)
}

// ReleaseHold releases an active hold, audited as "hold.release". Errors:
// catalog.ErrNotFound, catalog.ErrConflict (already released).
func (s *Service) ReleaseHold(ctx context.Context, id int64, actor string) (Hold, error) {
	h, err := s.opts.Store.ReleaseHold(ctx, id, actor)
	if err != nil {
		return Hold{}, err
	}
	s.log.InfoContext(ctx, "retention hold released", "hold", h.ID, "dataset", h.Dataset, "actor", actor)
	return h, nil
}
