package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"

	"timestore/internal/catalog"
	"timestore/internal/engine"
)

// Error codes in {"error":{"code","message"}}.
const (
	CodeBadRequest       = "bad_request"
	CodeInvalidInput     = "invalid_input"
	CodeInvalidSQL       = "invalid_sql"
	CodeUnauthorized     = "unauthorized"
	CodeForbidden        = "forbidden"
	CodeNotFound         = "not_found"
	CodeConflict         = "conflict"
	CodeTooLarge         = "body_too_large"
	CodeUnsupportedMedia = "unsupported_media_type"
	CodeTimeout          = "timeout"
	CodeInternal         = "internal"
)

// httpError is an error with the status and code it is answered with.
type httpError struct {
	status int
	code   string
	msg    string
}

func (e *httpError) Error() string { return e.msg }

func badRequest(msg string) error { return &httpError{http.StatusBadRequest, CodeBadRequest, msg} }

// ErrorBody is the JSON shape of every error answer.
type ErrorBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
		Row     int64  `json:"row,omitempty"`
		Column  string `json:"column,omitempty"`
	} `json:"error"`
}

// classify maps an error to its status and body. Internal errors are logged
// and answered with a generic message.
func classify(err error) (int, ErrorBody) {
	var body ErrorBody
	set := func(status int, code, msg string) (int, ErrorBody) {
		body.Error.Code, body.Error.Message = code, msg
		return status, body
	}
	var he *httpError
	var ie *engine.InputError
	var se *engine.SQLError
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &he):
		return set(he.status, he.code, he.msg)
	case errors.As(err, &mbe):
		return set(http.StatusRequestEntityTooLarge, CodeTooLarge, "request body is larger than the limit of "+strconv.FormatInt(mbe.Limit, 10)+" bytes")
	case errors.As(err, &ie):
		body.Error.Row, body.Error.Column = ie.Row, ie.Column
		return set(http.StatusBadRequest, CodeInvalidInput, ie.Error())
	case errors.Is(err, catalog.ErrInvalid):
		return set(http.StatusBadRequest, CodeBadRequest, err.Error())
	case errors.Is(err, catalog.ErrNotFound):
		return set(http.StatusNotFound, CodeNotFound, err.Error())
	case errors.Is(err, catalog.ErrExists), errors.Is(err, catalog.ErrConflict), errors.Is(err, catalog.ErrIdempotencyMismatch):
		return set(http.StatusConflict, CodeConflict, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return set(http.StatusGatewayTimeout, CodeTimeout, "the request took longer than its time limit")
	case errors.As(err, &se):
		return set(http.StatusBadRequest, CodeInvalidSQL, se.Error())
	default:
		return set(http.StatusInternalServerError, CodeInternal, "internal error; see the server log")
	}
}

// DatasetNotFoundHint is what a "dataset not found" answer suggests.
const DatasetNotFoundHint = `list datasets with "timestore dataset list" (GET /v1/datasets)`

// datasetNotFound is the answer about a dataset that does not exist.
func datasetNotFound(name string) error {
	return &httpError{http.StatusNotFound, CodeNotFound, fmt.Sprintf("dataset %q not found: %s", name, DatasetNotFoundHint)}
}

// explainNotFound turns a catalog "not found" about the dataset a request
// names (in its path, or dataset in its body) into a message a user can act
// on, instead of the catalog's internal wording ("snapshot dataset "x": not
// found"). Other "not found" errors (a partition, a version) are left alone:
// the dataset is looked up to tell which it is.
func (s *Server) explainNotFound(r *http.Request, err error, dataset string) error {
	if !errors.Is(err, catalog.ErrNotFound) || dataset == "" || s.opts.Store == nil {
		return err
	}
	if _, gerr := s.opts.Store.GetDataset(r.Context(), dataset); errors.Is(gerr, catalog.ErrNotFound) {
		return datasetNotFound(dataset)
	}
	return err
}

func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	err = s.explainNotFound(r, err, r.PathValue("name"))
	status, body := classify(err)
	switch {
	case status < 500:
	case r.Context().Err() != nil:
		// The client went away (or the server is shutting down): nothing
		// to alert on.
		s.log.WarnContext(r.Context(), "request abandoned", "method", r.Method, "path", r.URL.Path, "error", err)
	case status == http.StatusGatewayTimeout:
		// A query or request that ran into its own time limit.
		s.log.WarnContext(r.Context(), "request timed out", "method", r.Method, "path", r.URL.Path, "error", err)
	default:
		s.log.ErrorContext(r.Context(), "request failed", "method", r.Method, "path", r.URL.Path, "error", err)
	}
	writeJSON(w, status, body)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	if err := enc.Encode(v); err != nil {
		slog.Debug("write response", "error", err)
	}
}
