package storage_test

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"timestore/internal/storage"
)

func TestValidateKey(t *testing.T) {
	t.Parallel()
	valid := []string{
		"a",
		"sales/2024-05-01/0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b.parquet",
		"exports/sales/month=2024-05/part-0.parquet",
		"exports/sales/_manifest.json",
		"A.B_C=D-E",
		"a/b/c/d",
		"...x", // dots inside a segment are fine
		"a/.hidden",
		strings.Repeat("a", storage.MaxKeyLength),
	}
	for _, key := range valid {
		require.NoError(t, storage.ValidateKey(key), "key %q", key)
	}
	invalid := map[string]string{
		"empty":              "",
		"dotdot":             "..",
		"dot":                ".",
		"leading dotdot":     "../x",
		"inner dotdot":       "a/../b",
		"trailing dotdot":    "a/..",
		"inner dot":          "a/./b",
		"absolute":           "/abs",
		"double slash":       "a//b",
		"trailing slash":     "a/",
		"backslash":          `a\b`,
		"backslash dotdot":   `..\x`,
		"newline":            "a\nb",
		"nul":                "a\x00b",
		"tab":                "a\tb",
		"del":                "a\x7fb",
		"space":              "a b",
		"unicode":            "données/x.parquet",
		"unicode slash":      "a\u2215b",
		"percent":            "a%2Fb",
		"question":           "a?b",
		"hash":               "a#b",
		"colon":              "c:x",
		"star":               "a*",
		"too long":           strings.Repeat("a", storage.MaxKeyLength+1),
		"reserved attrs":     "a/b.attrs",
		"reserved tmp":       "a/b.parquet.18c2f.tmp",
		"invalid utf8":       "a\xffb",
		"only slash":         "/",
		"leading slash deep": "/a/b",
	}
	for name, key := range invalid {
		err := storage.ValidateKey(key)
		require.Error(t, err, "%s: key %q", name, key)
		require.ErrorIs(t, err, storage.ErrInvalidKey, name)
	}
}

func TestPartitionKey(t *testing.T) {
	t.Parallel()
	// 2024-05-01T13:45 in UTC, given in another zone to check the UTC
	// conversion.
	zone := time.FixedZone("UTC+2", 2*3600)
	start := time.Date(2024, 5, 1, 15, 45, 0, 0, zone)
	id := "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"
	tests := []struct {
		window string
		want   string
	}{
		{storage.WindowDay, "sales/2024-05-01/" + id + ".parquet"},
		{storage.WindowHour, "sales/2024-05-01T13/" + id + ".parquet"},
		{storage.WindowMonth, "sales/2024-05/" + id + ".parquet"},
	}
	for _, tt := range tests {
		key := storage.PartitionKey("sales", tt.window, start, id)
		require.Equal(t, tt.want, key, tt.window)
		require.NoError(t, storage.ValidateKey(key))
	}
	// Midnight UTC is still the previous day in a zone west of UTC.
	west := time.Date(2024, 4, 30, 20, 0, 0, 0, time.FixedZone("UTC-4", -4*3600))
	require.Equal(t, "d/2024-05-01/x.parquet", storage.PartitionKey("d", storage.WindowDay, west, "x"))
}

func TestNewObjectID(t *testing.T) {
	t.Parallel()
	seen := make(map[string]bool)
	prev := ""
	for range 1000 {
		id := storage.NewObjectID()
		require.Len(t, id, 36)
		require.Equal(t, byte('7'), id[14], "UUID version 7: %s", id)
		require.NoError(t, storage.ValidateKey(id))
		require.False(t, seen[id], "duplicate id %s", id)
		seen[id] = true
		// UUIDv7 from one process is monotonic.
		require.Greater(t, id, prev)
		prev = id
	}
}

func TestValidateChecksum(t *testing.T) {
	t.Parallel()
	require.NoError(t, storage.ValidateChecksum("sha256:"+strings.Repeat("ab", 32)))
	for _, bad := range []string{"", "sha256:", "md5:" + strings.Repeat("ab", 32), "sha256:" + strings.Repeat("zz", 32), "sha256:abc"} {
		require.Error(t, storage.ValidateChecksum(bad), bad)
	}
}
