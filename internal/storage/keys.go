package storage

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
)

// MaxKeyLength is the longest object key ValidateKey accepts, in bytes. It is
// the S3 limit.
const MaxKeyLength = 1024

// ErrInvalidKey is wrapped by every error ValidateKey returns.
var ErrInvalidKey = errors.New("invalid object key")

// Partition windows understood by PartitionKey. They match the partition
// windows of a dataset in the catalog.
const (
	WindowHour  = "hour"
	WindowDay   = "day"
	WindowMonth = "month"
)

// Suffixes that ValidateKey reserves: fileblob keeps metadata sidecars under
// ".attrs" and writes in-progress uploads to ".tmp" files beside their final
// name, so keys with these suffixes could not round-trip through a file
// target.
var reservedSuffixes = []string{".attrs", ".tmp"}

// NewObjectID returns a fresh, unique object id that sorts by creation time
// (a UUIDv7 in its canonical string form).
func NewObjectID() string {
	return uuid.Must(uuid.NewV7()).String()
}

// WindowLabel formats the start of a partition window for use in object keys:
// "2024-05-01T13" for an hour, "2024-05-01" for a day, "2024-05" for a month,
// always in UTC. Windows other than hour and month are treated as days, as
// the catalog does.
func WindowLabel(window string, windowStart time.Time) string {
	t := windowStart.UTC()
	switch window {
	case WindowHour:
		return t.Format("2006-01-02T15")
	case WindowMonth:
		return t.Format("2006-01")
	default:
		return t.Format("2006-01-02")
	}
}

// PartitionKey returns the object key of a partition file:
// DATASET/WINDOW/ID.parquet, where WINDOW is WindowLabel(window, windowStart).
// The dataset name and the id are used as given; callers pass a validated
// dataset name and an id from NewObjectID.
func PartitionKey(dataset, window string, windowStart time.Time, id string) string {
	return dataset + "/" + WindowLabel(window, windowStart) + "/" + id + ".parquet"
}

// ValidateKey reports whether key is safe to use as an object key on every
// kind of target. It refuses empty keys, keys over MaxKeyLength bytes,
// absolute keys, empty segments ("a//b", a trailing "/"), "." and ".."
// segments, and any character outside [A-Za-z0-9._=/-] (which excludes
// backslashes, control characters, spaces and non-ASCII letters). Keys ending
// in ".attrs" or ".tmp" are reserved for the file target's own bookkeeping.
func ValidateKey(key string) error {
	if err := validateKey(key, true); err != nil {
		return fmt.Errorf("%w %q: %s", ErrInvalidKey, truncate(key, 80), err)
	}
	return nil
}

func validateKey(key string, checkSuffix bool) error {
	switch {
	case key == "":
		return errors.New("empty")
	case len(key) > MaxKeyLength:
		return fmt.Errorf("longer than %d bytes", MaxKeyLength)
	case strings.HasPrefix(key, "/"):
		return errors.New("absolute")
	}
	for i := 0; i < len(key); i++ {
		if !keyByteAllowed(key[i]) {
			return fmt.Errorf("character %q at byte %d is not allowed (allowed: A-Z a-z 0-9 . _ = / -)", key[i], i)
		}
	}
	for seg := range strings.SplitSeq(key, "/") {
		switch seg {
		case "":
			return errors.New("empty path segment")
		case ".", "..":
			return fmt.Errorf("%q path segment", seg)
		}
	}
	for _, s := range reservedSuffixes {
		if checkSuffix && strings.HasSuffix(key, s) {
			return fmt.Errorf("suffix %q is reserved", s)
		}
	}
	return nil
}

// validatePrefix checks a List prefix: empty, or a key-like string that may
// end in "/".
func validatePrefix(prefix string) error {
	if prefix == "" {
		return nil
	}
	p := strings.TrimSuffix(prefix, "/")
	if err := validateKey(p, false); err != nil {
		return fmt.Errorf("%w: prefix %q: %s", ErrInvalidKey, truncate(prefix, 80), err)
	}
	return nil
}

func keyByteAllowed(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	case c == '.', c == '_', c == '=', c == '/', c == '-':
		return true
	}
	return false
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
