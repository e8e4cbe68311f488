package storage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
)

// Op names a Bucket operation, for counting and failing calls with
// FaultyBucket.
type Op string

// Bucket operations.
const (
	OpUpload     Op = "upload"
	OpNewReader  Op = "new_reader"
	OpDelete     Op = "delete"
	OpAttributes Op = "attributes"
	OpList       Op = "list"
	// OpAny matches every operation. Its call count is the total number of
	// calls.
	OpAny Op = "any"
)

// ErrInjected is the error FaultyBucket returns when a Fault has no Err.
var ErrInjected = errors.New("injected storage fault")

// Fault says which calls a FaultyBucket fails and how. Calls are numbered
// from 1 per operation (over all operations for OpAny), counting every call
// since the FaultyBucket was created or Reset, failed ones included.
type Fault struct {
	// Op is the operation to fail; OpAny fails any operation.
	Op Op
	// Nth, if positive, fails only call number Nth.
	Nth int
	// After, if positive and Nth is not, fails every call after the first
	// After. If both Nth and After are zero, every call fails until the
	// fault is removed.
	After int
	// Err is the error returned. Defaults to ErrInjected.
	Err error
	// Late lets the call reach the wrapped bucket and take effect before
	// Err is returned: the upload or delete happened but the caller is told
	// it failed, like a lost acknowledgement.
	Late bool
	// Stream, for OpUpload and OpNewReader, fails the data stream after
	// AfterBytes bytes instead of the call itself. An upload then reaches the
	// wrapped bucket with a source that breaks off, which exercises atomic
	// uploads; a reader returns Err once AfterBytes bytes have been read.
	// A stream that ends before AfterBytes bytes does not fail.
	Stream bool
	// AfterBytes is how many bytes flow before a Stream fault fails.
	AfterBytes int64
}

func (f *Fault) matches(op Op, n, total int) bool {
	if f.Op != OpAny && f.Op != op {
		return false
	}
	if f.Op == OpAny {
		n = total
	}
	switch {
	case f.Nth > 0:
		return n == f.Nth
	case f.After > 0:
		return n > f.After
	default:
		return true
	}
}

func (f *Fault) err() error {
	if f.Err == nil {
		return ErrInjected
	}
	return f.Err
}

// FaultyBucket wraps a real Bucket and fails chosen calls, for tests: the
// Nth call of an operation, every call after the Nth, or every call while a
// fault is in place (see Fault). It counts calls per operation. It is safe
// for concurrent use; faults can be added and removed while calls are in
// flight.
type FaultyBucket struct {
	inner Bucket

	mu       sync.Mutex
	nextID   int
	faults   map[int]*Fault
	calls    map[Op]int
	failures map[Op]int
	total    int
}

var _ Bucket = (*FaultyBucket)(nil)

// NewFaultyBucket wraps b. Until a fault is injected it behaves exactly like
// b. Closing the FaultyBucket closes b.
func NewFaultyBucket(b Bucket) *FaultyBucket {
	f := &FaultyBucket{inner: b}
	f.Reset()
	return f
}

// Unwrap returns the wrapped bucket.
func (f *FaultyBucket) Unwrap() Bucket { return f.inner }

// Inject adds a fault and returns a function that removes it.
func (f *FaultyBucket) Inject(fault Fault) (remove func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.nextID++
	id := f.nextID
	f.faults[id] = &fault
	return func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		delete(f.faults, id)
	}
}

// FailNth fails call number n of op with err (ErrInjected if nil).
func (f *FaultyBucket) FailNth(op Op, n int, err error) (remove func()) {
	if n <= 0 {
		panic(fmt.Sprintf("storage: FailNth: n must be positive, got %d", n))
	}
	return f.Inject(Fault{Op: op, Nth: n, Err: err})
}

// FailAfter fails every call of op after the first n with err (ErrInjected
// if nil).
func (f *FaultyBucket) FailAfter(op Op, n int, err error) (remove func()) {
	return f.Inject(Fault{Op: op, After: n, Err: err})
}

// FailAlways fails every call of op with err (ErrInjected if nil) until the
// returned function is called: a switch for taking storage away and bringing
// it back.
func (f *FaultyBucket) FailAlways(op Op, err error) (remove func()) {
	return f.Inject(Fault{Op: op, Err: err})
}

// Calls returns how many calls of op were made (all calls for OpAny),
// including failed ones.
func (f *FaultyBucket) Calls(op Op) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	if op == OpAny {
		return f.total
	}
	return f.calls[op]
}

// Failures returns how many calls of op (all calls for OpAny) a fault
// affected.
func (f *FaultyBucket) Failures(op Op) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	if op == OpAny {
		n := 0
		for _, c := range f.failures {
			n += c
		}
		return n
	}
	return f.failures[op]
}

// Reset removes all faults and zeroes the call counts.
func (f *FaultyBucket) Reset() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.faults = make(map[int]*Fault)
	f.calls = make(map[Op]int)
	f.failures = make(map[Op]int)
	f.total = 0
}

// begin counts a call of op and returns the fault that applies to it, if
// any. With several matching faults, the earliest injected one wins.
func (f *FaultyBucket) begin(op Op) *Fault {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls[op]++
	f.total++
	n := f.calls[op]
	var hit *Fault
	hitID := 0
	for id, fault := range f.faults {
		if fault.matches(op, n, f.total) && (hit == nil || id < hitID) {
			hit, hitID = fault, id
		}
	}
	if hit != nil {
		f.failures[op]++
		c := *hit
		return &c
	}
	return nil
}

// Upload implements Bucket.
func (f *FaultyBucket) Upload(ctx context.Context, key string, r io.Reader) error {
	fault := f.begin(OpUpload)
	switch {
	case fault == nil:
		return f.inner.Upload(ctx, key, r)
	case fault.Stream:
		return f.inner.Upload(ctx, key, &breakingReader{r: r, left: fault.AfterBytes, err: fault.err()})
	case fault.Late:
		if err := f.inner.Upload(ctx, key, r); err != nil {
			return err
		}
	}
	return fmt.Errorf("upload %s: %w", key, fault.err())
}

// NewReader implements Bucket.
func (f *FaultyBucket) NewReader(ctx context.Context, key string) (io.ReadCloser, error) {
	fault := f.begin(OpNewReader)
	switch {
	case fault == nil:
		return f.inner.NewReader(ctx, key)
	case fault.Stream:
		rc, err := f.inner.NewReader(ctx, key)
		if err != nil {
			return nil, err
		}
		return &breakingReadCloser{breakingReader: breakingReader{r: rc, left: fault.AfterBytes, err: fault.err()}, c: rc}, nil
	case fault.Late:
		rc, err := f.inner.NewReader(ctx, key)
		if err != nil {
			return nil, err
		}
		_ = rc.Close()
	}
	return nil, fmt.Errorf("read %s: %w", key, fault.err())
}

// Delete implements Bucket.
func (f *FaultyBucket) Delete(ctx context.Context, key string) error {
	fault := f.begin(OpDelete)
	if fault == nil {
		return f.inner.Delete(ctx, key)
	}
	if fault.Late {
		if err := f.inner.Delete(ctx, key); err != nil {
			return err
		}
	}
	return fmt.Errorf("delete %s: %w", key, fault.err())
}

// Attributes implements Bucket.
func (f *FaultyBucket) Attributes(ctx context.Context, key string) (ObjectInfo, error) {
	fault := f.begin(OpAttributes)
	if fault == nil {
		return f.inner.Attributes(ctx, key)
	}
	if fault.Late {
		if _, err := f.inner.Attributes(ctx, key); err != nil {
			return ObjectInfo{}, err
		}
	}
	return ObjectInfo{}, fmt.Errorf("attributes of %s: %w", key, fault.err())
}

// List implements Bucket. A Late fault lists everything, then fails.
func (f *FaultyBucket) List(ctx context.Context, prefix string, fn func(ObjectInfo) error) error {
	fault := f.begin(OpList)
	if fault == nil {
		return f.inner.List(ctx, prefix, fn)
	}
	if fault.Late {
		if err := f.inner.List(ctx, prefix, fn); err != nil {
			return err
		}
	}
	return fmt.Errorf("list %q: %w", prefix, fault.err())
}

// Close implements Bucket; it closes the wrapped bucket.
func (f *FaultyBucket) Close() error {
	return f.inner.Close()
}

// breakingReader passes left bytes through, then fails with err.
type breakingReader struct {
	r    io.Reader
	left int64
	err  error
}

func (b *breakingReader) Read(p []byte) (int, error) {
	if b.left <= 0 {
		return 0, b.err
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.r.Read(p)
	b.left -= int64(n)
	return n, err
}

type breakingReadCloser struct {
	breakingReader
	c io.Closer
}

func (b *breakingReadCloser) Close() error { return b.c.Close() }
