package export_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"timestore/internal/catalog"
	"timestore/internal/export"
	"timestore/internal/policy"
	"timestore/internal/reconcile"
	"timestore/internal/storage"
)

var (
	march = time.Date(2024, 3, 1, 0, 0, 0, 0, time.UTC)
	// planNow with after 1d: windows ending at or before 2024-03-09 12:00
	// are old enough, i.e. the days up to March 8.
	planNow = time.Date(2024, 3, 10, 12, 0, 0, 0, time.UTC)
	created = time.Date(2024, 3, 1, 0, 0, 0, 0, time.UTC) // before any window is due
)

// part is a live partition from hour h0 to hour h1 (inclusive) after march.
func part(id int64, h0, h1 int, level int) catalog.Partition {
	p := catalog.Partition{ID: id, CreatedAt: created}
	p.TimeMin = march.Add(time.Duration(h0) * time.Hour)
	p.TimeMax = march.Add(time.Duration(h1) * time.Hour)
	p.WindowStart = catalog.WindowStart(catalog.WindowDay, p.TimeMin)
	p.RowCount, p.SizeBytes, p.Level = 10*id, 100*id, level
	return p
}

// dayPart is a partition of day d (from 0 = March 1), 01:00 to 22:00.
func dayPart(id int64, d int) catalog.Partition { return part(id, 24*d+1, 24*d+22, 0) }

func verified(target string, d int, version int, ids ...int64) catalog.Export {
	start := march.AddDate(0, 0, d)
	return catalog.Export{Target: target, Window: export.WindowDay, WindowStart: start, WindowEnd: start.AddDate(0, 0, 1),
		Version: version, State: catalog.ExportVerified, PartitionIDs: ids}
}

var daily = export.Settings{Enabled: true, Target: "remote", Window: export.WindowDay, After: policy.Duration(24 * time.Hour)}

func labels(due []export.DueWindow) []string {
	out := []string{}
	for _, d := range due {
		out = append(out, d.Label)
	}
	return out
}

func TestDueWindows(t *testing.T) {
	t.Parallel()
	removed := dayPart(50, 0)
	v := int64(3)
	at := time.Now()
	removed.RemovedInVersion, removed.RemovedAt = &v, &at
	late := dayPart(11, 0)
	late.CreatedAt = planNow.Add(-2 * time.Hour)

	tests := []struct {
		name    string
		parts   []catalog.Partition
		exports []catalog.Export
		set     export.Settings
		want    []string
		check   func(t *testing.T, due []export.DueWindow)
	}{
		{name: "nothing", want: []string{}},
		{
			name:  "only windows that are over by after",
			parts: []catalog.Partition{dayPart(1, 0), dayPart(2, 7), dayPart(3, 8), dayPart(4, 9)},
			want:  []string{"2024-03-01", "2024-03-08"},
			check: func(t *testing.T, due []export.DueWindow) {
				d := due[0]
				require.Equal(t, export.ReasonNew, d.Reason)
				require.Equal(t, export.ModeFull, d.Mode)
				require.Equal(t, 0, d.CurrentVersion)
				require.Equal(t, 1, d.NextVersion)
				require.Equal(t, march, d.WindowStart)
				require.Equal(t, march.AddDate(0, 0, 1), d.WindowEnd)
				require.Equal(t, march.AddDate(0, 0, 2), d.DueSince, "end + after")
				require.Equal(t, 1, d.NewPartitions)
				require.EqualValues(t, 10, d.NewRows)
				require.EqualValues(t, 100, d.NewBytes)
			},
		},
		{
			name:  "after 0: due at the window's end",
			parts: []catalog.Partition{dayPart(1, 8), dayPart(2, 9)},
			set:   export.Settings{Target: "remote", Window: export.WindowDay},
			want:  []string{"2024-03-09"},
		},
		{
			name:    "covered windows are not due",
			parts:   []catalog.Partition{dayPart(1, 0), dayPart(2, 0), dayPart(3, 1)},
			exports: []catalog.Export{verified("remote", 0, 1, 1, 2), verified("remote", 1, 1, 3)},
			want:    []string{},
		},
		{
			name:    "another target's exports do not count",
			parts:   []catalog.Partition{dayPart(1, 0)},
			exports: []catalog.Export{verified("other", 0, 1, 1)},
			want:    []string{"2024-03-01"},
		},
		{
			name:    "late data: append to the next version",
			parts:   []catalog.Partition{dayPart(1, 0), late, removed},
			exports: []catalog.Export{verified("remote", 0, 1, 1)},
			want:    []string{"2024-03-01"},
			check: func(t *testing.T, due []export.DueWindow) {
				d := due[0]
				require.Equal(t, export.ReasonLateData, d.Reason)
				require.Equal(t, export.ModeAppend, d.Mode)
				require.Equal(t, 1, d.CurrentVersion)
				require.Equal(t, 2, d.NextVersion)
				require.Equal(t, 2, d.Partitions, "removed partitions do not count")
				require.Equal(t, 1, d.NewPartitions)
				require.EqualValues(t, 120, d.Rows)
				require.EqualValues(t, 110, d.NewRows)
				require.Equal(t, late.CreatedAt, d.DueSince, "due since the late data arrived")
				require.Equal(t, 2*time.Hour, export.Lag(due, planNow))
			},
		},
		{
			name:    "compaction output: only the rows the export lacks",
			parts:   []catalog.Partition{part(7, 1, 20, 1)},
			exports: []catalog.Export{verified("remote", 0, 1, 1, 2)},
			want:    []string{"2024-03-01"},
			check: func(t *testing.T, due []export.DueWindow) {
				require.Equal(t, export.ReasonRewritten, due[0].Reason)
				require.Equal(t, export.ModeExcept, due[0].Mode)
			},
		},
		{
			name:  "a partition spanning two windows is in both",
			parts: []catalog.Partition{part(1, 34, 53, 0)}, // March 2 10:00 to March 3 05:00
			want:  []string{"2024-03-02", "2024-03-03"},
		},
		{
			name:  "a window that is over, but not by after, is not due",
			parts: []catalog.Partition{part(1, 24*8+12, 24*9+2, 0)},
			want:  []string{},
		},
		{
			name:  "month windows",
			parts: []catalog.Partition{part(1, -24*10, -24*10+3, 0), dayPart(2, 0), dayPart(3, 5)},
			set:   export.Settings{Target: "remote", Window: export.WindowMonth, After: policy.Duration(24 * time.Hour)},
			want:  []string{"2024-02"},
			check: func(t *testing.T, due []export.DueWindow) {
				require.Equal(t, time.Date(2024, 2, 1, 0, 0, 0, 0, time.UTC), due[0].WindowStart)
				require.Equal(t, march, due[0].WindowEnd)
			},
		},
		{
			name:  "a failed attempt is reported",
			parts: []catalog.Partition{dayPart(1, 0)},
			exports: []catalog.Export{{Target: "remote", Window: export.WindowDay, WindowStart: march, Version: 1,
				State: catalog.ExportFailed, Attempts: 2, Error: "upload failed"}},
			want: []string{"2024-03-01"},
			check: func(t *testing.T, due []export.DueWindow) {
				require.Equal(t, 2, due[0].Attempts)
				require.Equal(t, "upload failed", due[0].LastError)
				require.Equal(t, 1, due[0].NextVersion)
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			set := tc.set
			if set.Target == "" {
				set = daily
			}
			due := export.DueWindows(tc.parts, tc.exports, set, planNow)
			require.Equal(t, tc.want, labels(due))
			if tc.check != nil {
				tc.check(t, due)
			}
		})
	}
}

func TestLag(t *testing.T) {
	t.Parallel()
	require.Zero(t, export.Lag(nil, planNow))
	due := export.DueWindows([]catalog.Partition{dayPart(1, 0), dayPart(2, 3)}, nil, daily, planNow)
	require.Equal(t, planNow.Sub(march.AddDate(0, 0, 2)), export.Lag(due, planNow))
	// A clock behind the data never gives a negative lag.
	require.Zero(t, export.Lag(due, march))
}

func TestSettingsOf(t *testing.T) {
	t.Parallel()
	_, ok := export.SettingsOf(policy.Policy{})
	require.False(t, ok)
	off := false
	s, ok := export.SettingsOf(policy.Policy{Export: &policy.Export{Target: "remote", After: policy.Duration(time.Hour), Enabled: &off}})
	require.True(t, ok)
	require.Equal(t, export.Settings{Enabled: false, Target: "remote", Window: "day", After: policy.Duration(time.Hour)}, s)
	s, _ = export.SettingsOf(policy.Policy{Export: &policy.Export{Target: "remote", Window: "month"}})
	require.True(t, s.Enabled)
	require.Equal(t, "month", s.Window)
}

func TestKeys(t *testing.T) {
	t.Parallel()
	day := time.Date(2024, 3, 5, 0, 0, 0, 0, time.UTC)
	require.Equal(t, "exports/cpu/window=2024-03-05/part-0007.parquet", export.PartKey("cpu", export.WindowDay, day, 7))
	require.Equal(t, "exports/cpu/window=2024-03/part-0000.parquet", export.PartKey("cpu", export.WindowMonth, day, 0))
	require.Equal(t, "exports/cpu/window=2024-03-05/_manifest.json", export.ManifestKey("cpu", export.WindowDay, day))
	require.Equal(t, "exports/cpu/window=2024-03-05/part-12345.parquet", export.PartKey("cpu", export.WindowDay, day, 12345))
	for _, ds := range []string{"cpu", "exports"} {
		for _, key := range []string{export.PartKey(ds, export.WindowDay, day, 3), export.ManifestKey(ds, export.WindowMonth, day)} {
			require.NoError(t, storage.ValidateKey(key))
			// Reconcile deletes unknown objects that look like partition
			// keys of a dataset; export objects never do, not even for a
			// dataset named "exports".
			for _, owner := range []string{ds, "exports", "cpu"} {
				require.False(t, reconcile.IsPartitionKey(owner, key), "%s looks like a partition of %s", key, owner)
			}
		}
	}
}

func TestFingerprint(t *testing.T) {
	t.Parallel()
	require.Equal(t, export.Fingerprint([]int64{3, 1, 2}), export.Fingerprint([]int64{1, 2, 3, 3}))
	require.NotEqual(t, export.Fingerprint([]int64{1, 2}), export.Fingerprint([]int64{1, 2, 3}))
	require.Len(t, export.Fingerprint(nil), 64)
}

func coverage(target, window string, start time.Time, ids ...int64) catalog.ExportCoverage {
	return catalog.ExportCoverage{Target: target, Window: window, WindowStart: start,
		WindowEnd: catalog.WindowEnd(window, start), PartitionIDs: ids}
}

func TestCoveredFunc(t *testing.T) {
	t.Parallel()
	require.Nil(t, export.CoveredFunc(nil), "no export yet")

	d := func(i int) time.Time { return march.AddDate(0, 0, i) }
	covered := export.CoveredFunc([]catalog.ExportCoverage{
		coverage("remote", export.WindowDay, d(0), 1, 2),
		coverage("remote", export.WindowDay, d(1), 5),
		coverage("remote", export.WindowDay, d(2), 5, 6),
		coverage("archive", export.WindowMonth, time.Date(2024, 2, 1, 0, 0, 0, 0, time.UTC), 9),
	})
	tests := []struct {
		name string
		p    catalog.Partition
		want bool
	}{
		{"in its window's export", dayPart(1, 0), true},
		{"late data in an exported window", dayPart(3, 0), false},
		{"in a window not exported", dayPart(1, 4), false},
		{"spanning two windows, both exported with it", part(5, 30, 60, 0), true},
		{"spanning two windows, one without it", part(6, 30, 60, 0), false},
		{"spanning an exported and an unexported window", part(6, 50, 80, 0), false},
		{"covered by another series", part(9, -24*5, -24*5+2, 0), true},
		{"a window boundary is the next window's", part(1, 0, 24, 0), false},
	}
	for _, tc := range tests {
		require.Equal(t, tc.want, covered(tc.p), tc.name)
	}
}
