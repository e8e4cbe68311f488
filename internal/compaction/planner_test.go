package compaction

import (
	"cmp"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"timestore/internal/catalog"
	"timestore/internal/policy"
)

var day0 = time.Date(2024, 5, 1, 0, 0, 0, 0, time.UTC)

// spec describes a partition for the table tests: its window (day index),
// its time range as minutes into the day, size and level.
type spec struct {
	id         int64
	day        int
	from, to   int
	size       int64
	level      int
	noCompact  bool
	removed    bool
	outOfRange bool
}

func (s spec) partition() catalog.Partition {
	ws := day0.AddDate(0, 0, s.day)
	p := catalog.Partition{
		ID: s.id,
		PartitionFile: catalog.PartitionFile{
			WindowStart: ws,
			TimeMin:     ws.Add(time.Duration(s.from) * time.Minute),
			TimeMax:     ws.Add(time.Duration(s.to) * time.Minute),
			RowCount:    s.size * 10,
			SizeBytes:   s.size,
			Level:       s.level,
		},
		NoCompact: s.noCompact,
	}
	if s.removed {
		v := int64(9)
		p.RemovedInVersion = &v
		now := day0
		p.RemovedAt = &now
	}
	if s.outOfRange {
		p.TimeMax = ws.AddDate(0, 0, 1) // the first instant of the next window
	}
	return p
}

// small returns n partitions of size each, ids from first, one after the
// other in day d.
func small(first int64, d, n int, size int64) []spec {
	out := make([]spec, n)
	for i := range out {
		out[i] = spec{id: first + int64(i), day: d, from: 10 * i, to: 10*i + 5, size: size}
	}
	return out
}

func TestPlanTable(t *testing.T) {
	t.Parallel()
	pol := policy.Compaction{TargetFileBytes: 100, MinInputFiles: 3}
	cat := func(parts ...[]spec) []spec { return slices.Concat(parts...) }
	for _, tc := range []struct {
		name   string
		parts  []spec
		pol    *policy.Compaction // nil: pol
		limits Limits
		want   [][]int64
		levels []int
	}{
		{name: "empty", parts: nil, want: nil},
		{name: "one run below the target is merged whole", parts: small(1, 0, 4, 10), want: [][]int64{{1, 2, 3, 4}}, levels: []int{1}},
		{name: "fewer than min_input_files", parts: small(1, 0, 2, 10), want: nil},
		{
			name: "a big file breaks adjacency",
			parts: cat(small(1, 0, 2, 10),
				[]spec{{id: 3, day: 0, from: 25, to: 28, size: 100}},
				[]spec{{id: 4, day: 0, from: 30, to: 31, size: 10}, {id: 5, day: 0, from: 40, to: 41, size: 10}, {id: 6, day: 0, from: 50, to: 51, size: 10}}),
			want: [][]int64{{4, 5, 6}},
		},
		{
			name: "a no_compact file breaks adjacency",
			parts: cat(small(1, 0, 3, 10),
				[]spec{{id: 4, day: 0, from: 35, to: 36, size: 10, noCompact: true}},
				[]spec{{id: 5, day: 0, from: 40, to: 41, size: 10}, {id: 6, day: 0, from: 50, to: 51, size: 10}}),
			want: [][]int64{{1, 2, 3}},
		},
		{
			name:  "a removed or misplaced file is never an input",
			parts: cat(small(1, 0, 3, 10), []spec{{id: 4, day: 0, from: 35, to: 36, size: 10, removed: true}, {id: 5, day: 0, from: 37, to: 38, size: 10, outOfRange: true}}),
			want:  [][]int64{{1, 2, 3}},
		},
		{name: "never across windows", parts: cat(small(1, 0, 2, 10), small(3, 1, 2, 10)), want: nil},
		{
			name:  "one group per window",
			parts: cat(small(1, 0, 2, 10), small(3, 1, 2, 10)),
			pol:   &policy.Compaction{TargetFileBytes: 100, MinInputFiles: 2},
			want:  [][]int64{{1, 2}, {3, 4}},
		},
		{
			name:  "a group closes once it reaches the target",
			parts: small(1, 0, 7, 40),
			pol:   &policy.Compaction{TargetFileBytes: 100, MinInputFiles: 2},
			want:  [][]int64{{1, 2, 3}, {4, 5, 6}},
		},
		{
			name:   "max input bytes",
			parts:  small(1, 0, 5, 30),
			pol:    &policy.Compaction{TargetFileBytes: 100, MinInputFiles: 2},
			limits: Limits{MaxInputBytes: 70},
			want:   [][]int64{{1, 2}, {3, 4}},
		},
		{name: "max input files", parts: small(1, 0, 7, 1), limits: Limits{MaxInputFiles: 3}, want: [][]int64{{1, 2, 3}, {4, 5, 6}}},
		{name: "max groups", parts: small(1, 0, 7, 1), limits: Limits{MaxInputFiles: 3, MaxGroups: 1}, want: [][]int64{{1, 2, 3}}},
		{name: "at the target is big", parts: cat(small(1, 0, 3, 10), []spec{{id: 4, day: 0, from: 59, to: 59, size: 100}}), want: [][]int64{{1, 2, 3}}},
		{
			name: "level is one more than the highest input level",
			parts: []spec{
				{id: 1, day: 0, from: 0, to: 1, size: 10, level: 0},
				{id: 2, day: 0, from: 2, to: 3, size: 10, level: 2},
				{id: 3, day: 0, from: 4, to: 5, size: 10, level: 1},
			},
			want: [][]int64{{1, 2, 3}}, levels: []int{3},
		},
		{
			name: "overlapping ranges are ordered by time_min, time_max, id",
			parts: []spec{
				{id: 9, day: 0, from: 0, to: 600, size: 10},
				{id: 3, day: 0, from: 0, to: 600, size: 10},
				{id: 5, day: 0, from: 0, to: 60, size: 10},
				{id: 1, day: 0, from: 30, to: 40, size: 10},
			},
			pol:  &policy.Compaction{TargetFileBytes: 100, MinInputFiles: 2},
			want: [][]int64{{5, 3, 9, 1}},
		},
		{
			name:  "zero settings take the defaults (128 MiB, 4 files)",
			parts: cat(small(1, 0, 3, 1<<20), small(4, 1, 4, 1<<20), []spec{{id: 8, day: 1, from: 100, to: 101, size: policy.TargetFileBytesDefault}}),
			pol:   &policy.Compaction{},
			want:  [][]int64{{4, 5, 6, 7}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := pol
			if tc.pol != nil {
				p = *tc.pol
			}
			parts := make([]catalog.Partition, len(tc.parts))
			for i, s := range tc.parts {
				parts[i] = s.partition()
			}
			groups := Plan(parts, p, catalog.WindowDay, tc.limits)
			var got [][]int64
			for _, g := range groups {
				got = append(got, g.Inputs)
			}
			require.Equal(t, tc.want, got)
			for i, l := range tc.levels {
				require.Equal(t, l, groups[i].Level)
			}
			checkPlan(t, parts, Settings(&p), catalog.WindowDay, tc.limits, groups)
		})
	}
}

// planOrder sorts partitions the way the planner walks them.
func planOrder(parts []catalog.Partition) []catalog.Partition {
	s := slices.Clone(parts)
	slices.SortFunc(s, func(a, b catalog.Partition) int {
		return cmp.Or(a.WindowStart.Compare(b.WindowStart), a.TimeMin.Compare(b.TimeMin), a.TimeMax.Compare(b.TimeMax), cmp.Compare(a.ID, b.ID))
	})
	return s
}

// checkPlan checks the invariants every plan must satisfy.
func checkPlan(t *testing.T, parts []catalog.Partition, pol policy.Compaction, window string, limits Limits, groups []Group) {
	t.Helper()
	limits = limits.withDefaults(pol.TargetFileBytes)
	order := planOrder(parts)
	pos := make(map[int64]int, len(order))
	byID := make(map[int64]catalog.Partition, len(order))
	for i, p := range order {
		pos[p.ID] = i
		byID[p.ID] = p
	}
	used := map[int64]bool{}
	lastPos := -1
	for gi, g := range groups {
		require.GreaterOrEqual(t, len(g.Inputs), pol.MinInputFiles, "group %d: too few inputs", gi)
		require.LessOrEqual(t, len(g.Inputs), limits.MaxInputFiles, "group %d: too many inputs", gi)
		require.LessOrEqual(t, g.InputBytes, limits.MaxInputBytes, "group %d: too many bytes", gi)
		require.Len(t, g.Partitions, len(g.Inputs))
		var rows, bytes int64
		level := 0
		tmin, tmax := byID[g.Inputs[0]].TimeMin, byID[g.Inputs[0]].TimeMax
		for i, id := range g.Inputs {
			p, ok := byID[id]
			require.True(t, ok, "group %d: unknown input %d", gi, id)
			require.Equal(t, p, g.Partitions[i])
			require.False(t, used[id], "partition %d in two groups", id)
			used[id] = true
			require.True(t, Eligible(p, pol, window), "group %d: input %d is not eligible (big, no_compact, removed or misplaced)", gi, id)
			require.Less(t, p.SizeBytes, pol.TargetFileBytes, "big files are never inputs")
			require.Equal(t, g.WindowStart, p.WindowStart, "group %d: input %d in another window", gi, id)
			if i > 0 {
				require.Equal(t, pos[g.Inputs[i-1]]+1, pos[id], "group %d: inputs %d and %d are not adjacent", gi, g.Inputs[i-1], id)
				require.Less(t, bytes, pol.TargetFileBytes, "group %d: kept growing after reaching the target", gi)
			}
			rows += p.RowCount
			bytes += p.SizeBytes
			level = max(level, p.Level)
			tmin, tmax = minTime(tmin, p.TimeMin), maxTime(tmax, p.TimeMax)
		}
		require.Greater(t, pos[g.Inputs[0]], lastPos, "groups in plan order")
		lastPos = pos[g.Inputs[len(g.Inputs)-1]]
		require.Equal(t, rows, g.InputRows)
		require.Equal(t, bytes, g.InputBytes)
		require.Equal(t, bytes, g.ExpectedOutputBytes)
		require.Equal(t, level+1, g.Level)
		require.Equal(t, tmin, g.TimeMin)
		require.Equal(t, tmax, g.TimeMax)
	}
	if limits.MaxGroups > 0 {
		require.LessOrEqual(t, len(groups), limits.MaxGroups)
		return
	}
	// Maximality: a whole run of eligible partitions that fits in one group
	// is one group.
	for i := 0; i < len(order); {
		if !Eligible(order[i], pol, window) {
			i++
			continue
		}
		j := i
		var bytes int64
		for j < len(order) && order[j].WindowStart.Equal(order[i].WindowStart) && Eligible(order[j], pol, window) {
			bytes += order[j].SizeBytes
			j++
		}
		n := j - i
		if n >= pol.MinInputFiles && n <= limits.MaxInputFiles && bytes < pol.TargetFileBytes && bytes <= limits.MaxInputBytes {
			var run []int64
			for _, p := range order[i:j] {
				run = append(run, p.ID)
			}
			found := slices.ContainsFunc(groups, func(g Group) bool { return slices.Equal(g.Inputs, run) })
			require.True(t, found, "run %v fits in one group but is not planned as one", run)
		}
		i = j
	}
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// randomManifest returns n partitions over a few windows of the given kind,
// mostly small, some big, some marked, with random levels and overlaps.
func randomManifest(rng *rand.Rand, n int, window string, target int64) []catalog.Partition {
	parts := make([]catalog.Partition, n)
	ids := rng.Perm(n * 3)
	for i := range parts {
		var ws time.Time
		switch window {
		case catalog.WindowHour:
			ws = day0.Add(time.Duration(rng.IntN(4)) * time.Hour)
		case catalog.WindowMonth:
			ws = day0.AddDate(0, rng.IntN(4), 0)
		default:
			ws = day0.AddDate(0, 0, rng.IntN(4))
		}
		span := catalog.WindowEnd(window, ws).Sub(ws)
		a := time.Duration(rng.Int64N(int64(span)))
		b := time.Duration(rng.Int64N(int64(span)))
		if rng.IntN(3) == 0 { // many files share boundaries
			a = time.Duration(rng.IntN(4)) * span / 4
		}
		if b < a {
			a, b = b, a
		}
		size := 1 + rng.Int64N(target/3)
		switch rng.IntN(10) {
		case 0:
			size = target + rng.Int64N(target) // big
		case 1:
			size = target - 1 - rng.Int64N(target/10) // almost big
		}
		parts[i] = catalog.Partition{
			ID: int64(ids[i] + 1),
			PartitionFile: catalog.PartitionFile{
				WindowStart: ws,
				TimeMin:     ws.Add(a),
				TimeMax:     ws.Add(b),
				RowCount:    rng.Int64N(100000),
				SizeBytes:   size,
				Level:       rng.IntN(4),
			},
			NoCompact: rng.IntN(12) == 0,
		}
	}
	return parts
}

// TestPlanProperties checks the invariants of checkPlan, and determinism,
// over randomised manifests and settings.
func TestPlanProperties(t *testing.T) {
	t.Parallel()
	for seed := range uint64(3000) {
		rng := rand.New(rand.NewPCG(seed, 99))
		window := []string{catalog.WindowHour, catalog.WindowDay, catalog.WindowMonth}[rng.IntN(3)]
		const target = 1000
		pol := policy.Compaction{TargetFileBytes: target, MinInputFiles: 2 + rng.IntN(4)}
		var limits Limits
		if rng.IntN(2) == 0 {
			limits.MaxInputBytes = 200 + rng.Int64N(3*target)
		}
		if rng.IntN(3) == 0 {
			limits.MaxInputFiles = 2 + rng.IntN(6)
		}
		if rng.IntN(5) == 0 {
			limits.MaxGroups = 1 + rng.IntN(3)
		}
		parts := randomManifest(rng, rng.IntN(80), window, target)
		func() {
			defer func() {
				if t.Failed() {
					t.Logf("seed %d: window %s, policy %+v, limits %+v, %d partitions", seed, window, pol, limits, len(parts))
				}
			}()
			groups := Plan(parts, pol, window, limits)
			checkPlan(t, parts, pol, window, limits, groups)

			shuffled := slices.Clone(parts)
			rng.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
			require.Equal(t, groups, Plan(shuffled, pol, window, limits), "plan depends on input order")
			require.Equal(t, groups, AdjacentPlanner{Limits: limits}.Plan(shuffled, pol, window))

			// Backlog counts exactly the eligible partitions; merging every
			// group removes its inputs from it.
			backlog := Backlog(parts, pol, window)
			n := 0
			for _, p := range parts {
				if p.SizeBytes < target && !p.NoCompact {
					n++
				}
			}
			require.Equal(t, n, backlog)
		}()
	}
}

// TestPlanConverges applies plans to a manifest (each group becoming one
// partition of its expected size), with small files arriving during the
// first rounds, until nothing is left to do. Every round's plan satisfies
// checkPlan against that round's manifest (so the last, empty one leaves no
// run that fits in one group), merging keeps every row, and each round
// shrinks the backlog by exactly what its groups merge: it must stop.
func TestPlanConverges(t *testing.T) {
	t.Parallel()
	remerged := 0 // seeds where a later round merged an earlier round's output
	for seed := range uint64(200) {
		rng := rand.New(rand.NewPCG(seed, 7))
		pol := policy.Compaction{TargetFileBytes: 1000, MinInputFiles: 2 + rng.IntN(3)}
		parts := randomManifest(rng, 20+rng.IntN(100), catalog.WindowDay, 1000)
		rows := totalRows(parts)
		arrivals := rng.IntN(4) // rounds after which new small files arrive
		nextID := int64(1 << 20)
		outputs := map[int64]bool{}
		sawRemerge := false
		for round := 1; ; round++ {
			groups := Plan(parts, pol, catalog.WindowDay, Limits{})
			func() {
				defer func() {
					if t.Failed() {
						t.Logf("seed %d, round %d: policy %+v, %d partitions", seed, round, pol, len(parts))
					}
				}()
				checkPlan(t, parts, pol, catalog.WindowDay, Limits{}, groups)
			}()
			if len(groups) == 0 && arrivals == 0 {
				break
			}
			require.Less(t, round, 50, "seed %d: compaction does not converge", seed)
			backlog := Backlog(parts, pol, catalog.WindowDay)
			wantBacklog := backlog
			removed := map[int64]bool{}
			for _, g := range groups {
				for _, id := range g.Inputs {
					removed[id] = true
					sawRemerge = sawRemerge || outputs[id]
				}
				wantBacklog -= len(g.Inputs)
				if g.ExpectedOutputBytes < pol.TargetFileBytes {
					wantBacklog++ // the output is small: a later round may merge it again
				}
				nextID++
				outputs[nextID] = true
				parts = append(parts, catalog.Partition{ID: nextID, PartitionFile: catalog.PartitionFile{
					WindowStart: g.WindowStart, TimeMin: g.TimeMin, TimeMax: g.TimeMax,
					RowCount: g.InputRows, SizeBytes: g.ExpectedOutputBytes, Level: g.Level,
				}})
			}
			parts = slices.DeleteFunc(parts, func(p catalog.Partition) bool { return removed[p.ID] })
			require.Equal(t, wantBacklog, Backlog(parts, pol, catalog.WindowDay), "seed %d round %d: backlog after the merges", seed, round)
			if len(groups) > 0 {
				require.Less(t, wantBacklog, backlog, "seed %d round %d: the backlog must shrink", seed, round)
			}
			require.Equal(t, rows, totalRows(parts), "seed %d round %d: rows lost or added", seed, round)
			if arrivals > 0 {
				arrivals--
				for _, p := range randomManifest(rng, 1+rng.IntN(8), catalog.WindowDay, 1000) {
					nextID++
					p.ID, p.SizeBytes, p.Level, p.NoCompact = nextID, 1+rng.Int64N(300), 0, false
					parts = append(parts, p)
					rows += p.RowCount
				}
			}
		}
		if sawRemerge {
			remerged++
		}
	}
	require.Greater(t, remerged, 10, "later rounds rarely merged earlier outputs: the test checks little beyond first plans")
}

func totalRows(parts []catalog.Partition) int64 {
	var n int64
	for _, p := range parts {
		n += p.RowCount
	}
	return n
}
