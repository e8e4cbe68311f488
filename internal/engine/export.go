package engine

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	duckdb "github.com/duckdb/duckdb-go/v2"

	"timestore/internal/catalog"
)

// ExportMaxFileBytesDefault is ExportRequest.MaxFileBytes when zero: 256 MiB,
// within the 128 MiB–1 GiB that Spark, Trino and Athena read best.
const ExportMaxFileBytesDefault int64 = 256 << 20

// exportParquetOptions are the COPY options of export files: zstd, and
// Parquet format version 1 (plain, dictionary and RLE encodings, v1 data
// pages), which every consumer reads — Spark, Trino, Athena, pandas/pyarrow —
// unlike the delta and byte-stream-split encodings of version 2 that
// partition files use.
const exportParquetOptions = "FORMAT parquet, COMPRESSION zstd, PARQUET_VERSION v1"

// spanExport names the span of Export.
const spanExport = "duckdb.export"

// ErrExportVerify is wrapped by the error Export returns when the files it
// wrote do not hold exactly the rows it selected, in time order: an
// invariant violation, not a transient failure.
var ErrExportVerify = errors.New("export verification failed")

// ExportRequest says which rows Export writes and where.
type ExportRequest struct {
	// Inputs are local Parquet files of the dataset (partition files).
	Inputs []string
	// Except, when set, are local Parquet files of the dataset (files of an
	// earlier export) whose rows are taken away from those of Inputs as a
	// multiset (EXCEPT ALL): a row of Inputs is written as many times as it
	// occurs there beyond its occurrences in Except.
	Except []string
	// From and To select the rows of Inputs whose time is in [From, To).
	From, To time.Time
	// Dir receives the files, part-0000.parquet, part-0001.parquet, … in
	// time order. It is created if missing and must not hold files of those
	// names.
	Dir string
	// MaxFileBytes bounds the size of each file: when the rows do not fit
	// in one file of at most MaxFileBytes, they are split into consecutive
	// runs of rows, each written to its own file, halving any run whose file
	// comes out larger until it fits (a single row is never split). Defaults
	// to ExportMaxFileBytesDefault.
	MaxFileBytes int64
}

// ExportedFile is one file written by Export.
type ExportedFile struct {
	// Path is the file's local path.
	Path string
	// Rows and SizeBytes describe the file; TimeMin and TimeMax are the
	// range of its time column.
	Rows      int64
	SizeBytes int64
	TimeMin   time.Time
	TimeMax   time.Time
}

// Export writes the rows of req.Inputs in [req.From, req.To) (less those of
// req.Except) as zstd-compressed Parquet files (format version 1) with the
// dataset's columns in schema order, sorted by the time column across and
// within files, and no larger than req.MaxFileBytes each. It returns the
// files in order; none when no row qualifies.
//
// The rows are sorted once, into one file (in the engine's DuckDB instance,
// within its memory limit, spilling to its temp directory); a result larger
// than MaxFileBytes is then split by row number, which reads only the row
// groups each file needs. The result is verified: the files' footers must
// count exactly the rows the sort wrote, and their time ranges must follow
// each other; otherwise the error wraps ErrExportVerify. On any error no
// part file is left in req.Dir.
func (e *Engine) Export(ctx context.Context, ds catalog.Dataset, req ExportRequest) (_ []ExportedFile, err error) {
	if err := e.checkOpen(); err != nil {
		return nil, err
	}
	if err := checkDataset(ds); err != nil {
		return nil, fmt.Errorf("export: %w", err)
	}
	switch {
	case req.Dir == "":
		return nil, errors.New("export: no output directory")
	case !req.From.Before(req.To):
		return nil, fmt.Errorf("export: from %s is not before to %s", req.From.Format(time.RFC3339Nano), req.To.Format(time.RFC3339Nano))
	case req.MaxFileBytes < 0:
		return nil, fmt.Errorf("export: max file bytes %d is negative", req.MaxFileBytes)
	}
	if req.MaxFileBytes == 0 {
		req.MaxFileBytes = ExportMaxFileBytesDefault
	}
	if len(req.Inputs) == 0 {
		return []ExportedFile{}, nil
	}
	inputs, err := absPaths(req.Inputs)
	if err != nil {
		return nil, fmt.Errorf("export: %w", err)
	}
	except, err := absPaths(req.Except)
	if err != nil {
		return nil, fmt.Errorf("export: %w", err)
	}
	dir, err := filepath.Abs(req.Dir)
	if err != nil {
		return nil, fmt.Errorf("export: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("export: %w", err)
	}
	ctx, span := e.startSpan(ctx, spanExport, attrDataset.String(ds.Name), attrFiles.Int(len(inputs)))
	defer func() { endSpan(span, err) }()

	id := e.nextID()
	sorted := filepath.Join(dir, fmt.Sprintf(".export-%d-sorted.parquet", id))
	var written []string // every file this call created, removed on error
	defer func() {
		_ = os.Remove(sorted)
		if err != nil {
			for _, p := range written {
				_ = os.Remove(p)
			}
		}
	}()

	rows, size, err := e.copyOut(ctx, exportQuery(ds, inputs, except, req.From, req.To), sorted)
	if err != nil {
		return nil, fmt.Errorf("export dataset %s: sort: %w", ds.Name, err)
	}
	if rows == 0 {
		return []ExportedFile{}, nil
	}

	var paths []string
	if size <= req.MaxFileBytes {
		p := filepath.Join(dir, partName(0))
		if err := noClobber(p); err != nil {
			return nil, fmt.Errorf("export: %w", err)
		}
		if err := os.Rename(sorted, p); err != nil {
			return nil, fmt.Errorf("export: %w", err)
		}
		written = append(written, p)
		paths = []string{p}
	} else {
		chunks, err := e.split(ctx, ds, sorted, dir, id, rows, size, req.MaxFileBytes, &written)
		if err != nil {
			return nil, fmt.Errorf("export dataset %s: split: %w", ds.Name, err)
		}
		for i, c := range chunks {
			p := filepath.Join(dir, partName(i))
			if err := noClobber(p); err != nil {
				return nil, fmt.Errorf("export: %w", err)
			}
			if err := os.Rename(c, p); err != nil {
				return nil, fmt.Errorf("export: %w", err)
			}
			written = append(written, p)
			paths = append(paths, p)
		}
	}

	footers, err := e.timeRanges(ctx, ds, paths)
	if err != nil {
		return nil, fmt.Errorf("export dataset %s: read footers: %w", ds.Name, err)
	}
	out := make([]ExportedFile, len(paths))
	var total int64
	for i, f := range footers {
		fi, err := os.Stat(f.path)
		if err != nil {
			return nil, fmt.Errorf("export: %w", err)
		}
		if !f.exact {
			return nil, fmt.Errorf("export dataset %s: %w: %s lacks time statistics", ds.Name, ErrExportVerify, filepath.Base(f.path))
		}
		if i > 0 && f.min.Before(out[i-1].TimeMax) {
			return nil, fmt.Errorf("export dataset %s: %w: %s starts at %s, before the previous file ends (%s)", ds.Name,
				ErrExportVerify, filepath.Base(f.path), f.min.Format(time.RFC3339Nano), out[i-1].TimeMax.Format(time.RFC3339Nano))
		}
		out[i] = ExportedFile{Path: f.path, Rows: f.rows, SizeBytes: fi.Size(), TimeMin: f.min, TimeMax: f.max}
		total += f.rows
	}
	if total != rows {
		return nil, fmt.Errorf("export dataset %s: %w: the sort wrote %d rows, the files hold %d", ds.Name, ErrExportVerify, rows, total)
	}
	span.SetAttributes(attrRows.Int64(rows), attrBytes.Int64(sumSizes(out)))
	return out, nil
}

// exportQuery selects the rows of inputs in [from, to), less those of
// except, with the dataset's columns in order, sorted by time.
func exportQuery(ds catalog.Dataset, inputs, except []string, from, to time.Time) string {
	cols := columnList(ds)
	tc, _ := ds.Column(ds.TimeColumn)
	literal, suffix := "TIMESTAMP ", ""
	if tc.Type == catalog.TypeTimestampTZ {
		literal, suffix = "TIMESTAMPTZ ", "+00"
	}
	const layout = "2006-01-02 15:04:05.999999"
	q := fmt.Sprintf("SELECT %s FROM read_parquet([%s], union_by_name = true) WHERE %s >= %s'%s%s' AND %s < %s'%s%s'",
		cols, quoteList(inputs),
		quoteIdent(tc.Name), literal, from.UTC().Format(layout), suffix,
		quoteIdent(tc.Name), literal, to.UTC().Format(layout), suffix)
	if len(except) > 0 {
		q = fmt.Sprintf("(%s) EXCEPT ALL (SELECT %s FROM read_parquet([%s], union_by_name = true))", q, cols, quoteList(except))
	}
	return fmt.Sprintf("SELECT * FROM (%s) ORDER BY %s", q, quoteIdent(tc.Name))
}

// split copies the sorted file's rows into consecutive chunk files of at
// most maxBytes each and returns them in row order. It starts from an even
// split by size and halves any chunk that comes out too large.
func (e *Engine) split(ctx context.Context, ds catalog.Dataset, sorted, dir string, id uint64, rows, size, maxBytes int64, written *[]string) ([]string, error) {
	type chunk struct{ from, to int64 } // row numbers [from, to)
	n := (size + maxBytes - 1) / maxBytes
	n = min(n+n/8+1, rows) // some headroom: compression varies along the window
	var todo []chunk
	for i := int64(0); i < n; i++ {
		todo = append(todo, chunk{rows * i / n, rows * (i + 1) / n})
	}
	done := map[int64]string{}
	cols := columnList(ds)
	for len(todo) > 0 {
		c := todo[0]
		todo = todo[1:]
		p := filepath.Join(dir, fmt.Sprintf(".export-%d-rows-%d.parquet", id, c.from))
		_ = os.Remove(p)
		*written = append(*written, p)
		query := fmt.Sprintf("SELECT %s FROM read_parquet(%s, file_row_number = true) WHERE file_row_number >= %d AND file_row_number < %d",
			cols, quoteString(sorted), c.from, c.to)
		got, sz, err := e.copyOut(ctx, query, p)
		if err != nil {
			return nil, err
		}
		if got != c.to-c.from {
			return nil, fmt.Errorf("%w: rows %d to %d of the sorted file gave %d rows", ErrExportVerify, c.from, c.to, got)
		}
		if sz > maxBytes && c.to-c.from > 1 {
			mid := c.from + (c.to-c.from)/2
			todo = append(todo, chunk{c.from, mid}, chunk{mid, c.to})
			if err := os.Remove(p); err != nil {
				return nil, err
			}
			continue
		}
		done[c.from] = p
	}
	starts := make([]int64, 0, len(done))
	for s := range done {
		starts = append(starts, s)
	}
	slices.Sort(starts)
	out := make([]string, len(starts))
	for i, s := range starts {
		out[i] = done[s]
	}
	return out, nil
}

// copyOut writes the rows of query to the Parquet file out with the export
// options and returns the number of rows and the file's size.
func (e *Engine) copyOut(ctx context.Context, query, out string) (rows, size int64, err error) {
	var name string
	var count, bytes, footer uint64
	var stats duckdb.OrderedMap
	var partitionKeys any
	if err := e.db.QueryRowContext(ctx,
		fmt.Sprintf("COPY (%s) TO %s (%s, RETURN_STATS true)", query, quoteString(out), exportParquetOptions)).
		Scan(&name, &count, &bytes, &footer, &stats, &partitionKeys); err != nil {
		return 0, 0, err
	}
	fi, err := os.Stat(out)
	if err != nil {
		return 0, 0, err
	}
	return int64(count), fi.Size(), nil
}

// columnList renders the dataset's columns, quoted, in schema order.
func columnList(ds catalog.Dataset) string {
	cols := make([]string, len(ds.Columns))
	for i, c := range ds.Columns {
		cols[i] = quoteIdent(c.Name)
	}
	return strings.Join(cols, ", ")
}

func quoteList(paths []string) string {
	q := make([]string, len(paths))
	for i, p := range paths {
		q[i] = quoteString(p)
	}
	return strings.Join(q, ", ")
}

func absPaths(paths []string) ([]string, error) {
	out := make([]string, len(paths))
	seen := make(map[string]bool, len(paths))
	for i, p := range paths {
		abs, err := filepath.Abs(p)
		if err != nil {
			return nil, fmt.Errorf("input %s: %w", p, err)
		}
		if seen[abs] {
			return nil, fmt.Errorf("input %s listed twice", p)
		}
		seen[abs] = true
		out[i] = abs
	}
	return out, nil
}

// partName is the name of the i-th file of an export (from 0).
func partName(i int) string { return fmt.Sprintf("part-%04d.parquet", i) }

func noClobber(p string) error {
	if _, err := os.Lstat(p); err == nil {
		return fmt.Errorf("output %s exists already", p)
	}
	return nil
}

func sumSizes(files []ExportedFile) int64 {
	var n int64
	for _, f := range files {
		n += f.SizeBytes
	}
	return n
}
