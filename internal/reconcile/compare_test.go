package reconcile_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"timestore/internal/catalog"
	"timestore/internal/reconcile"
)

func TestCompare(t *testing.T) {
	t.Parallel()
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	const age = time.Hour
	old, young := now.Add(-2*time.Hour), now.Add(-time.Minute)
	ref := func(target, key string) catalog.ObjectRef {
		return catalog.ObjectRef{Target: target, Key: key, State: catalog.StateLive}
	}
	obj := func(target, key string, mod time.Time) reconcile.Object {
		return reconcile.Object{Target: target, Key: key, Size: 10, ModTime: mod}
	}
	const k1, k2 = "metrics/2025-06-01/a.parquet", "metrics/2025-06-01/b.parquet"

	for _, tc := range []struct {
		name          string
		before, after []catalog.ObjectRef
		listed        []reconcile.Object
		orphans       []string
		young         []string
		foreign       []string
		missing       []string
	}{
		{
			name:   "referenced objects are in use, however old",
			before: []catalog.ObjectRef{ref("local", k1)}, after: []catalog.ObjectRef{ref("local", k1)},
			listed: []reconcile.Object{obj("local", k1, old)},
		},
		{
			name:    "unreferenced and old: orphan",
			listed:  []reconcile.Object{obj("local", k1, old)},
			orphans: []string{k1},
		},
		{
			name:    "exactly the safety age: orphan",
			listed:  []reconcile.Object{obj("local", k1, now.Add(-age))},
			orphans: []string{k1},
		},
		{
			name:   "unreferenced and young: kept",
			listed: []reconcile.Object{obj("local", k1, young)},
			young:  []string{k1},
		},
		{
			name:   "no modification time: kept",
			listed: []reconcile.Object{obj("local", k1, time.Time{})},
			young:  []string{k1},
		},
		{
			name: "not shaped like a partition key: never deleted",
			listed: []reconcile.Object{
				obj("local", "metrics/notes.txt", old),
				obj("local", "metrics/x.parquet", old),
				obj("local", "metrics/a/b/c.parquet", old),
				obj("local", "metrics/2025-06-01/.parquet", old),
				obj("local", "metricsx/2025-06-01/a.parquet", old),
			},
			foreign: []string{"metrics/notes.txt", "metrics/x.parquet", "metrics/a/b/c.parquet", "metrics/2025-06-01/.parquet", "metricsx/2025-06-01/a.parquet"},
		},
		{
			name:   "committed while the listing ran: in use, not missing",
			after:  []catalog.ObjectRef{ref("local", k1), ref("local", k2)},
			listed: []reconcile.Object{obj("local", k1, old)},
		},
		{
			name:   "purged while the listing ran: not missing, not deleted",
			before: []catalog.ObjectRef{ref("local", k1), ref("local", k2)},
			listed: []reconcile.Object{obj("local", k1, old)},
		},
		{
			name:    "referenced in both reads and not listed: missing",
			before:  []catalog.ObjectRef{ref("local", k1), ref("local", k2)},
			after:   []catalog.ObjectRef{ref("local", k1), ref("local", k2)},
			listed:  []reconcile.Object{obj("local", k1, old)},
			missing: []string{k2},
		},
		{
			name:    "targets are told apart",
			before:  []catalog.ObjectRef{ref("remote", k1)},
			after:   []catalog.ObjectRef{ref("remote", k1)},
			listed:  []reconcile.Object{obj("local", k1, old)},
			orphans: []string{k1},
			missing: []string{k1},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := reconcile.Compare("metrics", tc.before, tc.after, tc.listed, now, age)
			require.Equal(t, len(tc.listed), c.Scanned)
			require.Equal(t, tc.orphans, objKeys(c.Orphans), "orphans")
			require.Equal(t, tc.young, objKeys(c.Young), "young")
			require.Equal(t, tc.foreign, objKeys(c.Foreign), "foreign")
			var missing []string
			for _, m := range c.Missing {
				missing = append(missing, m.Key)
			}
			require.Equal(t, tc.missing, missing, "missing")
		})
	}
}

func objKeys(objs []reconcile.Object) []string {
	var keys []string
	for _, o := range objs {
		keys = append(keys, o.Key)
	}
	return keys
}
