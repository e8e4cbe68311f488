package engine

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	duckdb "github.com/duckdb/duckdb-go/v2"

	"timestore/internal/catalog"
)

// ErrMergeVerify is wrapped by the error Merge returns when the merged file
// does not hold exactly the rows of its inputs. It is an invariant violation,
// not a transient failure: retrying the same merge will not help.
var ErrMergeVerify = errors.New("merge verification failed")

// Counters of the paths Merge takes, for tests.
var (
	mergeSorts      atomic.Int64 // merges that sorted with ORDER BY
	mergeConcats    atomic.Int64 // merges that concatenated disjoint inputs
	mergeStatsScans atomic.Int64 // merges whose statistics needed a scan of the output
)

// Merge writes the rows of the Parquet files inputs, all partition files of
// ds, into one new Parquet file out, sorted by the time column, with the
// schema's columns in order and the same encoding options as ingest (zstd,
// Parquet format version 2). Inputs may overlap in time.
//
// Every partition file is sorted by time (PrepareIngest and Merge write them
// so). Merge reads the inputs' footers; when their time ranges do not
// overlap, it concatenates them in time order, which keeps the rows sorted
// without a sort; otherwise it sorts with ORDER BY. The sort runs inside the
// engine's DuckDB instance and obeys its Config.MemoryLimit: a merge larger
// than the limit spills to Config.TempDir rather than failing.
//
// The result is verified: the output's footer and the Parquet writer must
// both count exactly the rows the inputs' footers declare, and the output's
// row groups must be in time order. Statistics are those the writer computed
// while writing, rendered as FileStats renders them; when the writer could
// not give exact ones for some column (NaN, over-long strings) Merge scans
// the output with FileStats instead. The returned file carries the
// statistics, row count, time range, window (that of the earliest row) and
// size; Target, Key, Checksum and Level are left for the caller.
//
// A failed verification is reported as an error wrapping ErrMergeVerify. On
// any error no file is left at out.
func (e *Engine) Merge(ctx context.Context, ds catalog.Dataset, inputs []string, out string) (_ catalog.PartitionFile, err error) {
	if err := e.checkOpen(); err != nil {
		return catalog.PartitionFile{}, err
	}
	if err := checkDataset(ds); err != nil {
		return catalog.PartitionFile{}, fmt.Errorf("merge: %w", err)
	}
	if len(inputs) == 0 {
		return catalog.PartitionFile{}, errors.New("merge: no input files")
	}
	files := make([]string, len(inputs))
	seen := make(map[string]bool, len(inputs))
	for i, in := range inputs {
		abs, err := filepath.Abs(in)
		if err != nil {
			return catalog.PartitionFile{}, fmt.Errorf("merge: input %s: %w", in, err)
		}
		if seen[abs] {
			return catalog.PartitionFile{}, fmt.Errorf("merge: input %s listed twice", in)
		}
		seen[abs] = true
		files[i] = abs
	}
	if _, err := os.Stat(out); err == nil {
		return catalog.PartitionFile{}, fmt.Errorf("merge: output %s exists already", out)
	}
	defer func() {
		if err != nil {
			_ = os.Remove(out)
		}
	}()

	footers, err := e.timeRanges(ctx, ds, files)
	if err != nil {
		return catalog.PartitionFile{}, fmt.Errorf("merge: read input footers: %w", err)
	}
	var inputRows int64
	for _, f := range footers {
		inputRows += f.rows
	}
	concat, err := e.canConcatenate(ctx, footers)
	if err != nil {
		return catalog.PartitionFile{}, fmt.Errorf("merge: %w", err)
	}
	if concat {
		slices.SortFunc(footers, func(a, b fileRange) int {
			return cmp.Or(a.min.Compare(b.min), a.max.Compare(b.max), strings.Compare(a.path, b.path))
		})
		for i, f := range footers {
			files[i] = f.path
		}
	}

	w, err := e.writeMerged(ctx, ds, files, out, !concat)
	if concat && errors.Is(err, errUnsorted) {
		// An input was not sorted after all: sort.
		_ = os.Remove(out)
		w, err = e.writeMerged(ctx, ds, files, out, true)
	}
	if err != nil {
		return catalog.PartitionFile{}, fmt.Errorf("merge %d files of dataset %s: %w", len(files), ds.Name, err)
	}
	if w.writerRows != inputRows || w.footerRows != inputRows {
		return catalog.PartitionFile{}, fmt.Errorf("merge: %w: the inputs declare %d rows, the writer wrote %d, the output declares %d",
			ErrMergeVerify, inputRows, w.writerRows, w.footerRows)
	}
	pf, ok, err := e.writerStats(ctx, ds, w)
	if err != nil {
		return catalog.PartitionFile{}, fmt.Errorf("merge: %w", err)
	}
	if !ok {
		mergeStatsScans.Add(1)
		if pf, err = e.FileStats(ctx, ds, out); err != nil {
			return catalog.PartitionFile{}, fmt.Errorf("merge: %w", err)
		}
		if pf.RowCount != inputRows {
			return catalog.PartitionFile{}, fmt.Errorf("merge: %w: output has %d rows, the inputs declare %d", ErrMergeVerify, pf.RowCount, inputRows)
		}
	}
	fi, err := os.Stat(out)
	if err != nil {
		return catalog.PartitionFile{}, fmt.Errorf("merge: %w", err)
	}
	pf.SizeBytes = fi.Size()
	return pf, nil
}

// fileRange is what an input's footer says about it.
type fileRange struct {
	path     string
	rows     int64
	min, max time.Time
	// exact is false when the time column lacks statistics in some row group.
	exact bool
}

// timeSQL renders a VARCHAR expression as a value of the time column's type.
func timeSQL(ds catalog.Dataset, expr string) string {
	tc, _ := ds.Column(ds.TimeColumn)
	t, _ := sqlType(tc.Type)
	return "TRY_CAST(" + expr + " AS " + t + ")"
}

// timeRanges reads the row count and the time column's range of every file
// from the footers (no data is read). A file without the time column, or
// without row groups, is an error wrapping ErrMergeVerify.
func (e *Engine) timeRanges(ctx context.Context, ds catalog.Dataset, files []string) ([]fileRange, error) {
	quoted := make([]string, len(files))
	for i, f := range files {
		quoted[i] = quoteString(f)
	}
	rows, err := e.db.QueryContext(ctx, fmt.Sprintf(`
		SELECT file_name, sum(row_group_num_rows)::BIGINT, min(%s), max(%s),
			bool_and(stats_min_value IS NOT NULL AND stats_max_value IS NOT NULL)
		FROM parquet_metadata([%s])
		WHERE path_in_schema = %s
		GROUP BY file_name`,
		timeSQL(ds, "stats_min_value"), timeSQL(ds, "stats_max_value"), strings.Join(quoted, ", "), quoteString(ds.TimeColumn)))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	byPath := make(map[string]fileRange, len(files))
	for rows.Next() {
		var f fileRange
		var mn, mx *time.Time
		if err := rows.Scan(&f.path, &f.rows, &mn, &mx, &f.exact); err != nil {
			return nil, err
		}
		if mn != nil && mx != nil {
			f.min, f.max = mn.UTC(), mx.UTC()
		} else {
			f.exact = false
		}
		byPath[f.path] = f
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	out := make([]fileRange, len(files))
	for i, p := range files {
		f, ok := byPath[p]
		if !ok {
			return nil, fmt.Errorf("%w: %s has no row group with a column %q", ErrMergeVerify, p, ds.TimeColumn)
		}
		out[i] = f
	}
	return out, nil
}

// canConcatenate reports whether files can be written one after the other
// without a sort: their time ranges are known and do not overlap (touching
// is fine), and DuckDB keeps the scan order (preserve_insertion_order, a
// global setting, is on).
func (e *Engine) canConcatenate(ctx context.Context, files []fileRange) (bool, error) {
	for _, f := range files {
		if !f.exact {
			return false, nil
		}
	}
	sorted := slices.Clone(files)
	slices.SortFunc(sorted, func(a, b fileRange) int { return cmp.Or(a.min.Compare(b.min), a.max.Compare(b.max)) })
	for i := 1; i < len(sorted); i++ {
		if sorted[i].min.Before(sorted[i-1].max) {
			return false, nil
		}
	}
	var keepOrder bool
	if err := e.db.QueryRowContext(ctx, "SELECT current_setting('preserve_insertion_order')").Scan(&keepOrder); err != nil {
		return false, fmt.Errorf("read preserve_insertion_order: %w", err)
	}
	return keepOrder, nil
}

// errUnsorted: the output's row groups are not in time order.
var errUnsorted = fmt.Errorf("%w: the output's row groups are not in time order", ErrMergeVerify)

// written is what writing the merged file reported.
type written struct {
	path       string
	writerRows int64
	footerRows int64
	// columns maps each column to the writer's statistics of it: min, max,
	// null_count, has_nan (all text).
	columns map[string]map[string]string
	// inexact is set when the footer marks some statistic as not exact.
	inexact bool
}

// writeMerged copies the rows of files into out, sorted with ORDER BY when
// sort is set, in file order otherwise, and reads back the writer's
// statistics and the output's footer. A file whose row groups are out of
// time order fails with errUnsorted.
func (e *Engine) writeMerged(ctx context.Context, ds catalog.Dataset, files []string, out string, sort bool) (written, error) {
	cols := make([]string, len(ds.Columns))
	for i, c := range ds.Columns {
		cols[i] = quoteIdent(c.Name)
	}
	quoted := make([]string, len(files))
	for i, f := range files {
		quoted[i] = quoteString(f)
	}
	query := fmt.Sprintf("SELECT %s FROM read_parquet([%s], union_by_name = true)", strings.Join(cols, ", "), strings.Join(quoted, ", "))
	if sort {
		// preserve_insertion_order stays on (a global setting that ingest
		// relies on); the sort spills to temp_directory when the rows do
		// not fit in memory_limit (see TestMergeSpillsOverMemoryLimit).
		query += " ORDER BY " + quoteIdent(ds.TimeColumn)
		mergeSorts.Add(1)
	} else {
		mergeConcats.Add(1)
	}
	w := written{path: out, columns: map[string]map[string]string{}}
	var name string
	var count, size, footer uint64
	var stats duckdb.OrderedMap
	var partitionKeys any
	if err := e.db.QueryRowContext(ctx,
		fmt.Sprintf("COPY (%s) TO %s (%s, RETURN_STATS true)", query, quoteString(out), parquetOptions)).
		Scan(&name, &count, &size, &footer, &stats, &partitionKeys); err != nil {
		return w, err
	}
	w.writerRows = int64(count)
	w.columns = parseWriterStats(stats)

	// The output's footer: its row count, its row groups' time ranges and
	// whether its statistics are exact (the writer truncates long strings,
	// and says so only here).
	rows, err := e.db.QueryContext(ctx, fmt.Sprintf(`
		SELECT path_in_schema, row_group_num_rows,
			CASE WHEN path_in_schema = %[1]s THEN %[2]s END, CASE WHEN path_in_schema = %[1]s THEN %[3]s END,
			coalesce(min_is_exact, true) AND coalesce(max_is_exact, true)
		FROM parquet_metadata(%[4]s)
		ORDER BY row_group_id, column_id`,
		quoteString(ds.TimeColumn), timeSQL(ds, "stats_min_value"), timeSQL(ds, "stats_max_value"), quoteString(out)))
	if err != nil {
		return w, fmt.Errorf("read output footer: %w", err)
	}
	defer rows.Close()
	var prevMax *time.Time
	unsorted := false
	for rows.Next() {
		var col string
		var n int64
		var mn, mx *time.Time
		var exact bool
		if err := rows.Scan(&col, &n, &mn, &mx, &exact); err != nil {
			return w, fmt.Errorf("read output footer: %w", err)
		}
		if !exact {
			w.inexact = true
		}
		if col != ds.TimeColumn {
			continue
		}
		w.footerRows += n
		if mn == nil || mx == nil {
			unsorted = unsorted || !sort // cannot tell: do not trust a concatenation
			continue
		}
		if prevMax != nil && mn.Before(*prevMax) {
			unsorted = true
		}
		prevMax = mx
	}
	if err := rows.Err(); err != nil {
		return w, fmt.Errorf("read output footer: %w", err)
	}
	if unsorted {
		return w, errUnsorted
	}
	return w, nil
}

// writerStats turns the writer's statistics into a partition file, through
// the same scanner (and so the same rendering) as FileStats. ok is false when
// they are not complete and exact for every column.
func (e *Engine) writerStats(ctx context.Context, ds catalog.Dataset, w written) (catalog.PartitionFile, bool, error) {
	if w.inexact {
		return catalog.PartitionFile{}, false, nil
	}
	sel, ok := writerStatsSQL(ds, w.footerRows, w.columns)
	if !ok {
		return catalog.PartitionFile{}, false, nil
	}
	rows, err := e.db.QueryContext(ctx, "SELECT "+sel)
	if err != nil {
		return catalog.PartitionFile{}, false, fmt.Errorf("render writer statistics: %w", err)
	}
	files, err := scanStats(rows, ds, nil)
	if err != nil {
		return catalog.PartitionFile{}, false, err
	}
	if len(files) != 1 {
		return catalog.PartitionFile{}, false, errors.New("render writer statistics: no result row")
	}
	return files[0], true, nil
}
