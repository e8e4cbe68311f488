package engine

import (
	"context"
	"errors"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"timestore/internal/catalog"
)

func spanAttrs(s tracetest.SpanStub) map[attribute.Key]attribute.Value {
	m := map[attribute.Key]attribute.Value{}
	for _, kv := range s.Attributes {
		m[kv.Key] = kv.Value
	}
	return m
}

// onlySpan returns the one span recorded since the last reset.
func onlySpan(t *testing.T, exp *tracetest.InMemoryExporter) tracetest.SpanStub {
	t.Helper()
	spans := exp.GetSpans()
	require.Len(t, spans, 1)
	exp.Reset()
	return spans[0]
}

func TestEngineSpans(t *testing.T) {
	t.Parallel()
	// An engine of its own: the shared one serves parallel tests whose
	// spans would mix with these.
	e, err := New(Config{Threads: 1, MemoryLimit: "512MB"})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, e.Close()) })
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })

	ctx := context.Background()
	ds := metrics("cpu", catalog.WindowDay)
	in := writeFile(t, t.TempDir(), "in.csv",
		"ts,series,value\n2024-05-01T10:00:00Z,a,1\n2024-05-02T10:00:00Z,a,2\n2024-05-02T11:00:00Z,b,3\n")

	// Not traced until a provider is set.
	_, err = e.PrepareIngest(ctx, ds, FormatCSV, in, t.TempDir())
	require.NoError(t, err)
	e.SetTracerProvider(tp)

	ctx, parent := tp.Tracer("test").Start(ctx, "parent")
	files, err := e.PrepareIngest(ctx, ds, FormatCSV, in, t.TempDir())
	require.NoError(t, err)
	require.Len(t, files, 2)
	s := onlySpan(t, exp)
	require.Equal(t, "duckdb.prepare_ingest", s.Name)
	require.Equal(t, parent.SpanContext().SpanID(), s.Parent.SpanID(), "a child of the caller's span")
	a := spanAttrs(s)
	require.Equal(t, "cpu", a["timestore.dataset"].AsString())
	require.Equal(t, "csv", a["timestore.ingest.format"].AsString())
	require.Equal(t, int64(3), a["timestore.rows"].AsInt64())
	require.Equal(t, int64(2), a["timestore.ingest.windows"].AsInt64())
	require.Equal(t, "duckdb", a["db.system.name"].AsString())
	require.Equal(t, "duckdb", a["timestore.ingest.reader"].AsString())
	require.Positive(t, a["timestore.ingest.input_bytes"].AsInt64())
	require.Equal(t, files[0].SizeBytes+files[1].SizeBytes, a["timestore.bytes"].AsInt64())
	require.Equal(t, codes.Unset, s.Status.Code)

	// Bad input is the user's error: recorded, but not an error status.
	bad := writeFile(t, t.TempDir(), "bad.csv", "ts,nope\n2024-05-01T10:00:00Z,1\n")
	_, err = e.PrepareIngest(ctx, ds, FormatCSV, bad, t.TempDir())
	require.True(t, errors.As(err, new(*InputError)), "%v", err)
	s = onlySpan(t, exp)
	require.Equal(t, codes.Unset, s.Status.Code)
	require.True(t, spanAttrs(s)["timestore.user_error"].AsBool())
	require.Len(t, s.Events, 1)
	require.Equal(t, "exception", s.Events[0].Name)

	// With the native reader in use, the span says it ran.
	e.cfg.NativeInputMaxBytes = NativeInputMaxBytesDefault
	_, err = e.PrepareIngest(ctx, ds, FormatCSV, in, t.TempDir())
	require.NoError(t, err)
	a = spanAttrs(onlySpan(t, exp))
	require.Equal(t, "native", a["timestore.ingest.reader"].AsString())
	require.Equal(t, int64(3), a["timestore.rows"].AsInt64())
	e.cfg.NativeInputMaxBytes = 0

	pf, err := e.FileStats(ctx, ds, files[1].Path)
	require.NoError(t, err)
	s = onlySpan(t, exp)
	require.Equal(t, "duckdb.file_stats", s.Name)
	require.Equal(t, int64(2), spanAttrs(s)["timestore.rows"].AsInt64())
	require.Equal(t, pf.SizeBytes, spanAttrs(s)["timestore.bytes"].AsInt64())
	_, err = e.FileStats(ctx, ds, filepath.Join(t.TempDir(), "gone.parquet"))
	require.Error(t, err)
	require.Equal(t, codes.Error, onlySpan(t, exp).Status.Code)

	paths := []string{files[0].Path, files[1].Path}
	rows, err := e.Query(ctx, QueryRequest{Dataset: ds, Files: paths, SQL: "SELECT count(*) FROM cpu"})
	require.NoError(t, err)
	require.True(t, rows.Next())
	require.Equal(t, []any{int64(3)}, rows.Values())
	require.NoError(t, rows.Close())
	s = onlySpan(t, exp)
	require.Equal(t, "duckdb.query", s.Name)
	require.Equal(t, int64(2), spanAttrs(s)["timestore.query.files"].AsInt64())
	require.Equal(t, codes.Unset, s.Status.Code)

	_, err = e.Query(ctx, QueryRequest{Dataset: ds, Files: paths, SQL: "SELECT nope FROM cpu"})
	require.True(t, errors.As(err, new(*SQLError)), "%v", err)
	s = onlySpan(t, exp)
	require.Equal(t, codes.Unset, s.Status.Code, "bad SQL is the user's error")
	require.True(t, spanAttrs(s)["timestore.user_error"].AsBool())

	_, err = e.Query(ctx, QueryRequest{Dataset: ds, Files: []string{filepath.Join(t.TempDir(), "gone.parquet")}, SQL: "SELECT 1"})
	require.Error(t, err)
	s = onlySpan(t, exp)
	require.Equal(t, codes.Error, s.Status.Code, "a missing file is the engine's failure")
	require.NotEmpty(t, s.Status.Description)

	// A nil provider turns tracing off again.
	e.SetTracerProvider(nil)
	_, err = e.FileStats(ctx, ds, files[0].Path)
	require.NoError(t, err)
	parent.End()
	require.Len(t, exp.GetSpans(), 1, "only the test's own parent span")
}
