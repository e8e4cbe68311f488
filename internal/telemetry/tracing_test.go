package telemetry_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"

	"timestore/internal/telemetry"
)

func TestTracingConfigFromEnv(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		env     []string
		want    telemetry.TracingConfig
		wantErr string
	}{
		{name: "nothing set: off", env: nil},
		{name: "unrelated variables: off", env: []string{"PATH=/bin", "OTEL_SERVICE_NAME=x"}},
		{name: "endpoint: on", env: []string{"OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318"},
			want: telemetry.TracingConfig{Enabled: true, Protocol: "http/protobuf"}},
		{name: "traces endpoint: on", env: []string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=http://127.0.0.1:4318/v1/traces"},
			want: telemetry.TracingConfig{Enabled: true, Protocol: "http/protobuf"}},
		{name: "empty endpoint: off", env: []string{"OTEL_EXPORTER_OTLP_ENDPOINT="}},
		{name: "exporter otlp: on, default endpoint", env: []string{"OTEL_TRACES_EXPORTER=otlp"},
			want: telemetry.TracingConfig{Enabled: true, Protocol: "http/protobuf"}},
		{name: "grpc protocol", env: []string{"OTEL_TRACES_EXPORTER=otlp", "OTEL_EXPORTER_OTLP_PROTOCOL=grpc"},
			want: telemetry.TracingConfig{Enabled: true, Protocol: "grpc"}},
		{name: "traces protocol wins", env: []string{"OTEL_TRACES_EXPORTER=otlp", "OTEL_EXPORTER_OTLP_PROTOCOL=grpc", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL=http/protobuf"},
			want: telemetry.TracingConfig{Enabled: true, Protocol: "http/protobuf"}},
		{name: "exporter none wins over endpoint", env: []string{"OTEL_TRACES_EXPORTER=none", "OTEL_EXPORTER_OTLP_ENDPOINT=http://x:4318"}},
		{name: "sdk disabled wins", env: []string{"OTEL_SDK_DISABLED=TRUE", "OTEL_TRACES_EXPORTER=otlp"}},
		{name: "sdk disabled false", env: []string{"OTEL_SDK_DISABLED=false", "OTEL_TRACES_EXPORTER=otlp"},
			want: telemetry.TracingConfig{Enabled: true, Protocol: "http/protobuf"}},
		{name: "unsupported exporter", env: []string{"OTEL_TRACES_EXPORTER=zipkin"}, wantErr: `OTEL_TRACES_EXPORTER="zipkin"`},
		{name: "unsupported protocol", env: []string{"OTEL_TRACES_EXPORTER=otlp", "OTEL_EXPORTER_OTLP_PROTOCOL=http/json"}, wantErr: `"http/json"`},
		{name: "bad protocol ignored when off", env: []string{"OTEL_EXPORTER_OTLP_PROTOCOL=http/json"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := telemetry.TracingConfigFromEnv(tc.env)
			if tc.wantErr != "" {
				require.ErrorContains(t, err, tc.wantErr)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}
}

func TestSetupTracingOffByDefault(t *testing.T) {
	t.Parallel()
	tp, shutdown, err := telemetry.SetupTracing(t.Context(), "timestore", []string{"PATH=/usr/bin"})
	require.NoError(t, err)
	_, span := tp.Tracer("test").Start(t.Context(), "op")
	require.False(t, span.IsRecording(), "the default provider records nothing")
	span.End()
	require.NoError(t, shutdown(t.Context()))
}

func TestSetupTracingRejectsBadConfig(t *testing.T) {
	t.Parallel()
	_, _, err := telemetry.SetupTracing(t.Context(), "timestore", []string{"OTEL_TRACES_EXPORTER=console"})
	require.ErrorContains(t, err, "OTEL_TRACES_EXPORTER")
}

// TestSetupTracingExportsOTLP runs the real exporter against a fake OTLP/HTTP
// collector. It sets process environment variables (the exporter reads them
// there), so it cannot run in parallel.
func TestSetupTracingExportsOTLP(t *testing.T) {
	got := make(chan *coltracepb.ExportTraceServiceRequest, 10)
	collector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/v1/traces" {
			http.NotFound(w, r)
			return
		}
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		req := &coltracepb.ExportTraceServiceRequest{}
		if err := proto.Unmarshal(body, req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		got <- req
		w.Header().Set("Content-Type", "application/x-protobuf")
		out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
		_, _ = w.Write(out)
	}))
	t.Cleanup(collector.Close)
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.URL)
	t.Setenv("OTEL_SERVICE_NAME", "timestore-test")
	t.Setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment.name=ci")

	tp, shutdown, err := telemetry.SetupTracing(t.Context(), "timestore", os.Environ())
	require.NoError(t, err)
	_, span := tp.Tracer("test").Start(t.Context(), "unit.op", trace.WithAttributes(attribute.Int("n", 7)))
	span.End()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	require.NoError(t, shutdown(ctx), "shutdown flushes the batch")

	var req *coltracepb.ExportTraceServiceRequest
	select {
	case req = <-got:
	case <-ctx.Done():
		t.Fatal("the collector received no spans")
	}
	require.Len(t, req.ResourceSpans, 1)
	res := map[string]string{}
	for _, kv := range req.ResourceSpans[0].Resource.Attributes {
		res[kv.Key] = kv.Value.GetStringValue()
	}
	require.Equal(t, "timestore-test", res["service.name"], "OTEL_SERVICE_NAME overrides the name in code")
	require.Equal(t, "ci", res["deployment.environment.name"])
	require.Equal(t, "opentelemetry", res["telemetry.sdk.name"])
	var names []string
	for _, ss := range req.ResourceSpans[0].ScopeSpans {
		for _, s := range ss.Spans {
			names = append(names, s.Name)
		}
	}
	require.Equal(t, []string{"unit.op"}, names)
}

// newRecorder returns a tracer provider that keeps finished spans in memory.
func newRecorder(t *testing.T) (*sdktrace.TracerProvider, *tracetest.InMemoryExporter) {
	t.Helper()
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	return tp, exp
}

// whoKey is the context key of apiLikeHandler's auth middleware.
type whoKey struct{}

// apiLikeHandler mimics internal/api: a ServeMux whose handlers run behind a
// middleware that replaces the request (auth), a nested admin ServeMux under
// "/admin/" and a catch-all 404.
func apiLikeHandler() http.Handler {
	auth := func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			h.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), whoKey{}, "who")))
		})
	}
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Work done by the handler nests under the request's span.
		_, child := trace.SpanFromContext(r.Context()).TracerProvider().Tracer("test").Start(r.Context(), "handler.work")
		child.End()
		w.WriteHeader(http.StatusOK)
	})
	// admin: one handler wrapped with RouteSpan, one not.
	admin := http.NewServeMux()
	admin.Handle("GET /admin/v1/jobs/{id}", telemetry.RouteSpan(ok))
	admin.Handle("GET /admin/v1/plain", ok)
	// ops: the nested mux wrapped as a whole.
	ops := http.NewServeMux()
	ops.Handle("GET /ops/v1/things/{id}", ok)
	mux := http.NewServeMux()
	mux.Handle("POST /v1/datasets/{name}/rows", auth(ok))
	mux.Handle("GET /healthz", ok)
	mux.Handle("/admin/", auth(admin))
	mux.Handle("/ops/", auth(telemetry.RouteSpan(ops)))
	mux.Handle("/", http.NotFoundHandler())
	return mux
}

func TestHTTPMiddlewareNamesSpansByRoute(t *testing.T) {
	t.Parallel()
	tp, exp := newRecorder(t)
	srv := httptest.NewServer(telemetry.HTTPMiddleware(tp, apiLikeHandler()))
	t.Cleanup(srv.Close)

	do := func(method, path string, header http.Header) int {
		req, err := http.NewRequestWithContext(t.Context(), method, srv.URL+path, nil)
		require.NoError(t, err)
		for k, v := range header {
			req.Header[k] = v
		}
		resp, err := srv.Client().Do(req)
		require.NoError(t, err)
		_ = resp.Body.Close()
		return resp.StatusCode
	}

	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	const parentID = "00f067aa0ba902b7"
	for _, tc := range []struct {
		method, path string
		header       http.Header
		wantName     string
		wantRoute    string
		wantStatus   int
	}{
		{method: "POST", path: "/v1/datasets/cpu_load/rows", wantName: "POST /v1/datasets/{name}/rows",
			wantRoute: "/v1/datasets/{name}/rows", wantStatus: 200,
			header: http.Header{"Traceparent": {"00-" + traceID + "-" + parentID + "-01"}}},
		{method: "GET", path: "/admin/v1/jobs/42", wantName: "GET /admin/v1/jobs/{id}", wantRoute: "/admin/v1/jobs/{id}", wantStatus: 200},
		{method: "GET", path: "/admin/v1/plain", wantName: "GET /admin/", wantRoute: "/admin/", wantStatus: 200},
		{method: "GET", path: "/ops/v1/things/7", wantName: "GET /ops/v1/things/{id}", wantRoute: "/ops/v1/things/{id}", wantStatus: 200},
		{method: "GET", path: "/ops/v1/nothing", wantName: "GET /ops/", wantRoute: "/ops/", wantStatus: 404},
		{method: "GET", path: "/no/such/dataset_name", wantName: "GET /", wantRoute: "/", wantStatus: 404},
		{method: "BREW", path: "/v1/datasets/x/rows", wantName: "HTTP /", wantRoute: "/", wantStatus: 404},
	} {
		exp.Reset()
		require.Equal(t, tc.wantStatus, do(tc.method, tc.path, tc.header), tc.path)
		spans := exp.GetSpans()
		var server *tracetest.SpanStub
		for i := range spans {
			if spans[i].SpanKind == trace.SpanKindServer {
				require.Nil(t, server, "one server span per request")
				server = &spans[i]
			}
		}
		require.NotNil(t, server, tc.path)
		require.Equal(t, tc.wantName, server.Name, tc.path)
		require.Contains(t, server.Attributes, attribute.String("http.route", tc.wantRoute), tc.path)
		require.Contains(t, server.Attributes, attribute.Int("http.response.status_code", tc.wantStatus), tc.path)
		if tc.header != nil {
			require.Equal(t, traceID, server.SpanContext.TraceID().String(), "continues the caller's trace")
			require.Equal(t, parentID, server.Parent.SpanID().String())
			require.True(t, server.Parent.IsRemote())
		}
		if tc.wantStatus == 200 {
			require.Len(t, spans, 2, tc.path)
			child := spans[0]
			require.Equal(t, "handler.work", child.Name)
			require.Equal(t, server.SpanContext.SpanID(), child.Parent.SpanID(), "handler spans nest under the request span")
		}
	}

	exp.Reset()
	require.Equal(t, 200, do("GET", "/healthz", nil))
	require.Empty(t, exp.GetSpans(), "probes are not traced")
}

func TestHTTPMiddlewareWithoutTracing(t *testing.T) {
	t.Parallel()
	tp, _, err := telemetry.SetupTracing(t.Context(), "timestore", nil)
	require.NoError(t, err)
	srv := httptest.NewServer(telemetry.HTTPMiddleware(tp, apiLikeHandler()))
	t.Cleanup(srv.Close)
	resp, err := srv.Client().Post(srv.URL+"/v1/datasets/x/rows", "text/csv", nil)
	require.NoError(t, err)
	_ = resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
}
