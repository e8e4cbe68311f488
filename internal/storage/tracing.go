package storage

import (
	"context"
	"errors"
	"io"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// TracerName is the instrumentation scope of the spans of NewTracingBucket.
const TracerName = "timestore/internal/storage"

// Span attribute keys of the storage spans.
const (
	attrTarget  = attribute.Key("storage.target")
	attrKey     = attribute.Key("storage.key")
	attrPrefix  = attribute.Key("storage.prefix")
	attrBytes   = attribute.Key("storage.bytes")
	attrObjects = attribute.Key("storage.objects")
)

// tracingBucket is a Bucket that traces every call to the bucket it wraps.
type tracingBucket struct {
	b      Bucket
	tracer trace.Tracer
	target string
}

var _ Bucket = (*tracingBucket)(nil)

// NewTracingBucket wraps b so that every call is a client span of tp:
// storage.upload, storage.new_reader, storage.delete, storage.attributes and
// storage.list, with the attributes storage.target (target), storage.key or
// storage.prefix, storage.bytes (bytes sent, bytes read, or the object's
// size) and storage.objects (objects listed). A failed call sets the span's
// status to error. The storage.new_reader span lasts until the reader is
// closed, so that it covers the download. Closing the wrapper closes b.
func NewTracingBucket(b Bucket, tp trace.TracerProvider, target string) Bucket {
	return &tracingBucket{b: b, tracer: tp.Tracer(TracerName), target: target}
}

func (t *tracingBucket) start(ctx context.Context, name string, attrs ...attribute.KeyValue) (context.Context, trace.Span) {
	attrs = append(attrs, attrTarget.String(t.target))
	return t.tracer.Start(ctx, name, trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(attrs...))
}

// endSpan records err, if any, and ends span.
func endSpan(span trace.Span, err error) {
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}

func (t *tracingBucket) Upload(ctx context.Context, key string, r io.Reader) error {
	ctx, span := t.start(ctx, "storage.upload", attrKey.String(key))
	cr := &countingReader{r: r}
	err := t.b.Upload(ctx, key, cr)
	span.SetAttributes(attrBytes.Int64(cr.n))
	endSpan(span, err)
	return err
}

func (t *tracingBucket) NewReader(ctx context.Context, key string) (io.ReadCloser, error) {
	ctx, span := t.start(ctx, "storage.new_reader", attrKey.String(key))
	rc, err := t.b.NewReader(ctx, key)
	if err != nil {
		endSpan(span, err)
		return nil, err
	}
	return &tracingReader{rc: rc, span: span}, nil
}

func (t *tracingBucket) Delete(ctx context.Context, key string) error {
	ctx, span := t.start(ctx, "storage.delete", attrKey.String(key))
	err := t.b.Delete(ctx, key)
	endSpan(span, err)
	return err
}

func (t *tracingBucket) Attributes(ctx context.Context, key string) (ObjectInfo, error) {
	ctx, span := t.start(ctx, "storage.attributes", attrKey.String(key))
	info, err := t.b.Attributes(ctx, key)
	if err == nil {
		span.SetAttributes(attrBytes.Int64(info.Size))
	}
	endSpan(span, err)
	return info, err
}

// List traces the listing. An error returned by fn stops the listing as
// List documents; it is the caller's, not a storage failure, so the span
// records it as storage.list.stopped rather than as an error.
func (t *tracingBucket) List(ctx context.Context, prefix string, fn func(ObjectInfo) error) error {
	ctx, span := t.start(ctx, "storage.list", attrPrefix.String(prefix))
	var (
		n     int64
		fnErr error
	)
	err := t.b.List(ctx, prefix, func(info ObjectInfo) error {
		n++
		fnErr = fn(info)
		return fnErr
	})
	span.SetAttributes(attrObjects.Int64(n))
	if err != nil && fnErr != nil && errors.Is(err, fnErr) {
		span.SetAttributes(attribute.Bool("storage.list.stopped", true))
		span.End()
		return err
	}
	endSpan(span, err)
	return err
}

func (t *tracingBucket) Close() error { return t.b.Close() }

// Unwrap returns the traced bucket.
func (t *tracingBucket) Unwrap() Bucket { return t.b }

// tracingReader ends the storage.new_reader span when the reader is closed,
// with the number of bytes read and the first read error other than EOF.
type tracingReader struct {
	rc      io.ReadCloser
	span    trace.Span
	n       int64
	readErr error
	closed  bool
}

func (r *tracingReader) Read(p []byte) (int, error) {
	n, err := r.rc.Read(p)
	r.n += int64(n)
	if err != nil && !errors.Is(err, io.EOF) && r.readErr == nil {
		r.readErr = err
	}
	return n, err
}

func (r *tracingReader) Close() error {
	err := r.rc.Close()
	if !r.closed {
		r.closed = true
		r.span.SetAttributes(attrBytes.Int64(r.n))
		endSpan(r.span, errors.Join(r.readErr, err))
	}
	return err
}

// WithTracing wraps the bucket of every target in a tracing bucket (see
// NewTracingBucket) reporting to tp, using SetBucket; targets obtained from
// Get afterwards trace their calls. Call it once at startup, before the
// targets are used; calling it again replaces the tracing wrapper rather than
// stacking a second one. A nil tp does nothing.
func (ts *Targets) WithTracing(tp trace.TracerProvider) error {
	if tp == nil {
		return nil
	}
	for _, name := range ts.Names() {
		t, err := ts.Get(name)
		if err != nil {
			return err
		}
		b := t.Bucket
		if tb, ok := b.(*tracingBucket); ok {
			b = tb.b
		}
		if err := ts.SetBucket(name, NewTracingBucket(b, tp, name)); err != nil {
			return err
		}
	}
	return nil
}
