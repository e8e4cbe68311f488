package catalog_test

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"timestore/internal/catalog"
)

const sum1 = "sha256:1111111111111111111111111111111111111111111111111111111111111111"

func beginDay(b *bundle, i int, ids ...int64) catalog.ExportBegin {
	start := day(i)
	label := start.Format("2006-01-02")
	return catalog.ExportBegin{
		DatasetID: b.ds.ID, Target: "remote", Window: catalog.WindowDay,
		WindowStart: start, WindowEnd: start.AddDate(0, 0, 1), WindowLabel: label,
		ManifestVersion: 3, PartitionIDs: ids, Fingerprint: "fp",
		ManifestKey: "exports/metrics/window=" + label + "/_manifest.json", Actor: "test",
	}
}

func exportResult(rows int64, keys ...string) catalog.ExportResult {
	res := catalog.ExportResult{Checksum: sum1, Details: map[string]any{"mode": "full"}}
	tmin, tmax := day(0), day(0).Add(time.Hour)
	res.TimeMin, res.TimeMax = &tmin, &tmax
	for _, k := range keys {
		res.Files = append(res.Files, catalog.ExportFile{Key: k, Rows: rows, Bytes: 100, Checksum: sum1, TimeMin: tmin, TimeMax: tmax, Version: 1})
		res.RowCount += rows
		res.SizeBytes += 100
	}
	res.NewRows, res.NewBytes = res.RowCount, res.SizeBytes
	return res
}

func TestExportVersions(t *testing.T) {
	b := setup(t)
	ctx := b.ctx

	// First attempt at version 1 fails; the retry reuses its row.
	x, prev, err := b.store.BeginExport(ctx, beginDay(b, 0, 3, 1, 2, 3))
	require.NoError(t, err)
	require.Nil(t, prev)
	require.Equal(t, 1, x.Version)
	require.Equal(t, catalog.ExportWriting, x.State)
	require.Equal(t, []int64{1, 2, 3}, x.PartitionIDs, "sorted and distinct")
	require.Equal(t, 1, x.Attempts)
	require.NoError(t, b.store.FailExport(ctx, x.ID, 0, "upload failed"))

	cov, err := b.store.VerifiedExportCoverage(ctx, b.ds.ID)
	require.NoError(t, err)
	require.Empty(t, cov, "a failed attempt covers nothing")

	retry, prev, err := b.store.BeginExport(ctx, beginDay(b, 0, 1, 2, 3))
	require.NoError(t, err)
	require.Nil(t, prev)
	require.Equal(t, x.ID, retry.ID)
	require.Equal(t, 1, retry.Version)
	require.Equal(t, 2, retry.Attempts)
	require.Empty(t, retry.Error)

	auditBefore := b.auditCount(t)
	v1, err := b.store.VerifyExport(ctx, retry.ID, exportResult(10, "exports/metrics/window=2024-03-01/part-0000.parquet"))
	require.NoError(t, err)
	require.Equal(t, catalog.ExportVerified, v1.State)
	require.NotNil(t, v1.VerifiedAt)
	require.Equal(t, []string{"exports/metrics/window=2024-03-01/part-0000.parquet"}, v1.Keys)
	require.Len(t, v1.Files, 1)
	require.EqualValues(t, 10, v1.RowCount)
	require.Equal(t, auditBefore+1, b.auditCount(t))
	entries, err := b.store.ListAudit(ctx, catalog.AuditFilter{Action: catalog.ActionExportVerified})
	require.NoError(t, err)
	require.Len(t, entries, 1)
	require.Equal(t, "metrics", entries[0].Dataset)
	require.EqualValues(t, 100, entries[0].Bytes)
	require.Equal(t, []int64{1, 2, 3}, entries[0].Partitions)
	require.EqualValues(t, 10, entries[0].Details["rows"])
	require.Equal(t, "full", entries[0].Details["mode"])

	// Verifying twice is a conflict.
	_, err = b.store.VerifyExport(ctx, retry.ID, exportResult(10))
	require.ErrorIs(t, err, catalog.ErrConflict)
	// Failing a verified version does nothing.
	require.NoError(t, b.store.FailExport(ctx, v1.ID, 0, "late"))

	// Version 2 supersedes version 1 once verified, not before.
	x2, prev, err := b.store.BeginExport(ctx, beginDay(b, 0, 1, 2, 3, 4))
	require.NoError(t, err)
	require.NotNil(t, prev)
	require.Equal(t, v1.ID, prev.ID)
	require.Equal(t, 2, x2.Version)
	cov, err = b.store.VerifiedExportCoverage(ctx, b.ds.ID)
	require.NoError(t, err)
	require.Len(t, cov, 1)
	require.Equal(t, 1, cov[0].Version)
	require.Equal(t, []int64{1, 2, 3}, cov[0].PartitionIDs)

	_, err = b.store.VerifyExport(ctx, x2.ID, exportResult(5, "a", "b"))
	require.NoError(t, err)
	cov, err = b.store.VerifiedExportCoverage(ctx, b.ds.ID)
	require.NoError(t, err)
	require.Len(t, cov, 1)
	require.Equal(t, 2, cov[0].Version)
	require.Equal(t, []int64{1, 2, 3, 4}, cov[0].PartitionIDs)
	require.Equal(t, day(0), cov[0].WindowStart)
	require.Equal(t, day(1), cov[0].WindowEnd)

	all, err := b.store.ListExports(ctx, "metrics", "")
	require.NoError(t, err)
	require.Len(t, all, 2)
	require.Equal(t, catalog.ExportSuperseded, all[0].State)
	require.Equal(t, catalog.ExportVerified, all[1].State)
	verified, err := b.store.ListExports(ctx, "metrics", catalog.ExportVerified)
	require.NoError(t, err)
	require.Len(t, verified, 1)
	require.Equal(t, x2.ID, verified[0].ID)

	series, err := b.store.ExportSeries(ctx, b.ds.ID, "remote", catalog.WindowDay)
	require.NoError(t, err)
	require.Len(t, series, 1, "superseded versions are left out")
	series, err = b.store.ExportSeries(ctx, b.ds.ID, "local", catalog.WindowDay)
	require.NoError(t, err)
	require.Empty(t, series)

	_, err = b.store.ListExports(ctx, "nope", "")
	require.ErrorIs(t, err, catalog.ErrNotFound)
	_, err = b.store.ListExports(ctx, "metrics", "odd")
	require.ErrorIs(t, err, catalog.ErrInvalid)
}

func TestExportBeginRejects(t *testing.T) {
	b := setup(t)
	bad := beginDay(b, 0)
	bad.Window = "hour"
	_, _, err := b.store.BeginExport(b.ctx, bad)
	require.ErrorIs(t, err, catalog.ErrInvalid)
	bad = beginDay(b, 0)
	bad.WindowEnd = bad.WindowStart
	_, _, err = b.store.BeginExport(b.ctx, bad)
	require.ErrorIs(t, err, catalog.ErrInvalid)
	bad = beginDay(b, 0)
	bad.ManifestKey = ""
	_, _, err = b.store.BeginExport(b.ctx, bad)
	require.ErrorIs(t, err, catalog.ErrInvalid)

	x, _, err := b.store.BeginExport(b.ctx, beginDay(b, 0))
	require.NoError(t, err)
	res := exportResult(1, "k")
	res.Checksum = "md5:00"
	_, err = b.store.VerifyExport(b.ctx, x.ID, res)
	require.ErrorIs(t, err, catalog.ErrInvalid)
	_, err = b.store.VerifyExport(b.ctx, 1<<40, exportResult(1, "k"))
	require.ErrorIs(t, err, catalog.ErrNotFound)
}

func TestExportWindowsAreIndependent(t *testing.T) {
	b := setup(t)
	for i := range 3 {
		x, _, err := b.store.BeginExport(b.ctx, beginDay(b, i, int64(i+1)))
		require.NoError(t, err)
		if i != 1 {
			_, err = b.store.VerifyExport(b.ctx, x.ID, exportResult(1, "k"))
			require.NoError(t, err)
		}
	}
	cov, err := b.store.VerifiedExportCoverage(b.ctx, b.ds.ID)
	require.NoError(t, err)
	require.Len(t, cov, 2)
	require.Equal(t, day(0), cov[0].WindowStart)
	require.Equal(t, day(2), cov[1].WindowStart)
	series, err := b.store.ExportSeries(b.ctx, b.ds.ID, "remote", catalog.WindowDay)
	require.NoError(t, err)
	require.Len(t, series, 3)
	require.Equal(t, catalog.ExportWriting, series[1].State)
}

func TestLockExports(t *testing.T) {
	b := setup(t)
	unlock, ok, err := b.store.LockExports(b.ctx, b.ds.ID)
	require.NoError(t, err)
	require.True(t, ok)

	_, ok, err = b.store.LockExports(b.ctx, b.ds.ID)
	require.NoError(t, err)
	require.False(t, ok, "held by the first")
	other, ok, err := b.store.LockExports(b.ctx, b.ds.ID+1)
	require.NoError(t, err)
	require.True(t, ok, "per dataset")
	other()

	unlock()
	unlock() // idempotent
	again, ok, err := b.store.LockExports(b.ctx, b.ds.ID)
	require.NoError(t, err)
	require.True(t, ok)
	again()
}

func TestValidateChecksumText(t *testing.T) {
	t.Parallel()
	require.NoError(t, catalog.ValidateChecksumText(sum1))
	require.NoError(t, catalog.ValidateChecksumText("sha256:"+strings.Repeat("AB", 32)))
	for _, bad := range []string{"", "sha256:", "sha256:xyz", "md5:" + strings.Repeat("a", 64), "sha256:" + strings.Repeat("g", 64)} {
		require.Error(t, catalog.ValidateChecksumText(bad), bad)
	}
}

// Two attempts at one version overlap (a run whose export lock was lost and
// a second run): the second begins the same row again with more partitions.
// The first must neither verify the row (which now lists partitions its
// files do not hold, so require_export retention would treat them as
// exported) nor fail it under the second.
func TestExportOverlappingAttempts(t *testing.T) {
	b := setup(t)
	ctx := b.ctx
	first, _, err := b.store.BeginExport(ctx, beginDay(b, 0, 1))
	require.NoError(t, err)
	second, _, err := b.store.BeginExport(ctx, beginDay(b, 0, 1, 2))
	require.NoError(t, err)
	require.Equal(t, first.ID, second.ID, "the same version's row, begun again")
	require.Equal(t, first.Attempts+1, second.Attempts)

	res := exportResult(10, "exports/metrics/window=2024-03-01/part-0000.parquet")
	res.Attempt = first.Attempts
	_, err = b.store.VerifyExport(ctx, first.ID, res)
	require.ErrorIs(t, err, catalog.ErrConflict)
	require.NoError(t, b.store.FailExport(ctx, first.ID, first.Attempts, "the first run failed late"))
	require.Empty(t, verified(t, b))
	cur, err := b.store.ExportSeries(ctx, b.ds.ID, "remote", catalog.WindowDay)
	require.NoError(t, err)
	require.Len(t, cur, 1)
	require.Equal(t, catalog.ExportWriting, cur[0].State, "the stale attempt did not fail the current one")

	res.Attempt = second.Attempts
	x, err := b.store.VerifyExport(ctx, second.ID, res)
	require.NoError(t, err)
	require.Equal(t, []int64{1, 2}, x.PartitionIDs)
}

func verified(t *testing.T, b *bundle) []catalog.ExportCoverage {
	t.Helper()
	cov, err := b.store.VerifiedExportCoverage(b.ctx, b.ds.ID)
	require.NoError(t, err)
	return cov
}
