package jobs

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"
)

// LifecycleStatus is the lifecycle of one dataset, per job kind.
type LifecycleStatus struct {
	Dataset string       `json:"dataset"`
	Kinds   []KindStatus `json:"kinds"`
}

// KindStatus is the state of one job kind for one dataset.
type KindStatus struct {
	Kind string `json:"kind"`
	// Available: this build has a Task for the kind.
	Available bool `json:"available"`
	// Enabled: the dataset's policy asks for the kind (reconcile: always,
	// unless disabled in the server's configuration).
	Enabled bool `json:"enabled"`
	// Schedule is the policy's schedule, when Enabled.
	Schedule string `json:"schedule,omitempty"`
	// NextRun is when the scheduler next enqueues the kind; nil until the
	// scheduler has seen the current schedule, or when not scheduled.
	NextRun *time.Time `json:"next_run"`
	// LastJobID, LastRun (finished_at), LastState, LastOutcome and LastError
	// describe the latest finished job of the kind. LastStatus sums them up:
	// the outcome of a completed job (success, conflict), otherwise the state
	// (discarded, cancelled).
	LastJobID   *int64     `json:"last_job_id,omitempty"`
	LastRun     *time.Time `json:"last_run"`
	LastStatus  string     `json:"last_status,omitempty"`
	LastState   string     `json:"last_state,omitempty"`
	LastOutcome string     `json:"last_outcome,omitempty"`
	LastError   string     `json:"last_error,omitempty"`
	// Backlog counts the kind's unfinished jobs (waiting, retrying or running).
	Backlog int `json:"backlog"`
	// LastHandedBack is the latest job of the kind that a restarted process
	// handed back for a retry after its previous incarnation died running
	// it (see Service.HandBack); nil if none is kept.
	LastHandedBack *HandBackInfo `json:"last_handed_back,omitempty"`
}

// Lifecycle reports, for each job kind of a live dataset: whether it is
// available and enabled, its schedule and next run, its last finished run
// (time, status, error) and its backlog.
//
// Errors: ErrNotFound.
func (s *Service) Lifecycle(ctx context.Context, dataset string) (LifecycleStatus, error) {
	d, err := s.store.GetDataset(ctx, dataset)
	if err != nil {
		return LifecycleStatus{}, err
	}
	states, err := s.store.ScheduleStates(ctx, d.ID)
	if err != nil {
		return LifecycleStatus{}, err
	}
	counts, err := s.unfinishedJobs(ctx, Kinds(), d.ID)
	if err != nil {
		return LifecycleStatus{}, err
	}
	backlog := map[string]int{}
	for _, c := range counts {
		backlog[c.Kind] += int(c.Count)
	}
	out := LifecycleStatus{Dataset: d.Name, Kinds: make([]KindStatus, 0, len(Kinds()))}
	for _, kind := range Kinds() {
		_, available := s.tasks[kind]
		ks := KindStatus{Kind: kind, Available: available, Backlog: backlog[kind]}
		if spec, ok := policySchedule(d.Policy, kind, s.opts.ReconcileSchedule); ok {
			ks.Enabled, ks.Schedule = true, spec
		}
		for _, st := range states {
			if st.Kind == kind && st.Schedule == ks.Schedule && available {
				next := st.NextRunAt
				ks.NextRun = &next
			}
		}
		last, err := s.lastFinished(ctx, kind, d.ID)
		if err != nil {
			return LifecycleStatus{}, err
		}
		if last != nil {
			info := jobInfo(last)
			ks.LastJobID, ks.LastRun = &info.ID, info.FinishedAt
			ks.LastState, ks.LastOutcome = info.State, info.Outcome
			ks.LastStatus = info.State
			if info.State == string(rivertype.JobStateCompleted) && info.Outcome != "" {
				ks.LastStatus = info.Outcome
			}
			ks.LastError = lastError(info)
		}
		if ks.LastHandedBack, err = s.lastHandBack(ctx, kind, d.ID); err != nil {
			return LifecycleStatus{}, err
		}
		out.Kinds = append(out.Kinds, ks)
	}
	return out, nil
}

// lastFinished returns the most recently finalized job of kind for the
// dataset id, or nil.
func (s *Service) lastFinished(ctx context.Context, kind string, datasetID int64) (*rivertype.JobRow, error) {
	p := river.NewJobListParams().
		Kinds(kind).
		States(rivertype.JobStateCompleted, rivertype.JobStateCancelled, rivertype.JobStateDiscarded).
		OrderBy(river.JobListOrderByFinalizedAt, river.SortOrderDesc).
		Where("args @> @ts_args_filter::jsonb", river.NamedArgs{"ts_args_filter": `{"dataset_id":` + strconv.FormatInt(datasetID, 10) + `}`}).
		First(1)
	res, err := s.client.JobList(ctx, p)
	if err != nil {
		return nil, fmt.Errorf("last %s job of dataset %d: %w", kind, datasetID, err)
	}
	if len(res.Jobs) == 0 {
		return nil, nil
	}
	return res.Jobs[0], nil
}

// lastError is the error of a job's last attempt: from its output (which
// also covers conflicts, recorded on completed jobs), else its last
// recorded error unless it completed.
func lastError(info JobInfo) string {
	var o struct {
		Error string `json:"error"`
	}
	if len(info.Output) > 0 && json.Unmarshal(info.Output, &o) == nil && o.Error != "" {
		return o.Error
	}
	if info.State != string(rivertype.JobStateCompleted) && len(info.Errors) > 0 {
		return info.Errors[len(info.Errors)-1].Error
	}
	return ""
}
