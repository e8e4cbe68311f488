package jobs

import (
	"fmt"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"
)

// DatasetArgs are the arguments of every lifecycle job: which dataset, and
// why the job was enqueued. Jobs carry ids, not data.
//
// Uniqueness: River hashes only the fields tagged river:"unique" — the
// dataset id and the dry-run flag — together with the kind, so there is one
// job per (kind, dataset) in the states of uniqueStates whatever the trigger.
// The id rather than the name is hashed because a name can be reused after a
// delete: a job left over for the deleted dataset must not swallow a trigger
// for the new one.
type DatasetArgs struct {
	// Dataset is the dataset's name, for people and for filtering.
	Dataset string `json:"dataset"`
	// DatasetID identifies the dataset; the job checks it is still live.
	DatasetID int64 `json:"dataset_id" river:"unique"`
	// DryRun makes the job only plan (Task.Plan) and record the plan as its
	// output. Trigger never sets it; DryRun returns plans synchronously.
	DryRun bool `json:"dry_run" river:"unique"`
	// Trigger is why the job was enqueued: manual, schedule or followup.
	Trigger string `json:"trigger"`
}

func (a DatasetArgs) datasetArgs() DatasetArgs { return a }

// CompactionArgs are the args of a compaction job.
type CompactionArgs struct{ DatasetArgs }

// Kind implements river.JobArgs.
func (CompactionArgs) Kind() string { return KindCompaction }

// RetentionArgs are the args of a retention job.
type RetentionArgs struct{ DatasetArgs }

// Kind implements river.JobArgs.
func (RetentionArgs) Kind() string { return KindRetention }

// SweepArgs are the args of a sweep job.
type SweepArgs struct{ DatasetArgs }

// Kind implements river.JobArgs.
func (SweepArgs) Kind() string { return KindSweep }

// ExportArgs are the args of an export job.
type ExportArgs struct{ DatasetArgs }

// Kind implements river.JobArgs.
func (ExportArgs) Kind() string { return KindExport }

// ReconcileArgs are the args of a reconcile job.
type ReconcileArgs struct{ DatasetArgs }

// Kind implements river.JobArgs.
func (ReconcileArgs) Kind() string { return KindReconcile }

// SchedulerArgs are the (empty) args of the periodic scheduler job.
type SchedulerArgs struct{}

// Kind implements river.JobArgs.
func (SchedulerArgs) Kind() string { return KindScheduler }

// datasetJob is implemented by the args of every lifecycle kind.
type datasetJob interface {
	river.JobArgs
	datasetArgs() DatasetArgs
}

// newArgs returns the args of a lifecycle job of kind.
func newArgs(kind string, a DatasetArgs) (datasetJob, error) {
	switch kind {
	case KindCompaction:
		return CompactionArgs{a}, nil
	case KindRetention:
		return RetentionArgs{a}, nil
	case KindSweep:
		return SweepArgs{a}, nil
	case KindExport:
		return ExportArgs{a}, nil
	case KindReconcile:
		return ReconcileArgs{a}, nil
	}
	return nil, validKind(kind)
}

// addWorker registers the generic task worker for kind.
func addWorker(workers *river.Workers, kind string, s *Service) error {
	switch kind {
	case KindCompaction:
		return river.AddWorkerSafely(workers, &taskWorker[CompactionArgs]{s: s})
	case KindRetention:
		return river.AddWorkerSafely(workers, &taskWorker[RetentionArgs]{s: s})
	case KindSweep:
		return river.AddWorkerSafely(workers, &taskWorker[SweepArgs]{s: s})
	case KindExport:
		return river.AddWorkerSafely(workers, &taskWorker[ExportArgs]{s: s})
	case KindReconcile:
		return river.AddWorkerSafely(workers, &taskWorker[ReconcileArgs]{s: s})
	}
	return fmt.Errorf("add worker: %w", validKind(kind))
}

// uniqueStates are the states in which a lifecycle job blocks another of the
// same kind and dataset: everything not finalized.
var uniqueStates = []rivertype.JobState{
	rivertype.JobStateAvailable,
	rivertype.JobStatePending,
	rivertype.JobStateRetryable,
	rivertype.JobStateRunning,
	rivertype.JobStateScheduled,
}
