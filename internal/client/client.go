// Package client is a small Go client for timestore's HTTP API, used by the
// CLI and by end-to-end tests.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Client talks to one timestore server.
type Client struct {
	// BaseURL is the server, e.g. http://127.0.0.1:8080.
	BaseURL string
	// Token is sent as a bearer token when set.
	Token string
	// HTTP defaults to a client without an overall timeout (queries and
	// ingests may be long); bound calls with ctx.
	HTTP *http.Client
}

// New returns a client for baseURL; a URL without a scheme
// ("127.0.0.1:8080") means http:// (see ServerURL).
func New(baseURL, token string) *Client {
	if u, err := ServerURL(baseURL); err == nil {
		baseURL = u
	}
	return &Client{BaseURL: strings.TrimRight(baseURL, "/"), Token: token, HTTP: &http.Client{}}
}

// ServerURL checks and completes a server address: "127.0.0.1:8080" or
// "localhost:8080" (no scheme) means "http://…"; a scheme other than http
// or https, a missing host, or a query or fragment is an error saying what
// is expected.
func ServerURL(s string) (string, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return "", errors.New("server address is empty: want a URL such as http://127.0.0.1:8080")
	}
	if !strings.Contains(s, "://") {
		s = "http://" + s
	}
	u, err := url.Parse(s)
	if err != nil {
		return "", fmt.Errorf("server address %q: %v; want a URL such as http://127.0.0.1:8080", s, errors.Unwrap(err))
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return "", fmt.Errorf("server address %q: scheme %q is not http or https; want a URL such as http://127.0.0.1:8080", s, u.Scheme)
	case u.Host == "":
		return "", fmt.Errorf("server address %q has no host; want a URL such as http://127.0.0.1:8080", s)
	case u.RawQuery != "" || u.Fragment != "":
		return "", fmt.Errorf("server address %q: a query or fragment is not allowed; want a URL such as http://127.0.0.1:8080", s)
	}
	return strings.TrimRight(s, "/"), nil
}

// Error is an error answered by the server.
type Error struct {
	Status  int
	Code    string `json:"code"`
	Message string `json:"message"`
	Row     int64  `json:"row,omitempty"`
	Column  string `json:"column,omitempty"`
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s (HTTP %d %s)", e.Message, e.Status, e.Code)
}

// UnreachableError reports that no server answered at URL: nothing
// listens there, or the name does not resolve.
type UnreachableError struct {
	URL string
	Err error
}

func (e *UnreachableError) Error() string {
	return fmt.Sprintf("cannot reach the timestore server at %s: %v", e.URL, e.Err)
}

func (e *UnreachableError) Unwrap() error { return e.Err }

// IsClientError reports whether err is a 4xx answer (the caller's mistake).
func IsClientError(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Status >= 400 && e.Status < 500
}

// Do sends a request and decodes a JSON answer into out (when non-nil).
// body may be nil, an io.Reader or a value encoded as JSON.
func (c *Client) Do(ctx context.Context, method, path string, headers http.Header, body any, out any) error {
	resp, err := c.Raw(ctx, method, path, headers, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		_, err = io.Copy(io.Discard, resp.Body)
		return err
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("decode answer of %s %s: %w", method, path, err)
	}
	return nil
}

// Raw sends a request and returns the response for a 2xx status; otherwise
// it returns *Error. The caller closes the body.
func (c *Client) Raw(ctx context.Context, method, path string, headers http.Header, body any) (*http.Response, error) {
	var rd io.Reader
	ctype := ""
	switch b := body.(type) {
	case nil:
	case io.Reader:
		rd = b
	default:
		buf, err := json.Marshal(b)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(buf)
		ctype = "application/json"
	}
	req, err := http.NewRequestWithContext(ctx, method, c.BaseURL+path, rd)
	if err != nil {
		return nil, err
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	for k, vs := range headers {
		req.Header[k] = vs
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return nil, &UnreachableError{URL: c.BaseURL, Err: op.Err}
	}
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, c.BaseURL+path, err)
	}
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return resp, nil
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	var eb struct {
		Error Error `json:"error"`
	}
	e := &eb.Error
	if json.Unmarshal(raw, &eb) != nil || e.Message == "" {
		e.Message = strings.TrimSpace(string(raw))
		if e.Message == "" {
			e.Message = http.StatusText(resp.StatusCode)
		}
	}
	e.Status = resp.StatusCode
	return nil, e
}

// Column is a dataset column.
type Column struct {
	Name string `json:"name"`
	Type string `json:"type"`
}

// Dataset is what the server reports of a dataset.
type Dataset struct {
	Name            string          `json:"name"`
	Columns         []Column        `json:"columns"`
	TimeColumn      string          `json:"time_column"`
	Partition       string          `json:"partition"`
	Target          string          `json:"target"`
	Policy          json.RawMessage `json:"policy,omitempty"`
	ManifestVersion int64           `json:"manifest_version"`
	CreatedAt       time.Time       `json:"created_at"`
	Totals          struct {
		Partitions int64 `json:"partitions"`
		Rows       int64 `json:"rows"`
		Bytes      int64 `json:"bytes"`
	} `json:"totals"`
}

// CreateDataset is the body of a dataset creation.
type CreateDataset struct {
	Name       string          `json:"name"`
	Columns    []Column        `json:"columns"`
	TimeColumn string          `json:"time_column"`
	Partition  string          `json:"partition,omitempty"`
	Target     string          `json:"target,omitempty"`
	Policy     json.RawMessage `json:"policy,omitempty"`
}

// CreateDataset creates a dataset.
func (c *Client) CreateDataset(ctx context.Context, req CreateDataset) (Dataset, error) {
	var d Dataset
	err := c.Do(ctx, http.MethodPost, "/v1/datasets", nil, req, &d)
	return d, err
}

// GetDataset returns a dataset with its totals.
func (c *Client) GetDataset(ctx context.Context, name string) (Dataset, error) {
	var d Dataset
	err := c.Do(ctx, http.MethodGet, "/v1/datasets/"+url.PathEscape(name), nil, nil, &d)
	return d, err
}

// ListDatasets lists datasets.
func (c *Client) ListDatasets(ctx context.Context) ([]Dataset, error) {
	var out struct {
		Datasets []Dataset `json:"datasets"`
	}
	err := c.Do(ctx, http.MethodGet, "/v1/datasets", nil, nil, &out)
	return out.Datasets, err
}

// SetPolicy replaces a dataset's policy with the JSON document policy.
func (c *Client) SetPolicy(ctx context.Context, name string, policy json.RawMessage) (Dataset, error) {
	var d Dataset
	err := c.Do(ctx, http.MethodPatch, "/v1/datasets/"+url.PathEscape(name), nil, map[string]json.RawMessage{"policy": policy}, &d)
	return d, err
}

// DeleteDataset deletes a dataset.
func (c *Client) DeleteDataset(ctx context.Context, name string) error {
	return c.Do(ctx, http.MethodDelete, "/v1/datasets/"+url.PathEscape(name), nil, nil, nil)
}

// IngestResult is the answer of an ingest.
type IngestResult struct {
	RowsWritten       int64 `json:"rows_written"`
	PartitionsWritten int64 `json:"partitions_written"`
	ManifestVersion   int64 `json:"manifest_version"`
	Replayed          bool  `json:"replayed,omitempty"`
}

// ContentTypes maps an ingest format name to its Content-Type.
var ContentTypes = map[string]string{
	"csv":    "text/csv",
	"ndjson": "application/x-ndjson",
	"json":   "application/json",
}

// Ingest sends rows in format (csv, ndjson or json).
func (c *Client) Ingest(ctx context.Context, name, format string, body io.Reader, idempotencyKey string) (IngestResult, error) {
	ct, ok := ContentTypes[format]
	if !ok {
		return IngestResult{}, fmt.Errorf("unknown format %q: want csv, ndjson or json", format)
	}
	h := http.Header{"Content-Type": {ct}}
	if idempotencyKey != "" {
		h.Set("Idempotency-Key", idempotencyKey)
	}
	var res IngestResult
	err := c.Do(ctx, http.MethodPost, "/v1/datasets/"+url.PathEscape(name)+"/rows", h, body, &res)
	return res, err
}

// QueryRequest is a query.
type QueryRequest struct {
	SQL  string `json:"sql"`
	From string `json:"from,omitempty"`
	To   string `json:"to,omitempty"`
}

// QueryResult is a whole JSON query answer.
type QueryResult struct {
	Columns     []string `json:"columns"`
	ColumnTypes []string `json:"column_types"`
	Rows        [][]any  `json:"rows"`
	RowCount    int64    `json:"row_count"`
	Error       *Error   `json:"error,omitempty"`
}

// Query runs a query and decodes the whole answer (numbers as json.Number).
func (c *Client) Query(ctx context.Context, name string, q QueryRequest) (QueryResult, error) {
	resp, err := c.Raw(ctx, http.MethodPost, "/v1/datasets/"+url.PathEscape(name)+"/query", http.Header{"Accept": {"application/json"}}, q)
	if err != nil {
		return QueryResult{}, err
	}
	defer resp.Body.Close()
	var out QueryResult
	dec := json.NewDecoder(resp.Body)
	dec.UseNumber()
	if err := dec.Decode(&out); err != nil {
		return out, fmt.Errorf("decode query answer: %w", err)
	}
	if out.Error != nil {
		out.Error.Status = resp.StatusCode
		return out, out.Error
	}
	return out, nil
}

// QueryCSV runs a query and returns the CSV answer's body; the caller closes it.
// A query that fails after the answer began ends the body with an error
// (*Error, Status 200) instead of io.EOF: the server reports such a failure
// in the Timestore-Error trailer, after rows that are then incomplete.
func (c *Client) QueryCSV(ctx context.Context, name string, q QueryRequest) (io.ReadCloser, error) {
	resp, err := c.Raw(ctx, http.MethodPost, "/v1/datasets/"+url.PathEscape(name)+"/query", http.Header{"Accept": {"text/csv"}}, q)
	if err != nil {
		return nil, err
	}
	return trailerChecked{resp}, nil
}

// trailerChecked reads a streamed answer and turns its Timestore-Error
// trailer, which is known once the body is read to its end, into an error.
type trailerChecked struct{ resp *http.Response }

func (t trailerChecked) Read(p []byte) (int, error) {
	n, err := t.resp.Body.Read(p)
	if errors.Is(err, io.EOF) {
		if msg := t.resp.Trailer.Get("Timestore-Error"); msg != "" {
			return n, &Error{Status: t.resp.StatusCode, Code: t.resp.Trailer.Get("Timestore-Error-Code"),
				Message: "the query failed after its answer began (the rows before are incomplete): " + msg}
		}
	}
	return n, err
}

func (t trailerChecked) Close() error { return t.resp.Body.Close() }

// Partition is one entry of a partition listing.
type Partition struct {
	ID          int64     `json:"id"`
	WindowStart time.Time `json:"window_start"`
	TimeMin     time.Time `json:"time_min"`
	TimeMax     time.Time `json:"time_max"`
	RowCount    int64     `json:"row_count"`
	SizeBytes   int64     `json:"size_bytes"`
	Target      string    `json:"target"`
	Key         string    `json:"key"`
	Checksum    string    `json:"checksum"`
	Level       int       `json:"level"`
	State       string    `json:"state"`
}

// Partitions lists a dataset's partitions in state (live, removed, purged, all).
func (c *Client) Partitions(ctx context.Context, name, state string) ([]Partition, error) {
	var out struct {
		Partitions []Partition `json:"partitions"`
	}
	path := "/v1/datasets/" + url.PathEscape(name) + "/partitions"
	if state != "" {
		path += "?state=" + url.QueryEscape(state)
	}
	err := c.Do(ctx, http.MethodGet, path, nil, nil, &out)
	return out.Partitions, err
}
