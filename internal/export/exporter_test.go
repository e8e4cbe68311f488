package export_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	promtest "github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"timestore/internal/catalog"
	"timestore/internal/export"
	"timestore/internal/policy"
	"timestore/internal/retention"
	"timestore/internal/storage"
)

// requireWindowMatches checks a window's export against a timestore query
// of the same window: the manifest against the files (read back with
// parquet-go), the files' row count and per-column sums against the query.
func requireWindowMatches(t *testing.T, b *bundle, d int, wantVersion int) export.Manifest {
	t.Helper()
	m := b.manifest(t, d)
	require.Equal(t, export.ManifestFormat, m.Format)
	require.Equal(t, "cpu", m.Dataset)
	require.Equal(t, dayN(d), m.WindowStart)
	require.Equal(t, dayN(d+1), m.WindowEnd)
	require.Equal(t, dayN(d).Format("2006-01-02"), m.WindowLabel)
	require.Equal(t, wantVersion, m.ExportVersion)
	require.Equal(t, wantVersion-1, m.PreviousVersion)
	require.Equal(t, "ts", m.TimeColumn)
	require.Len(t, m.Schema, 4)
	require.Equal(t, "1.0", m.Parquet.FormatVersion)
	require.Equal(t, "zstd", m.Parquet.Compression)

	got := b.exportSums(t, m)
	want := b.querySums(t, dayN(d), dayN(d+1))
	require.Equal(t, want, got, "the export holds exactly the rows timestore returns for the window")
	require.Equal(t, got.Rows, m.Rows)
	var bytes int64
	for i, f := range m.Files {
		require.Equal(t, export.PartKey("cpu", export.WindowDay, dayN(d), i), f.Key)
		require.Equal(t, filepath.Base(f.Key), f.Name)
		bytes += f.Bytes
	}
	require.Equal(t, bytes, m.Bytes)
	require.Equal(t, got.MinTS, *m.TimeMin)
	require.Equal(t, got.MaxTS, *m.TimeMax)

	// The catalog's record agrees with the manifest.
	var rec *catalog.Export
	for _, x := range b.exports(t, catalog.ExportVerified) {
		if x.WindowStart.Equal(dayN(d)) {
			rec = &x
		}
	}
	require.NotNil(t, rec)
	require.Equal(t, wantVersion, rec.Version)
	require.Equal(t, m.Rows, rec.RowCount)
	require.Equal(t, m.Bytes, rec.SizeBytes)
	require.Equal(t, m.ManifestVersion, rec.ManifestVersion)
	require.Equal(t, m.Partitions, rec.PartitionIDs)
	require.Equal(t, export.Fingerprint(rec.PartitionIDs), rec.Fingerprint)
	keys := make([]string, len(m.Files))
	for i, f := range m.Files {
		keys[i] = f.Key
		require.Equal(t, f.SHA256, rec.Files[i].Checksum[len(storage.ChecksumPrefix):])
	}
	require.Equal(t, keys, rec.Keys)
	require.NoError(t, b.target.Verify(b.ctx, rec.ManifestKey, -1, rec.Checksum), "the record's checksum is the manifest's")
	return m
}

func TestExportRoundTrip(t *testing.T) {
	bothTargets(t, func(t *testing.T, remote bool) {
		b := setup(t, remote)
		b.rows(t, 0, 200)
		b.rows(t, 1, 20_000) // several files of at most 64 KiB
		b.rows(t, 1, 3_000)  // a second partition in the window
		b.rows(t, 2, 500)
		b.rows(t, 3, 100) // not old enough

		plan, err := b.x.Plan(b.ctx, "cpu")
		require.NoError(t, err)
		require.Equal(t, []string{"2024-03-01", "2024-03-02", "2024-03-03"}, labels(plan.Due))
		require.EqualValues(t, 23_700, plan.Totals.Rows)
		require.Equal(t, 3, plan.Totals.Windows)
		require.Positive(t, plan.LagSeconds)
		require.Equal(t, plan.LagSeconds, b.metric(t, "timestore_export_lag_seconds"))

		res := b.run(t)
		require.Len(t, res.Exported, 3)
		require.EqualValues(t, 23_700, res.Rows)
		require.Zero(t, res.Remaining)
		require.Zero(t, res.LagSeconds)
		for i, w := range res.Exported {
			require.Equal(t, 1, w.Version)
			require.Equal(t, export.ModeFull, w.Mode)
			m := requireWindowMatches(t, b, i, 1)
			require.Len(t, m.Partitions, map[int]int{0: 1, 1: 2, 2: 1}[i])
		}
		m1 := b.manifest(t, 1)
		require.Greater(t, len(m1.Files), 2, "a large window is split")
		for _, f := range m1.Files {
			require.LessOrEqual(t, f.Bytes, int64(64<<10))
		}
		var want []string
		for d := range 3 {
			want = append(want, export.ManifestKey("cpu", export.WindowDay, dayN(d)))
			for _, f := range b.manifest(t, d).Files {
				want = append(want, f.Key)
			}
		}
		objects := b.objects(t)
		require.ElementsMatch(t, want, objects)

		// The catalog: one verified version per window, an audit row each.
		xs := b.exports(t, "")
		require.Len(t, xs, 3)
		for _, x := range xs {
			require.Equal(t, catalog.ExportVerified, x.State)
			require.Equal(t, b.tname, x.Target)
			require.Equal(t, 1, x.Attempts)
		}
		audit := b.audit(t, catalog.ActionExportVerified)
		require.Len(t, audit, 3)
		require.EqualValues(t, 23_700, audit[0].Details["rows"].(float64)+audit[1].Details["rows"].(float64)+audit[2].Details["rows"].(float64))
		require.Equal(t, "test", audit[0].Actor)

		require.EqualValues(t, 23_700, b.metric(t, "timestore_export_rows_total"))
		require.EqualValues(t, 3, b.metric(t, "timestore_export_duration_seconds"))
		require.Positive(t, b.metric(t, "timestore_export_bytes_total"))
		require.Zero(t, b.metric(t, "timestore_export_failures_total"))
		require.Zero(t, b.metric(t, "timestore_export_lag_seconds"))
		problems, err := promtest.GatherAndLint(b.reg)
		require.NoError(t, err)
		require.Empty(t, problems)

		// A second run finds nothing to do: same objects, same records.
		again := b.run(t)
		require.Empty(t, again.Exported)
		require.Equal(t, objects, b.objects(t))
		require.Len(t, b.exports(t, ""), 3)
		require.Len(t, b.audit(t, catalog.ActionExportVerified), 3)
		plan, err = b.x.Plan(b.ctx, "cpu")
		require.NoError(t, err)
		require.Empty(t, plan.Due)
	})
}

func TestLateDataMakesANewVersion(t *testing.T) {
	bothTargets(t, func(t *testing.T, remote bool) {
		b := setup(t, remote)
		b.rows(t, 0, 1000)
		b.rows(t, 1, 300)
		b.run(t)
		v1 := b.manifest(t, 0)
		first := b.object(t, v1.Files[0].Key)

		late := b.rows(t, 0, 250)
		plan, err := b.x.Plan(b.ctx, "cpu")
		require.NoError(t, err)
		require.Len(t, plan.Due, 1)
		d := plan.Due[0]
		require.Equal(t, "2024-03-01", d.Label)
		require.Equal(t, export.ReasonLateData, d.Reason)
		require.Equal(t, export.ModeAppend, d.Mode)
		require.Equal(t, 1, d.CurrentVersion)
		require.Equal(t, 2, d.NextVersion)
		require.EqualValues(t, 250, d.NewRows)

		res := b.run(t)
		require.Len(t, res.Exported, 1)
		require.Equal(t, 2, res.Exported[0].Version)
		require.EqualValues(t, 250, res.Exported[0].NewRows)
		m := requireWindowMatches(t, b, 0, 2)
		// The first version's files are kept unchanged; the new rows are in
		// files with the next part numbers.
		require.Equal(t, v1.Files, m.Files[:len(v1.Files)])
		require.Equal(t, first, b.object(t, v1.Files[0].Key))
		for _, f := range m.Files[len(v1.Files):] {
			require.Equal(t, 2, f.ExportVersion)
		}
		require.Contains(t, m.Partitions, late.ID)

		xs := b.exports(t, "")
		require.Len(t, xs, 3)
		require.Equal(t, catalog.ExportSuperseded, xs[0].State)
		require.Equal(t, 1, xs[0].Version)
		require.Equal(t, catalog.ExportVerified, xs[1].State)
		require.Equal(t, 2, xs[1].Version)
		require.EqualValues(t, 1250, xs[1].RowCount)
		require.EqualValues(t, 250, xs[1].NewRows)
		require.Empty(t, b.run(t).Exported)
	})
}

// TestArchiveOutlivesRetentionAndCompaction: rows exported then pruned by
// retention stay in the export when late data and a compaction of the
// window follow; the next version adds only the late rows, once.
func TestArchiveOutlivesRetentionAndCompaction(t *testing.T) {
	t.Parallel()
	b := setup(t, false)
	a := b.rows(t, 0, 400)
	p := b.rows(t, 0, 300)
	b.run(t)
	v1 := b.manifest(t, 0)
	archived := b.exportSums(t, v1)
	require.EqualValues(t, 700, archived.Rows)

	// Retention prunes a; late rows arrive; compaction merges p and them.
	_, err := b.store.Commit(b.ctx, catalog.Change{Dataset: "cpu", Operation: catalog.OpRetention, Actor: "test", Remove: []int64{a.ID}})
	require.NoError(t, err)
	late := b.rows(t, 0, 50)
	lateSums := b.ingested[late.ID]
	merged := b.compact(t, p, late)

	plan, err := b.x.Plan(b.ctx, "cpu")
	require.NoError(t, err)
	require.Len(t, plan.Due, 1)
	require.Equal(t, export.ReasonRewritten, plan.Due[0].Reason)
	require.Equal(t, export.ModeExcept, plan.Due[0].Mode)

	res := b.run(t)
	require.Len(t, res.Exported, 1)
	require.Equal(t, export.ModeExcept, res.Exported[0].Mode)
	require.EqualValues(t, 50, res.Exported[0].NewRows)

	m := b.manifest(t, 0)
	got := b.exportSums(t, m)
	require.EqualValues(t, 750, got.Rows, "the pruned rows, the kept rows and the late rows, each once")
	require.Equal(t, archived.SumN+lateSums.SumN, got.SumN)
	require.Equal(t, archived.SumV+lateSums.SumV, got.SumV)
	require.EqualValues(t, 350, b.querySums(t, dayN(0), dayN(1)).Rows, "timestore itself no longer has a's rows")
	require.Equal(t, []int64{a.ID, p.ID, merged.ID}, m.Partitions, "late was compacted away before it was exported")

	covered, err := b.x.Covered(b.ctx, b.ds)
	require.NoError(t, err)
	require.True(t, covered(merged))

	// Nothing new: compaction alone, once exported, is not due again.
	require.Empty(t, b.run(t).Exported)
}

// compact replaces parts by one level-1 partition holding their rows, as
// compaction does.
func (b *bundle) compact(t *testing.T, parts ...catalog.Partition) catalog.Partition {
	t.Helper()
	var paths, ids = []string{}, []int64{}
	for _, p := range parts {
		paths = append(paths, filepath.Join(b.target.LocalDir, filepath.FromSlash(p.Key)))
		ids = append(ids, p.ID)
	}
	out := filepath.Join(t.TempDir(), "merged.parquet")
	pf, err := testEngine.Merge(b.ctx, b.ds, paths, out)
	require.NoError(t, err)
	pf.Target, pf.Level = b.tname, 1
	pf.Key = storage.PartitionKey("cpu", catalog.WindowDay, pf.WindowStart, storage.NewObjectID())
	pf.SizeBytes, pf.Checksum, err = b.target.PutFile(b.ctx, pf.Key, out)
	require.NoError(t, err)
	res, err := b.store.Commit(b.ctx, catalog.Change{Dataset: "cpu", Operation: catalog.OpCompaction, Actor: "test",
		Add: []catalog.PartitionFile{pf}, Remove: ids})
	require.NoError(t, err)
	return res.Added[0]
}

// TestUploadFailure injects an upload failure in the middle of a window's
// export, by wrapping the real bucket of the target.
func TestUploadFailure(t *testing.T) {
	bothTargets(t, func(t *testing.T, remote bool) {
		b := setup(t, remote)
		b.rows(t, 0, 20_000) // several files
		fb := storage.NewFaultyBucket(b.target.Bucket)
		require.NoError(t, b.targets.SetBucket(b.tname, fb))
		fb.FailNth(storage.OpUpload, 2, nil)

		_, err := b.x.Run(b.ctx, "cpu", export.RunOptions{Actor: "test"})
		require.ErrorIs(t, err, storage.ErrInjected)
		xs := b.exports(t, "")
		require.Len(t, xs, 1)
		require.Equal(t, catalog.ExportFailed, xs[0].State)
		require.Contains(t, xs[0].Error, "injected")
		require.Empty(t, b.exports(t, catalog.ExportVerified))
		require.Empty(t, b.audit(t, catalog.ActionExportVerified))
		cov, err := b.store.VerifiedExportCoverage(b.ctx, b.ds.ID)
		require.NoError(t, err)
		require.Empty(t, cov)
		require.EqualValues(t, 1, b.metric(t, "timestore_export_failures_total"))
		require.NotContains(t, b.objects(t), export.ManifestKey("cpu", export.WindowDay, dayN(0)), "the manifest is written last")
		plan, err := b.x.Plan(b.ctx, "cpu")
		require.NoError(t, err)
		require.Len(t, plan.Due, 1)
		require.Equal(t, 1, plan.Due[0].Attempts)
		require.Contains(t, plan.Due[0].LastError, "injected")

		// A stray file beside them, as a failed attempt with more files
		// would have left.
		stray := export.PartKey("cpu", export.WindowDay, dayN(0), 99)
		tmp := filepath.Join(t.TempDir(), "stray")
		require.NoError(t, os.WriteFile(tmp, []byte("stray"), 0o644))
		_, _, err = b.target.PutFile(b.ctx, stray, tmp)
		require.NoError(t, err)

		// The retry reuses the attempt's record and succeeds.
		res := b.run(t)
		require.Len(t, res.Exported, 1)
		xs2 := b.exports(t, "")
		require.Len(t, xs2, 1)
		require.Equal(t, xs[0].ID, xs2[0].ID)
		require.Equal(t, catalog.ExportVerified, xs2[0].State)
		require.Equal(t, 2, xs2[0].Attempts)
		require.Empty(t, xs2[0].Error)
		m := requireWindowMatches(t, b, 0, 1)
		require.NotContains(t, b.objects(t), stray, "leftovers of failed attempts are deleted")
		require.Len(t, b.objects(t), len(m.Files)+1)
		var deleted []string
		for _, e := range b.audit(t, export.ActionDeleteLeftover) {
			require.Equal(t, "test", e.Actor)
			require.Equal(t, "cpu", e.Dataset)
			deleted = append(deleted, fmt.Sprint(e.Details["key"]))
		}
		require.Contains(t, deleted, stray, "each deleted leftover is audited")

		// A failure while writing version 2 leaves version 1 current and intact.
		v1 := b.exportSums(t, m)
		b.rows(t, 0, 100)
		remove := fb.FailAlways(storage.OpUpload, nil)
		_, err = b.x.Run(b.ctx, "cpu", export.RunOptions{Actor: "test"})
		require.ErrorIs(t, err, storage.ErrInjected)
		cur := b.exports(t, catalog.ExportVerified)
		require.Len(t, cur, 1)
		require.Equal(t, 1, cur[0].Version)
		require.Equal(t, m, b.manifest(t, 0))
		require.Equal(t, v1, b.exportSums(t, m))
		remove()
		b.run(t)
		requireWindowMatches(t, b, 0, 2)
		require.Len(t, b.exports(t, ""), 2)
	})
}

func TestRunWhileAnotherRuns(t *testing.T) {
	t.Parallel()
	b := setup(t, false)
	b.rows(t, 0, 10)
	unlock, ok, err := b.store.LockExports(b.ctx, b.ds.ID)
	require.NoError(t, err)
	require.True(t, ok)
	_, err = b.x.Run(b.ctx, "cpu", export.RunOptions{})
	require.ErrorIs(t, err, export.ErrBusy)
	require.ErrorIs(t, err, catalog.ErrConflict)
	require.Empty(t, b.exports(t, ""))
	unlock()
	require.Len(t, b.run(t).Exported, 1)
}

func TestRunBudget(t *testing.T) {
	t.Parallel()
	b := setup(t, false, func(o *export.Options) { o.RunBudget = time.Nanosecond })
	b.rows(t, 0, 10)
	b.rows(t, 1, 10)
	res := b.run(t)
	require.Len(t, res.Exported, 1, "the first window always goes")
	require.Equal(t, 1, res.Remaining)
	require.Positive(t, res.LagSeconds)
	res = b.run(t)
	require.Len(t, res.Exported, 1)
	require.Zero(t, res.Remaining)
}

func TestNoExportPolicy(t *testing.T) {
	t.Parallel()
	b := setup(t, false)
	b.rows(t, 0, 10)
	_, err := b.store.UpdatePolicy(b.ctx, "cpu", policy.Policy{}, "test")
	require.NoError(t, err)
	res := b.run(t)
	require.Empty(t, res.Exported)
	require.NotEmpty(t, res.Notes)
	_, err = b.store.UpdatePolicy(b.ctx, "cpu", policy.Policy{Export: &policy.Export{Target: "nowhere"}}, "test")
	require.NoError(t, err)
	_, err = b.x.Run(b.ctx, "cpu", export.RunOptions{})
	require.ErrorIs(t, err, storage.ErrUnknownTarget)
}

// TestRetentionGate: with require_export, retention prunes a window only
// once a verified export holds its current data.
func TestRetentionGate(t *testing.T) {
	t.Parallel()
	b := setup(t, false)
	p0 := b.rows(t, 0, 100)
	p1 := b.rows(t, 1, 100)
	pol := &policy.Retention{MaxAge: policy.Duration(24 * time.Hour), RequireExport: true}
	evalAt := dayN(10)
	selected := func() []int64 {
		t.Helper()
		covered, err := b.x.Covered(b.ctx, b.ds)
		require.NoError(t, err)
		live, err := b.store.Partitions(b.ctx, "cpu", catalog.StateLive)
		require.NoError(t, err)
		return retention.Evaluate(live, pol, nil, covered, evalAt).IDs()
	}

	covered, err := b.x.Covered(b.ctx, b.ds)
	require.NoError(t, err)
	require.Nil(t, covered, "no export yet")
	require.Empty(t, selected())

	// Only day 0 is exported (a fault keeps day 1 from being verified).
	fb := storage.NewFaultyBucket(b.target.Bucket)
	require.NoError(t, b.targets.SetBucket(b.tname, fb))
	fb.FailAfter(storage.OpUpload, 2, nil) // day 0's file and manifest go through
	_, err = b.x.Run(b.ctx, "cpu", export.RunOptions{})
	require.ErrorIs(t, err, storage.ErrInjected)
	require.Equal(t, []int64{p0.ID}, selected())
	fb.Reset()

	// Late data in day 0 is not covered until the next version.
	late := b.rows(t, 0, 10)
	require.ElementsMatch(t, []int64{p0.ID}, selected())
	b.run(t)
	require.ElementsMatch(t, []int64{p0.ID, p1.ID, late.ID}, selected())

	covered, err = export.CoverageOf(b.ctx, b.store, b.ds)
	require.NoError(t, err)
	require.True(t, covered(late))
	require.False(t, errors.Is(err, catalog.ErrNotFound))
}

// TestFailureStopsThePipeline: while one window is uploaded the next one is
// written; when the upload fails, the next window's attempt is abandoned
// (recorded failed) and the run stops; the next run exports all of them.
func TestFailureStopsThePipeline(t *testing.T) {
	t.Parallel()
	b := setup(t, false)
	for d := range 3 {
		b.rows(t, d, 50)
	}
	fb := storage.NewFaultyBucket(b.target.Bucket)
	require.NoError(t, b.targets.SetBucket(b.tname, fb))
	fb.FailNth(storage.OpUpload, 1, nil)
	res, err := b.x.Run(b.ctx, "cpu", export.RunOptions{})
	require.ErrorIs(t, err, storage.ErrInjected)
	require.Empty(t, res.Exported)
	require.Positive(t, res.LagSeconds)
	xs := b.exports(t, "")
	require.Len(t, xs, 2)
	require.Equal(t, catalog.ExportFailed, xs[0].State)
	require.Equal(t, catalog.ExportFailed, xs[1].State)
	require.Contains(t, xs[1].Error, "abandoned")
	require.EqualValues(t, 2, b.metric(t, "timestore_export_failures_total"))

	res = b.run(t)
	require.Len(t, res.Exported, 3)
	xs = b.exports(t, "")
	require.Len(t, xs, 3)
	for i, x := range xs {
		require.Equal(t, catalog.ExportVerified, x.State)
		require.Equal(t, map[int]int{0: 2, 1: 2, 2: 1}[i], x.Attempts)
		requireWindowMatches(t, b, i, 1)
	}
}

// TestOccupiedDirectory: the exports of a deleted dataset are not
// overwritten by those of a new dataset of the same name.
func TestOccupiedDirectory(t *testing.T) {
	t.Parallel()
	b := setup(t, false)
	b.rows(t, 0, 100)
	b.run(t)
	before := b.manifest(t, 0)
	objects := b.objects(t)

	require.NoError(t, b.store.DeleteDataset(b.ctx, "cpu", "test"))
	ds, err := b.store.CreateDataset(b.ctx, catalog.Dataset{Name: "cpu", Columns: b.ds.Columns, TimeColumn: "ts",
		Partition: catalog.WindowDay, Target: b.tname, Policy: b.ds.Policy}, "test")
	require.NoError(t, err)
	b.ds = ds
	b.rows(t, 0, 30)
	_, err = b.x.Run(b.ctx, "cpu", export.RunOptions{})
	require.ErrorIs(t, err, export.ErrOccupied)
	require.Equal(t, before, b.manifest(t, 0))
	require.Equal(t, objects, b.objects(t))
	xs := b.exports(t, "")
	require.Len(t, xs, 1)
	require.Equal(t, catalog.ExportFailed, xs[0].State)
	require.Contains(t, xs[0].Error, "belongs to export record")
}

// A partition whose file no longer matches its recorded checksum is not
// exported: the export may become the only copy (require_export), and would
// carry the damage under a fresh checksum.
func TestDamagedPartitionNotExported(t *testing.T) {
	t.Parallel()
	b := setup(t, false)
	p := b.rows(t, 0, 50)
	path, release, err := b.cache.Fetch(b.ctx, b.target, p.Key, p.SizeBytes, p.Checksum)
	require.NoError(t, err)
	release()
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	data[len(data)/2] ^= 0xff
	require.NoError(t, os.WriteFile(path, data, 0o644))

	_, err = b.x.Run(b.ctx, "cpu", export.RunOptions{Actor: "test"})
	require.ErrorIs(t, err, storage.ErrMismatch)
	require.Empty(t, b.exports(t, catalog.ExportVerified))
	cov, err := b.store.VerifiedExportCoverage(b.ctx, b.ds.ID)
	require.NoError(t, err)
	require.Empty(t, cov)
}
