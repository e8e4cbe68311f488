package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"timestore/internal/catalog"
	"timestore/internal/jobs"
)

// Jobs is what the admin routes need of the lifecycle job service.
type Jobs interface {
	Trigger(ctx context.Context, kind, dataset, actor string) (jobs.JobInfo, bool, error)
	DryRun(ctx context.Context, kind, dataset string) (any, error)
	List(ctx context.Context, f jobs.JobFilter) ([]jobs.JobInfo, error)
	Get(ctx context.Context, id int64) (jobs.JobInfo, error)
	Retry(ctx context.Context, id int64, actor string) (jobs.JobInfo, error)
	Cancel(ctx context.Context, id int64, actor string) (jobs.JobInfo, error)
	Lifecycle(ctx context.Context, dataset string) (jobs.LifecycleStatus, error)
}

var _ Jobs = (*jobs.Service)(nil)

type handleFunc func(pattern string, h func(http.ResponseWriter, *http.Request) error, auth func(http.Handler) http.Handler)

func (s *Server) adminRoutes(mux *http.ServeMux, handle handleFunc) {
	admin := s.requireAdmin
	handle("POST /admin/v1/maintenance", s.maintenance, admin)
	handle("GET /admin/v1/jobs", s.listJobs, admin)
	handle("GET /admin/v1/jobs/{id}", s.getJob, admin)
	handle("POST /admin/v1/jobs/{id}/retry", s.retryJob, admin)
	handle("POST /admin/v1/jobs/{id}/cancel", s.cancelJob, admin)
	handle("GET /admin/v1/datasets/{name}/lifecycle", s.lifecycle, admin)
	handle("GET /admin/v1/audit", s.audit, admin)
	s.retentionRoutes(handle)
	handle("POST /admin/v1/datasets/{name}/partitions/no-compact", s.noCompact, admin)
	if s.opts.AdminUI != nil {
		mux.Handle("/admin/ui/", s.instrument("/admin/ui/", admin(s.opts.AdminUI)))
	}
	handle("/admin/", func(w http.ResponseWriter, r *http.Request) error {
		return &httpError{http.StatusNotFound, CodeNotFound, fmt.Sprintf("no admin route %s %s", r.Method, r.URL.Path)}
	}, admin)
}

func (s *Server) jobs() (Jobs, error) {
	if s.opts.Jobs == nil {
		return nil, &httpError{http.StatusServiceUnavailable, "unavailable", "lifecycle jobs are not running in this process"}
	}
	return s.opts.Jobs, nil
}

// jobsError maps the job service's errors onto statuses.
func jobsError(err error) error {
	switch {
	case errors.Is(err, jobs.ErrUnknownKind):
		return badRequest(err.Error())
	case errors.Is(err, jobs.ErrUnsupported):
		return &httpError{http.StatusNotImplemented, "not_implemented", err.Error()}
	case errors.Is(err, jobs.ErrNotFound):
		return &httpError{http.StatusNotFound, CodeNotFound, err.Error()}
	case errors.Is(err, jobs.ErrState):
		return &httpError{http.StatusConflict, CodeConflict, err.Error()}
	}
	return err
}

// MaintenanceRequest is the body of POST /admin/v1/maintenance.
type MaintenanceRequest struct {
	Kind    string `json:"kind"`
	Dataset string `json:"dataset"`
	DryRun  bool   `json:"dry_run"`
}

func (s *Server) maintenance(w http.ResponseWriter, r *http.Request) error {
	js, err := s.jobs()
	if err != nil {
		return err
	}
	var req MaintenanceRequest
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	if err := catalog.ValidateName("dataset", req.Dataset); err != nil {
		return badRequest("dataset: " + err.Error())
	}
	if req.DryRun {
		plan, err := js.DryRun(r.Context(), req.Kind, req.Dataset)
		if err != nil {
			return jobsError(s.explainNotFound(r, err, req.Dataset))
		}
		writeJSON(w, http.StatusOK, map[string]any{"kind": req.Kind, "dataset": req.Dataset, "dry_run": true, "plan": plan})
		return nil
	}
	job, dup, err := js.Trigger(r.Context(), req.Kind, req.Dataset, actor(r))
	if err != nil {
		return jobsError(s.explainNotFound(r, err, req.Dataset))
	}
	writeJSON(w, http.StatusAccepted, map[string]any{
		"job_id": job.ID, "kind": job.Kind, "dataset": job.Dataset, "state": job.State, "duplicate": dup,
	})
	return nil
}

func (s *Server) listJobs(w http.ResponseWriter, r *http.Request) error {
	js, err := s.jobs()
	if err != nil {
		return err
	}
	q := r.URL.Query()
	f := jobs.JobFilter{State: q.Get("state"), Kind: q.Get("kind"), Dataset: q.Get("dataset")}
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n <= 0 {
			return badRequest(fmt.Sprintf("limit: %q is not a positive number", l))
		}
		f.Limit = n
	}
	list, err := js.List(r.Context(), f)
	if err != nil {
		return jobsError(err)
	}
	if list == nil {
		list = []jobs.JobInfo{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"jobs": list})
	return nil
}

func pathJobID(r *http.Request) (int64, error) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id <= 0 {
		return 0, badRequest(fmt.Sprintf("job id %q is not a positive number", r.PathValue("id")))
	}
	return id, nil
}

func (s *Server) jobOp(w http.ResponseWriter, r *http.Request, op func(Jobs, int64) (jobs.JobInfo, error)) error {
	js, err := s.jobs()
	if err != nil {
		return err
	}
	id, err := pathJobID(r)
	if err != nil {
		return err
	}
	job, err := op(js, id)
	if err != nil {
		return jobsError(err)
	}
	writeJSON(w, http.StatusOK, job)
	return nil
}

func (s *Server) getJob(w http.ResponseWriter, r *http.Request) error {
	return s.jobOp(w, r, func(js Jobs, id int64) (jobs.JobInfo, error) { return js.Get(r.Context(), id) })
}

func (s *Server) retryJob(w http.ResponseWriter, r *http.Request) error {
	return s.jobOp(w, r, func(js Jobs, id int64) (jobs.JobInfo, error) { return js.Retry(r.Context(), id, actor(r)) })
}

func (s *Server) cancelJob(w http.ResponseWriter, r *http.Request) error {
	return s.jobOp(w, r, func(js Jobs, id int64) (jobs.JobInfo, error) { return js.Cancel(r.Context(), id, actor(r)) })
}

func (s *Server) lifecycle(w http.ResponseWriter, r *http.Request) error {
	js, err := s.jobs()
	if err != nil {
		return err
	}
	name, err := pathDataset(r)
	if err != nil {
		return err
	}
	st, err := js.Lifecycle(r.Context(), name)
	if err != nil {
		return jobsError(s.explainNotFound(r, err, name))
	}
	writeJSON(w, http.StatusOK, st)
	return nil
}

func (s *Server) audit(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	f := catalog.AuditFilter{Dataset: q.Get("dataset"), Action: q.Get("action")}
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n <= 0 {
			return badRequest(fmt.Sprintf("limit: %q is not a positive number", l))
		}
		f.Limit = n
	}
	entries, err := s.opts.Store.ListAudit(r.Context(), f)
	if err != nil {
		return err
	}
	if entries == nil {
		entries = []catalog.AuditEntry{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"entries": entries})
	return nil
}

// NoCompactRequest is the body of POST /admin/v1/datasets/{name}/partitions/no-compact.
type NoCompactRequest struct {
	PartitionIDs []int64 `json:"partition_ids"`
	// On sets the mark (the default); false clears it.
	On *bool `json:"on"`
}

// noCompact excludes live partitions from compaction, or includes them again (audited).
func (s *Server) noCompact(w http.ResponseWriter, r *http.Request) error {
	name, err := pathDataset(r)
	if err != nil {
		return err
	}
	var req NoCompactRequest
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	if len(req.PartitionIDs) == 0 {
		return badRequest("partition_ids: at least one id is required")
	}
	on := req.On == nil || *req.On
	if err := s.opts.Store.SetNoCompact(r.Context(), name, req.PartitionIDs, on, actor(r)); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"dataset": name, "partition_ids": req.PartitionIDs, "no_compact": on})
	return nil
}
