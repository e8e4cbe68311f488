package compaction

import (
	"context"
	"errors"

	"timestore/internal/jobs"
)

// Task is the "compaction" job: Plan is the dry run (Compactor.Plan), Run
// merges (Compactor.Run).
type Task struct{ c *Compactor }

var _ jobs.Task = (*Task)(nil)

// Task returns the task of job kind "compaction", for jobs.Options.Tasks.
func (c *Compactor) Task() *Task { return &Task{c: c} }

// Kind implements jobs.Task.
func (t *Task) Kind() string { return jobs.KindCompaction }

// Plan implements jobs.Task: the planned merges, changing nothing.
func (t *Task) Plan(ctx context.Context, dataset string) (any, error) {
	return t.c.Plan(ctx, dataset)
}

// Run implements jobs.Task and returns a Summary, also with an error. A
// merged file that does not hold its inputs' rows (ErrVerify) halts the
// job: retrying cannot help. A run that abandoned groups on a conflict
// returns an error wrapping jobs.ErrConflict after doing every other group;
// any other failure is retried by River.
func (t *Task) Run(ctx context.Context, dataset string, job jobs.JobContext) (any, error) {
	id := job.ID
	res, err := t.c.Run(ctx, dataset, RunOptions{JobID: &id, Actor: job.Actor, Logger: job.Logger})
	if errors.Is(err, ErrVerify) {
		err = jobs.Halt(err)
	}
	return res.Summary(), err
}

// SummaryMergesMax caps the merges a Summary lists one by one; the totals
// always cover all of them.
const SummaryMergesMax = 100

// Summary is a run as recorded in its job's output.
type Summary struct {
	Dataset        string `json:"dataset"`
	PlannedVersion int64  `json:"planned_version"`
	PlannedGroups  int    `json:"planned_groups"`
	// Merges counts the committed merges, Conflicts the groups abandoned.
	Merges                int     `json:"merges"`
	Conflicts             int     `json:"conflicts"`
	InputPartitions       int     `json:"input_partitions"`
	OutputPartitions      int     `json:"output_partitions"`
	Rows                  int64   `json:"rows"`
	InputBytes            int64   `json:"input_bytes"`
	OutputBytes           int64   `json:"output_bytes"`
	SmallPartitionsBefore int     `json:"small_partitions_before"`
	SmallPartitionsAfter  int     `json:"small_partitions_after"`
	DurationSeconds       float64 `json:"duration_seconds"`
	// Merged lists the first SummaryMergesMax merges; MergedNotListed
	// counts the others.
	Merged          []MergeSummary `json:"merged"`
	MergedNotListed int            `json:"merged_not_listed"`
}

// MergeSummary is one committed merge in a Summary.
type MergeSummary struct {
	// Partition is the id of the new partition, Inputs those it replaced.
	Partition   int64   `json:"partition"`
	Inputs      []int64 `json:"inputs"`
	Version     int64   `json:"manifest_version"`
	Rows        int64   `json:"rows"`
	InputBytes  int64   `json:"input_bytes"`
	OutputBytes int64   `json:"output_bytes"`
	Level       int     `json:"level"`
	// Seconds are the merge's Timings in seconds.
	Seconds PhaseSeconds `json:"seconds"`
}

// PhaseSeconds are the phases of one merge (Timings) in seconds.
type PhaseSeconds struct {
	Fetch  float64 `json:"fetch"`
	Merge  float64 `json:"merge"`
	Upload float64 `json:"upload"`
	Commit float64 `json:"commit"`
}

// Summary renders r as the job's output. Merges beyond SummaryMergesMax are
// counted in MergedNotListed rather than listed.
func (r Result) Summary() Summary {
	listed := r.Merged[:min(len(r.Merged), SummaryMergesMax)]
	merged := make([]MergeSummary, len(listed))
	for i, m := range listed {
		merged[i] = MergeSummary{
			Partition: m.Partition, Inputs: m.Inputs, Version: m.Version,
			Rows: m.Rows, InputBytes: m.InputBytes, OutputBytes: m.OutputBytes, Level: m.Level,
			Seconds: PhaseSeconds{
				Fetch: m.Timings.Fetch.Seconds(), Merge: m.Timings.Merge.Seconds(),
				Upload: m.Timings.Upload.Seconds(), Commit: m.Timings.Commit.Seconds(),
			},
		}
	}
	return Summary{
		Dataset:               r.Dataset,
		PlannedVersion:        r.PlannedVersion,
		PlannedGroups:         r.Planned,
		Merges:                len(r.Merged),
		Conflicts:             r.Conflicts,
		InputPartitions:       r.InputPartitions,
		OutputPartitions:      r.OutputPartitions,
		Rows:                  r.Rows,
		InputBytes:            r.InputBytes,
		OutputBytes:           r.OutputBytes,
		SmallPartitionsBefore: r.SmallPartitionsBefore,
		SmallPartitionsAfter:  r.SmallPartitionsAfter,
		DurationSeconds:       r.Duration.Seconds(),
		Merged:                merged,
		MergedNotListed:       len(r.Merged) - len(listed),
	}
}
