package storage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"
)

// TimeoutDefault is how long a storage call may wait for its target to
// answer before it fails with ErrTimeout (see NewDeadlineBucket). A hung
// target then fails a job's attempt within a minute, and River retries it
// with backoff, instead of leaving the job running without an error until its
// job timeout.
const TimeoutDefault = 30 * time.Second

// ErrTimeout is wrapped by errors of storage calls that waited longer than
// their deadline for the target to answer. Test for it with errors.Is.
var ErrTimeout = errors.New("storage target did not answer in time")

// deadlineBucket is a Bucket that bounds how long each call waits for the
// bucket it wraps.
type deadlineBucket struct {
	b       Bucket
	timeout time.Duration
	target  string
}

var _ Bucket = (*deadlineBucket)(nil)

// NewDeadlineBucket wraps b so that no call waits more than timeout for the
// target without progress; such a call fails with an error wrapping
// ErrTimeout that names the operation, the key, the target and the timeout.
//
// The deadline is on waiting, not on the whole transfer, so that a large
// object on a slow but working link is never cut:
//   - Attributes and Delete must answer within timeout.
//   - Upload must see the target accept the data within timeout of each
//     read from r: the clock stops while r itself is read (the caller's
//     side), and restarts when the uploader waits for the target again.
//     gocloud sends an upload in parts of up to 5 MiB, one at a time, so a
//     link must carry about 5 MiB per timeout.
//   - NewReader must open the object within timeout, and each Read of the
//     returned reader must get bytes within timeout; the time between Reads
//     (the caller's) does not count.
//   - List must deliver each object within timeout of the previous one;
//     the time fn takes does not count.
//
// A timeout of zero or less returns b unchanged. Closing the wrapper closes b.
func NewDeadlineBucket(b Bucket, timeout time.Duration, target string) Bucket {
	if timeout <= 0 {
		return b
	}
	return &deadlineBucket{b: b, timeout: timeout, target: target}
}

// watchdog cancels a call's context with a timeout error when its timer
// fires. The timer runs only while the call waits for the target.
type watchdog struct {
	ctx     context.Context
	cancel  context.CancelCauseFunc
	timer   *time.Timer
	timeout time.Duration
	cause   error
}

func (d *deadlineBucket) watch(ctx context.Context, op, what string) *watchdog {
	ctx, cancel := context.WithCancelCause(ctx)
	w := &watchdog{ctx: ctx, cancel: cancel, timeout: d.timeout,
		cause: fmt.Errorf("%w: %s %s on target %s got no answer within %s (storage_timeout)", ErrTimeout, op, what, d.target, d.timeout)}
	w.timer = time.AfterFunc(d.timeout, func() { cancel(w.cause) })
	return w
}

// wait (re)starts the clock: the call waits for the target from now on.
func (w *watchdog) wait() { w.timer.Reset(w.timeout) }

// pause stops the clock while the caller's side runs.
func (w *watchdog) pause() { w.timer.Stop() }

// done ends the watch and releases the context.
func (w *watchdog) done() {
	w.timer.Stop()
	w.cancel(context.Canceled)
}

// err returns err, or the timeout error if the watchdog fired and the call
// failed.
func (w *watchdog) err(err error) error {
	if err != nil && errors.Is(context.Cause(w.ctx), ErrTimeout) {
		return w.cause
	}
	return err
}

func (d *deadlineBucket) Upload(ctx context.Context, key string, r io.Reader) error {
	w := d.watch(ctx, "upload", key)
	defer w.done()
	err := d.b.Upload(w.ctx, key, &pausingReader{r: r, w: w})
	return w.err(err)
}

// pausingReader stops the watchdog's clock while the caller's reader is read.
type pausingReader struct {
	r io.Reader
	w *watchdog
}

func (p *pausingReader) Read(b []byte) (int, error) {
	p.w.pause()
	defer p.w.wait()
	return p.r.Read(b)
}

func (d *deadlineBucket) NewReader(ctx context.Context, key string) (io.ReadCloser, error) {
	w := d.watch(ctx, "read", key)
	rc, err := d.b.NewReader(w.ctx, key)
	if err != nil {
		w.done()
		return nil, w.err(err)
	}
	w.pause()
	return &watchedReader{rc: rc, w: w}, nil
}

// watchedReader runs the watchdog's clock only inside Read, while it waits
// for the target's bytes.
type watchedReader struct {
	rc io.ReadCloser
	w  *watchdog
}

func (r *watchedReader) Read(b []byte) (int, error) {
	r.w.wait()
	n, err := r.rc.Read(b)
	r.w.pause()
	if err != nil && !errors.Is(err, io.EOF) {
		err = r.w.err(err)
	}
	return n, err
}

func (r *watchedReader) Close() error {
	err := r.rc.Close()
	r.w.done()
	return err
}

func (d *deadlineBucket) Delete(ctx context.Context, key string) error {
	w := d.watch(ctx, "delete", key)
	defer w.done()
	return w.err(d.b.Delete(w.ctx, key))
}

func (d *deadlineBucket) Attributes(ctx context.Context, key string) (ObjectInfo, error) {
	w := d.watch(ctx, "attributes of", key)
	defer w.done()
	info, err := d.b.Attributes(w.ctx, key)
	return info, w.err(err)
}

func (d *deadlineBucket) List(ctx context.Context, prefix string, fn func(ObjectInfo) error) error {
	w := d.watch(ctx, "list", "prefix "+fmt.Sprintf("%q", prefix))
	defer w.done()
	var fnErr error
	err := d.b.List(w.ctx, prefix, func(info ObjectInfo) error {
		w.pause()
		defer w.wait()
		fnErr = fn(info)
		return fnErr
	})
	if fnErr != nil && errors.Is(err, fnErr) {
		return err // the caller stopped the listing
	}
	return w.err(err)
}

func (d *deadlineBucket) Close() error { return d.b.Close() }

// Unwrap returns the wrapped bucket.
func (d *deadlineBucket) Unwrap() Bucket { return d.b }

// WithDeadlines wraps the bucket of every target in a deadline bucket (see
// NewDeadlineBucket) with timeout, using SetBucket. Call it once at startup,
// after WithTracing and before the targets are used; calling it again
// replaces the deadline wrapper rather than stacking a second one. A timeout
// of zero or less does nothing.
func (ts *Targets) WithDeadlines(timeout time.Duration) error {
	if timeout <= 0 {
		return nil
	}
	for _, name := range ts.Names() {
		t, err := ts.Get(name)
		if err != nil {
			return err
		}
		b := t.Bucket
		if db, ok := b.(*deadlineBucket); ok {
			b = db.b
		}
		if err := ts.SetBucket(name, NewDeadlineBucket(b, timeout, name)); err != nil {
			return err
		}
	}
	return nil
}
