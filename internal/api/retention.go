package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"timestore/internal/catalog"
	"timestore/internal/retention"
)

// Retention is what the hold and restore routes need of the retention
// service (*retention.Service).
type Retention interface {
	AddHold(ctx context.Context, dataset string, from, to time.Time, reason, actor string) (retention.HoldResult, error)
	Holds(ctx context.Context, dataset string, includeReleased bool) ([]catalog.Hold, error)
	ReleaseHold(ctx context.Context, id int64, actor string) (catalog.Hold, error)
	Restore(ctx context.Context, dataset string, ids []int64, ro retention.RunOptions) (retention.RestoreResult, error)
}

var _ Retention = (*retention.Service)(nil)

// retentionRoutes registers the hold and restore routes of API.md behind
// the admin auth.
func (s *Server) retentionRoutes(handle handleFunc) {
	admin := s.requireAdmin
	handle("POST /admin/v1/datasets/{name}/holds", s.addHold, admin)
	handle("GET /admin/v1/holds", s.listHolds, admin)
	handle("DELETE /admin/v1/holds/{id}", s.releaseHold, admin)
	handle("POST /admin/v1/datasets/{name}/partitions/restore", s.restorePartitions, admin)
}

func (s *Server) retention() (Retention, error) {
	if s.opts.Retention == nil {
		return nil, &httpError{http.StatusServiceUnavailable, "unavailable", "retention is not running in this process"}
	}
	return s.opts.Retention, nil
}

// retentionError maps validation errors of the retention service to 400;
// the others are classified as usual (404, 409, 500).
func retentionError(err error) error {
	if errors.Is(err, catalog.ErrInvalid) {
		return badRequest(err.Error())
	}
	return err
}

// HoldRequest is the body of POST /admin/v1/datasets/{name}/holds: a hold on
// [from, to), times as in queries (RFC 3339 or a date).
type HoldRequest struct {
	From   string `json:"from"`
	To     string `json:"to"`
	Reason string `json:"reason"`
}

func (s *Server) addHold(w http.ResponseWriter, r *http.Request) error {
	ret, err := s.retention()
	if err != nil {
		return err
	}
	name, err := pathDataset(r)
	if err != nil {
		return err
	}
	var req HoldRequest
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	if req.From == "" || req.To == "" {
		return badRequest("from and to are required")
	}
	from, err := optTime("from", req.From)
	if err != nil {
		return err
	}
	to, err := optTime("to", req.To)
	if err != nil {
		return err
	}
	h, err := ret.AddHold(r.Context(), name, *from, *to, req.Reason, actor(r))
	if err != nil {
		return retentionError(err)
	}
	writeJSON(w, http.StatusCreated, h)
	return nil
}

func (s *Server) listHolds(w http.ResponseWriter, r *http.Request) error {
	ret, err := s.retention()
	if err != nil {
		return err
	}
	q := r.URL.Query()
	dataset := q.Get("dataset")
	if dataset != "" {
		if err := catalog.ValidateName("dataset", dataset); err != nil {
			return badRequest("dataset: " + err.Error())
		}
	}
	all := false
	if v := q.Get("all"); v != "" {
		if all, err = strconv.ParseBool(v); err != nil {
			return badRequest(fmt.Sprintf("all: %q is not a boolean", v))
		}
	}
	holds, err := ret.Holds(r.Context(), dataset, all)
	if err != nil {
		return retentionError(err)
	}
	if holds == nil {
		holds = []catalog.Hold{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"holds": holds})
	return nil
}

func (s *Server) releaseHold(w http.ResponseWriter, r *http.Request) error {
	ret, err := s.retention()
	if err != nil {
		return err
	}
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id <= 0 {
		return badRequest(fmt.Sprintf("hold id %q is not a positive number", r.PathValue("id")))
	}
	h, err := ret.ReleaseHold(r.Context(), id, actor(r))
	if err != nil {
		return retentionError(err)
	}
	writeJSON(w, http.StatusOK, h)
	return nil
}

// RestoreRequest is the body of POST /admin/v1/datasets/{name}/partitions/restore.
type RestoreRequest struct {
	PartitionIDs []int64 `json:"partition_ids"`
}

func (s *Server) restorePartitions(w http.ResponseWriter, r *http.Request) error {
	ret, err := s.retention()
	if err != nil {
		return err
	}
	name, err := pathDataset(r)
	if err != nil {
		return err
	}
	var req RestoreRequest
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	if len(req.PartitionIDs) == 0 {
		return badRequest("partition_ids: at least one partition id is required")
	}
	res, err := ret.Restore(r.Context(), name, req.PartitionIDs, retention.RunOptions{Actor: actor(r)})
	if err != nil {
		return retentionError(err)
	}
	writeJSON(w, http.StatusOK, res)
	return nil
}
