package export

import (
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"timestore/internal/catalog"
	"timestore/internal/policy"
	"timestore/internal/storage"
)

// Export window kinds.
const (
	WindowDay   = catalog.WindowDay
	WindowMonth = catalog.WindowMonth
)

// Reasons a window is due (DueWindow.Reason).
const (
	// ReasonNew: the window has never been exported (to this target, by
	// this window kind).
	ReasonNew = "new"
	// ReasonLateData: partitions were ingested into an exported window
	// after its export.
	ReasonLateData = "late_data"
	// ReasonRewritten: partitions written by compaction replaced exported
	// ones, possibly together with late data; the next version holds only
	// the rows the export does not have yet.
	ReasonRewritten = "rewritten"
)

// Modes of a due window's next version (DueWindow.Mode): how its rows are
// computed.
const (
	// ModeFull: the first version: every row of the window's live
	// partitions.
	ModeFull = "full"
	// ModeAppend: the rows of the partitions the export does not cover,
	// all freshly ingested (level 0): they cannot hold exported rows.
	ModeAppend = "append"
	// ModeExcept: some uncovered partition was written by compaction and
	// may hold exported rows: the rows of the window's live partitions less,
	// as a multiset, the rows of the current version's files.
	ModeExcept = "except"
)

// Settings are a dataset's export policy with its defaults applied.
type Settings struct {
	// Enabled: scheduled exports run. A manual run exports whenever the
	// policy has an export section with a target.
	Enabled bool `json:"enabled"`
	// Target is the storage target exports are written to.
	Target string `json:"target"`
	// Window is "day" (the default) or "month".
	Window string `json:"window"`
	// After is how old a window must be before it is exported: a window
	// [start, end) is due once end <= now - After.
	After policy.Duration `json:"after"`
}

// SettingsOf returns the export section of a policy with its defaults
// applied, and whether there is one.
func SettingsOf(p policy.Policy) (Settings, bool) {
	e := p.Export
	if e == nil {
		return Settings{}, false
	}
	s := Settings{Enabled: e.Enabled == nil || *e.Enabled, Target: e.Target, Window: e.Window, After: e.After}
	if s.Window == "" {
		s.Window = WindowDay
	}
	return s, true
}

// DueWindow is one window whose next export version is due.
type DueWindow struct {
	Label       string    `json:"window"`
	WindowStart time.Time `json:"window_start"`
	WindowEnd   time.Time `json:"window_end"`
	Reason      string    `json:"reason"`
	Mode        string    `json:"mode"`
	// CurrentVersion is the window's verified version (0: none);
	// NextVersion the one the export will write.
	CurrentVersion int `json:"current_version"`
	NextVersion    int `json:"next_version"`
	// Partitions, Rows and Bytes describe the live partitions overlapping
	// the window (a partition that spans several windows counts whole in
	// each, so these are upper bounds then).
	Partitions int   `json:"partitions"`
	Rows       int64 `json:"rows"`
	Bytes      int64 `json:"bytes"`
	// NewPartitions, NewRows and NewBytes are those of them the current
	// version does not cover.
	NewPartitions int   `json:"new_partitions"`
	NewRows       int64 `json:"new_rows"`
	NewBytes      int64 `json:"new_bytes"`
	// DueSince is when the window became due: its end plus After, or the
	// creation of its newest uncovered partition if later.
	DueSince time.Time `json:"due_since"`
	// Attempts and LastError describe a failed attempt at NextVersion.
	Attempts  int    `json:"attempts,omitempty"`
	LastError string `json:"last_error,omitempty"`
}

// DueWindows returns the windows of a dataset whose next export version is
// due at now, oldest first. It is a pure function of the live partitions,
// the export rows of the series (catalog.Store.ExportSeries: per window its
// verified version and an attempt at the next one) and the settings.
//
// A window [start, end) of the settings' kind is due when
//   - it is old enough: end <= now - After. The window's end, not the age
//     of its newest row, decides: a window whose data stopped early is not
//     exported while rows can still arrive in it, and every export of a
//     window is of a window that is over; and
//   - some live partition overlapping it (time_min < end, time_max >=
//     start) is not in the partition set of the window's verified version.
//
// The partition set is the export's fingerprint of its data: it lists the
// partitions whose rows in the window the export's files hold (cumulative
// over versions). Late data is a new partition, so it makes the window due
// again. Compaction also does (its output is a new partition) — a set over
// (row count, time range, checksums) would do the same, and a fingerprint
// over the rows themselves would have to read every window at every plan.
// The version that follows a compaction holds only rows the export lacks
// (ModeExcept), so it costs a read of the window but adds no duplicate.
func DueWindows(parts []catalog.Partition, exports []catalog.Export, set Settings, now time.Time) []DueWindow {
	cutoff := now.Add(-set.After.Std())
	type window struct {
		start time.Time
		parts []catalog.Partition
	}
	byStart := map[int64]*window{}
	for _, p := range parts {
		if p.State() != catalog.StateLive {
			continue
		}
		for start := catalog.WindowStart(set.Window, p.TimeMin); !start.After(p.TimeMax); start = catalog.WindowEnd(set.Window, start) {
			if catalog.WindowEnd(set.Window, start).After(cutoff) {
				break // this window and the later ones are not old enough
			}
			w := byStart[start.UnixMicro()]
			if w == nil {
				w = &window{start: start}
				byStart[start.UnixMicro()] = w
			}
			w.parts = append(w.parts, p)
		}
	}
	verified := map[int64]catalog.Export{}
	attempt := map[int64]catalog.Export{}
	for _, rec := range exports {
		if rec.Target != set.Target || rec.Window != set.Window {
			continue
		}
		switch rec.State {
		case catalog.ExportVerified:
			verified[rec.WindowStart.UnixMicro()] = rec
		case catalog.ExportWriting, catalog.ExportFailed:
			attempt[rec.WindowStart.UnixMicro()] = rec
		}
	}

	due := []DueWindow{}
	for key, w := range byStart {
		end := catalog.WindowEnd(set.Window, w.start)
		cur, exported := verified[key]
		d := DueWindow{
			Label: Label(set.Window, w.start), WindowStart: w.start, WindowEnd: end,
			Reason: ReasonNew, Mode: ModeFull, NextVersion: 1, DueSince: end.Add(set.After.Std()),
		}
		if exported {
			d.CurrentVersion, d.NextVersion = cur.Version, cur.Version+1
		}
		compacted := false
		for _, p := range w.parts {
			d.Partitions++
			d.Rows += p.RowCount
			d.Bytes += p.SizeBytes
			if exported && containsID(cur.PartitionIDs, p.ID) {
				continue
			}
			d.NewPartitions++
			d.NewRows += p.RowCount
			d.NewBytes += p.SizeBytes
			if p.Level > 0 {
				compacted = true
			}
			if exported && p.CreatedAt.After(d.DueSince) {
				d.DueSince = p.CreatedAt
			}
		}
		if d.NewPartitions == 0 {
			continue
		}
		if exported {
			d.Reason, d.Mode = ReasonLateData, ModeAppend
			if compacted {
				d.Reason, d.Mode = ReasonRewritten, ModeExcept
			}
		}
		if a, ok := attempt[key]; ok && a.Version == d.NextVersion {
			d.Attempts, d.LastError = a.Attempts, a.Error
		}
		due = append(due, d)
	}
	slices.SortFunc(due, func(a, b DueWindow) int { return a.WindowStart.Compare(b.WindowStart) })
	return due
}

// Lag is how long the oldest due window has been waiting at now: now minus
// the earliest DueSince, or 0 when nothing is due.
func Lag(due []DueWindow, now time.Time) time.Duration {
	if len(due) == 0 {
		return 0
	}
	first := slices.MinFunc(due, func(a, b DueWindow) int { return a.DueSince.Compare(b.DueSince) })
	return max(now.Sub(first.DueSince), 0)
}

// overlaps reports whether p may hold rows in [start, end).
func overlaps(p catalog.Partition, start, end time.Time) bool {
	return p.TimeMin.Before(end) && !p.TimeMax.Before(start)
}

// containsID reports whether the sorted ids hold id.
func containsID(ids []int64, id int64) bool {
	_, ok := slices.BinarySearch(ids, id)
	return ok
}

// Fingerprint is the fingerprint of a set of partition ids: the hex sha256
// of the sorted, distinct ids as big-endian 64-bit integers.
func Fingerprint(ids []int64) string {
	s := slices.Clone(ids)
	slices.Sort(s)
	s = slices.Compact(s)
	h := sha256.New()
	var b [8]byte
	for _, id := range s {
		binary.BigEndian.PutUint64(b[:], uint64(id))
		h.Write(b[:])
	}
	return hex.EncodeToString(h.Sum(nil))
}

// KeyPrefix starts the key of every export object. Dataset partition keys
// start with the dataset's name and have three segments
// (DATASET/WINDOW/ID.parquet); export keys have four, so reconcile never
// mistakes one for the other, even for a dataset named "exports".
const KeyPrefix = "exports/"

// ManifestName is the name of the manifest object in a window's directory.
const ManifestName = "_manifest.json"

// Label renders a window start as in keys: 2006-01-02 for a day, 2006-01
// for a month (UTC).
func Label(window string, start time.Time) string { return storage.WindowLabel(window, start) }

// WindowPrefix is the key prefix of a window's objects:
// exports/DATASET/window=LABEL/.
func WindowPrefix(dataset, window string, start time.Time) string {
	return KeyPrefix + dataset + "/window=" + Label(window, start) + "/"
}

// PartKey is the key of the n-th data file (from 0) of a window.
func PartKey(dataset, window string, start time.Time, n int) string {
	return WindowPrefix(dataset, window, start) + fmt.Sprintf("part-%04d.parquet", n)
}

// ManifestKey is the key of a window's _manifest.json.
func ManifestKey(dataset, window string, start time.Time) string {
	return WindowPrefix(dataset, window, start) + ManifestName
}

// partNumber parses the n of a key ending in /part-NNNN.parquet.
func partNumber(key string) (int, bool) {
	name := key[strings.LastIndexByte(key, '/')+1:]
	digits, ok := strings.CutPrefix(name, "part-")
	if !ok {
		return 0, false
	}
	if digits, ok = strings.CutSuffix(digits, ".parquet"); !ok {
		return 0, false
	}
	n, err := strconv.Atoi(digits)
	if err != nil || n < 0 {
		return 0, false
	}
	return n, true
}

// nextPart returns the number of the first new file of a version that
// follows files: one past the highest number in use.
func nextPart(files []catalog.ExportFile) int {
	next := 0
	for _, f := range files {
		if n, ok := partNumber(f.Key); ok {
			next = max(next, n+1)
		}
	}
	return next
}

// sortedUnion returns the sorted, distinct union of a and b.
func sortedUnion(a, b []int64) []int64 {
	out := append(slices.Clone(a), b...)
	slices.SortFunc(out, cmp.Compare[int64])
	return slices.Compact(out)
}
