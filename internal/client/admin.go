package client

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// JobError is one failed attempt of a job.
type JobError struct {
	At      time.Time `json:"at"`
	Attempt int       `json:"attempt"`
	Error   string    `json:"error"`
}

// Job is a lifecycle job as the admin API reports it.
type Job struct {
	ID          int64      `json:"id"`
	Kind        string     `json:"kind"`
	Dataset     string     `json:"dataset"`
	State       string     `json:"state"`
	Trigger     string     `json:"trigger,omitempty"`
	Attempt     int        `json:"attempt"`
	MaxAttempts int        `json:"max_attempts"`
	Errors      []JobError `json:"errors"`
	CreatedAt   time.Time  `json:"created_at"`
	ScheduledAt time.Time  `json:"scheduled_at"`
	FinishedAt  *time.Time `json:"finished_at,omitempty"`
	// Waiting, for a job that did its work and runs again later (a sweep
	// waiting for a grace period), is "waiting until T: reason".
	Waiting string          `json:"waiting,omitempty"`
	Output  json.RawMessage `json:"output,omitempty"`
}

// Finished reports whether the job reached a final state.
func (j Job) Finished() bool {
	switch j.State {
	case "completed", "cancelled", "discarded":
		return true
	}
	return false
}

// Triggered is the answer of a maintenance run.
type Triggered struct {
	JobID     int64  `json:"job_id"`
	Kind      string `json:"kind"`
	Dataset   string `json:"dataset"`
	State     string `json:"state"`
	Duplicate bool   `json:"duplicate"`
}

// RunMaintenance enqueues a lifecycle job.
func (c *Client) RunMaintenance(ctx context.Context, kind, dataset string) (Triggered, error) {
	var out Triggered
	err := c.Do(ctx, http.MethodPost, "/admin/v1/maintenance", nil, map[string]any{"kind": kind, "dataset": dataset}, &out)
	return out, err
}

// DryRun returns the plan of a lifecycle job without changing anything.
func (c *Client) DryRun(ctx context.Context, kind, dataset string) (json.RawMessage, error) {
	var out struct {
		Plan json.RawMessage `json:"plan"`
	}
	err := c.Do(ctx, http.MethodPost, "/admin/v1/maintenance", nil, map[string]any{"kind": kind, "dataset": dataset, "dry_run": true}, &out)
	return out.Plan, err
}

// JobFilter selects jobs.
type JobFilter struct {
	State, Kind, Dataset string
	Limit                int
}

// Jobs lists jobs.
func (c *Client) Jobs(ctx context.Context, f JobFilter) ([]Job, error) {
	q := url.Values{}
	for k, v := range map[string]string{"state": f.State, "kind": f.Kind, "dataset": f.Dataset} {
		if v != "" {
			q.Set(k, v)
		}
	}
	if f.Limit > 0 {
		q.Set("limit", strconv.Itoa(f.Limit))
	}
	var out struct {
		Jobs []Job `json:"jobs"`
	}
	err := c.Do(ctx, http.MethodGet, "/admin/v1/jobs?"+q.Encode(), nil, nil, &out)
	return out.Jobs, err
}

func (c *Client) jobOp(ctx context.Context, method string, id int64, op string) (Job, error) {
	var j Job
	path := "/admin/v1/jobs/" + strconv.FormatInt(id, 10) + op
	err := c.Do(ctx, method, path, nil, nil, &j)
	return j, err
}

// Job returns one job.
func (c *Client) Job(ctx context.Context, id int64) (Job, error) {
	return c.jobOp(ctx, http.MethodGet, id, "")
}

// RetryJob makes a failed, discarded or cancelled job run again.
func (c *Client) RetryJob(ctx context.Context, id int64) (Job, error) {
	return c.jobOp(ctx, http.MethodPost, id, "/retry")
}

// CancelJob cancels a job.
func (c *Client) CancelJob(ctx context.Context, id int64) (Job, error) {
	return c.jobOp(ctx, http.MethodPost, id, "/cancel")
}

// Lifecycle returns a dataset's lifecycle status as raw JSON.
func (c *Client) Lifecycle(ctx context.Context, dataset string) (json.RawMessage, error) {
	var out json.RawMessage
	err := c.Do(ctx, http.MethodGet, "/admin/v1/datasets/"+url.PathEscape(dataset)+"/lifecycle", nil, nil, &out)
	return out, err
}

// AuditEntry is one audit log row.
type AuditEntry struct {
	ID         int64          `json:"id"`
	Time       time.Time      `json:"time"`
	Actor      string         `json:"actor"`
	Action     string         `json:"action"`
	Dataset    string         `json:"dataset,omitempty"`
	Partitions []int64        `json:"partitions,omitempty"`
	Bytes      int64          `json:"bytes"`
	Reason     string         `json:"reason,omitempty"`
	Details    map[string]any `json:"details,omitempty"`
}

// Audit lists audit entries, newest first.
func (c *Client) Audit(ctx context.Context, dataset, action string, limit int) ([]AuditEntry, error) {
	q := url.Values{}
	if dataset != "" {
		q.Set("dataset", dataset)
	}
	if action != "" {
		q.Set("action", action)
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var out struct {
		Entries []AuditEntry `json:"entries"`
	}
	err := c.Do(ctx, http.MethodGet, "/admin/v1/audit?"+q.Encode(), nil, nil, &out)
	return out.Entries, err
}

// SetNoCompact excludes partitions from compaction (on) or includes them again.
func (c *Client) SetNoCompact(ctx context.Context, dataset string, ids []int64, on bool) error {
	return c.Do(ctx, http.MethodPost, "/admin/v1/datasets/"+url.PathEscape(dataset)+"/partitions/no-compact", nil,
		map[string]any{"partition_ids": ids, "on": on}, nil)
}
