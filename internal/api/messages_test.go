package api

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"timestore/internal/catalog"
	"timestore/internal/storage"
	"timestore/internal/testutil/pgtest"
)

// TestErrorMessagesSayWhatToDo: the answers a new user meets first name
// what was wrong and what to do instead, with unchanged error codes.
func TestErrorMessagesSayWhatToDo(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	store := pgtest.NewStore(t)
	targets, err := storage.NewTargets(ctx, t.TempDir(), nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = targets.Close() })
	_, err = store.CreateDataset(ctx, catalog.Dataset{
		Name: "cpu", Columns: []catalog.Column{{Name: "ts", Type: catalog.TypeTimestamp}},
		TimeColumn: "ts", Partition: catalog.WindowDay, Target: "local",
	}, "test")
	require.NoError(t, err)
	day := time.Date(2024, 3, 1, 0, 0, 0, 0, time.UTC)
	_, err = store.Commit(ctx, catalog.Change{Dataset: "cpu", Operation: catalog.OpIngest, Actor: "test", Add: []catalog.PartitionFile{
		{WindowStart: day, TimeMin: day, TimeMax: day.Add(time.Hour), RowCount: 3, SizeBytes: 30, Target: "local", Key: "cpu/a.parquet", Checksum: "sha256:00"},
	}})
	require.NoError(t, err)
	srv := New(Options{Store: store, Targets: targets, Registerer: prometheus.NewRegistry(), Token: "user-token", AdminToken: "admin-token", AdminEnabled: true})
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)

	call := func(method, path, token, body string) (int, ErrorBody, string) {
		t.Helper()
		req, err := http.NewRequestWithContext(ctx, method, hs.URL+path, strings.NewReader(body))
		require.NoError(t, err)
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := hs.Client().Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		raw, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		var eb ErrorBody
		_ = json.Unmarshal(raw, &eb)
		return resp.StatusCode, eb, string(raw)
	}

	// An unknown dataset, whichever route names it (the admin routes that
	// need the job service: internal/cli's TestCLIFirstHourMessages).
	for _, c := range []struct{ method, path, token, body string }{
		{"GET", "/v1/datasets/nope", "user-token", ""},
		{"DELETE", "/v1/datasets/nope", "user-token", ""},
		{"PATCH", "/v1/datasets/nope", "user-token", `{"policy":{}}`},
		{"GET", "/v1/datasets/nope/partitions", "user-token", ""},
	} {
		status, eb, raw := call(c.method, c.path, c.token, c.body)
		require.Equal(t, http.StatusNotFound, status, "%s %s: %s", c.method, c.path, raw)
		require.Equal(t, CodeNotFound, eb.Error.Code, raw)
		require.Equal(t, `dataset "nope" not found: list datasets with "timestore dataset list" (GET /v1/datasets)`, eb.Error.Message, "%s %s", c.method, c.path)
	}
	// A "not found" about something else than the dataset keeps its own message.
	status, eb, raw := call("POST", "/admin/v1/datasets/cpu/partitions/no-compact", "admin-token", `{"partition_ids":[999999]}`)
	require.Equal(t, http.StatusNotFound, status, raw)
	require.Contains(t, eb.Error.Message, "999999")
	require.NotContains(t, eb.Error.Message, `dataset "cpu" not found`)

	// 401: how to pass the token.
	for _, tok := range []string{"", "wrong"} {
		status, eb, raw := call("GET", "/v1/datasets", tok, "")
		require.Equal(t, http.StatusUnauthorized, status, raw)
		require.Equal(t, CodeUnauthorized, eb.Error.Code)
		for _, want := range []string{"--token", "TIMESTORE_TOKEN", `"Authorization: Bearer TOKEN"`} {
			require.Contains(t, eb.Error.Message, want)
		}
		status, eb, raw = call("GET", "/admin/v1/jobs", tok, "")
		require.Equal(t, http.StatusUnauthorized, status, raw)
		for _, want := range []string{"TIMESTORE_ADMIN_TOKEN", "--token", `"Authorization: Bearer TOKEN"`} {
			require.Contains(t, eb.Error.Message, want)
		}
	}

	// An unknown storage target: the known ones and how to add one.
	status, eb, raw = call("POST", "/v1/datasets", "user-token", `{"name":"mem","columns":[{"name":"ts","type":"timestamp"}],"time_column":"ts","target":"cold"}`)
	require.Equal(t, http.StatusBadRequest, status, raw)
	require.Equal(t, CodeBadRequest, eb.Error.Code)
	for _, want := range []string{`target: unknown storage target "cold"`, "known targets: local", "TIMESTORE_TARGET_COLD=<url>", "docs/configuration.md"} {
		require.Contains(t, eb.Error.Message, want)
	}
	status, eb, raw = call("PATCH", "/v1/datasets/cpu", "user-token", `{"policy":{"export":{"target":"archive"}}}`)
	require.Equal(t, http.StatusBadRequest, status, raw)
	require.Contains(t, eb.Error.Message, `policy.export.target: unknown storage target "archive"`)
	require.Contains(t, eb.Error.Message, "TIMESTORE_TARGET_ARCHIVE=<url>")

	// A policy error names the field path (400, bad_request), and changes nothing.
	status, eb, raw = call("PATCH", "/v1/datasets/cpu", "user-token", `{"policy":{"retention":{"max_bytes":"10GB","max_age":"-5d"}}}`)
	require.Equal(t, http.StatusBadRequest, status, raw)
	require.Equal(t, CodeBadRequest, eb.Error.Code)
	require.Contains(t, eb.Error.Message, `policy.retention.max_age: invalid duration "-5d"`)
	require.Contains(t, eb.Error.Message, `write "5d"`)
	d, err := store.GetDataset(ctx, "cpu")
	require.NoError(t, err)
	require.Nil(t, d.Policy.Retention)

	// The list of datasets carries each one's totals.
	status, _, raw = call("GET", "/v1/datasets", "user-token", "")
	require.Equal(t, http.StatusOK, status, raw)
	var list struct {
		Datasets []DatasetResponse `json:"datasets"`
	}
	require.NoError(t, json.Unmarshal([]byte(raw), &list))
	require.Len(t, list.Datasets, 1)
	require.Equal(t, catalog.Totals{Partitions: 1, Rows: 3, Bytes: 30}, list.Datasets[0].Totals)
}
