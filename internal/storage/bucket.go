// Package storage moves partition files between local disk and storage
// targets: a local directory or S3-compatible buckets, all reached through
// gocloud.dev/blob. It names objects (keys), checksums what it moves, keeps a
// registry of the configured targets, and keeps a size-bounded local cache of
// remote objects for readers, such as DuckDB, that can only read local files.
//
// Tests inject storage failures by wrapping a real Bucket in a FaultyBucket.
package storage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"path"
	"regexp"
	"time"

	"gocloud.dev/blob"
	_ "gocloud.dev/blob/fileblob" // file:// targets
	_ "gocloud.dev/blob/memblob"  // mem:// targets, for tests
	_ "gocloud.dev/blob/s3blob"   // s3:// targets
	"gocloud.dev/gcerrors"
)

// ErrNotExist is wrapped by errors about objects (or buckets) that do not
// exist. Test for it with errors.Is.
var ErrNotExist = errors.New("object does not exist")

// ObjectInfo describes a stored object.
type ObjectInfo struct {
	// Key is the object's key within its bucket.
	Key string
	// Size is the object's size in bytes.
	Size int64
	// ModTime is when the object was last written, as the target reports it.
	ModTime time.Time
}

// Bucket is the small set of object operations timestore needs. It is an
// interface so that tests can wrap a real bucket (see FaultyBucket) rather
// than mock one. Implementations are safe for concurrent use.
//
// Errors about missing objects wrap ErrNotExist.
type Bucket interface {
	// Upload writes the object at key with everything read from r. The
	// object appears under key only once the upload has succeeded: if r
	// fails or ctx ends, no partial object is left under key and any earlier
	// object with that key is kept.
	Upload(ctx context.Context, key string, r io.Reader) error
	// NewReader opens the object at key for reading. The caller closes it.
	NewReader(ctx context.Context, key string) (io.ReadCloser, error)
	// Delete removes the object at key. It fails with ErrNotExist if there
	// is none.
	Delete(ctx context.Context, key string) error
	// Attributes describes the object at key.
	Attributes(ctx context.Context, key string) (ObjectInfo, error)
	// List calls fn for every object whose key starts with prefix, in key
	// order. It stops at, and returns, the first error fn returns.
	List(ctx context.Context, prefix string, fn func(ObjectInfo) error) error
	// Close releases the bucket's resources.
	Close() error
}

// contentType is what timestore stores every object as; partition files are
// Parquet, exports add a JSON manifest, and no reader relies on the type.
const contentType = "application/octet-stream"

// fileTempFile matches the temporary files fileblob writes beside their final
// name with the no_tmp_dir option ("KEY.<hex nanoseconds>.tmp").
var fileTempFile = regexp.MustCompile(`\.[0-9a-f]+\.tmp$`)

// blobBucket is a Bucket over a gocloud.dev *blob.Bucket.
type blobBucket struct {
	b *blob.Bucket
	// hideTemp hides fileblob's in-progress (or stranded) temporary files
	// from List.
	hideTemp bool
}

var _ Bucket = (*blobBucket)(nil)

// OpenBucket opens the bucket at a gocloud.dev URL: file:///dir, s3://bucket?...
// or mem://. See https://gocloud.dev/concepts/urls/ and the s3blob and
// fileblob documentation for the query parameters.
//
// For file:// URLs the defaults differ from fileblob's: no ".attrs" metadata
// sidecar files are written (metadata=skip) and uploads are staged in a
// temporary file beside their final name (no_tmp_dir), so that the final
// rename never crosses file systems. List hides those temporary files. Set
// either parameter explicitly in the URL to override.
func OpenBucket(ctx context.Context, rawURL string) (Bucket, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("open bucket %s: %w", RedactedURL(rawURL), redactURLError(err))
	}
	hideTemp := false
	if u.Scheme == "file" {
		q := u.Query()
		if _, ok := q["metadata"]; !ok {
			q.Set("metadata", "skip")
		}
		if _, ok := q["no_tmp_dir"]; !ok {
			q.Set("no_tmp_dir", "true")
		}
		hideTemp = q.Get("no_tmp_dir") != ""
		u.RawQuery = q.Encode()
	}
	b, err := blob.OpenBucket(ctx, u.String())
	if err != nil {
		// gocloud's errors quote the whole URL; don't repeat secrets.
		return nil, fmt.Errorf("open bucket %s: %s", RedactedURL(rawURL), scrubURL(err.Error(), rawURL))
	}
	return &blobBucket{b: b, hideTemp: hideTemp}, nil
}

// NewBlobBucket adapts an open gocloud.dev bucket. The Bucket takes ownership
// of b and closes it on Close.
func NewBlobBucket(b *blob.Bucket) Bucket {
	return &blobBucket{b: b}
}

func (b *blobBucket) Upload(ctx context.Context, key string, r io.Reader) error {
	// gocloud commits whatever was written when the writer is closed with a
	// live context, even after the source failed; a source failure must
	// cancel the context before gocloud closes the writer, so wrap r.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	src := &abortingReader{r: r, cancel: cancel}
	err := b.b.Upload(ctx, key, src, &blob.WriterOptions{ContentType: contentType})
	if src.err != nil {
		return fmt.Errorf("upload %s: read source: %w", key, src.err)
	}
	if err != nil {
		return fmt.Errorf("upload %s: %w", key, mapError(err))
	}
	return nil
}

func (b *blobBucket) NewReader(ctx context.Context, key string) (io.ReadCloser, error) {
	r, err := b.b.NewReader(ctx, key, nil)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", key, mapError(err))
	}
	return &mappedReader{r: r}, nil
}

func (b *blobBucket) Delete(ctx context.Context, key string) error {
	if err := b.b.Delete(ctx, key); err != nil {
		return fmt.Errorf("delete %s: %w", key, mapError(err))
	}
	return nil
}

func (b *blobBucket) Attributes(ctx context.Context, key string) (ObjectInfo, error) {
	a, err := b.b.Attributes(ctx, key)
	if err != nil {
		return ObjectInfo{}, fmt.Errorf("attributes of %s: %w", key, mapError(err))
	}
	return ObjectInfo{Key: key, Size: a.Size, ModTime: a.ModTime}, nil
}

func (b *blobBucket) List(ctx context.Context, prefix string, fn func(ObjectInfo) error) error {
	it := b.b.List(&blob.ListOptions{Prefix: prefix})
	for {
		obj, err := it.Next(ctx)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("list %q: %w", prefix, mapError(err))
		}
		if obj.IsDir {
			continue
		}
		if b.hideTemp && fileTempFile.MatchString(path.Base(obj.Key)) {
			continue
		}
		if err := fn(ObjectInfo{Key: obj.Key, Size: obj.Size, ModTime: obj.ModTime}); err != nil {
			return err
		}
	}
}

func (b *blobBucket) Close() error {
	return b.b.Close()
}

// mapError makes gocloud's NotFound errors wrap ErrNotExist, keeping the
// original error in the chain.
func mapError(err error) error {
	if err == nil {
		return nil
	}
	if gcerrors.Code(err) == gcerrors.NotFound {
		return fmt.Errorf("%w: %w", ErrNotExist, err)
	}
	return err
}

// abortingReader cancels the upload's context as soon as the source fails, so
// that gocloud aborts the write instead of committing a partial object.
type abortingReader struct {
	r      io.Reader
	cancel context.CancelFunc
	err    error
}

func (a *abortingReader) Read(p []byte) (int, error) {
	n, err := a.r.Read(p)
	if err != nil && !errors.Is(err, io.EOF) {
		a.err = err
		a.cancel()
	}
	return n, err
}

// mappedReader maps NotFound errors that surface while reading.
type mappedReader struct {
	r *blob.Reader
}

func (m *mappedReader) Read(p []byte) (int, error) {
	n, err := m.r.Read(p)
	if err != nil && !errors.Is(err, io.EOF) {
		err = mapError(err)
	}
	return n, err
}

func (m *mappedReader) Close() error {
	return m.r.Close()
}
