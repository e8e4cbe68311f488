package api

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"math"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"timestore/internal/catalog"
	"timestore/internal/engine"
	"timestore/internal/ingest"
	"timestore/internal/query"
)

// formatOf maps a request's Content-Type to an ingest format.
func formatOf(r *http.Request) (engine.Format, error) {
	ct := r.Header.Get("Content-Type")
	if ct == "" {
		return "", &httpError{http.StatusUnsupportedMediaType, CodeUnsupportedMedia,
			"Content-Type is required: text/csv, application/x-ndjson or application/json"}
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return "", &httpError{http.StatusUnsupportedMediaType, CodeUnsupportedMedia, fmt.Sprintf("invalid Content-Type %q", ct)}
	}
	switch mt {
	case "text/csv":
		return engine.FormatCSV, nil
	case "application/x-ndjson", "application/ndjson", "application/jsonl", "application/x-jsonlines":
		return engine.FormatNDJSON, nil
	case "application/json":
		return engine.FormatJSON, nil
	}
	return "", &httpError{http.StatusUnsupportedMediaType, CodeUnsupportedMedia,
		fmt.Sprintf("unsupported Content-Type %q: want text/csv, application/x-ndjson or application/json", mt)}
}

const maxIdempotencyKey = 255

func (s *Server) ingestRows(w http.ResponseWriter, r *http.Request) error {
	name, err := pathDataset(r)
	if err != nil {
		return err
	}
	format, err := formatOf(r)
	if err != nil {
		return err
	}
	key := r.Header.Get("Idempotency-Key")
	if len(key) > maxIdempotencyKey {
		return badRequest(fmt.Sprintf("Idempotency-Key is longer than %d bytes", maxIdempotencyKey))
	}
	res, err := s.opts.Ingest.Ingest(r.Context(), ingest.Request{
		Dataset:        name,
		Format:         format,
		Body:           requestBody(w, r, s.opts.MaxBodyBytes),
		IdempotencyKey: key,
		Actor:          actor(r),
	})
	if err != nil {
		return err
	}
	if res.Replayed {
		w.Header().Set("Idempotent-Replayed", "true")
	}
	writeJSON(w, http.StatusOK, res)
	return nil
}

// QueryRequest is the body of POST /v1/datasets/{name}/query.
type QueryRequest struct {
	SQL  string `json:"sql"`
	From string `json:"from,omitempty"`
	To   string `json:"to,omitempty"`
}

// ParseTime accepts RFC 3339 (with or without fraction), "2006-01-02T15:04:05"
// (UTC) and "2006-01-02" (UTC midnight).
func ParseTime(s string) (time.Time, error) {
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05", "2006-01-02 15:04:05", "2006-01-02"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, fmt.Errorf("invalid time %q: use RFC 3339, e.g. 2024-05-01T00:00:00Z, or a date 2024-05-01", s)
}

func optTime(field, s string) (*time.Time, error) {
	if s == "" {
		return nil, nil
	}
	t, err := ParseTime(s)
	if err != nil {
		return nil, badRequest(field + ": " + err.Error())
	}
	return &t, nil
}

func (s *Server) query(w http.ResponseWriter, r *http.Request) error {
	name, err := pathDataset(r)
	if err != nil {
		return err
	}
	var req QueryRequest
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	if strings.TrimSpace(req.SQL) == "" {
		return badRequest("sql: required")
	}
	from, err := optTime("from", req.From)
	if err != nil {
		return err
	}
	to, err := optTime("to", req.To)
	if err != nil {
		return err
	}
	if from != nil && to != nil && !from.Before(*to) {
		return badRequest(fmt.Sprintf("from (%s) must be before to (%s): the range [from, to) is empty", from.Format(time.RFC3339Nano), to.Format(time.RFC3339Nano)))
	}
	asCSV := false
	if acc := r.Header.Get("Accept"); acc != "" {
		for _, part := range strings.Split(acc, ",") {
			mt, _, _ := mime.ParseMediaType(strings.TrimSpace(part))
			if mt == "text/csv" {
				asCSV = true
				break
			}
			if mt == "application/json" || mt == "*/*" || mt == "application/*" {
				break
			}
		}
	}
	// The query's own timeout bounds producing the answer; this bounds
	// delivering it to a client that stops reading.
	_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(s.opts.QueryTimeout + queryWriteGrace))
	res, err := s.opts.Query.Run(r.Context(), query.Request{Dataset: name, SQL: req.SQL, From: from, To: to})
	if err != nil {
		return err
	}
	defer res.Close()
	// Fetch the first row before answering, so that most errors still get a
	// proper status; a later error ends the stream with an error marker.
	hasRow := res.Next()
	if !hasRow && res.Err() != nil {
		return res.Err()
	}
	w.Header().Set("Timestore-Manifest-Version", strconv.FormatInt(res.Version, 10))
	w.Header().Set("Timestore-Partitions-Scanned", strconv.Itoa(res.Partitions))
	stream := s.streamJSON
	if asCSV {
		stream = s.streamCSV
	}
	// The status is sent: a failure now is the client's connection (it went
	// away, or stopped reading past the write deadline), not a server error.
	if err := stream(w, res, hasRow); err != nil {
		s.log.WarnContext(r.Context(), "query answer not delivered", "dataset", name, "error", err)
	}
	return nil
}

func (s *Server) streamJSON(w http.ResponseWriter, res *query.Result, hasRow bool) error {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	cols := res.Columns()
	names := make([]string, len(cols))
	types := make([]string, len(cols))
	for i, c := range cols {
		names[i], types[i] = c.Name, c.Type
	}
	bw := newFlushWriter(w)
	hn, _ := json.Marshal(names)
	ht, _ := json.Marshal(types)
	fmt.Fprintf(bw, `{"columns":%s,"column_types":%s,"rows":[`, hn, ht)
	n := 0
	for ok := hasRow; ok; ok = res.Next() {
		if n > 0 {
			bw.WriteString(",")
		}
		bw.WriteString("[")
		for i, v := range res.Values() {
			if i > 0 {
				bw.WriteString(",")
			}
			bw.Write(jsonValue(v))
		}
		bw.WriteString("]")
		n++
	}
	bw.WriteString("]")
	if err := res.Err(); err != nil {
		_, body := classify(err)
		b, _ := json.Marshal(body.Error)
		fmt.Fprintf(bw, `,"error":%s`, b)
		s.log.Warn("query failed while streaming", "rows_sent", n, "error", err)
	}
	fmt.Fprintf(bw, `,"row_count":%d}`+"\n", n)
	return bw.Flush()
}

func jsonValue(v any) []byte {
	switch x := v.(type) {
	case nil:
		return []byte("null")
	case time.Time:
		return []byte(`"` + x.UTC().Format(time.RFC3339Nano) + `"`)
	case float64:
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return []byte("null")
		}
		return strconv.AppendFloat(nil, x, 'g', -1, 64)
	case float32:
		return jsonValue(float64(x))
	}
	b, err := json.Marshal(v)
	if err != nil {
		b, _ = json.Marshal(fmt.Sprint(v))
	}
	return b
}

func csvValue(v any) string {
	switch x := v.(type) {
	case nil:
		return ""
	case time.Time:
		return x.UTC().Format(time.RFC3339Nano)
	case string:
		return x
	case float64:
		return strconv.FormatFloat(x, 'g', -1, 64)
	case []byte:
		return string(x)
	}
	return strings.Trim(string(jsonValue(v)), `"`)
}

func (s *Server) streamCSV(w http.ResponseWriter, res *query.Result, hasRow bool) error {
	w.Header().Set("Content-Type", "text/csv; charset=utf-8")
	w.Header().Set("Trailer", "Timestore-Error, Timestore-Error-Code")
	w.WriteHeader(http.StatusOK)
	bw := newFlushWriter(w)
	cw := csv.NewWriter(bw)
	cols := res.Columns()
	rec := make([]string, len(cols))
	for i, c := range cols {
		rec[i] = c.Name
	}
	cw.Write(rec)
	for ok := hasRow; ok; ok = res.Next() {
		for i, v := range res.Values() {
			rec[i] = csvValue(v)
		}
		cw.Write(rec)
	}
	cw.Flush()
	if err := res.Err(); err != nil {
		_, body := classify(err)
		w.Header().Set("Timestore-Error", body.Error.Message)
		w.Header().Set("Timestore-Error-Code", body.Error.Code)
		s.log.Warn("query failed while streaming", "error", err)
	}
	return bw.Flush()
}

// PartitionInfo is one entry of GET /v1/datasets/{name}/partitions.
type PartitionInfo struct {
	ID               int64                 `json:"id"`
	WindowStart      time.Time             `json:"window_start"`
	TimeMin          time.Time             `json:"time_min"`
	TimeMax          time.Time             `json:"time_max"`
	RowCount         int64                 `json:"row_count"`
	SizeBytes        int64                 `json:"size_bytes"`
	Target           string                `json:"target"`
	Key              string                `json:"key"`
	Checksum         string                `json:"checksum"`
	Level            int                   `json:"level"`
	State            string                `json:"state"`
	NoCompact        bool                  `json:"no_compact"`
	AddedInVersion   int64                 `json:"added_in_version"`
	RemovedInVersion *int64                `json:"removed_in_version,omitempty"`
	RemovedAt        *time.Time            `json:"removed_at,omitempty"`
	PurgedAt         *time.Time            `json:"purged_at,omitempty"`
	Stats            []catalog.ColumnStats `json:"stats,omitempty"`
}

func (s *Server) listPartitions(w http.ResponseWriter, r *http.Request) error {
	name, err := pathDataset(r)
	if err != nil {
		return err
	}
	state := r.URL.Query().Get("state")
	switch state {
	case "":
		state = catalog.StateLive
	case catalog.StateLive, catalog.StateRemoved, catalog.StatePurged, "all":
	default:
		return badRequest(fmt.Sprintf("state: %q is not live, removed, purged or all", state))
	}
	parts, err := s.opts.Store.Partitions(r.Context(), name, state)
	if err != nil {
		return err
	}
	out := make([]PartitionInfo, len(parts))
	for i, p := range parts {
		out[i] = PartitionInfo{
			ID: p.ID, WindowStart: p.WindowStart, TimeMin: p.TimeMin, TimeMax: p.TimeMax, RowCount: p.RowCount,
			SizeBytes: p.SizeBytes, Target: p.Target, Key: p.Key, Checksum: p.Checksum, Level: p.Level,
			State: p.State(), NoCompact: p.NoCompact, AddedInVersion: p.AddedInVersion,
			RemovedInVersion: p.RemovedInVersion, RemovedAt: p.RemovedAt, PurgedAt: p.PurgedAt, Stats: p.Stats,
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"partitions": out})
	return nil
}
