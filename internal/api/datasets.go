package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"timestore/internal/catalog"
	"timestore/internal/policy"
	"timestore/internal/storage"
)

// CreateDatasetRequest is the body of POST /v1/datasets.
type CreateDatasetRequest struct {
	Name       string           `json:"name"`
	Columns    []catalog.Column `json:"columns"`
	TimeColumn string           `json:"time_column"`
	Partition  string           `json:"partition"`
	Target     string           `json:"target"`
	Policy     *json.RawMessage `json:"policy"`
}

// DatasetResponse is a dataset with the totals of its live manifest.
type DatasetResponse struct {
	catalog.Dataset
	Totals catalog.Totals `json:"totals"`
}

func (s *Server) createDataset(w http.ResponseWriter, r *http.Request) error {
	var req CreateDatasetRequest
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	d := catalog.Dataset{
		Name:       req.Name,
		Columns:    req.Columns,
		TimeColumn: req.TimeColumn,
		Partition:  req.Partition,
		Target:     req.Target,
	}
	if d.Partition == "" {
		d.Partition = catalog.WindowDay
	}
	if d.Target == "" {
		d.Target = "local"
	}
	if req.Policy != nil {
		p, err := policy.Parse(*req.Policy)
		if err != nil {
			return badRequest(err.Error())
		}
		d.Policy = p
	}
	if err := d.Validate(); err != nil {
		return badRequest(err.Error())
	}
	if err := s.checkTargets(d); err != nil {
		return err
	}
	created, err := s.opts.Store.CreateDataset(r.Context(), d, actor(r))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, DatasetResponse{Dataset: created})
	return nil
}

// checkTargets refuses a dataset or policy that names an unknown storage target.
func (s *Server) checkTargets(d catalog.Dataset) error {
	if _, err := s.opts.Targets.Get(d.Target); err != nil {
		return badRequest("target: " + err.Error() + addTargetHint(d.Target, err))
	}
	if e := d.Policy.Export; e != nil && e.Target != "" {
		if _, err := s.opts.Targets.Get(e.Target); err != nil {
			return badRequest("policy.export.target: " + err.Error() + addTargetHint(e.Target, err))
		}
	}
	return nil
}

// addTargetHint says how an operator adds the storage target name, when err
// is about an unknown one.
func addTargetHint(name string, err error) string {
	if !errors.Is(err, storage.ErrUnknownTarget) || catalog.ValidateName("target", name) != nil {
		return ""
	}
	return fmt.Sprintf("; to add it, start the server with TIMESTORE_TARGET_%s=<url> (s3://bucket/prefix?… or file:///dir) "+
		"or under targets: in its config file (see docs/configuration.md)", strings.ToUpper(name))
}

func (s *Server) listDatasets(w http.ResponseWriter, r *http.Request) error {
	ds, err := s.opts.Store.ListDatasets(r.Context())
	if err != nil {
		return err
	}
	out := make([]DatasetResponse, 0, len(ds))
	for _, d := range ds {
		totals, err := s.opts.Store.DatasetTotals(r.Context(), d.ID)
		if err != nil {
			return err
		}
		out = append(out, DatasetResponse{Dataset: d, Totals: totals})
	}
	writeJSON(w, http.StatusOK, map[string]any{"datasets": out})
	return nil
}

// pathDataset validates the {name} path segment.
func pathDataset(r *http.Request) (string, error) {
	name := r.PathValue("name")
	if err := catalog.ValidateName("dataset", name); err != nil {
		return "", badRequest(err.Error())
	}
	return name, nil
}

func (s *Server) getDataset(w http.ResponseWriter, r *http.Request) error {
	name, err := pathDataset(r)
	if err != nil {
		return err
	}
	d, err := s.opts.Store.GetDataset(r.Context(), name)
	if err != nil {
		return err
	}
	totals, err := s.opts.Store.DatasetTotals(r.Context(), d.ID)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, DatasetResponse{Dataset: d, Totals: totals})
	return nil
}

// patchDataset replaces the policy. The body is {"policy": {...}}.
func (s *Server) patchDataset(w http.ResponseWriter, r *http.Request) error {
	name, err := pathDataset(r)
	if err != nil {
		return err
	}
	var req struct {
		Policy *json.RawMessage `json:"policy"`
	}
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	if req.Policy == nil {
		return badRequest(`body must be {"policy": {...}}`)
	}
	p, err := policy.Parse(*req.Policy)
	if err != nil {
		return badRequest(err.Error())
	}
	d, err := s.opts.Store.GetDataset(r.Context(), name)
	if err != nil {
		return err
	}
	d.Policy = p
	if err := s.checkTargets(d); err != nil {
		return err
	}
	updated, err := s.opts.Store.UpdatePolicy(r.Context(), name, p, actor(r))
	if err != nil {
		return err
	}
	totals, err := s.opts.Store.DatasetTotals(r.Context(), updated.ID)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, DatasetResponse{Dataset: updated, Totals: totals})
	return nil
}

func (s *Server) deleteDataset(w http.ResponseWriter, r *http.Request) error {
	name, err := pathDataset(r)
	if err != nil {
		return err
	}
	if err := s.opts.Store.DeleteDataset(r.Context(), name, actor(r)); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]string{"deleted": name})
	return nil
}
