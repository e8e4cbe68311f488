package storage

import (
	"path/filepath"
	"strings"
	"testing"
)

// FuzzValidateKey: an accepted key can never leave its target's directory.
func FuzzValidateKey(f *testing.F) {
	for _, s := range []string{"cpu/2024-01-01/x.parquet", "../x", "a/../b", "/abs", "a//b", "a\\b", "a/./b", "exports/cpu/window=2024-01/part-0001.parquet", "é", "a\x00b", ".", ".."} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, key string) {
		if ValidateKey(key) != nil {
			return
		}
		root := "/srv/objects"
		p := filepath.Join(root, key)
		if !strings.HasPrefix(p, root+"/") {
			t.Fatalf("key %q escapes the root: %s", key, p)
		}
		if filepath.Clean(key) != key || strings.HasPrefix(key, "/") {
			t.Fatalf("key %q is not canonical", key)
		}
		for _, seg := range strings.Split(key, "/") {
			if seg == "" || seg == "." || seg == ".." {
				t.Fatalf("key %q has segment %q", key, seg)
			}
		}
	})
}
