package retention_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"timestore/internal/catalog"
	"timestore/internal/policy"
	"timestore/internal/retention"
)

var now = time.Date(2024, 6, 30, 12, 0, 0, 0, time.UTC)

// dayPart is a live partition of the day that starts days days before
// now's day, holding rows from 01:00 to 23:00, of size bytes.
func dayPart(id int64, days int, bytes int64) catalog.Partition {
	start := time.Date(2024, 6, 30, 0, 0, 0, 0, time.UTC).AddDate(0, 0, -days)
	return catalog.Partition{ID: id, AddedInVersion: 1, PartitionFile: catalog.PartitionFile{
		WindowStart: start, TimeMin: start.Add(time.Hour), TimeMax: start.Add(23 * time.Hour),
		RowCount: bytes / 10, SizeBytes: bytes,
	}}
}

func hold(id int64, from, to time.Time) retention.Hold {
	return retention.Hold{ID: id, From: from, To: to, Reason: "test"}
}

func day(days int) time.Time {
	return time.Date(2024, 6, 30, 0, 0, 0, 0, time.UTC).AddDate(0, 0, -days)
}

func d(days int) policy.Duration { return policy.Duration(time.Duration(days) * 24 * time.Hour) }

func TestEvaluate(t *testing.T) {
	t.Parallel()
	// Ten daily partitions, 9 days old (id 1) to today (id 10), 100 bytes each.
	var parts []catalog.Partition
	for i := range 10 {
		parts = append(parts, dayPart(int64(i+1), 9-i, 100))
	}
	removed := dayPart(99, 20, 100)
	rv := int64(2)
	removed.RemovedInVersion = &rv
	ra := now
	removed.RemovedAt = &ra
	withRemoved := append([]catalog.Partition{removed}, parts...)

	type kept struct {
		id      int64
		rule    string
		reasons []string
	}
	for _, tc := range []struct {
		name     string
		parts    []catalog.Partition
		pol      *policy.Retention
		holds    []retention.Hold
		covered  func(catalog.Partition) bool
		selected map[int64]string // id -> rule
		kept     []kept
		over     int64
		note     string
	}{
		{name: "no policy", parts: parts, pol: nil, selected: map[int64]string{}},
		{name: "empty policy", parts: parts, pol: &policy.Retention{}, selected: map[int64]string{}},
		{
			// Cutoff: now - 5d = 06-25 12:00. Days 9..6 ago end by 06-24 23:00.
			// The partition of 5 days ago (06-25 01:00..23:00) straddles it: kept.
			name: "max_age alone", parts: withRemoved, pol: &policy.Retention{MaxAge: d(5)},
			selected: map[int64]string{1: "max_age", 2: "max_age", 3: "max_age", 4: "max_age"},
		},
		{
			name: "max_age cutoff inside a partition keeps it", parts: parts,
			pol:      &policy.Retention{MaxAge: policy.Duration(5*24*time.Hour + 12*time.Hour - 30*time.Minute)},
			selected: map[int64]string{1: "max_age", 2: "max_age", 3: "max_age", 4: "max_age"},
		},
		{
			name: "max_age at exactly time_max keeps it (strictly older only)", parts: parts,
			// cutoff = 06-24 23:00 = time_max of partition 4 (5 days... 6 days ago)
			pol:      &policy.Retention{MaxAge: policy.Duration(5*24*time.Hour + 13*time.Hour)},
			selected: map[int64]string{1: "max_age", 2: "max_age", 3: "max_age"},
		},
		{
			name: "max_bytes alone removes oldest first", parts: parts, pol: &policy.Retention{MaxBytes: 650},
			selected: map[int64]string{1: "max_bytes", 2: "max_bytes", 3: "max_bytes", 4: "max_bytes"},
		},
		{
			name: "max_bytes already met", parts: parts, pol: &policy.Retention{MaxBytes: 1000},
			selected: map[int64]string{},
		},
		{
			name: "min_keep alone selects nothing", parts: parts, pol: &policy.Retention{MinKeep: d(1)},
			selected: map[int64]string{},
		},
		{
			name: "min_keep floor stops max_bytes", parts: parts,
			// keep cutoff now - 3d = 06-27 12:00: partitions of 3 days ago and newer (ids 7..10) stay.
			pol:      &policy.Retention{MaxBytes: 150, MinKeep: d(3)},
			selected: map[int64]string{1: "max_bytes", 2: "max_bytes", 3: "max_bytes", 4: "max_bytes", 5: "max_bytes", 6: "max_bytes"},
			// 400 bytes remain; the floor keeps the three that max_bytes would need.
			kept: []kept{{7, "max_bytes", []string{"min_keep"}}, {8, "max_bytes", []string{"min_keep"}}, {9, "max_bytes", []string{"min_keep"}}},
			over: 250,
		},
		{
			name: "min_keep wins over max_age", parts: parts, pol: &policy.Retention{MaxAge: d(3), MinKeep: d(5)},
			// age cutoff 06-27 12:00 selects ids 1..6; keep cutoff 06-25 12:00 keeps 5 (straddles) and 6.
			selected: map[int64]string{1: "max_age", 2: "max_age", 3: "max_age", 4: "max_age"},
			kept:     []kept{{5, "max_age", []string{"min_keep"}}, {6, "max_age", []string{"min_keep"}}},
		},
		{
			name: "hold alone protects overlapping partitions", parts: parts,
			pol: &policy.Retention{MaxAge: d(5)},
			// [day 8 ago 12:00, day 7 ago 00:00): overlaps partition 2 only (ends at 23:00 < next day).
			holds:    []retention.Hold{hold(7, day(8).Add(12*time.Hour), day(7))},
			selected: map[int64]string{1: "max_age", 3: "max_age", 4: "max_age"},
			kept:     []kept{{2, "max_age", []string{"hold"}}},
		},
		{
			name: "hold boundaries: to is exclusive, time_max inclusive", parts: parts,
			pol: &policy.Retention{MaxAge: d(5)},
			holds: []retention.Hold{
				hold(1, day(9).Add(23*time.Hour), day(9).Add(24*time.Hour)), // starts at time_max of 1: overlaps
				hold(2, day(8).Add(-time.Hour), day(8).Add(time.Hour)),      // ends at time_min of 2: no overlap
				released(hold(3, day(7), day(7).Add(24*time.Hour))),         // released: no effect
			},
			selected: map[int64]string{2: "max_age", 3: "max_age", 4: "max_age"},
			kept:     []kept{{1, "max_age", []string{"hold"}}},
		},
		{
			name: "combined max_age + max_bytes + min_keep + hold", parts: parts,
			// Age cutoff now-8d = 06-22 12:00 selects id 1 (06-21). max_bytes 450
			// then goes on from 900 bytes: id 2 (06-22) is held, so it skips to
			// 3, 4 and 5; id 6 (06-26) is at the min_keep floor (now-4d =
			// 06-26 12:00), which stops it with 600 bytes left.
			pol:      &policy.Retention{MaxAge: d(8), MaxBytes: 450, MinKeep: d(4)},
			holds:    []retention.Hold{hold(5, day(8), day(7))},
			selected: map[int64]string{1: "max_age", 3: "max_bytes", 4: "max_bytes", 5: "max_bytes"},
			kept:     []kept{{2, "max_bytes", []string{"hold"}}, {6, "max_bytes", []string{"min_keep"}}},
			over:     150,
		},
		{
			name: "max_bytes skips a held partition and meets the budget", parts: parts,
			pol:      &policy.Retention{MaxBytes: 700},
			holds:    []retention.Hold{hold(5, day(9), day(8))},
			selected: map[int64]string{2: "max_bytes", 3: "max_bytes", 4: "max_bytes"},
			kept:     []kept{{1, "max_bytes", []string{"hold"}}},
		},
		{
			name: "require_export without exports removes nothing", parts: parts,
			pol:      &policy.Retention{MaxAge: d(7), RequireExport: true},
			selected: map[int64]string{},
			kept:     []kept{{1, "max_age", []string{"require_export"}}, {2, "max_age", []string{"require_export"}}},
			note:     retention.NoteNoExport,
		},
		{
			name: "require_export with exports removes what they cover", parts: parts,
			pol:      &policy.Retention{MaxAge: d(7), RequireExport: true},
			covered:  func(p catalog.Partition) bool { return p.ID == 2 },
			selected: map[int64]string{2: "max_age"},
			kept:     []kept{{1, "max_age", []string{"require_export"}}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			plan := retention.Evaluate(tc.parts, tc.pol, tc.holds, tc.covered, now)
			got := map[int64]string{}
			for _, p := range plan.Selected {
				got[p.ID] = p.Rule
			}
			require.Equal(t, tc.selected, got)
			var gotKept []kept
			for _, k := range plan.KeptBack {
				gotKept = append(gotKept, kept{k.ID, k.Rule, k.Reasons})
			}
			require.Equal(t, tc.kept, gotKept)
			require.Equal(t, tc.over, plan.BytesOverBudget)
			if tc.note != "" {
				require.Contains(t, plan.Notes, tc.note)
			}
			// Totals add up; the removed partition (id 99) is never counted.
			require.Equal(t, int64(10), plan.Live.Partitions)
			require.Equal(t, int64(len(tc.selected)), plan.Remove.Partitions)
			require.Equal(t, int64(100*len(tc.selected)), plan.Remove.Bytes)
			require.Equal(t, plan.Live.Bytes-plan.Remove.Bytes, plan.Remain.Bytes)
			// Selected partitions are oldest first.
			for i := 1; i < len(plan.Selected); i++ {
				require.False(t, plan.Selected[i].TimeMax.Before(plan.Selected[i-1].TimeMax))
			}
		})
	}
}

func released(h retention.Hold) retention.Hold {
	at := now
	h.ReleasedAt, h.ReleasedBy = &at, "test"
	return h
}

func TestEvaluateHeldTotals(t *testing.T) {
	t.Parallel()
	parts := []catalog.Partition{dayPart(1, 3, 100), dayPart(2, 2, 200), dayPart(3, 1, 400)}
	plan := retention.Evaluate(parts, &policy.Retention{MaxAge: d(30)}, []retention.Hold{hold(1, day(2), day(0))}, nil, now)
	require.Equal(t, catalog.Totals{Partitions: 2, Rows: 60, Bytes: 600}, plan.Held)
	require.Empty(t, plan.Selected)
}

func TestGrace(t *testing.T) {
	t.Parallel()
	require.Equal(t, policy.GraceDefault.Std(), retention.Grace(policy.Policy{}))
	require.Equal(t, policy.GraceDefault.Std(), retention.Grace(policy.Policy{Retention: &policy.Retention{}}))
	zero := policy.Duration(0)
	require.Equal(t, time.Duration(0), retention.Grace(policy.Policy{Retention: &policy.Retention{Grace: &zero}}))
	tenMin := policy.Duration(10 * time.Minute)
	require.Equal(t, 10*time.Minute, retention.Grace(policy.Policy{Retention: &policy.Retention{Grace: &tenMin}}))
}
