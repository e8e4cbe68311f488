package engine

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	duckdb "github.com/duckdb/duckdb-go/v2"
	"golang.org/x/sync/errgroup"

	"timestore/internal/catalog"
)

// parquetOptions are the COPY options of partition files: zstd, and Parquet
// format version 2, whose encodings (delta for timestamps and integers, byte
// stream split for doubles) made the benchmark's files about 25% smaller and
// faster to write than version 1. Partition files are read by DuckDB only;
// exports for other tools choose their own options.
const parquetOptions = "FORMAT parquet, COMPRESSION zstd, PARQUET_VERSION v2"

// partitionColumn is the column of the partitioned write that holds a row's
// window start. DuckDB leaves partition columns out of the files; a key of
// the same name in the input does not clash (DuckDB renames the column),
// and leaves an extra column.
const partitionColumn = "__timestore_window"

// rejectReason says why writePartitioned wrote no files although nothing
// failed in the machinery.
type rejectReason int

const (
	// readFailed: the COPY failed, the input typically.
	readFailed rejectReason = iota
	// noRows: the input has no rows.
	noRows
	// timeNulls: some row has no time value.
	timeNulls
	// extraColumns: the rows have columns outside the schema.
	extraColumns
)

// rejectedRead is writePartitioned's error for rows it cannot ingest as
// read; the caller explains it to the user (source.explain) or tries
// another read. No file is left.
type rejectedRead struct {
	reason rejectReason
	// cause is the COPY's error, for readFailed.
	cause error
}

func (r *rejectedRead) Error() string {
	switch r.reason {
	case readFailed:
		return fmt.Sprintf("prepare ingest: read input: %v", r.cause)
	case noRows:
		return "prepare ingest: no rows"
	case timeNulls:
		return "prepare ingest: rows without a time value"
	}
	return "prepare ingest: columns outside the schema"
}

func (r *rejectedRead) Unwrap() error { return r.cause }

// Counters of writePartitioned, for tests.
var (
	partitionedRewrites atomic.Int64 // windows whose file was rewritten sorted
	partitionedMerges   atomic.Int64 // windows written into several files, rewritten as one
	partitionedScans    atomic.Int64 // files whose statistics were computed by a scan
)

// writtenFile is one file written by the partitioned COPY.
type writtenFile struct {
	path string
	// window is the file's partition key, as DuckDB reported it.
	window string
	rows   int64
	// columns are the writer's statistics per column (parseWriterStats).
	columns map[string]map[string]string
	// exact is set when the footer says every min and max is exact.
	exact bool
	// unsorted is set when the rows are out of time order.
	unsorted bool
}

// windowFiles are the files of one window.
type windowFiles struct {
	files []*writtenFile
	// path is the window's one sorted file once known.
	path string
	// scan: the statistics are computed from the file.
	scan bool
}

// writePartitioned writes the rows of the query sel (the schema's columns
// converted to their declared types, possibly followed by other columns)
// into one Parquet file per window in outDir, in one pass: DuckDB's
// partitioned COPY parses the input, converts the values, splits the rows
// by window and writes the files, reporting each file's statistics as it
// writes them (RETURN_STATS), so no statistics query reads the rows again.
//
// The partitioned write is parallel and does not keep the input order
// (PRESERVE_ORDER is not supported with PARTITION_BY in DuckDB 1.5): where
// two threads' rows meet, a file has runs of sorted rows. One streaming read
// of the time column of every file finds the files out of order, and those
// are rewritten sorted; their statistics do not change. Time series usually
// arrive in time order, so most files are kept as written. A window whose
// rows went to several files (DuckDB closes files beyond
// partitioned_write_max_open_files, default 100, and opens new ones) is
// rewritten into one.
//
// Statistics come from the writer, rendered by writerStatsSQL as Merge
// renders them, except where the writer's are not exact (NaN, the sign of
// zero, long strings: see writerStatsSQL and the footer's exactness flags)
// or the file was merged; those files are scanned, all in one query.
//
// It runs in phases, each a function below: the COPY (copyPartitioned), the
// checks of what it read (checkWritten), the files grouped by window
// (groupByWindow), the footers' exactness (markExact), the order check
// (markUnsorted), the rewrites (rewriteWindows), the statistics
// (windowStats) and the move into outDir (placeFiles). Rows it cannot
// ingest as read are a *rejectedRead.
func (e *Engine) writePartitioned(ctx context.Context, conn *sql.Conn, ds catalog.Dataset, sel string, id uint64, outDir string) ([]WindowFile, error) {
	tag, err := randomTag()
	if err != nil {
		return nil, err
	}
	tmp := filepath.Join(outDir, fmt.Sprintf(".ingest-%d%s", id, tag))
	if err := os.Mkdir(tmp, 0o700); err != nil {
		return nil, fmt.Errorf("prepare ingest: %w", err)
	}
	defer os.RemoveAll(tmp)

	written, err := copyPartitioned(ctx, conn, ds, sel, tmp)
	if err != nil {
		return nil, err
	}
	rows, err := checkWritten(ds, written)
	if err != nil {
		return nil, err
	}
	windows := groupByWindow(written)
	fileList := quotedList(written)
	if err := markExact(ctx, conn, written, fileList); err != nil {
		return nil, err
	}
	if err := markUnsorted(ctx, conn, ds, written, fileList); err != nil {
		return nil, err
	}
	if err := e.rewriteWindows(ctx, ds, windows, tmp); err != nil {
		return nil, err
	}
	stats, keys, err := windowStats(ctx, conn, ds, windows)
	if err != nil {
		return nil, err
	}
	return placeFiles(ds, windows, stats, keys, rows, outDir, fmt.Sprintf("%d%s", id, tag))
}

// queryEach runs query on conn and calls scan for each result row. It
// returns the first error of the query, of scan or of the iteration.
func queryEach(ctx context.Context, conn *sql.Conn, query string, scan func(*sql.Rows) error) error {
	rows, err := conn.QueryContext(ctx, query)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		if err := scan(rows); err != nil {
			return err
		}
	}
	return rows.Err()
}

// copyPartitioned runs the partitioned COPY of sel into dir and returns the
// files it wrote, in the order DuckDB reported them. A failed COPY is a
// *rejectedRead (readFailed) unless ctx ended.
func copyPartitioned(ctx context.Context, conn *sql.Conn, ds catalog.Dataset, sel, dir string) ([]*writtenFile, error) {
	cols := columnList(ds)
	copySQL := fmt.Sprintf("COPY (SELECT %s, * EXCLUDE (%s), %s AS %s FROM (%s)) TO %s (%s, PARTITION_BY (%s), RETURN_STATS true)",
		cols, cols, windowExpr(ds), partitionColumn, sel, quoteString(dir), parquetOptions, partitionColumn)
	var written []*writtenFile
	err := queryEach(ctx, conn, copySQL, func(rows *sql.Rows) error {
		var name string
		var count, size, footer uint64
		var stats, keys duckdb.OrderedMap
		if err := rows.Scan(&name, &count, &size, &footer, &stats, &keys); err != nil {
			return err
		}
		written = append(written, &writtenFile{path: name, window: fmt.Sprint(keys.Values()), rows: int64(count), columns: parseWriterStats(stats), exact: true})
		return nil
	})
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("prepare ingest: %w", ctx.Err())
		}
		return nil, &rejectedRead{reason: readFailed, cause: err}
	}
	return written, nil
}

// checkWritten returns the number of rows written, or a *rejectedRead when
// there are none, some have no time value or the files have columns
// outside the schema (in that order of precedence).
func checkWritten(ds catalog.Dataset, written []*writtenFile) (int64, error) {
	var rows int64
	var nulls, extra bool
	for _, f := range written {
		rows += f.rows
		if len(f.columns) != len(ds.Columns) {
			extra = true
		}
		st, ok := f.columns[ds.TimeColumn]
		if !ok {
			extra = true
			continue
		}
		if st["null_count"] != "0" {
			nulls = true
		}
	}
	switch {
	case rows == 0:
		return 0, &rejectedRead{reason: noRows}
	case nulls:
		return 0, &rejectedRead{reason: timeNulls}
	case extra:
		return 0, &rejectedRead{reason: extraColumns}
	}
	return rows, nil
}

// groupByWindow groups the files by window, in the order DuckDB reported
// them.
func groupByWindow(written []*writtenFile) []*windowFiles {
	var windows []*windowFiles
	byKey := map[string]*windowFiles{}
	for _, f := range written {
		w := byKey[f.window]
		if w == nil {
			w = &windowFiles{}
			byKey[f.window] = w
			windows = append(windows, w)
		}
		w.files = append(w.files, f)
	}
	return windows
}

// quotedList is the SQL list of the files' paths.
func quotedList(written []*writtenFile) string {
	quoted := make([]string, len(written))
	for i, f := range written {
		quoted[i] = quoteString(f.path)
	}
	return "[" + strings.Join(quoted, ", ") + "]"
}

// markExact reads the footers: whether the writer's statistics are exact
// (it truncates long strings, and says so only there).
func markExact(ctx context.Context, conn *sql.Conn, written []*writtenFile, fileList string) error {
	exact := map[string]bool{}
	err := queryEach(ctx, conn, fmt.Sprintf(`
		SELECT file_name, bool_and(coalesce(min_is_exact, true) AND coalesce(max_is_exact, true))
		FROM parquet_metadata(%s) GROUP BY file_name`, fileList), func(rows *sql.Rows) error {
		var name string
		var ok bool
		if err := rows.Scan(&name, &ok); err != nil {
			return err
		}
		exact[name] = ok
		return nil
	})
	if err != nil {
		return fmt.Errorf("prepare ingest: read footers: %w", err)
	}
	for _, f := range written {
		f.exact = exact[f.path]
	}
	return nil
}

// markUnsorted finds the files out of time order: it compares each row's
// time with the previous row's of the same file, in file order (a
// streaming window).
func markUnsorted(ctx context.Context, conn *sql.Conn, ds catalog.Dataset, written []*writtenFile, fileList string) error {
	err := queryEach(ctx, conn, fmt.Sprintf(`
		SELECT DISTINCT CAST(file_index AS BIGINT) FROM (
			SELECT file_index, %[1]s AS t, lag(%[1]s) OVER () AS prev, lag(file_index) OVER () AS prev_file
			FROM read_parquet(%[2]s))
		WHERE file_index = prev_file AND t < prev`, quoteIdent(ds.TimeColumn), fileList), func(rows *sql.Rows) error {
		var i int64
		if err := rows.Scan(&i); err != nil {
			return err
		}
		if i < 0 || i >= int64(len(written)) {
			return fmt.Errorf("file index %d of %d files", i, len(written))
		}
		written[i].unsorted = true
		return nil
	})
	if err != nil {
		return fmt.Errorf("prepare ingest: check order: %w", err)
	}
	return nil
}

// rewriteWindows rewrites, in parallel, the windows out of order or in
// several files into one sorted file in dir each; every other window keeps
// its file.
func (e *Engine) rewriteWindows(ctx context.Context, ds catalog.Dataset, windows []*windowFiles, dir string) error {
	cols := columnList(ds)
	tc := quoteIdent(ds.TimeColumn)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(e.threads)
	for i, w := range windows {
		if len(w.files) == 1 && !w.files[0].unsorted {
			w.path = w.files[0].path
			continue
		}
		w.path = filepath.Join(dir, fmt.Sprintf("sorted-%d.parquet", i))
		w.scan = len(w.files) > 1
		in := make([]string, len(w.files))
		for j, f := range w.files {
			in[j] = quoteString(f.path)
		}
		if w.scan {
			partitionedMerges.Add(1)
		}
		g.Go(func() error {
			partitionedRewrites.Add(1)
			_, err := e.db.ExecContext(gctx, fmt.Sprintf("COPY (SELECT %s FROM read_parquet([%s]) ORDER BY %s) TO %s (%s)",
				cols, strings.Join(in, ", "), tc, quoteString(w.path), parquetOptions))
			if err != nil {
				return fmt.Errorf("prepare ingest: sort window file: %w", err)
			}
			return nil
		})
	}
	return g.Wait()
}

// windowStats returns the statistics of every window with, for each, the
// window's index: the writer's, rendered in a VALUES list, and scans of the
// other files, grouped by file.
func windowStats(ctx context.Context, conn *sql.Conn, ds catalog.Dataset, windows []*windowFiles) ([]catalog.PartitionFile, []int64, error) {
	var values, scanned, scanKeys []string
	for i, w := range windows {
		if !w.scan && w.files[0].exact {
			if s, ok := writerStatsSQL(ds, w.files[0].rows, w.files[0].columns); ok {
				values = append(values, fmt.Sprintf("(CAST(%d AS BIGINT), %s)", i, s))
				continue
			}
		}
		partitionedScans.Add(1)
		scanned = append(scanned, quoteString(w.path))
		scanKeys = append(scanKeys, strconv.Itoa(i))
	}
	var queries []string
	if len(values) > 0 {
		queries = append(queries, "SELECT * FROM (VALUES "+strings.Join(values, ", ")+")")
	}
	if len(scanned) > 0 {
		queries = append(queries, fmt.Sprintf("SELECT CAST([%s][CAST(file_index AS BIGINT) + 1] AS BIGINT), %s FROM read_parquet([%s]) GROUP BY file_index",
			strings.Join(scanKeys, ", "), statsColumns(ds), strings.Join(scanned, ", ")))
	}
	var keys []int64
	var stats []catalog.PartitionFile
	for _, q := range queries {
		statRows, err := conn.QueryContext(ctx, q)
		if err != nil {
			return nil, nil, fmt.Errorf("prepare ingest: statistics: %w", err)
		}
		some, err := scanStats(statRows, ds, &keys)
		if err != nil {
			return nil, nil, fmt.Errorf("prepare ingest: %w", err)
		}
		stats = append(stats, some...)
	}
	if len(stats) != len(windows) {
		return nil, nil, fmt.Errorf("prepare ingest: statistics of %d files for %d windows", len(stats), len(windows))
	}
	return stats, keys, nil
}

// placeFiles moves each window's file into outDir under its final name
// (dataset, window start, suffix) and returns them ordered by window, after
// checking that each holds the rows of its own window only and that
// together they hold every row written. On error no file is left in outDir.
func placeFiles(ds catalog.Dataset, windows []*windowFiles, stats []catalog.PartitionFile, keys []int64, rows int64, outDir, suffix string) (_ []WindowFile, err error) {
	files := make([]WindowFile, 0, len(windows))
	defer func() {
		if err != nil {
			for _, f := range files {
				_ = os.Remove(f.Path)
			}
		}
	}()
	var total int64
	seen := map[time.Time]bool{}
	for i, pf := range stats {
		if keys[i] < 0 || keys[i] >= int64(len(windows)) {
			return nil, fmt.Errorf("prepare ingest: statistics of unknown window %d", keys[i])
		}
		w := windows[keys[i]]
		ws := pf.WindowStart
		if pf.RowCount == 0 || seen[ws] || catalog.WindowStart(ds.Partition, pf.TimeMax) != ws {
			return nil, fmt.Errorf("prepare ingest: the file of window %s has rows of other windows or none", ws.Format(time.RFC3339))
		}
		seen[ws] = true
		total += pf.RowCount
		path := filepath.Join(outDir, fmt.Sprintf("%s-%s-%s.parquet", ds.Name, ws.Format("20060102T150405Z"), suffix))
		if err := os.Rename(w.path, path); err != nil {
			return nil, fmt.Errorf("prepare ingest: %w", err)
		}
		files = append(files, WindowFile{Path: path, PartitionFile: pf})
		fi, err := os.Stat(path)
		if err != nil {
			return nil, fmt.Errorf("prepare ingest: %w", err)
		}
		files[len(files)-1].SizeBytes = fi.Size()
	}
	if total != rows {
		return nil, fmt.Errorf("prepare ingest: the files hold %d rows, the writer wrote %d", total, rows)
	}
	slices.SortFunc(files, func(a, b WindowFile) int { return a.WindowStart.Compare(b.WindowStart) })
	return files, nil
}
