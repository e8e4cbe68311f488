package storage

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strings"
)

// ChecksumPrefix starts every checksum this package produces; the rest is the
// hex SHA-256 of the object's bytes.
const ChecksumPrefix = "sha256:"

// ErrMismatch is wrapped by errors about objects whose size or checksum
// differs from what was expected.
var ErrMismatch = errors.New("object does not match its expected size or checksum")

// Target is a named place where objects are stored.
type Target struct {
	// Name identifies the target in configuration and in the catalog.
	Name string
	// Bucket stores the objects.
	Bucket Bucket
	// LocalDir, set for file:// targets, is the directory holding the
	// bucket's objects: the object at key is the file
	// filepath.Join(LocalDir, filepath.FromSlash(key)), readable in place.
	// Empty for remote targets.
	LocalDir string

	// url is the redacted URL the target was opened from, for messages.
	url string
}

// NewTarget opens the bucket at rawURL (see OpenBucket) as a target called
// name. Only the redacted form of rawURL is kept.
func NewTarget(ctx context.Context, name, rawURL string) (*Target, error) {
	if err := ValidateTargetName(name); err != nil {
		return nil, err
	}
	localDir, err := localDirOf(rawURL)
	if err != nil {
		return nil, fmt.Errorf("target %s: %w", name, err)
	}
	b, err := OpenBucket(ctx, rawURL)
	if err != nil {
		return nil, fmt.Errorf("target %s: %w", name, err)
	}
	return &Target{Name: name, Bucket: b, LocalDir: localDir, url: RedactedURL(rawURL)}, nil
}

// localDirOf returns the absolute directory of a file:// URL, or "" for other
// schemes. It follows fileblob's reading of the URL.
func localDirOf(rawURL string) (string, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "", fmt.Errorf("parse URL %s: %w", RedactedURL(rawURL), redactURLError(err))
	}
	if u.Scheme != "file" {
		return "", nil
	}
	p := u.Path
	if u.Host == "." {
		p = strings.TrimPrefix(p, "/")
	}
	if p == "" {
		return "", fmt.Errorf("file URL %s has no directory", RedactedURL(rawURL))
	}
	return filepath.Abs(filepath.FromSlash(p))
}

// RedactedURL returns the URL the target was opened from, with secrets
// redacted; empty if the target was built by hand.
func (t *Target) RedactedURL() string { return t.url }

// String describes the target without revealing secrets.
func (t *Target) String() string {
	if t.url == "" {
		return t.Name
	}
	return t.Name + " (" + t.url + ")"
}

// Check verifies that the target answers by listing at most one object.
func (t *Target) Check(ctx context.Context) error {
	errStop := errors.New("stop")
	err := t.Bucket.List(ctx, "", func(ObjectInfo) error { return errStop })
	if err != nil && !errors.Is(err, errStop) {
		return fmt.Errorf("check target %s: %w", t.Name, err)
	}
	return nil
}

// PutFile uploads the local file at path as the object key, computing its
// checksum on the way, and then checks that the stored object has the size
// that was sent. The object appears under key only once complete; an
// existing object with that key is replaced.
func (t *Target) PutFile(ctx context.Context, key, path string) (size int64, checksum string, err error) {
	if err := ValidateKey(key); err != nil {
		return 0, "", err
	}
	f, err := os.Open(path)
	if err != nil {
		return 0, "", fmt.Errorf("put %s on target %s: %w", key, t.Name, err)
	}
	defer f.Close()
	h := sha256.New()
	cr := &countingReader{r: io.TeeReader(f, h)}
	if err := t.Bucket.Upload(ctx, key, cr); err != nil {
		return 0, "", fmt.Errorf("put %s on target %s: %w", key, t.Name, err)
	}
	info, err := t.Bucket.Attributes(ctx, key)
	if err != nil {
		return 0, "", fmt.Errorf("put %s on target %s: check upload: %w", key, t.Name, err)
	}
	if info.Size != cr.n {
		return 0, "", fmt.Errorf("put %s on target %s: %w: sent %d bytes, target holds %d", key, t.Name, ErrMismatch, cr.n, info.Size)
	}
	return cr.n, formatChecksum(h), nil
}

// GetFile downloads the object key to the local file dst, computing its
// checksum. dst appears only once complete (the bytes go to a temporary file
// in dst's directory, which is synced and renamed); an existing dst is
// replaced.
func (t *Target) GetFile(ctx context.Context, key, dst string) (size int64, checksum string, err error) {
	if err := ValidateKey(key); err != nil {
		return 0, "", err
	}
	size, checksum, err = t.download(ctx, key, dst, func(int64, string) error { return nil })
	if err != nil {
		return 0, "", fmt.Errorf("get %s from target %s: %w", key, t.Name, err)
	}
	return size, checksum, nil
}

// download copies the object to a temporary file beside dst, lets check
// judge the size and checksum, and renames the file to dst only if check
// passes. It leaves no temporary file behind on failure.
func (t *Target) download(ctx context.Context, key, dst string, check func(size int64, checksum string) error) (size int64, checksum string, err error) {
	rc, err := t.Bucket.NewReader(ctx, key)
	if err != nil {
		return 0, "", err
	}
	defer rc.Close()
	tmp, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".*"+tempSuffix)
	if err != nil {
		return 0, "", err
	}
	defer func() {
		if err != nil {
			_ = tmp.Close()
			_ = os.Remove(tmp.Name())
		}
	}()
	h := sha256.New()
	size, err = io.Copy(io.MultiWriter(tmp, h), rc)
	if err != nil {
		return 0, "", err
	}
	checksum = formatChecksum(h)
	if err = check(size, checksum); err != nil {
		return 0, "", err
	}
	if err = tmp.Sync(); err != nil {
		return 0, "", err
	}
	if err = tmp.Close(); err != nil {
		return 0, "", err
	}
	if err = os.Rename(tmp.Name(), dst); err != nil {
		return 0, "", err
	}
	return size, checksum, nil
}

// tempSuffix ends the names of the temporary files GetFile and the Cache
// write.
const tempSuffix = ".tmp"

// Delete removes the object key. It fails with an error wrapping ErrNotExist
// if there is no such object.
func (t *Target) Delete(ctx context.Context, key string) error {
	if err := ValidateKey(key); err != nil {
		return err
	}
	if err := t.Bucket.Delete(ctx, key); err != nil {
		return fmt.Errorf("target %s: %w", t.Name, err)
	}
	return nil
}

// Attributes describes the object key.
func (t *Target) Attributes(ctx context.Context, key string) (ObjectInfo, error) {
	if err := ValidateKey(key); err != nil {
		return ObjectInfo{}, err
	}
	info, err := t.Bucket.Attributes(ctx, key)
	if err != nil {
		return ObjectInfo{}, fmt.Errorf("target %s: %w", t.Name, err)
	}
	return info, nil
}

// List calls fn for every object whose key starts with prefix ("" for all),
// in key order, and stops at the first error fn returns.
func (t *Target) List(ctx context.Context, prefix string, fn func(ObjectInfo) error) error {
	if err := validatePrefix(prefix); err != nil {
		return err
	}
	return t.Bucket.List(ctx, prefix, fn)
}

// Verify reads the object key back and checks it against the expected size
// and checksum ("sha256:<hex>"). A negative size or an empty checksum skips
// that check. A difference is reported as an error wrapping ErrMismatch.
func (t *Target) Verify(ctx context.Context, key string, size int64, checksum string) error {
	if err := ValidateKey(key); err != nil {
		return err
	}
	if checksum != "" {
		if err := ValidateChecksum(checksum); err != nil {
			return err
		}
	}
	if size >= 0 {
		info, err := t.Bucket.Attributes(ctx, key)
		if err != nil {
			return fmt.Errorf("verify %s on target %s: %w", key, t.Name, err)
		}
		if info.Size != size {
			return fmt.Errorf("verify %s on target %s: %w: size %d, want %d", key, t.Name, ErrMismatch, info.Size, size)
		}
	}
	rc, err := t.Bucket.NewReader(ctx, key)
	if err != nil {
		return fmt.Errorf("verify %s on target %s: %w", key, t.Name, err)
	}
	defer rc.Close()
	h := sha256.New()
	n, err := io.Copy(h, rc)
	if err != nil {
		return fmt.Errorf("verify %s on target %s: read: %w", key, t.Name, err)
	}
	if err := checkObject(n, formatChecksum(h), size, checksum); err != nil {
		return fmt.Errorf("verify %s on target %s: %w", key, t.Name, err)
	}
	return nil
}

// ValidateChecksum checks that checksum has the form "sha256:<64 hex digits>".
func ValidateChecksum(checksum string) error {
	hexPart, ok := strings.CutPrefix(checksum, ChecksumPrefix)
	if !ok || len(hexPart) != 2*sha256.Size {
		return fmt.Errorf("invalid checksum %q: want %s followed by %d hex digits", truncate(checksum, 80), ChecksumPrefix, 2*sha256.Size)
	}
	if _, err := hex.DecodeString(hexPart); err != nil {
		return fmt.Errorf("invalid checksum %q: %w", truncate(checksum, 80), err)
	}
	return nil
}

// Checksum returns the checksum of the local file at path and its size.
func Checksum(path string) (size int64, checksum string, err error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, "", err
	}
	defer f.Close()
	h := sha256.New()
	size, err = io.Copy(h, f)
	if err != nil {
		return 0, "", fmt.Errorf("checksum %s: %w", path, err)
	}
	return size, formatChecksum(h), nil
}

// VerifyFile checks that the local file at path has the size and checksum
// recorded for its object (a negative size or an empty checksum is not
// checked); a difference is an error wrapping ErrMismatch.
func VerifyFile(path string, size int64, checksum string) error {
	n, sum, err := Checksum(path)
	if err != nil {
		return err
	}
	if err := checkObject(n, sum, size, checksum); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// checkObject compares what was read with what was expected; a negative
// wantSize or an empty wantChecksum is not checked.
func checkObject(size int64, checksum string, wantSize int64, wantChecksum string) error {
	if wantSize >= 0 && size != wantSize {
		return fmt.Errorf("%w: read %d bytes, want %d", ErrMismatch, size, wantSize)
	}
	if wantChecksum != "" && !strings.EqualFold(checksum, wantChecksum) {
		return fmt.Errorf("%w: checksum %s, want %s", ErrMismatch, checksum, wantChecksum)
	}
	return nil
}

func formatChecksum(h hash.Hash) string {
	return ChecksumPrefix + hex.EncodeToString(h.Sum(nil))
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}
