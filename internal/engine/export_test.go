package engine

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"timestore/internal/catalog"
)

// exportDataset is the dataset of the export tests: ts, host, n, v.
func exportDataset(timeType string) catalog.Dataset {
	return catalog.Dataset{
		Name: "exp",
		Columns: []catalog.Column{
			{Name: "ts", Type: timeType},
			{Name: "host", Type: catalog.TypeVarchar},
			{Name: "n", Type: catalog.TypeBigint},
			{Name: "v", Type: catalog.TypeDouble},
		},
		TimeColumn: "ts",
		Partition:  catalog.WindowDay,
	}
}

var exportDay = time.Date(2024, 5, 10, 0, 0, 0, 0, time.UTC)

// exportInput writes a partition-like Parquet file (format v2, unsorted) of
// rows rows numbered from first, at random times spread over [start,
// start+span), and returns its path.
func exportInput(t *testing.T, dir string, timeType string, first, rows int, start time.Time, span time.Duration) string {
	t.Helper()
	p := filepath.Join(dir, fmt.Sprintf("in-%d-%d.parquet", first, rows))
	cast := "TIMESTAMP"
	if timeType == catalog.TypeTimestampTZ {
		cast = "TIMESTAMPTZ"
	}
	q := fmt.Sprintf(`SELECT CAST(TIMESTAMP '%s' + to_microseconds(CAST(hash(i) %% %d AS BIGINT)) AS %s) AS ts,
		'h' || (i %% 5) AS host, i AS n, i * 0.5 AS v
		FROM range(%d, %d) r(i) ORDER BY hash(i * 7)`,
		start.Format("2006-01-02 15:04:05"), span.Microseconds(), cast, first, first+rows)
	_, err := testEngine.db.Exec(fmt.Sprintf("COPY (%s) TO %s (%s)", q, quoteString(p), parquetOptions))
	require.NoError(t, err)
	return p
}

// exportSums returns count(*), sum(n) and sum(v) of the rows of files in
// [from, to) (all rows when from is zero).
func exportSums(t *testing.T, files []string, from, to time.Time) (int64, int64, float64) {
	t.Helper()
	where := ""
	if !from.IsZero() {
		where = fmt.Sprintf(" WHERE ts >= TIMESTAMP '%s' AND ts < TIMESTAMP '%s'", from.Format("2006-01-02 15:04:05"), to.Format("2006-01-02 15:04:05"))
	}
	var n int64
	var sn *int64
	var sv *float64
	require.NoError(t, testEngine.db.QueryRow(fmt.Sprintf("SELECT count(*), sum(n)::BIGINT, sum(v) FROM read_parquet([%s])%s",
		quoteList(files), where)).Scan(&n, &sn, &sv))
	if sn == nil {
		return n, 0, 0
	}
	return n, *sn, *sv
}

func exportedPaths(files []ExportedFile) []string {
	out := make([]string, len(files))
	for i, f := range files {
		out[i] = f.Path
	}
	return out
}

func TestExportSortsAndSplits(t *testing.T) {
	t.Parallel()
	ds := exportDataset(catalog.TypeTimestamp)
	dir := t.TempDir()
	// Two overlapping inputs spanning the day before, the day and the day after.
	a := exportInput(t, dir, catalog.TypeTimestamp, 0, 60_000, exportDay.Add(-12*time.Hour), 48*time.Hour)
	b := exportInput(t, dir, catalog.TypeTimestamp, 60_000, 40_000, exportDay, 24*time.Hour)
	from, to := exportDay, exportDay.AddDate(0, 0, 1)

	// One file when it fits.
	one, err := testEngine.Export(context.Background(), ds, ExportRequest{Inputs: []string{a, b}, From: from, To: to, Dir: filepath.Join(dir, "one")})
	require.NoError(t, err)
	require.Len(t, one, 1)
	require.Equal(t, "part-0000.parquet", filepath.Base(one[0].Path))

	// Several when it does not.
	const maxBytes = 150 << 10
	out := filepath.Join(dir, "out")
	files, err := testEngine.Export(context.Background(), ds, ExportRequest{Inputs: []string{a, b}, From: from, To: to, Dir: out, MaxFileBytes: maxBytes})
	require.NoError(t, err)
	require.Greater(t, len(files), 3)

	wantN, wantSum, wantV := exportSums(t, []string{a, b}, from, to)
	gotN, gotSum, gotV := exportSums(t, exportedPaths(files), time.Time{}, time.Time{})
	require.Equal(t, wantN, gotN)
	require.Equal(t, wantSum, gotSum)
	require.InDelta(t, wantV, gotV, 1e-6)
	require.Equal(t, one[0].Rows, gotN)

	var rows int64
	for i, f := range files {
		require.Equal(t, fmt.Sprintf("part-%04d.parquet", i), filepath.Base(f.Path))
		require.LessOrEqual(t, f.SizeBytes, int64(maxBytes), f.Path)
		fi, err := os.Stat(f.Path)
		require.NoError(t, err)
		require.Equal(t, fi.Size(), f.SizeBytes)
		require.False(t, f.TimeMin.Before(from))
		require.True(t, f.TimeMax.Before(to))
		if i > 0 {
			require.False(t, f.TimeMin.Before(files[i-1].TimeMax), "files overlap in time")
		}
		rows += f.Rows
		require.Zero(t, exportUnsorted(t, f.Path))

		// Parquet format version 1 (v1 data pages, no delta or
		// byte-stream-split encodings), zstd.
		var version int64
		require.NoError(t, testEngine.db.QueryRow(fmt.Sprintf("SELECT format_version FROM parquet_file_metadata(%s)", quoteString(f.Path))).Scan(&version))
		require.EqualValues(t, 1, version)
		var bad int64
		require.NoError(t, testEngine.db.QueryRow(fmt.Sprintf(`SELECT count(*) FROM parquet_metadata(%s)
			WHERE compression <> 'ZSTD' OR encodings LIKE '%%DELTA%%' OR encodings LIKE '%%BYTE_STREAM%%'`, quoteString(f.Path))).Scan(&bad))
		require.Zero(t, bad)
	}
	require.Equal(t, gotN, rows)
	left, err := os.ReadDir(out)
	require.NoError(t, err)
	require.Len(t, left, len(files), "only the part files remain")
}

func exportUnsorted(t *testing.T, path string) int64 {
	t.Helper()
	var n int64
	require.NoError(t, testEngine.db.QueryRow(fmt.Sprintf(`SELECT count(*) FROM (
		SELECT ts AS t, lag(ts) OVER (ORDER BY file_row_number) AS prev FROM read_parquet(%s, file_row_number = true)
	) WHERE t < prev`, quoteString(path))).Scan(&n))
	return n
}

func TestExportExcept(t *testing.T) {
	t.Parallel()
	ds := exportDataset(catalog.TypeTimestamp)
	dir := t.TempDir()
	from, to := exportDay, exportDay.AddDate(0, 0, 1)
	a := exportInput(t, dir, catalog.TypeTimestamp, 0, 5000, exportDay, 24*time.Hour)
	first, err := testEngine.Export(context.Background(), ds, ExportRequest{Inputs: []string{a}, From: from, To: to, Dir: filepath.Join(dir, "v1")})
	require.NoError(t, err)

	// b holds a's rows again plus new ones (as a compaction of a and late
	// rows would): only the new ones are written.
	late := exportInput(t, dir, catalog.TypeTimestamp, 5000, 700, exportDay, 24*time.Hour)
	b := filepath.Join(dir, "b.parquet")
	_, err = testEngine.db.Exec(fmt.Sprintf("COPY (SELECT * FROM read_parquet([%s, %s]) ORDER BY ts) TO %s (%s)",
		quoteString(a), quoteString(late), quoteString(b), parquetOptions))
	require.NoError(t, err)
	delta, err := testEngine.Export(context.Background(), ds, ExportRequest{
		Inputs: []string{b}, Except: exportedPaths(first), From: from, To: to, Dir: filepath.Join(dir, "v2"),
	})
	require.NoError(t, err)
	n, sum, _ := exportSums(t, exportedPaths(delta), time.Time{}, time.Time{})
	wn, wsum, _ := exportSums(t, []string{late}, time.Time{}, time.Time{})
	require.Equal(t, wn, n)
	require.Equal(t, wsum, sum)

	// Nothing new: no file.
	none, err := testEngine.Export(context.Background(), ds, ExportRequest{
		Inputs: []string{a}, Except: exportedPaths(first), From: from, To: to, Dir: filepath.Join(dir, "v3"),
	})
	require.NoError(t, err)
	require.Empty(t, none)
	left, err := os.ReadDir(filepath.Join(dir, "v3"))
	require.NoError(t, err)
	require.Empty(t, left)
}

func TestExportTimestampTZWindow(t *testing.T) {
	t.Parallel()
	ds := exportDataset(catalog.TypeTimestampTZ)
	dir := t.TempDir()
	a := exportInput(t, dir, catalog.TypeTimestampTZ, 0, 3000, exportDay.Add(-6*time.Hour), 36*time.Hour)
	from, to := exportDay, exportDay.AddDate(0, 0, 1)
	files, err := testEngine.Export(context.Background(), ds, ExportRequest{Inputs: []string{a}, From: from, To: to, Dir: filepath.Join(dir, "out")})
	require.NoError(t, err)
	require.Len(t, files, 1)
	var want int64
	require.NoError(t, testEngine.db.QueryRow(fmt.Sprintf(`SELECT count(*) FROM read_parquet(%s)
		WHERE ts >= TIMESTAMPTZ '2024-05-10 00:00:00+00' AND ts < TIMESTAMPTZ '2024-05-11 00:00:00+00'`, quoteString(a))).Scan(&want))
	require.Equal(t, want, files[0].Rows)
	require.Greater(t, want, int64(1000))
	require.False(t, files[0].TimeMin.Before(from))
	require.True(t, files[0].TimeMax.Before(to))
}

func TestExportNoRowsAndErrors(t *testing.T) {
	t.Parallel()
	ds := exportDataset(catalog.TypeTimestamp)
	dir := t.TempDir()
	a := exportInput(t, dir, catalog.TypeTimestamp, 0, 100, exportDay, time.Hour)

	// No row in the window.
	files, err := testEngine.Export(context.Background(), ds, ExportRequest{
		Inputs: []string{a}, From: exportDay.AddDate(0, 0, 1), To: exportDay.AddDate(0, 0, 2), Dir: filepath.Join(dir, "empty"),
	})
	require.NoError(t, err)
	require.Empty(t, files)

	// An existing part file is not overwritten, and nothing is left behind.
	out := filepath.Join(dir, "busy")
	require.NoError(t, os.MkdirAll(out, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(out, "part-0000.parquet"), []byte("keep"), 0o644))
	_, err = testEngine.Export(context.Background(), ds, ExportRequest{Inputs: []string{a}, From: exportDay, To: exportDay.AddDate(0, 0, 1), Dir: out})
	require.ErrorContains(t, err, "exists already")
	left, err := os.ReadDir(out)
	require.NoError(t, err)
	require.Len(t, left, 1)
	b, err := os.ReadFile(filepath.Join(out, "part-0000.parquet"))
	require.NoError(t, err)
	require.Equal(t, "keep", string(b))

	// Bad requests.
	_, err = testEngine.Export(context.Background(), ds, ExportRequest{Inputs: []string{a}, From: exportDay, To: exportDay, Dir: out})
	require.ErrorContains(t, err, "not before")
	_, err = testEngine.Export(context.Background(), ds, ExportRequest{Inputs: []string{a, a}, From: exportDay, To: exportDay.AddDate(0, 0, 1), Dir: out})
	require.ErrorContains(t, err, "listed twice")
	_, err = testEngine.Export(context.Background(), ds, ExportRequest{Inputs: []string{filepath.Join(dir, "missing.parquet")}, From: exportDay, To: exportDay.AddDate(0, 0, 1), Dir: filepath.Join(dir, "m")})
	require.Error(t, err)
	left, err = os.ReadDir(filepath.Join(dir, "m"))
	require.NoError(t, err)
	require.Empty(t, left)
	require.True(t, strings.HasPrefix(filepath.Base(a), "in-"))
}
