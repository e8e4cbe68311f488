// Package compaction merges runs of small adjacent partitions of a dataset
// into fewer, well-sized, time-sorted Parquet files.
//
// The work is split as in the Thanos compactor: the planner (this file) is a
// pure function of the live manifest and the dataset's policy that picks the
// groups to merge; the Compactor (executor.go) reads the manifest, merges each
// group with DuckDB, uploads the result and swaps it into the manifest in one
// transaction that re-checks that every input is still live; Task (task.go)
// is the "compaction" job that runs it. Compaction marks
// its inputs removed and never deletes them: the sweeper does, after the
// grace period and once no query lease pins them.
//
// The rules it follows (partition life cycle, locks, write before reference, unknown commit outcomes): docs/design.md.
package compaction

import (
	"cmp"
	"slices"
	"time"

	"timestore/internal/catalog"
	"timestore/internal/policy"
)

// Defaults of Limits.
const (
	// MaxInputBytesFactorDefault sets Limits.MaxInputBytes, when zero, to this
	// many times the policy's target_file_bytes.
	MaxInputBytesFactorDefault = 4
	// MaxInputFilesDefault is Limits.MaxInputFiles when zero: the most files
	// one merge reads (and, for remote targets, pins in the read cache).
	MaxInputFilesDefault = 1000
)

// Limits bound the work of one merge and of one run, beside the policy.
type Limits struct {
	// MaxInputBytes caps the summed size of a group's inputs. The planner
	// closes a group before an input would take it past the cap. Defaults
	// to MaxInputBytesFactorDefault × target_file_bytes; since a group is
	// also closed as soon as it reaches target_file_bytes, the cap only
	// binds when it is set below twice the target.
	MaxInputBytes int64
	// MaxInputFiles caps the number of inputs of a group. Defaults to
	// MaxInputFilesDefault.
	MaxInputFiles int
	// MaxGroups caps the groups one run merges (the first ones in plan
	// order); the rest wait for the next run. Zero means no cap.
	MaxGroups int
}

// withDefaults fills in the zero fields of l for a target size.
func (l Limits) withDefaults(target int64) Limits {
	if l.MaxInputBytes <= 0 {
		l.MaxInputBytes = MaxInputBytesFactorDefault * target
	}
	if l.MaxInputFiles <= 0 {
		l.MaxInputFiles = MaxInputFilesDefault
	}
	return l
}

// Settings returns the compaction section of a dataset's policy with its
// defaults applied (target_file_bytes, min_input_files). A nil section means
// the defaults.
func Settings(p *policy.Compaction) policy.Compaction {
	var c policy.Compaction
	if p != nil {
		c = *p
	}
	if c.TargetFileBytes <= 0 {
		c.TargetFileBytes = policy.TargetFileBytesDefault
	}
	if c.MinInputFiles < 2 {
		c.MinInputFiles = policy.MinInputFilesDefault
	}
	return c
}

// Group is one planned merge: partitions of one window, adjacent in time
// order, to be replaced by one file.
type Group struct {
	// WindowStart is the start of the partition window of every input.
	WindowStart time.Time `json:"window_start"`
	// Inputs are the ids of the partitions merged, in time order.
	Inputs []int64 `json:"inputs"`
	// TimeMin and TimeMax span the inputs' rows.
	TimeMin time.Time `json:"time_min"`
	TimeMax time.Time `json:"time_max"`
	// InputRows and InputBytes sum the inputs.
	InputRows  int64 `json:"input_rows"`
	InputBytes int64 `json:"input_bytes"`
	// ExpectedOutputBytes estimates the merged file's size: the sum of the
	// inputs. Sorting and larger row groups usually compress at least as
	// well, so the real file is rarely larger.
	ExpectedOutputBytes int64 `json:"expected_output_bytes"`
	// Level is the compaction level of the output: one more than the
	// highest input level (ingested files are level 0).
	Level int `json:"level"`
	// Partitions are the inputs themselves, in the order of Inputs.
	Partitions []catalog.Partition `json:"-"`
}

// Planner picks the groups to merge from a dataset's live partitions.
type Planner interface {
	// Plan returns the groups to merge, in a deterministic order, given the
	// live partitions of a dataset, its compaction settings and its
	// partition window (hour, day or month). It changes nothing.
	Plan(parts []catalog.Partition, pol policy.Compaction, window string) []Group
}

// AdjacentPlanner is the Planner of Plan.
type AdjacentPlanner struct {
	Limits Limits
}

var _ Planner = AdjacentPlanner{}

// Plan implements Planner with Plan(parts, pol, window, p.Limits).
func (p AdjacentPlanner) Plan(parts []catalog.Partition, pol policy.Compaction, window string) []Group {
	return Plan(parts, pol, window, p.Limits)
}

// Eligible reports whether a partition may be an input of compaction under
// settings pol (defaults applied, see Settings) for a dataset partitioned by
// window: it is live, not marked no_compact, smaller than target_file_bytes
// and its rows lie inside its own window. The number of eligible partitions
// is the compaction backlog.
func Eligible(p catalog.Partition, pol policy.Compaction, window string) bool {
	return p.State() == catalog.StateLive && !p.NoCompact && p.SizeBytes < pol.TargetFileBytes &&
		!p.TimeMin.Before(p.WindowStart) && p.TimeMax.Before(catalog.WindowEnd(window, p.WindowStart)) &&
		!p.TimeMax.Before(p.TimeMin)
}

// Plan is the compaction planner, a pure function of its arguments; pol's
// zero fields take their defaults (see Settings), and so do limits'.
//
// Partitions are taken window by window (by WindowStart, so a group never
// spans two windows) and, within a window, in time order: by time_min, then
// time_max, then id. Overlapping time ranges are fine; merging sorts the rows.
// A partition that is not Eligible (at or above the target size, marked
// no_compact, removed) is left alone and breaks adjacency: groups are runs of
// consecutive eligible partitions.
//
// Each run is cut greedily, in order: inputs are added to the current group
// until it reaches target_file_bytes (the group is then closed, so its
// inputs total less than twice the target), or until the next input would
// take it past limits.MaxInputBytes or limits.MaxInputFiles (the group is
// closed before that input). A closed group with fewer than min_input_files
// inputs is dropped, leaving those partitions for a later run. A run whose
// eligible partitions total less than the target is therefore merged whole
// when it has enough of them, and merged again (at a higher level) once more
// small files arrive beside it.
//
// Groups come out ordered by window, then time; no partition is in two. The
// result does not depend on the order of parts.
func Plan(parts []catalog.Partition, pol policy.Compaction, window string, limits Limits) []Group {
	pol = Settings(&pol)
	limits = limits.withDefaults(pol.TargetFileBytes)

	sorted := slices.Clone(parts)
	slices.SortFunc(sorted, func(a, b catalog.Partition) int {
		return cmp.Or(
			a.WindowStart.Compare(b.WindowStart),
			a.TimeMin.Compare(b.TimeMin),
			a.TimeMax.Compare(b.TimeMax),
			cmp.Compare(a.ID, b.ID),
		)
	})

	var groups []Group
	var cur []catalog.Partition
	var curBytes int64
	flush := func() {
		if len(cur) >= pol.MinInputFiles {
			groups = append(groups, newGroup(cur))
		}
		cur, curBytes = nil, 0
	}
	for i, p := range sorted {
		if i > 0 && !p.WindowStart.Equal(sorted[i-1].WindowStart) {
			flush() // never across windows
		}
		if !Eligible(p, pol, window) {
			flush() // breaks adjacency
			continue
		}
		if len(cur) > 0 && (curBytes+p.SizeBytes > limits.MaxInputBytes || len(cur) >= limits.MaxInputFiles) {
			flush()
		}
		cur = append(cur, p)
		curBytes += p.SizeBytes
		if curBytes >= pol.TargetFileBytes {
			flush()
		}
	}
	flush()
	if limits.MaxGroups > 0 && len(groups) > limits.MaxGroups {
		groups = groups[:limits.MaxGroups]
	}
	return groups
}

func newGroup(parts []catalog.Partition) Group {
	g := Group{
		WindowStart: parts[0].WindowStart,
		Inputs:      make([]int64, len(parts)),
		TimeMin:     parts[0].TimeMin,
		TimeMax:     parts[0].TimeMax,
		Partitions:  slices.Clone(parts),
	}
	level := 0
	for i, p := range parts {
		g.Inputs[i] = p.ID
		g.InputRows += p.RowCount
		g.InputBytes += p.SizeBytes
		if p.TimeMin.Before(g.TimeMin) {
			g.TimeMin = p.TimeMin
		}
		if p.TimeMax.After(g.TimeMax) {
			g.TimeMax = p.TimeMax
		}
		level = max(level, p.Level)
	}
	g.Level = level + 1
	g.ExpectedOutputBytes = g.InputBytes
	return g
}

// Backlog counts the partitions of parts that are Eligible for compaction:
// the small partitions still to merge.
func Backlog(parts []catalog.Partition, pol policy.Compaction, window string) int {
	pol = Settings(&pol)
	n := 0
	for _, p := range parts {
		if Eligible(p, pol, window) {
			n++
		}
	}
	return n
}
