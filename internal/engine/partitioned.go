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

// partitioned is what writePartitioned read and wrote. Files are returned
// only when the read succeeded, every row has a time value and the rows
// have exactly the schema's columns.
type partitioned struct {
	files []WindowFile
	// rows is the number of rows read.
	rows int64
	// readErr is set when the COPY failed: the input, typically.
	readErr error
	// timeNulls is set when some row has no time value.
	timeNulls bool
	// extra is set when the rows have columns outside the schema.
	extra bool
}

// Counters of writePartitioned, for tests.
var (
	partitionedRewrites atomic.Int64 // windows whose file was rewritten sorted
	partitionedMerges   atomic.Int64 // windows written into several files, rewritten as one
	partitionedScans    atomic.Int64 // files whose statistics were computed by a scan
)

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
func (e *Engine) writePartitioned(ctx context.Context, conn *sql.Conn, ds catalog.Dataset, sel string, id uint64, outDir string) (p partitioned, err error) {
	tag, err := randomTag()
	if err != nil {
		return p, err
	}
	tmp := filepath.Join(outDir, fmt.Sprintf(".ingest-%d%s", id, tag))
	if err := os.Mkdir(tmp, 0o700); err != nil {
		return p, fmt.Errorf("prepare ingest: %w", err)
	}
	defer os.RemoveAll(tmp)

	names := make([]string, len(ds.Columns))
	for i, c := range ds.Columns {
		names[i] = quoteIdent(c.Name)
	}
	cols := strings.Join(names, ", ")
	copySQL := fmt.Sprintf("COPY (SELECT %s, * EXCLUDE (%s), %s AS %s FROM (%s)) TO %s (%s, PARTITION_BY (%s), RETURN_STATS true)",
		cols, cols, windowExpr(ds), partitionColumn, sel, quoteString(tmp), parquetOptions, partitionColumn)

	// One written file.
	type part struct {
		path    string
		rows    int64
		columns map[string]map[string]string
		exact   bool
	}
	var parts []*part
	var windowKeys []string // partition key of each part
	rows, err := conn.QueryContext(ctx, copySQL)
	if err == nil {
		for rows.Next() {
			var name string
			var count, size, footer uint64
			var stats, keys duckdb.OrderedMap
			if err = rows.Scan(&name, &count, &size, &footer, &stats, &keys); err != nil {
				break
			}
			parts = append(parts, &part{path: name, rows: int64(count), columns: parseWriterStats(stats), exact: true})
			windowKeys = append(windowKeys, fmt.Sprint(keys.Values()))
		}
		if err == nil {
			err = rows.Err()
		}
		rows.Close()
	}
	if err != nil {
		if ctx.Err() != nil {
			return p, fmt.Errorf("prepare ingest: %w", ctx.Err())
		}
		p.readErr = err
		return p, nil
	}
	for _, pt := range parts {
		p.rows += pt.rows
		if len(pt.columns) != len(ds.Columns) {
			p.extra = true
		}
		st, ok := pt.columns[ds.TimeColumn]
		if !ok {
			p.extra = true
			continue
		}
		if st["null_count"] != "0" {
			p.timeNulls = true
		}
	}
	if p.rows == 0 || p.extra || p.timeNulls {
		return p, nil
	}

	// Group the files by window, in the order DuckDB reported them.
	type window struct {
		parts []*part
		// path is the window's one sorted file once known.
		path string
		// scan: the statistics are computed from the file.
		scan bool
	}
	var windows []*window
	byKey := map[string]*window{}
	quoted := make([]string, len(parts))
	for i, pt := range parts {
		quoted[i] = quoteString(pt.path)
		w := byKey[windowKeys[i]]
		if w == nil {
			w = &window{}
			byKey[windowKeys[i]] = w
			windows = append(windows, w)
		}
		w.parts = append(w.parts, pt)
	}
	fileList := "[" + strings.Join(quoted, ", ") + "]"

	// The footers: whether the writer's statistics are exact (it truncates
	// long strings, and says so only there).
	footers, err := conn.QueryContext(ctx, fmt.Sprintf(`
		SELECT file_name, bool_and(coalesce(min_is_exact, true) AND coalesce(max_is_exact, true))
		FROM parquet_metadata(%s) GROUP BY file_name`, fileList))
	if err != nil {
		return p, fmt.Errorf("prepare ingest: read footers: %w", err)
	}
	exact := map[string]bool{}
	for footers.Next() {
		var name string
		var ok bool
		if err := footers.Scan(&name, &ok); err != nil {
			footers.Close()
			return p, fmt.Errorf("prepare ingest: read footers: %w", err)
		}
		exact[name] = ok
	}
	if err := footers.Err(); err != nil {
		footers.Close()
		return p, fmt.Errorf("prepare ingest: read footers: %w", err)
	}
	footers.Close()
	for _, pt := range parts {
		pt.exact = exact[pt.path]
	}

	// Files out of time order: compare each row's time with the previous
	// row's of the same file, in file order (a streaming window).
	tc := quoteIdent(ds.TimeColumn)
	unsortedRows, err := conn.QueryContext(ctx, fmt.Sprintf(`
		SELECT DISTINCT CAST(file_index AS BIGINT) FROM (
			SELECT file_index, %[1]s AS t, lag(%[1]s) OVER () AS prev, lag(file_index) OVER () AS prev_file
			FROM read_parquet(%[2]s))
		WHERE file_index = prev_file AND t < prev`, tc, fileList))
	if err != nil {
		return p, fmt.Errorf("prepare ingest: check order: %w", err)
	}
	unsorted := map[*part]bool{}
	for unsortedRows.Next() {
		var i int64
		if err := unsortedRows.Scan(&i); err != nil {
			unsortedRows.Close()
			return p, fmt.Errorf("prepare ingest: check order: %w", err)
		}
		if i < 0 || i >= int64(len(parts)) {
			unsortedRows.Close()
			return p, fmt.Errorf("prepare ingest: check order: file index %d of %d files", i, len(parts))
		}
		unsorted[parts[i]] = true
	}
	if err := unsortedRows.Err(); err != nil {
		unsortedRows.Close()
		return p, fmt.Errorf("prepare ingest: check order: %w", err)
	}
	unsortedRows.Close()

	// Rewrite the windows out of order or in several files, in parallel.
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(e.threads)
	for i, w := range windows {
		if len(w.parts) == 1 && !unsorted[w.parts[0]] {
			w.path = w.parts[0].path
			continue
		}
		w.path = filepath.Join(tmp, fmt.Sprintf("sorted-%d.parquet", i))
		w.scan = len(w.parts) > 1
		in := make([]string, len(w.parts))
		for j, pt := range w.parts {
			in[j] = quoteString(pt.path)
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
	if err := g.Wait(); err != nil {
		return p, err
	}

	// The statistics of every window, keyed by its index: the writer's,
	// rendered in a VALUES list, and scans of the other files, grouped by
	// file.
	var values, scanned, scanKeys []string
	for i, w := range windows {
		if !w.scan && w.parts[0].exact {
			if s, ok := writerStatsSQL(ds, w.parts[0].rows, w.parts[0].columns); ok {
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
			return p, fmt.Errorf("prepare ingest: statistics: %w", err)
		}
		some, err := scanStats(statRows, ds, &keys)
		if err != nil {
			return p, fmt.Errorf("prepare ingest: %w", err)
		}
		stats = append(stats, some...)
	}
	if len(stats) != len(windows) {
		return p, fmt.Errorf("prepare ingest: statistics of %d files for %d windows", len(stats), len(windows))
	}

	// Move the files into outDir under their final names.
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
			return p, fmt.Errorf("prepare ingest: statistics of unknown window %d", keys[i])
		}
		w := windows[keys[i]]
		ws := pf.WindowStart
		if pf.RowCount == 0 || seen[ws] || catalog.WindowStart(ds.Partition, pf.TimeMax) != ws {
			return p, fmt.Errorf("prepare ingest: the file of window %s has rows of other windows or none", ws.Format(time.RFC3339))
		}
		seen[ws] = true
		total += pf.RowCount
		name := fmt.Sprintf("%s-%s-%d%s.parquet", ds.Name, ws.Format("20060102T150405Z"), id, tag)
		path := filepath.Join(outDir, name)
		if err = os.Rename(w.path, path); err != nil {
			return p, fmt.Errorf("prepare ingest: %w", err)
		}
		files = append(files, WindowFile{Path: path, PartitionFile: pf})
		fi, err := os.Stat(path)
		if err != nil {
			return p, fmt.Errorf("prepare ingest: %w", err)
		}
		files[len(files)-1].SizeBytes = fi.Size()
	}
	if total != p.rows {
		err = fmt.Errorf("prepare ingest: the files hold %d rows, the writer wrote %d", total, p.rows)
		return p, err
	}
	slices.SortFunc(files, func(a, b WindowFile) int { return a.WindowStart.Compare(b.WindowStart) })
	p.files = files
	return p, nil
}
