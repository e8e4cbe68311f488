package export

import (
	"context"
	"fmt"
	"slices"

	"timestore/internal/catalog"
)

// CoveredFunc returns retention's require_export gate for a dataset's
// verified exports (catalog.Store.VerifiedExportCoverage): the function
// reports whether a partition's rows are all in verified exports, i.e.
// whether, for some export series (target and window kind), every window of
// the series that the partition overlaps (time_min < end, time_max >=
// start) has a verified version whose partition set includes the
// partition. Data that arrived after a window's export is a partition that
// is not in the set, so it is not covered until the next version is
// verified; a window that is not exported yet covers nothing.
//
// It returns nil when there is no verified export at all, which retention
// reads as "no exports yet" (nothing may be pruned under require_export).
func CoveredFunc(coverage []catalog.ExportCoverage) func(catalog.Partition) bool {
	if len(coverage) == 0 {
		return nil
	}
	type series struct{ target, window string }
	bySeries := map[series]map[int64][]int64{} // window start (µs) → sorted partition ids
	for _, c := range coverage {
		k := series{c.Target, c.Window}
		if bySeries[k] == nil {
			bySeries[k] = map[int64][]int64{}
		}
		ids := slices.Clone(c.PartitionIDs)
		slices.Sort(ids)
		bySeries[k][c.WindowStart.UnixMicro()] = ids
	}
	return func(p catalog.Partition) bool {
		for k, windows := range bySeries {
			if k.window != WindowDay && k.window != WindowMonth {
				continue
			}
			covered := true
			for start := catalog.WindowStart(k.window, p.TimeMin); !start.After(p.TimeMax); start = catalog.WindowEnd(k.window, start) {
				ids, ok := windows[start.UnixMicro()]
				if !ok || !containsID(ids, p.ID) {
					covered = false
					break
				}
			}
			if covered {
				return true
			}
		}
		return false
	}
}

// Covered is retention's hook (retention.Options.ExportCovered): it reads
// the dataset's verified exports and returns CoveredFunc of them (nil when
// there is none).
func (exp *Exporter) Covered(ctx context.Context, d catalog.Dataset) (func(catalog.Partition) bool, error) {
	return CoverageOf(ctx, exp.opts.Store, d)
}

// CoverageOf is Covered for a store, for processes without an Exporter.
func CoverageOf(ctx context.Context, store interface {
	VerifiedExportCoverage(ctx context.Context, datasetID int64) ([]catalog.ExportCoverage, error)
}, d catalog.Dataset) (func(catalog.Partition) bool, error) {
	cov, err := store.VerifiedExportCoverage(ctx, d.ID)
	if err != nil {
		return nil, fmt.Errorf("export coverage of %s: %w", d.Name, err)
	}
	return CoveredFunc(cov), nil
}
