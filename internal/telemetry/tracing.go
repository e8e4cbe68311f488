package telemetry

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// The standard OpenTelemetry environment variables SetupTracing reads itself.
// The OTLP exporter and the resource read the rest (endpoint, headers, TLS,
// timeout, compression, OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES,
// OTEL_TRACES_SAMPLER, OTEL_BSP_*) from the process environment, as the
// OpenTelemetry SDK does everywhere.
const (
	EnvSDKDisabled    = "OTEL_SDK_DISABLED"
	EnvTracesExporter = "OTEL_TRACES_EXPORTER"
	EnvEndpoint       = "OTEL_EXPORTER_OTLP_ENDPOINT"
	EnvTracesEndpoint = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
	EnvProtocol       = "OTEL_EXPORTER_OTLP_PROTOCOL"
	EnvTracesProtocol = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
)

const (
	tracesExporterOTLP   = "otlp"
	tracesExporterNone   = "none"
	protocolGRPC         = "grpc"
	protocolHTTPProtobuf = "http/protobuf"
)

// TracingConfig is what SetupTracing decides from the environment.
type TracingConfig struct {
	// Enabled is true when traces are exported.
	Enabled bool
	// Protocol is the OTLP protocol, "http/protobuf" (the default) or "grpc".
	Protocol string
}

// TracingConfigFromEnv reads the tracing switches from environ ("KEY=value"
// entries, as os.Environ returns them). Tracing is off unless
// OTEL_TRACES_EXPORTER=otlp, or OTEL_TRACES_EXPORTER is unset and
// OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set.
// OTEL_SDK_DISABLED=true and OTEL_TRACES_EXPORTER=none turn it off whatever
// else is set. Other exporters than otlp and none, and OTLP protocols other
// than http/protobuf and grpc, are errors rather than silently ignored.
func TracingConfigFromEnv(environ []string) (TracingConfig, error) {
	env := make(map[string]string, len(environ))
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok {
			env[k] = strings.TrimSpace(v)
		}
	}
	if strings.EqualFold(env[EnvSDKDisabled], "true") {
		return TracingConfig{}, nil
	}
	var cfg TracingConfig
	switch exp := strings.ToLower(env[EnvTracesExporter]); exp {
	case "":
		cfg.Enabled = env[EnvEndpoint] != "" || env[EnvTracesEndpoint] != ""
	case tracesExporterNone:
		return TracingConfig{}, nil
	case tracesExporterOTLP:
		cfg.Enabled = true
	default:
		// The spec allows a list; only the single exporters are supported.
		return TracingConfig{}, fmt.Errorf("tracing: %s=%q: want %q or %q", EnvTracesExporter, env[EnvTracesExporter], tracesExporterOTLP, tracesExporterNone)
	}
	if !cfg.Enabled {
		return TracingConfig{}, nil
	}
	cfg.Protocol = env[EnvTracesProtocol]
	if cfg.Protocol == "" {
		cfg.Protocol = env[EnvProtocol]
	}
	switch cfg.Protocol {
	case "":
		cfg.Protocol = protocolHTTPProtobuf
	case protocolHTTPProtobuf, protocolGRPC:
	default:
		return TracingConfig{}, fmt.Errorf("tracing: OTLP protocol %q: want %q or %q", cfg.Protocol, protocolHTTPProtobuf, protocolGRPC)
	}
	return cfg, nil
}

// SetupTracing returns the tracer provider of the process and a function that
// flushes and stops it. Tracing is off by default: unless environ asks for it
// (see TracingConfigFromEnv) the provider is a no-op and shutdown does
// nothing. Otherwise spans go through a batch span processor to an OTLP
// exporter (http/protobuf, or grpc when OTEL_EXPORTER_OTLP[_TRACES]_PROTOCOL
// says so) configured by the standard OTEL_EXPORTER_OTLP_* variables, with a
// resource naming serviceName (OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES
// override it). Pass os.Environ() as environ: the exporter, the sampler and
// the resource read their settings from the process environment.
//
// When tracing is on, the provider becomes the global one (for libraries that
// use otel.GetTracerProvider) and the W3C trace context and baggage
// propagators are installed globally, so that incoming traceparent headers
// continue the caller's trace. Call shutdown before the process exits, with a
// deadline: it exports the spans still buffered.
func SetupTracing(ctx context.Context, serviceName string, environ []string) (tp trace.TracerProvider, shutdown func(context.Context) error, err error) {
	noShutdown := func(context.Context) error { return nil }
	cfg, err := TracingConfigFromEnv(environ)
	if err != nil {
		return nil, nil, err
	}
	if !cfg.Enabled {
		return noop.NewTracerProvider(), noShutdown, nil
	}
	var exp sdktrace.SpanExporter
	switch cfg.Protocol {
	case protocolGRPC:
		exp, err = otlptracegrpc.New(ctx)
	default:
		exp, err = otlptracehttp.New(ctx)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("tracing: OTLP %s exporter: %w", cfg.Protocol, err)
	}
	res, err := resource.New(ctx,
		resource.WithTelemetrySDK(),
		resource.WithHost(),
		resource.WithAttributes(attribute.String("service.name", serviceName)),
		resource.WithFromEnv(), // last: OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win
	)
	if err != nil && !errors.Is(err, resource.ErrPartialResource) {
		_ = exp.Shutdown(ctx)
		return nil, nil, fmt.Errorf("tracing: resource: %w", err)
	}
	sdk := sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp),
		sdktrace.WithResource(res),
	)
	otel.SetTracerProvider(sdk)
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))
	return sdk, sdk.Shutdown, nil
}

// HTTPMiddleware traces every request h serves as a server span that
// continues the caller's trace (W3C traceparent and baggage headers, whatever
// the global propagator) and records the method, status and sizes. Spans are
// named "METHOD ROUTE" after the ServeMux pattern that routed the request,
// e.g. "POST /v1/datasets/{name}/rows", never after the raw path, so that
// dataset names do not multiply span names; a request that matched no
// pattern is named after its method only. The pattern is also the span's
// http.route attribute.
//
// The name comes from the outermost http.ServeMux inside h: a ServeMux sets
// r.Pattern on the request it was given. Routes of a nested ServeMux (one
// mounted under a prefix of another) are named after the prefix unless the
// nested mux, or its handlers, are wrapped with RouteSpan. Probes and scrapes
// (/healthz, /readyz, /metrics) are not traced.
//
// A nil tp means otel.GetTracerProvider().
func HTTPMiddleware(tp trace.TracerProvider, h http.Handler) http.Handler {
	if tp == nil {
		tp = otel.GetTracerProvider()
	}
	// Runs inside the otelhttp span: once h has routed the request, the route
	// is known and recorded as http.route.
	routed := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(w, r)
		if route := routeOf(r); route != "" {
			trace.SpanFromContext(r.Context()).SetAttributes(attribute.String("http.route", route))
		}
	})
	traced := otelhttp.NewHandler(routed, "http",
		otelhttp.WithTracerProvider(tp),
		otelhttp.WithPropagators(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})),
		otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string {
			if route := routeOf(r); route != "" {
				return spanMethod(r.Method) + " " + route
			}
			return spanMethod(r.Method)
		}),
		otelhttp.WithFilter(func(r *http.Request) bool {
			switch r.URL.Path {
			case "/healthz", "/readyz", "/metrics":
				return false
			}
			return true
		}),
	)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The holder lets RouteSpan, deep inside h, tell the span name
		// formatter, which runs again after h returns, the innermost route.
		traced.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), routeKey{}, new(routeHolder))))
	})
}

// RouteSpan makes the span of HTTPMiddleware named after the innermost route
// of a request served by a ServeMux nested in another one (mounted under a
// prefix): HTTPMiddleware sees only the outer pattern by itself. Wrap either
// the nested *http.ServeMux as a whole, or each handler registered on it.
// Without HTTPMiddleware around it, RouteSpan does nothing.
func RouteSpan(h http.Handler) http.Handler {
	mux, _ := h.(*http.ServeMux)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if rh, ok := r.Context().Value(routeKey{}).(*routeHolder); ok {
			pattern := r.Pattern
			if mux != nil {
				_, pattern = mux.Handler(r)
			}
			if pattern != "" {
				rh.pattern = pattern
				trace.SpanFromContext(r.Context()).SetName(spanMethod(r.Method) + " " + patternPath(pattern))
			}
		}
		h.ServeHTTP(w, r)
	})
}

type routeKey struct{}

// routeHolder carries the innermost pattern, set by RouteSpan. A request is
// served by one goroutine, so it needs no lock.
type routeHolder struct{ pattern string }

// routeOf returns the route of r: the innermost pattern RouteSpan recorded,
// else the pattern of the ServeMux that routed r, as a path without method or
// host; "" before routing or when nothing matched.
func routeOf(r *http.Request) string {
	if rh, ok := r.Context().Value(routeKey{}).(*routeHolder); ok && rh.pattern != "" {
		return patternPath(rh.pattern)
	}
	if r.Pattern != "" {
		return patternPath(r.Pattern)
	}
	return ""
}

// patternPath strips the method and host of a ServeMux pattern
// ("[METHOD ][HOST]/PATH").
func patternPath(pattern string) string {
	if _, rest, ok := strings.Cut(pattern, " "); ok {
		pattern = strings.TrimLeft(rest, " \t")
	}
	if i := strings.IndexByte(pattern, '/'); i > 0 {
		pattern = pattern[i:]
	}
	return pattern
}

// spanMethod returns the request method for a span name: the standard
// methods as they are, anything else as "HTTP" (as the HTTP semantic
// conventions ask, so that made-up methods cannot multiply span names).
func spanMethod(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodConnect, http.MethodOptions, http.MethodTrace:
		return m
	}
	return "HTTP"
}
