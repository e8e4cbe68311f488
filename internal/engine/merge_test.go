package engine

import (
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"timestore/internal/catalog"
)

// mergeInputs ingests n CSV files of the all_types dataset, each of rows rows
// at random (overlapping) times within one day, and returns the partition
// files PrepareIngest wrote.
func mergeInputs(t *testing.T, ds catalog.Dataset, n, rows int, seed uint64) []WindowFile {
	t.Helper()
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(seed, 1))
	day := time.Date(2024, 7, 3, 0, 0, 0, 0, time.UTC)
	var files []WindowFile
	for f := 0; f < n; f++ {
		var b strings.Builder
		b.WriteString("ts,tz,b,i,d,s,f\n")
		for r := 0; r < rows; r++ {
			ts := day.Add(time.Duration(rng.Int64N(int64(24 * time.Hour))))
			fmt.Fprintf(&b, "%s,%s,", ts.Format(time.RFC3339Nano), ts.Add(time.Duration(rng.IntN(1000))*time.Second).Format(time.RFC3339Nano))
			// Some nulls in every nullable column.
			if rng.IntN(10) == 0 {
				b.WriteString(",,,,\n")
				continue
			}
			fmt.Fprintf(&b, "%d,%d,%g,s%03d,%t\n", rng.Int64N(1<<40)-1<<39, rng.Int32N(1000)-500, rng.NormFloat64()*100, rng.IntN(500), rng.IntN(2) == 0)
		}
		in := writeFile(t, dir, fmt.Sprintf("in%d.csv", f), b.String())
		out := filepath.Join(dir, fmt.Sprintf("out%d", f))
		require.NoError(t, os.Mkdir(out, 0o755))
		wf, err := testEngine.PrepareIngest(context.Background(), ds, FormatCSV, in, out)
		require.NoError(t, err)
		require.Len(t, wf, 1)
		files = append(files, wf...)
	}
	return files
}

// unsortedRows counts rows of a Parquet file whose time is before the
// previous row's, in file order.
func unsortedRows(t testing.TB, db *sql.DB, path, timeColumn string) int64 {
	t.Helper()
	var n int64
	require.NoError(t, db.QueryRowContext(context.Background(), fmt.Sprintf(
		`SELECT count(*) FROM (
			SELECT %[1]s AS t, lag(%[1]s) OVER (ORDER BY file_row_number) AS prev
			FROM read_parquet(%[2]s, file_row_number = true)
		) WHERE t < prev`, quoteIdent(timeColumn), quoteString(path))).Scan(&n))
	return n
}

func TestMerge(t *testing.T) {
	t.Parallel()
	ds := allTypes(catalog.WindowDay)
	inputs := mergeInputs(t, ds, 5, 700, 42)
	paths := make([]string, len(inputs))
	var wantRows, wantNulls int64
	for i, f := range inputs {
		paths[i] = f.Path
		wantRows += f.RowCount
		wantNulls += f.Stats[2].NullCount
	}
	out := filepath.Join(t.TempDir(), "merged.parquet")
	pf, err := testEngine.Merge(context.Background(), ds, paths, out)
	require.NoError(t, err)

	// Same rows, as a multiset.
	union := make([]string, len(paths))
	for i, p := range paths {
		union[i] = quoteString(p)
	}
	var missing, extra int64
	require.NoError(t, testEngine.db.QueryRow(fmt.Sprintf(`SELECT
		(SELECT count(*) FROM (SELECT * FROM read_parquet([%[1]s]) EXCEPT ALL SELECT * FROM read_parquet(%[2]s))),
		(SELECT count(*) FROM (SELECT * FROM read_parquet(%[2]s) EXCEPT ALL SELECT * FROM read_parquet([%[1]s])))`,
		strings.Join(union, ", "), quoteString(out))).Scan(&missing, &extra))
	require.Zero(t, missing, "rows of the inputs missing from the output")
	require.Zero(t, extra, "rows in the output that no input has")
	require.Zero(t, unsortedRows(t, testEngine.db, out, "ts"), "output sorted by time")
	require.Equal(t, parquetSchema(t, paths[0]), parquetSchema(t, out), "same columns, order and types as ingest writes")

	// Statistics: recomputed, and consistent with the inputs'.
	require.Equal(t, wantRows, pf.RowCount)
	fi, err := os.Stat(out)
	require.NoError(t, err)
	require.Equal(t, fi.Size(), pf.SizeBytes)
	again, err := testEngine.FileStats(context.Background(), ds, out)
	require.NoError(t, err)
	require.Equal(t, again, pf)
	require.Equal(t, wantNulls, pf.Stats[2].NullCount)
	minTime, maxTime := inputs[0].TimeMin, inputs[0].TimeMax
	for _, f := range inputs {
		minTime = minOf(minTime, f.TimeMin)
		maxTime = maxOf(maxTime, f.TimeMax)
	}
	require.Equal(t, minTime, pf.TimeMin)
	require.Equal(t, maxTime, pf.TimeMax)
	require.Equal(t, inputs[0].WindowStart, pf.WindowStart)
	for i, c := range ds.Columns {
		require.Equal(t, c.Name, pf.Stats[i].Column)
		var nulls int64
		for _, f := range inputs {
			nulls += f.Stats[i].NullCount
		}
		require.Equal(t, nulls, pf.Stats[i].NullCount, c.Name)
		if c.Type == catalog.TypeVarchar || c.Type == catalog.TypeBoolean || isTime(c.Type) {
			// Text order equals value order for these renderings.
			mn, mx := *inputs[0].Stats[i].Min, *inputs[0].Stats[i].Max
			for _, f := range inputs {
				mn, mx = min(mn, *f.Stats[i].Min), max(mx, *f.Stats[i].Max)
			}
			require.Equal(t, mn, *pf.Stats[i].Min, c.Name)
			require.Equal(t, mx, *pf.Stats[i].Max, c.Name)
		}
	}
}

func minOf(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func maxOf(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

func TestMergeRefuses(t *testing.T) {
	t.Parallel()
	ds := metrics("m", catalog.WindowDay)
	f := setupQuery(t)
	dir := t.TempDir()
	ctx := context.Background()
	for name, tc := range map[string]struct {
		inputs []string
		ds     catalog.Dataset
	}{
		"no inputs":     {nil, ds},
		"input twice":   {[]string{f.files[0], f.files[0]}, ds},
		"missing input": {[]string{f.files[0], filepath.Join(dir, "nope.parquet")}, ds},
		"bad dataset":   {f.files, catalog.Dataset{Name: "m"}},
		"wrong schema":  {f.files, allTypes(catalog.WindowDay)},
	} {
		out := filepath.Join(dir, strings.ReplaceAll(name, " ", "_")+".parquet")
		_, err := testEngine.Merge(ctx, tc.ds, tc.inputs, out)
		require.Error(t, err, name)
		require.NoFileExists(t, out, name)
	}

	// An existing output is not overwritten.
	out := filepath.Join(dir, "exists.parquet")
	require.NoError(t, os.WriteFile(out, []byte("keep"), 0o644))
	_, err := testEngine.Merge(ctx, ds, f.files, out)
	require.Error(t, err)
	b, err := os.ReadFile(out)
	require.NoError(t, err)
	require.Equal(t, "keep", string(b))

	// A cancelled merge leaves nothing.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	out = filepath.Join(dir, "cancelled.parquet")
	_, err = testEngine.Merge(cctx, ds, f.files, out)
	require.Error(t, err)
	require.NoFileExists(t, out)

	// The two day files of the query fixture merge into one file spanning
	// both days: Merge itself does not care about windows (the planner does).
	out = filepath.Join(dir, "two-days.parquet")
	pf, err := testEngine.Merge(ctx, ds, f.files, out)
	require.NoError(t, err)
	require.EqualValues(t, 96, pf.RowCount)
	require.Equal(t, time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC), pf.WindowStart)
	require.Equal(t, time.Date(2024, 1, 2, 23, 30, 0, 0, time.UTC), pf.TimeMax)
}

// TestMergeSpillsOverMemoryLimit merges inputs whose rows need several times
// an engine's memory limit: the sort spills to the temp directory and the
// merge succeeds. A control run of the same statement in a DuckDB with the
// same limit but no temp directory runs out of memory, which shows that the
// rows really do not fit.
func TestMergeSpillsOverMemoryLimit(t *testing.T) {
	t.Parallel()
	const limit = "64MB"
	ds := metrics("big", catalog.WindowMonth)
	dir := t.TempDir()
	const files, rowsPerFile = 16, 250_000
	inputs := make([]string, files)
	for i := range inputs {
		inputs[i] = filepath.Join(dir, fmt.Sprintf("in%02d.parquet", i))
		// Interleaved times (every file spans the whole range) and values
		// that do not compress: ~100 MB of rows in memory.
		_, err := testEngine.db.Exec(fmt.Sprintf(`COPY (
			SELECT TIMESTAMP '2024-07-01' + to_microseconds((r * %[1]d + %[2]d) * 100) AS ts,
				'series-' || (hash(r) %% 100000) AS series, random() AS value
			FROM range(%[3]d) t(r) ORDER BY ts) TO %[4]s (%[5]s)`,
			files, i, rowsPerFile, quoteString(inputs[i]), parquetOptions))
		require.NoError(t, err)
	}
	quoted := make([]string, len(inputs))
	for i, p := range inputs {
		quoted[i] = quoteString(p)
	}

	control, err := sql.Open("duckdb", "?threads=2&memory_limit="+limit)
	require.NoError(t, err)
	defer control.Close()
	_, err = control.Exec("SET temp_directory = ''")
	require.NoError(t, err)
	_, err = control.Exec(fmt.Sprintf("COPY (SELECT ts, series, value FROM read_parquet([%s]) ORDER BY ts) TO %s (%s)",
		strings.Join(quoted, ", "), quoteString(filepath.Join(dir, "control.parquet")), parquetOptions))
	require.Error(t, err, "the control merge must not fit in %s", limit)
	require.Contains(t, err.Error(), "Out of Memory")

	spill := filepath.Join(dir, "spill")
	e, err := New(Config{MemoryLimit: limit, Threads: 2, TempDir: spill})
	require.NoError(t, err)
	defer e.Close()
	out := filepath.Join(dir, "merged.parquet")
	pf, err := e.Merge(context.Background(), ds, inputs, out)
	require.NoError(t, err)
	require.EqualValues(t, files*rowsPerFile, pf.RowCount)
	require.Zero(t, unsortedRows(t, testEngine.db, out, "ts"))
}

// TestMergeConcurrentWithIngest runs merges and ingests side by side on one
// engine; ingest's files stay sorted (Merge must not change global settings
// such as preserve_insertion_order).
func TestMergeConcurrentWithIngest(t *testing.T) {
	t.Parallel()
	ds := allTypes(catalog.WindowDay)
	inputs := mergeInputs(t, ds, 4, 300, 7)
	paths := make([]string, len(inputs))
	for i, f := range inputs {
		paths[i] = f.Path
	}
	dir := t.TempDir()
	errc := make(chan error, 4)
	for i := range 4 {
		go func() {
			_, err := testEngine.Merge(context.Background(), ds, paths, filepath.Join(dir, fmt.Sprintf("m%d.parquet", i)))
			errc <- err
		}()
	}
	more := mergeInputs(t, ds, 3, 2000, 8)
	for range 4 {
		require.NoError(t, <-errc)
	}
	for _, f := range more {
		require.Zero(t, unsortedRows(t, testEngine.db, f.Path, "ts"))
	}
	var pio string
	require.NoError(t, testEngine.db.QueryRow("SELECT current_setting('preserve_insertion_order')::VARCHAR").Scan(&pio))
	require.Equal(t, "true", pio)
}

// writeParquet writes the rows of a query as a partition file would be written.
func writeParquet(t *testing.T, path, query string) string {
	t.Helper()
	_, err := testEngine.db.Exec(fmt.Sprintf("COPY (%s) TO %s (%s)", query, quoteString(path), parquetOptions))
	require.NoError(t, err)
	return path
}

// requireSameRows checks that out holds exactly the rows of inputs.
func requireSameRows(t *testing.T, inputs []string, out string) {
	t.Helper()
	quoted := make([]string, len(inputs))
	for i, p := range inputs {
		quoted[i] = quoteString(p)
	}
	var missing, extra int64
	require.NoError(t, testEngine.db.QueryRow(fmt.Sprintf(`SELECT
		(SELECT count(*) FROM (SELECT * FROM read_parquet([%[1]s], union_by_name = true) EXCEPT ALL SELECT * FROM read_parquet(%[2]s))),
		(SELECT count(*) FROM (SELECT * FROM read_parquet(%[2]s) EXCEPT ALL SELECT * FROM read_parquet([%[1]s], union_by_name = true)))`,
		strings.Join(quoted, ", "), quoteString(out))).Scan(&missing, &extra))
	require.Zero(t, missing, "rows of the inputs missing from the output")
	require.Zero(t, extra, "rows in the output that no input has")
}

// TestMergePaths checks which way Merge writes: disjoint inputs are
// concatenated in time order, overlapping ones sorted, an input that turns
// out unsorted is caught and sorted, and statistics the writer cannot give
// exactly are recomputed with a scan. Whatever the path, the output holds
// the inputs' rows in time order with the statistics FileStats computes.
// Not parallel: it counts the paths taken through package counters.
func TestMergePaths(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	m := metrics("m", catalog.WindowDay)
	hour := func(name string, h, rows int, order string) string {
		return writeParquet(t, filepath.Join(dir, name+".parquet"), fmt.Sprintf(`
			SELECT TIMESTAMP '2024-02-01' + INTERVAL (%d) HOUR + to_microseconds(r * (3600000000 // %d)) AS ts,
				's' || (r %% 13) AS series, (r %% 1000) / 8 AS value
			FROM range(%d) t(r) ORDER BY ts %s`, h, rows, rows, order))
	}
	// Three disjoint hours, given out of order; the last two touch
	// (file c ends where d starts).
	a, b := hour("a", 5, 1000, ""), hour("b", 1, 1000, "")
	c := writeParquet(t, filepath.Join(dir, "c.parquet"), `SELECT TIMESTAMP '2024-02-01 07:00:00' + to_microseconds(r * 1000000) AS ts, 'x' AS series, 1.5 AS value FROM range(3601) t(r)`)
	d := writeParquet(t, filepath.Join(dir, "d.parquet"), `SELECT TIMESTAMP '2024-02-01 08:00:00' + to_microseconds(r * 1000000) AS ts, 'y' AS series, 2.5 AS value FROM range(100) t(r)`)
	overlapping := hour("o", 5, 700, "") // overlaps a

	type counts struct{ sorts, concats, scans int64 }
	snapshot := func() counts { return counts{mergeSorts.Load(), mergeConcats.Load(), mergeStatsScans.Load()} }
	merge := func(name string, ds catalog.Dataset, inputs ...string) (catalog.PartitionFile, counts) {
		t.Helper()
		before := snapshot()
		out := filepath.Join(dir, name+".out.parquet")
		pf, err := testEngine.Merge(ctx, ds, inputs, out)
		require.NoError(t, err, name)
		after := snapshot()
		requireSameRows(t, inputs, out)
		require.Zero(t, unsortedRows(t, testEngine.db, out, ds.TimeColumn), name)
		again, err := testEngine.FileStats(ctx, ds, out)
		require.NoError(t, err)
		require.Equal(t, again, pf, "%s: statistics as FileStats computes them", name)
		return pf, counts{after.sorts - before.sorts, after.concats - before.concats, after.scans - before.scans}
	}

	pf, n := merge("disjoint", m, a, c, d, b)
	require.Equal(t, counts{concats: 1}, n)
	require.EqualValues(t, 1000+1000+3601+100, pf.RowCount)

	_, n = merge("overlapping", m, a, b, overlapping)
	require.Equal(t, counts{sorts: 1}, n)

	// Many disjoint inputs, given in random order, with enough rows for
	// DuckDB to scan them on every thread: still one sorted concatenation.
	var many []string
	for i := range 40 {
		many = append(many, writeParquet(t, filepath.Join(dir, fmt.Sprintf("many%02d.parquet", i)), fmt.Sprintf(`
			SELECT TIMESTAMP '2024-03-01' + to_microseconds((%d * 20000 + r) * 1000) AS ts, 's' || (r %% 13) AS series, random() AS value
			FROM range(20000) t(r)`, i)))
	}
	rand.Shuffle(len(many), func(i, j int) { many[i], many[j] = many[j], many[i] })
	_, n = merge("many disjoint", m, many...)
	require.Equal(t, counts{concats: 1}, n)

	// Disjoint ranges, but one input in descending order and large enough
	// to fill several row groups: the concatenation's row groups come out
	// of order, so Merge sorts after all.
	desc := hour("desc", 10, 400_000, "DESC")
	_, n = merge("unsorted input", m, a, desc)
	require.Equal(t, counts{concats: 1, sorts: 1}, n)

	// Statistics the writer cannot give exactly: NaN, and -0.0 among doubles.
	nan := writeParquet(t, filepath.Join(dir, "nan.parquet"), `SELECT TIMESTAMP '2024-02-01 12:00:00' AS ts, 'n' AS series, 'NaN'::DOUBLE AS value`)
	_, n = merge("nan", m, a, nan)
	require.Equal(t, int64(1), n.scans)
	negZero := writeParquet(t, filepath.Join(dir, "negzero.parquet"), `SELECT TIMESTAMP '2024-02-01 13:00:00' AS ts, 'z' AS series, -0.0::DOUBLE AS value`)
	_, n = merge("negative zero", m, negZero, hour("pos", 14, 10, ""))
	require.Equal(t, int64(1), n.scans)
	// Long strings: the writer truncates their statistics.
	long := writeParquet(t, filepath.Join(dir, "long.parquet"), `SELECT TIMESTAMP '2024-02-01 15:00:00' + to_microseconds(r) AS ts, repeat(chr(65 + r::INTEGER), 300 + r::INTEGER) AS series, r / 2 AS value FROM range(5) t(r)`)
	_, n = merge("long strings", m, long, b)
	require.Equal(t, int64(1), n.scans)

	// A TIMESTAMPTZ time column, with nulls in other columns.
	tzds := allTypes(catalog.WindowDay)
	tzds.TimeColumn = "tz"
	tzFile := func(name string, h int) string {
		return writeParquet(t, filepath.Join(dir, name+".parquet"), fmt.Sprintf(`
			SELECT CAST(NULL AS TIMESTAMP) AS ts, TIMESTAMPTZ '2024-02-01 00:00:00+00' + INTERVAL (%d) HOUR + to_microseconds(r * 1000) AS tz,
				CASE WHEN r %% 3 = 0 THEN NULL ELSE r END::BIGINT AS b, (r %% 7)::INTEGER AS i, r / 3 AS d,
				'v' || r AS s, r %% 2 = 0 AS f
			FROM range(500) t(r) ORDER BY tz`, h))
	}
	_, n = merge("timestamptz disjoint", tzds, tzFile("tz2", 2), tzFile("tz1", 1))
	require.Equal(t, counts{concats: 1}, n)
	_, n = merge("timestamptz overlapping", tzds, tzFile("tz3", 3), tzFile("tz3b", 3))
	require.Equal(t, counts{sorts: 1}, n)
}
