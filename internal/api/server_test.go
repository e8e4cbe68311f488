package api_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"timestore/internal/catalog"
	"timestore/internal/client"
	"timestore/internal/testutil/s3test"
	"timestore/internal/testutil/testserver"
)

func TestMain(m *testing.M) {
	s3test.SetCredentialsEnv()
	os.Exit(m.Run())
}

func TestRoundTrip(t *testing.T) {
	t.Parallel()
	for _, target := range []string{"local", "remote"} {
		t.Run(target, func(t *testing.T) {
			t.Parallel()
			b := testserver.Start(t, testserver.Options{S3: target == "remote"})
			ctx := context.Background()
			start := time.Date(2024, 5, 1, 22, 0, 0, 0, time.UTC)
			for i, format := range []string{"csv", "ndjson", "json"} {
				name := "cpu_" + format
				b.CreateCPU(t, name, target, "day")
				// 3000 rows, 1 minute apart: spans 3 days from 22:00.
				rows := testserver.GenRows(3000, start.Add(time.Duration(i)*time.Hour), time.Minute)
				res, err := b.Client.Ingest(ctx, name, format, strings.NewReader(testserver.Encode(format, rows)), "")
				require.NoError(t, err)
				require.EqualValues(t, len(rows), res.RowsWritten)
				require.EqualValues(t, 1, res.ManifestVersion)
				testserver.RequireAggregates(t, testserver.Expected(rows), b.Aggregates(t, name, "", ""))

				// Time pruning: [from, to) picks exactly the rows in range.
				from, to := start.Add(24*time.Hour), start.Add(30*time.Hour)
				var in []testserver.Row
				for _, r := range rows {
					if !r.TS.Before(from) && r.TS.Before(to) {
						in = append(in, r)
					}
				}
				testserver.RequireAggregates(t, testserver.Expected(in), b.Aggregates(t, name, from.Format(time.RFC3339), to.Format(time.RFC3339)))

				parts, err := b.Client.Partitions(ctx, name, "live")
				require.NoError(t, err)
				for _, p := range parts {
					require.Equal(t, target, p.Target)
				}
			}
		})
	}
}

func TestWindowsSplitIntoPartitions(t *testing.T) {
	t.Parallel()
	b := testserver.Start(t, testserver.Options{})
	ctx := context.Background()
	for _, tc := range []struct {
		partition string
		start     time.Time
		step      time.Duration
		n         int
		windows   int
	}{
		{"hour", time.Date(2024, 1, 1, 0, 30, 0, 0, time.UTC), 10 * time.Minute, 30, 6}, // 00:30 .. 05:20
		{"day", time.Date(2024, 1, 30, 12, 0, 0, 0, time.UTC), 6 * time.Hour, 12, 4},    // Jan 30 12:00 .. Feb 2 06:00
		{"month", time.Date(2023, 12, 31, 0, 0, 0, 0, time.UTC), 24 * time.Hour, 40, 3}, // Dec 31 .. Feb 8
	} {
		name := "w_" + tc.partition
		b.CreateCPU(t, name, "local", tc.partition)
		rows := testserver.GenRows(tc.n, tc.start, tc.step)
		_, err := b.Client.Ingest(ctx, name, "csv", strings.NewReader(testserver.Encode("csv", rows)), "")
		require.NoError(t, err)
		parts, err := b.Client.Partitions(ctx, name, "live")
		require.NoError(t, err)
		require.Len(t, parts, tc.windows, tc.partition)
		var total int64
		for _, p := range parts {
			ws := catalog.WindowStart(tc.partition, p.TimeMin)
			we := catalog.WindowEnd(tc.partition, ws)
			require.True(t, p.WindowStart.Equal(ws), "window start of %v", p)
			require.False(t, p.TimeMax.Before(p.TimeMin))
			require.True(t, p.TimeMax.Before(we), "partition %d crosses its window: %s >= %s", p.ID, p.TimeMax, we)
			// time bounds are exactly the rows of that window
			var in []testserver.Row
			for _, r := range rows {
				if !r.TS.Before(ws) && r.TS.Before(we) {
					in = append(in, r)
				}
			}
			e := testserver.Expected(in)
			require.EqualValues(t, e.Count, p.RowCount)
			require.True(t, e.TMin.Equal(p.TimeMin) && e.TMax.Equal(p.TimeMax), "bounds of partition %d: want %s..%s got %s..%s", p.ID, e.TMin, e.TMax, p.TimeMin, p.TimeMax)
			require.Contains(t, p.Key, name+"/")
			total += p.RowCount
		}
		require.EqualValues(t, tc.n, total)
	}
}

// state is what a bad request must leave unchanged.
type state struct {
	version int64
	rows    int64
	parts   int64
	objects []string
}

func datasetState(t *testing.T, b *testserver.Bundle, name string) state {
	t.Helper()
	d, err := b.Client.GetDataset(context.Background(), name)
	require.NoError(t, err)
	var objs []string
	root := filepath.Join(b.Server.Config.DataDir, "objects")
	require.NoError(t, filepath.WalkDir(root, func(path string, de os.DirEntry, err error) error {
		if err == nil && !de.IsDir() {
			objs = append(objs, path)
		}
		return nil
	}))
	return state{d.ManifestVersion, d.Totals.Rows, d.Totals.Partitions, objs}
}

func TestBadInputChangesNothing(t *testing.T) {
	t.Parallel()
	b := testserver.Start(t, testserver.Options{MaxBodyBytes: 64 << 10})
	ctx := context.Background()
	b.CreateCPU(t, "cpu", "local", "day")
	_, err := b.Client.Ingest(ctx, "cpu", "csv", strings.NewReader("ts,host,value\n2024-01-01T00:00:00Z,a,1\n"), "")
	require.NoError(t, err)
	before := datasetState(t, b, "cpu")

	post := func(ctype, body string) (int, client.Error) {
		req, _ := http.NewRequest(http.MethodPost, b.HTTP.URL+"/v1/datasets/cpu/rows", strings.NewReader(body))
		if ctype != "" {
			req.Header.Set("Content-Type", ctype)
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		var eb struct{ Error client.Error }
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&eb))
		return resp.StatusCode, eb.Error
	}
	big := "ts,host,value\n" + strings.Repeat("2024-01-01T00:00:00Z,a,1\n", 4000)
	for _, tc := range []struct {
		name, ctype, body string
		status            int
		contains          []string
		row               int64
		column            string
	}{
		{"wrong type csv", "text/csv", "ts,host,value\n2024-01-01T00:00:00Z,a,1\n2024-01-01T00:00:01Z,b,abc\n", 400, []string{"abc"}, 2, "value"},
		{"wrong type ndjson", "application/x-ndjson", `{"ts":"2024-01-01T00:00:00Z","host":"a","value":1}` + "\n" + `{"ts":"2024-01-01T00:00:00Z","host":"a","value":"x1"}` + "\n", 400, []string{"x1"}, 2, "value"},
		{"bad timestamp", "text/csv", "ts,host,value\nnot-a-time,a,1\n", 400, []string{"not-a-time"}, 1, "ts"},
		{"missing time column", "text/csv", "host,value\na,1\n", 400, []string{"ts"}, 0, "ts"},
		{"null time", "application/x-ndjson", `{"ts":"2024-01-01T00:00:00Z","host":"a"}` + "\n" + `{"host":"b","value":1}` + "\n", 400, []string{"ts"}, 2, "ts"},
		{"time column absent", "application/x-ndjson", `{"host":"a","value":1}` + "\n", 400, []string{"ts"}, 0, "ts"},
		{"unknown column csv", "text/csv", "ts,host,value,color\n2024-01-01T00:00:00Z,a,1,red\n", 400, []string{"color"}, 0, "color"},
		{"unknown column json", "application/json", `[{"ts":"2024-01-01T00:00:00Z","value":1},{"ts":"2024-01-01T00:00:00Z","colour":"x"}]`, 400, []string{"colour"}, 0, "colour"},
		{"malformed csv", "text/csv", "ts,host,value\n2024-01-01T00:00:00Z,a,1,5,6\n", 400, nil, 0, ""},
		{"malformed json", "application/json", `[{"ts":"2024-01-01T00:00:00Z",`, 400, nil, 0, ""},
		{"malformed ndjson", "application/x-ndjson", `{"ts":"2024-01-01T00:00:00Z"}` + "\n{oops\n", 400, nil, 0, ""},
		{"empty body", "text/csv", "", 400, []string{"empty"}, 0, ""},
		{"header only", "text/csv", "ts,host,value\n", 400, nil, 0, ""},
		{"too large", "text/csv", big, 413, []string{"limit"}, 0, ""},
		{"no content type", "", "x", 415, nil, 0, ""},
		{"unsupported type", "application/xml", "<x/>", 415, []string{"application/xml"}, 0, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, e := post(tc.ctype, tc.body)
			require.Equal(t, tc.status, status, "message: %s", e.Message)
			require.NotEmpty(t, e.Code)
			require.NotEmpty(t, e.Message)
			for _, c := range tc.contains {
				require.Contains(t, e.Message, c)
			}
			if tc.row != 0 {
				require.Equal(t, tc.row, e.Row, "row in %q", e.Message)
				require.Contains(t, e.Message, fmt.Sprintf("row %d", tc.row))
			}
			if tc.column != "" {
				require.Equal(t, tc.column, e.Column, "column in %q", e.Message)
			}
			require.Equal(t, before, datasetState(t, b, "cpu"), "bad input changed the dataset")
		})
	}

	// Names and unknown datasets.
	for _, tc := range []struct {
		method, path, body string
		status             int
	}{
		{"GET", "/v1/datasets/..%2Fx", "", 400},
		{"GET", "/v1/datasets/A%20B", "", 400},
		{"POST", "/v1/datasets/nope/rows", "ts\n2024-01-01T00:00:00Z\n", 404},
		{"GET", "/v1/datasets/nope", "", 404},
		{"POST", "/v1/datasets/nope/query", `{"sql":"SELECT 1"}`, 404},
		{"POST", "/v1/datasets", `{"name":"../x","columns":[{"name":"ts","type":"timestamp"}],"time_column":"ts"}`, 400},
		{"POST", "/v1/datasets", `{"name":"A B","columns":[{"name":"ts","type":"timestamp"}],"time_column":"ts"}`, 400},
		{"POST", "/v1/datasets", `{"name":"ok","columns":[{"name":"ts","type":"blob"}],"time_column":"ts"}`, 400},
		{"POST", "/v1/datasets", `{"name":"ok","columns":[{"name":"ts","type":"timestamp"}],"time_column":"ts","target":"nowhere"}`, 400},
		{"POST", "/v1/datasets", `{"name":"cpu","columns":[{"name":"ts","type":"timestamp"}],"time_column":"ts"}`, 409},
	} {
		req, _ := http.NewRequest(tc.method, b.HTTP.URL+tc.path, strings.NewReader(tc.body))
		if tc.body != "" {
			if strings.HasSuffix(tc.path, "/rows") {
				req.Header.Set("Content-Type", "text/csv")
			} else {
				req.Header.Set("Content-Type", "application/json")
			}
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		var eb struct{ Error client.Error }
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&eb))
		resp.Body.Close()
		require.Equal(t, tc.status, resp.StatusCode, "%s %s: %s", tc.method, tc.path, eb.Error.Message)
		require.NotEmpty(t, eb.Error.Message)
	}
	require.Equal(t, before, datasetState(t, b, "cpu"))
}

func TestSQLSandbox(t *testing.T) {
	t.Parallel()
	b := testserver.Start(t, testserver.Options{})
	ctx := context.Background()
	b.CreateCPU(t, "cpu", "local", "day")
	b.CreateCPU(t, "secret", "local", "day")
	_, err := b.Client.Ingest(ctx, "cpu", "csv", strings.NewReader("ts,host,value\n2024-01-01T00:00:00Z,a,1\n"), "")
	require.NoError(t, err)
	_, err = b.Client.Ingest(ctx, "secret", "csv", strings.NewReader("ts,host,value\n2024-01-01T00:00:00Z,password,42\n"), "")
	require.NoError(t, err)
	sp, err := b.Client.Partitions(ctx, "secret", "live")
	require.NoError(t, err)
	secretFile := filepath.Join(b.Server.Config.DataDir, "objects", sp[0].Key)
	_, err = os.Stat(secretFile)
	require.NoError(t, err)

	for _, sql := range []string{
		"SELECT * FROM read_csv('/etc/passwd')",
		"SELECT * FROM read_parquet('" + secretFile + "')",
		"SELECT * FROM secret",
		"ATTACH '/tmp/x.db' AS x",
		"COPY (SELECT 1) TO '/tmp/timestore-sandbox-escape.csv'",
		"INSTALL httpfs",
		"LOAD httpfs",
		"SET memory_limit='1GB'",
		"PRAGMA enable_profiling",
		"CREATE TABLE t AS SELECT 1",
		"SELECT 1; SELECT 2",
		"SELECT * FROM glob('/*')",
	} {
		_, err := b.Client.Query(ctx, "cpu", client.QueryRequest{SQL: sql})
		require.Error(t, err, sql)
		var ce *client.Error
		require.True(t, errors.As(err, &ce), "%s: %v", sql, err)
		require.Equal(t, 400, ce.Status, "%s: %s", sql, ce.Message)
		require.NotContains(t, ce.Message, "root:x:0:0", sql)
	}
	_, err = os.Stat("/tmp/timestore-sandbox-escape.csv")
	require.True(t, os.IsNotExist(err))
	res, err := b.Client.Query(ctx, "cpu", client.QueryRequest{SQL: "SELECT host, sum(value) FROM cpu GROUP BY host"})
	require.NoError(t, err)
	require.Equal(t, [][]any{{"a", json.Number("1")}}, res.Rows)
}

func TestIdempotencyKey(t *testing.T) {
	t.Parallel()
	b := testserver.Start(t, testserver.Options{})
	ctx := context.Background()
	b.CreateCPU(t, "cpu", "local", "day")
	body := testserver.Encode("csv", testserver.GenRows(100, time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC), time.Hour))
	first, err := b.Client.Ingest(ctx, "cpu", "csv", strings.NewReader(body), "batch-1")
	require.NoError(t, err)
	before := datasetState(t, b, "cpu")
	again, err := b.Client.Ingest(ctx, "cpu", "csv", strings.NewReader(body), "batch-1")
	require.NoError(t, err)
	require.True(t, again.Replayed)
	require.Equal(t, first.RowsWritten, again.RowsWritten)
	require.Equal(t, first.PartitionsWritten, again.PartitionsWritten)
	require.Equal(t, first.ManifestVersion, again.ManifestVersion)
	require.Equal(t, before, datasetState(t, b, "cpu"), "a replay wrote something")
	// Same key, other body: refused.
	_, err = b.Client.Ingest(ctx, "cpu", "csv", strings.NewReader(body+"2030-01-01T00:00:00Z,x,1\n"), "batch-1")
	var ce *client.Error
	require.ErrorAs(t, err, &ce)
	require.Equal(t, 409, ce.Status)
	require.Equal(t, before, datasetState(t, b, "cpu"))
}

func TestConcurrentIngests(t *testing.T) {
	t.Parallel()
	b := testserver.Start(t, testserver.Options{})
	ctx := context.Background()
	b.CreateCPU(t, "cpu", "local", "hour")
	const n = 8
	var wg sync.WaitGroup
	var all []testserver.Row
	errs := make([]error, n)
	versions := make([]int64, n)
	for i := 0; i < n; i++ {
		rows := testserver.GenRows(500, time.Date(2024, 1, 1, i, 0, 0, 0, time.UTC), 3*time.Second)
		all = append(all, rows...)
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := b.Client.Ingest(ctx, "cpu", "ndjson", strings.NewReader(testserver.Encode("ndjson", rows)), "")
			errs[i], versions[i] = err, res.ManifestVersion
		}()
	}
	wg.Wait()
	for _, err := range errs {
		require.NoError(t, err)
	}
	d, err := b.Client.GetDataset(ctx, "cpu")
	require.NoError(t, err)
	// Requests that arrive together share a manifest commit (group commit):
	// at most one version per request, and each answer's version is committed.
	require.GreaterOrEqual(t, d.ManifestVersion, int64(1))
	require.LessOrEqual(t, d.ManifestVersion, int64(n))
	for _, v := range versions {
		require.GreaterOrEqual(t, v, int64(1))
		require.LessOrEqual(t, v, d.ManifestVersion)
	}
	testserver.RequireAggregates(t, testserver.Expected(all), b.Aggregates(t, "cpu", "", ""))
}

func TestCrashBetweenUploadAndCommit(t *testing.T) {
	t.Parallel()
	for _, target := range []string{"local", "remote"} {
		t.Run(target, func(t *testing.T) {
			t.Parallel()
			var fail sync.Map // dataset runs that must fail after upload
			var uploaded []catalog.PartitionFile
			var mu sync.Mutex
			b := testserver.Start(t, testserver.Options{S3: target == "remote", AfterUpload: func(ctx context.Context, files []catalog.PartitionFile) error {
				if _, ok := fail.Load("on"); ok {
					mu.Lock()
					uploaded = append(uploaded, files...)
					mu.Unlock()
					return errors.New("injected crash after upload")
				}
				return nil
			}})
			ctx := context.Background()
			b.CreateCPU(t, "cpu", target, "day")
			rows := testserver.GenRows(200, time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC), 10*time.Minute)
			body := testserver.Encode("csv", rows)
			fail.Store("on", true)
			_, err := b.Client.Ingest(ctx, "cpu", "csv", strings.NewReader(body), "k1")
			require.Error(t, err)
			require.NotEmpty(t, uploaded)
			d, err := b.Client.GetDataset(ctx, "cpu")
			require.NoError(t, err)
			require.EqualValues(t, 0, d.ManifestVersion, "no manifest change")
			require.EqualValues(t, 0, d.Totals.Partitions, "no reference")
			tgt, err := b.Server.Targets.Get(target)
			require.NoError(t, err)
			for _, f := range uploaded {
				_, err := tgt.Bucket.Attributes(ctx, f.Key)
				require.Error(t, err, "uploaded object %s was left behind", f.Key)
			}
			// The data can be ingested again, with the same key.
			fail.Delete("on")
			res, err := b.Client.Ingest(ctx, "cpu", "csv", strings.NewReader(body), "k1")
			require.NoError(t, err)
			require.False(t, res.Replayed)
			testserver.RequireAggregates(t, testserver.Expected(rows), b.Aggregates(t, "cpu", "", ""))
		})
	}
}

func TestHealthAndDatasetCRUD(t *testing.T) {
	t.Parallel()
	b := testserver.Start(t, testserver.Options{})
	ctx := context.Background()
	for _, p := range []string{"/healthz", "/readyz"} {
		resp, err := http.Get(b.HTTP.URL + p)
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, 200, resp.StatusCode, p)
	}
	b.CreateCPU(t, "cpu", "local", "day")
	ds, err := b.Client.ListDatasets(ctx)
	require.NoError(t, err)
	require.Len(t, ds, 1)
	d, err := b.Client.SetPolicy(ctx, "cpu", json.RawMessage(`{"retention":{"max_age":"30d"}}`))
	require.NoError(t, err)
	require.JSONEq(t, `{"retention":{"max_age":"30d"}}`, string(d.Policy))
	_, err = b.Client.SetPolicy(ctx, "cpu", json.RawMessage(`{"retention":{"max_age":"soon"}}`))
	require.True(t, client.IsClientError(err), "%v", err)
	_, err = b.Client.SetPolicy(ctx, "cpu", json.RawMessage(`{"retention":{"maxage":"1d"}}`))
	require.True(t, client.IsClientError(err), "%v", err)
	require.NoError(t, b.Client.DeleteDataset(ctx, "cpu"))
	_, err = b.Client.GetDataset(ctx, "cpu")
	var ce *client.Error
	require.ErrorAs(t, err, &ce)
	require.Equal(t, 404, ce.Status)
	// The name can be used again.
	b.CreateCPU(t, "cpu", "local", "day")
}
