package engine

import (
	"context"
	"errors"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// TracerName is the instrumentation scope of the engine's spans.
const TracerName = "timestore/internal/engine"

// Span names and attribute keys of the engine's spans.
const (
	spanPrepareIngest = "duckdb.prepare_ingest"
	spanQuery         = "duckdb.query"
	spanFileStats     = "duckdb.file_stats"

	attrDBSystem   = attribute.Key("db.system.name")
	attrDataset    = attribute.Key("timestore.dataset")
	attrFormat     = attribute.Key("timestore.ingest.format")
	attrInputBytes = attribute.Key("timestore.ingest.input_bytes")
	attrRows       = attribute.Key("timestore.rows")
	attrReader     = attribute.Key("timestore.ingest.reader")
	attrWindows    = attribute.Key("timestore.ingest.windows")
	attrFiles      = attribute.Key("timestore.query.files")
	attrBytes      = attribute.Key("timestore.bytes")
	attrUserError  = attribute.Key("timestore.user_error")
)

var noopTracer = noop.NewTracerProvider().Tracer(TracerName)

// SetTracerProvider makes the engine trace its DuckDB work with tp:
// duckdb.prepare_ingest, duckdb.query and duckdb.file_stats spans, children
// of the span in the caller's context. Without it (or with a nil tp) the
// engine records no spans. Call it before the engine is used; it is safe for
// concurrent use all the same.
func (e *Engine) SetTracerProvider(tp trace.TracerProvider) {
	if tp == nil {
		e.tracer.Store(nil)
		return
	}
	t := tp.Tracer(TracerName)
	e.tracer.Store(&t)
}

// currentTracer returns the tracer set by SetTracerProvider, or a no-op one.
func (e *Engine) currentTracer() trace.Tracer {
	if t := e.tracer.Load(); t != nil {
		return *t
	}
	return noopTracer
}

// startSpan starts an internal span of the engine.
func (e *Engine) startSpan(ctx context.Context, name string, attrs ...attribute.KeyValue) (context.Context, trace.Span) {
	attrs = append(attrs, attrDBSystem.String("duckdb"))
	return e.currentTracer().Start(ctx, name, trace.WithAttributes(attrs...))
}

// endSpan records err and ends span. Errors of the user's input or SQL
// (*InputError, *SQLError other than a timeout) are recorded as events with
// timestore.user_error set, but leave the status unset: they are answered
// with a 4xx, not a failure of the engine.
func endSpan(span trace.Span, err error) {
	if err != nil {
		span.RecordError(err)
		var ie *InputError
		var se *SQLError
		if errors.As(err, &ie) || errors.As(err, &se) && !errors.Is(err, context.DeadlineExceeded) {
			span.SetAttributes(attrUserError.Bool(true))
		} else {
			span.SetStatus(codes.Error, err.Error())
		}
	}
	span.End()
}
