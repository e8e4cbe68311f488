package storage_test

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
	"go.opentelemetry.io/otel/trace"

	"timestore/internal/storage"
)

func newSpanRecorder(t *testing.T) (*sdktrace.TracerProvider, *tracetest.InMemoryExporter) {
	t.Helper()
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	return tp, exp
}

// spanSummary is what the tests compare of a span.
type spanSummary struct {
	Name   string
	Status codes.Code
	Attrs  map[attribute.Key]attribute.Value
}

func summarize(spans tracetest.SpanStubs) []spanSummary {
	out := make([]spanSummary, len(spans))
	for i, s := range spans {
		attrs := map[attribute.Key]attribute.Value{}
		for _, kv := range s.Attributes {
			attrs[kv.Key] = kv.Value
		}
		out[i] = spanSummary{Name: s.Name, Status: s.Status.Code, Attrs: attrs}
	}
	return out
}

func TestTracingBucketSpans(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tp, exp := newSpanRecorder(t)
	mem := openMemTarget(t)
	faulty := storage.NewFaultyBucket(mem.Bucket)
	tgt := &storage.Target{Name: "mem", Bucket: storage.NewTracingBucket(faulty, tp, "mem")}
	src, data := writeRandomFile(t, t.TempDir(), 1500)

	// Upload, then the size check.
	_, _, err := tgt.PutFile(ctx, "a/1.parquet", src)
	require.NoError(t, err)
	got := summarize(exp.GetSpans())
	require.Len(t, got, 2)
	require.Equal(t, "storage.upload", got[0].Name)
	require.Equal(t, codes.Unset, got[0].Status)
	require.Equal(t, "mem", got[0].Attrs["storage.target"].AsString())
	require.Equal(t, "a/1.parquet", got[0].Attrs["storage.key"].AsString())
	require.Equal(t, int64(len(data)), got[0].Attrs["storage.bytes"].AsInt64())
	require.Equal(t, "storage.attributes", got[1].Name)
	require.Equal(t, int64(len(data)), got[1].Attrs["storage.bytes"].AsInt64())
	for _, s := range exp.GetSpans() {
		require.Equal(t, trace.SpanKindClient, s.SpanKind)
	}

	// A download: the reader span ends at Close, with the bytes read.
	exp.Reset()
	_, _, err = tgt.GetFile(ctx, "a/1.parquet", filepath.Join(t.TempDir(), "copy"))
	require.NoError(t, err)
	got = summarize(exp.GetSpans())
	require.Len(t, got, 1)
	require.Equal(t, "storage.new_reader", got[0].Name)
	require.Equal(t, int64(len(data)), got[0].Attrs["storage.bytes"].AsInt64())
	require.Equal(t, codes.Unset, got[0].Status)

	// A listing that runs to the end, and one that the caller stops (Check).
	exp.Reset()
	var keys []string
	require.NoError(t, tgt.List(ctx, "a/", func(o storage.ObjectInfo) error { keys = append(keys, o.Key); return nil }))
	require.Equal(t, []string{"a/1.parquet"}, keys)
	require.NoError(t, tgt.Check(ctx))
	got = summarize(exp.GetSpans())
	require.Len(t, got, 2)
	require.Equal(t, "storage.list", got[0].Name)
	require.Equal(t, "a/", got[0].Attrs["storage.prefix"].AsString())
	require.Equal(t, int64(1), got[0].Attrs["storage.objects"].AsInt64())
	require.Equal(t, codes.Unset, got[0].Status)
	require.Equal(t, "storage.list", got[1].Name)
	require.True(t, got[1].Attrs["storage.list.stopped"].AsBool())
	require.Equal(t, codes.Unset, got[1].Status, "a stop asked by the caller is no storage error")

	// Delete, then the missing object: error status, ErrNotExist intact.
	exp.Reset()
	require.NoError(t, tgt.Delete(ctx, "a/1.parquet"))
	_, err = tgt.Attributes(ctx, "a/1.parquet")
	require.ErrorIs(t, err, storage.ErrNotExist)
	got = summarize(exp.GetSpans())
	require.Len(t, got, 2)
	require.Equal(t, "storage.delete", got[0].Name)
	require.Equal(t, codes.Unset, got[0].Status)
	require.Equal(t, "storage.attributes", got[1].Name)
	require.Equal(t, codes.Error, got[1].Status)
	_, hasBytes := got[1].Attrs["storage.bytes"]
	require.False(t, hasBytes)
	require.Len(t, exp.GetSpans()[1].Events, 1, "the error is recorded as an exception event")

	// Injected failures: an upload, and a read that breaks off mid-stream.
	exp.Reset()
	boom := errors.New("boom")
	remove := faulty.FailNth(storage.OpUpload, 2, boom)
	_, _, err = tgt.PutFile(ctx, "a/2.parquet", src)
	require.ErrorIs(t, err, boom)
	got = summarize(exp.GetSpans())
	require.Len(t, got, 1)
	require.Equal(t, "storage.upload", got[0].Name)
	require.Equal(t, codes.Error, got[0].Status)

	remove()
	_, _, err = tgt.PutFile(ctx, "a/3.parquet", src)
	require.NoError(t, err)
	faulty.Inject(storage.Fault{Op: storage.OpNewReader, Stream: true, AfterBytes: 100, Err: boom})
	exp.Reset()
	_, _, err = tgt.GetFile(ctx, "a/3.parquet", filepath.Join(t.TempDir(), "copy"))
	require.ErrorIs(t, err, boom)
	got = summarize(exp.GetSpans())
	require.Len(t, got, 1)
	require.Equal(t, "storage.new_reader", got[0].Name)
	require.Equal(t, codes.Error, got[0].Status)
	require.Equal(t, int64(100), got[0].Attrs["storage.bytes"].AsInt64())
}

func TestTargetsWithTracing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tp, exp := newSpanRecorder(t)
	ts, err := storage.NewTargets(ctx, t.TempDir(), map[string]string{"other": "mem://"})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, ts.Close()) })
	require.NoError(t, ts.WithTracing(nil), "nil does nothing")
	require.NoError(t, ts.WithTracing(tp))
	require.NoError(t, ts.WithTracing(tp), "a second call does not stack wrappers")

	src, _ := writeRandomFile(t, t.TempDir(), 10)
	for _, name := range []string{"local", "other"} {
		tgt, err := ts.Get(name)
		require.NoError(t, err)
		require.ErrorIs(t, tgt.Delete(ctx, "x/1.parquet"), storage.ErrNotExist)
		_, _, err = tgt.PutFile(ctx, "x/1.parquet", src)
		require.NoError(t, err)
	}
	got := summarize(exp.GetSpans())
	require.Len(t, got, 6) // per target: the failed delete, upload, attributes
	for i, name := range []string{"local", "other"} {
		for j := range 3 {
			require.Equal(t, name, got[3*i+j].Attrs["storage.target"].AsString())
		}
		require.Equal(t, "storage.delete", got[3*i].Name)
		require.Equal(t, codes.Error, got[3*i].Status)
		require.Equal(t, "storage.upload", got[3*i+1].Name)
	}
}
