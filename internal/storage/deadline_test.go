package storage_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"timestore/internal/storage"
)

// hungBucket is a real bucket whose calls named in hang wait for their
// context to end instead of answering, as a target that stopped answering
// does (the S3 test in internal/e2e stops a real server).
type hungBucket struct {
	storage.Bucket
	hang map[string]bool
	// slowBody delays each Read of a downloaded object by this much (a slow
	// but working link), one byte at a time.
	slowBody time.Duration
	// slowSink makes Upload take the data one byte per slowSink (a slow
	// but working uplink) before it stores it.
	slowSink time.Duration
}

// hangUntil blocks until ctx ends, or fails after hangLimit: a deadline
// that never fires makes the test fail rather than hang.
func hangUntil(ctx context.Context) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(hangLimit):
		return errors.New("the call was never cut off")
	}
}

const hangLimit = 5 * time.Second

func (h *hungBucket) Attributes(ctx context.Context, key string) (storage.ObjectInfo, error) {
	if h.hang["attributes"] {
		return storage.ObjectInfo{}, hangUntil(ctx)
	}
	return h.Bucket.Attributes(ctx, key)
}

func (h *hungBucket) Upload(ctx context.Context, key string, r io.Reader) error {
	if h.hang["upload"] {
		_, _ = io.Copy(io.Discard, r) // the data is sent, the answer never comes
		return hangUntil(ctx)
	}
	if h.slowSink > 0 {
		var sent bytes.Buffer
		one := make([]byte, 1)
		for {
			time.Sleep(h.slowSink) // the link carries one byte per slowSink
			if err := ctx.Err(); err != nil {
				return err
			}
			n, err := r.Read(one)
			sent.Write(one[:n])
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return err
			}
		}
		return h.Bucket.Upload(ctx, key, &sent)
	}
	return h.Bucket.Upload(ctx, key, r)
}

// List checks its context before each object, as a client fetching pages
// does (memblob lists from memory and never would).
func (h *hungBucket) List(ctx context.Context, prefix string, fn func(storage.ObjectInfo) error) error {
	return h.Bucket.List(ctx, prefix, func(o storage.ObjectInfo) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		return fn(o)
	})
}

func (h *hungBucket) NewReader(ctx context.Context, key string) (io.ReadCloser, error) {
	rc, err := h.Bucket.NewReader(ctx, key)
	if err != nil {
		return nil, err
	}
	switch {
	case h.hang["body"]:
		return &hungBody{ctx: ctx, rc: rc}, nil
	case h.slowBody > 0:
		return &slowBody{rc: rc, delay: h.slowBody}, nil
	}
	return rc, nil
}

// hungBody delivers its first byte, then waits for the context.
type hungBody struct {
	ctx  context.Context
	rc   io.ReadCloser
	sent bool
}

func (b *hungBody) Read(p []byte) (int, error) {
	if !b.sent {
		b.sent = true
		return b.rc.Read(p[:1])
	}
	return 0, hangUntil(b.ctx)
}

func (b *hungBody) Close() error { return b.rc.Close() }

// slowBody delivers one byte per delay.
type slowBody struct {
	rc    io.ReadCloser
	delay time.Duration
}

func (b *slowBody) Read(p []byte) (int, error) {
	time.Sleep(b.delay)
	return b.rc.Read(p[:1])
}

func (b *slowBody) Close() error { return b.rc.Close() }

// slowSource yields one byte per delay: a caller whose own data comes slowly.
type slowSource struct {
	data  []byte
	delay time.Duration
}

func (s *slowSource) Read(p []byte) (int, error) {
	if len(s.data) == 0 {
		return 0, io.EOF
	}
	time.Sleep(s.delay)
	n := copy(p[:1], s.data)
	s.data = s.data[n:]
	return n, nil
}

const testTimeout = 300 * time.Millisecond

func deadlineSetup(t *testing.T, h *hungBucket) storage.Bucket {
	t.Helper()
	mem := openMemTarget(t)
	require.NoError(t, mem.Bucket.Upload(context.Background(), "a/obj", strings.NewReader("hello")))
	h.Bucket = mem.Bucket
	return storage.NewDeadlineBucket(h, testTimeout, "remote")
}

// requireTimeout checks that err is the deadline's error, naming the
// operation, the key and the target, and that it came after the timeout
// but well before a hung call would have ended by itself.
func requireTimeout(t *testing.T, err error, start time.Time, op string) {
	t.Helper()
	require.ErrorIs(t, err, storage.ErrTimeout)
	require.Contains(t, err.Error(), op+" a/obj on target remote got no answer within 300ms (storage_timeout)")
	elapsed := time.Since(start)
	require.GreaterOrEqual(t, elapsed, testTimeout)
	require.Less(t, elapsed, 10*testTimeout)
}

func TestDeadlineBucketFailsHungCalls(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	t.Run("attributes", func(t *testing.T) {
		t.Parallel()
		b := deadlineSetup(t, &hungBucket{hang: map[string]bool{"attributes": true}})
		start := time.Now()
		_, err := b.Attributes(ctx, "a/obj")
		requireTimeout(t, err, start, "attributes of")
	})
	t.Run("upload", func(t *testing.T) {
		t.Parallel()
		b := deadlineSetup(t, &hungBucket{hang: map[string]bool{"upload": true}})
		start := time.Now()
		err := b.Upload(ctx, "a/obj", strings.NewReader("new bytes"))
		requireTimeout(t, err, start, "upload")
	})
	t.Run("read body", func(t *testing.T) {
		t.Parallel()
		b := deadlineSetup(t, &hungBucket{hang: map[string]bool{"body": true}})
		start := time.Now()
		rc, err := b.NewReader(ctx, "a/obj")
		require.NoError(t, err)
		defer rc.Close()
		_, err = io.ReadAll(rc)
		requireTimeout(t, err, start, "read")
	})
}

// A transfer that keeps moving is never cut, however long it takes in
// total; neither is a caller that is slow on its own side.
func TestDeadlineBucketKeepsSlowTransfers(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	delay := testTimeout / 3 // each step within the timeout; 5 steps exceed it

	t.Run("slow download", func(t *testing.T) {
		t.Parallel()
		b := deadlineSetup(t, &hungBucket{slowBody: delay})
		start := time.Now()
		rc, err := b.NewReader(ctx, "a/obj")
		require.NoError(t, err)
		got, err := io.ReadAll(rc)
		require.NoError(t, err)
		require.NoError(t, rc.Close())
		require.Equal(t, "hello", string(got))
		require.Greater(t, time.Since(start), testTimeout, "the download was not longer than the timeout; the test proves nothing")
	})
	t.Run("slow reader of a download", func(t *testing.T) {
		t.Parallel()
		b := deadlineSetup(t, &hungBucket{})
		rc, err := b.NewReader(ctx, "a/obj")
		require.NoError(t, err)
		time.Sleep(2 * testTimeout) // the caller's time between reads does not count
		got, err := io.ReadAll(rc)
		require.NoError(t, err)
		require.NoError(t, rc.Close())
		require.Equal(t, "hello", string(got))
	})
	t.Run("slow upload source", func(t *testing.T) {
		t.Parallel()
		b := deadlineSetup(t, &hungBucket{})
		start := time.Now()
		require.NoError(t, b.Upload(ctx, "a/new", &slowSource{data: []byte("12345"), delay: delay}))
		require.Greater(t, time.Since(start), testTimeout)
		rc, err := b.NewReader(ctx, "a/new")
		require.NoError(t, err)
		var buf bytes.Buffer
		_, err = buf.ReadFrom(rc)
		require.NoError(t, err)
		require.NoError(t, rc.Close())
		require.Equal(t, "12345", buf.String())
	})
	t.Run("slow upload link", func(t *testing.T) {
		t.Parallel()
		b := deadlineSetup(t, &hungBucket{slowSink: delay})
		start := time.Now()
		require.NoError(t, b.Upload(ctx, "a/new", strings.NewReader("12345")))
		require.Greater(t, time.Since(start), testTimeout, "the upload was not longer than the timeout; the test proves nothing")
		rc, err := b.NewReader(ctx, "a/new")
		require.NoError(t, err)
		got, err := io.ReadAll(rc)
		require.NoError(t, err)
		require.NoError(t, rc.Close())
		require.Equal(t, "12345", string(got))
	})
	t.Run("slow list callback", func(t *testing.T) {
		t.Parallel()
		b := deadlineSetup(t, &hungBucket{})
		for _, k := range []string{"a/x", "a/y", "a/z"} {
			require.NoError(t, b.Upload(ctx, k, strings.NewReader(k)))
		}
		var keys []string
		require.NoError(t, b.List(ctx, "a/", func(o storage.ObjectInfo) error {
			time.Sleep(testTimeout + delay) // longer than the timeout: fn's time must not count
			keys = append(keys, o.Key)
			return nil
		}))
		require.Equal(t, []string{"a/obj", "a/x", "a/y", "a/z"}, keys)
	})
}

// WithDeadlines wraps every target once, however often it is called.
func TestTargetsWithDeadlines(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	ts, err := storage.NewTargets(ctx, t.TempDir(), map[string]string{"mem": "mem://"})
	require.NoError(t, err)
	t.Cleanup(func() { _ = ts.Close() })
	require.NoError(t, ts.WithDeadlines(time.Second))
	require.NoError(t, ts.WithDeadlines(time.Second))
	for _, name := range ts.Names() {
		tgt, err := ts.Get(name)
		require.NoError(t, err)
		inner, ok := tgt.Bucket.(interface{ Unwrap() storage.Bucket })
		require.True(t, ok, "target %s is not wrapped", name)
		_, twice := inner.Unwrap().(interface{ Unwrap() storage.Bucket })
		require.False(t, twice, "target %s wrapped twice", name)
		src, _ := writeRandomFile(t, t.TempDir(), 100)
		_, _, err = tgt.PutFile(ctx, "k/1", src)
		require.NoError(t, err)
	}
}
