package engine

import (
	"bufio"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/csv"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
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

// Format is the encoding of uploaded rows.
type Format string

// Input formats.
const (
	// FormatCSV is comma-separated values with a header row naming the columns.
	FormatCSV Format = "csv"
	// FormatNDJSON is one JSON object per line.
	FormatNDJSON Format = "ndjson"
	// FormatJSON is a JSON array of objects.
	FormatJSON Format = "json"
)

// WindowFile is a Parquet file written by PrepareIngest for one partition
// window, with its statistics. Target, Key and Checksum are left empty for the
// caller, which uploads the file.
type WindowFile struct {
	// Path is the local file in the output directory.
	Path string
	catalog.PartitionFile
}

// PrepareIngest reads the rows of inputPath (in format) with DuckDB's own
// readers, checks them against the schema of ds, splits them by the UTC
// partition window of the time column and writes one zstd Parquet file per
// window into outDir, rows sorted by time, columns in schema order with their
// declared types (absent columns are NULL). It returns the files ordered by
// window.
//
// Input the user must fix is reported as *InputError: an unknown, duplicate or
// missing column, a missing time value, a value of the wrong type, malformed
// CSV or JSON, no rows. Every other error is internal. On error no file is
// left in outDir. Concurrent calls are safe.
func (e *Engine) PrepareIngest(ctx context.Context, ds catalog.Dataset, format Format, inputPath, outDir string) ([]WindowFile, error) {
	ctx, span := e.startSpan(ctx, spanPrepareIngest, attrDataset.String(ds.Name), attrFormat.String(string(format)))
	files, err := e.prepareIngest(ctx, ds, format, inputPath, outDir)
	var rows, size int64
	for _, f := range files {
		rows += f.RowCount
		size += f.SizeBytes
	}
	if fi, serr := os.Stat(inputPath); serr == nil {
		span.SetAttributes(attrInputBytes.Int64(fi.Size()))
	}
	span.SetAttributes(attrRows.Int64(rows), attrWindows.Int(len(files)), attrBytes.Int64(size))
	endSpan(span, err)
	return files, err
}

// prepareIngest reads the input once, in the common case: one COPY parses
// it, converts the values, splits the rows by window and writes the files
// (writePartitioned). For JSON it first tries the read with detected keys
// and types (ingestDetected), which also rejects unknown keys; when that
// read does not apply or fails, and always for CSV, it reads with the
// declared types (JSON after a scan of every key), and a failed read is
// explained by diagnose.
func (e *Engine) prepareIngest(ctx context.Context, ds catalog.Dataset, format Format, inputPath, outDir string) ([]WindowFile, error) {
	if err := e.checkOpen(); err != nil {
		return nil, err
	}
	if err := checkDataset(ds); err != nil {
		return nil, fmt.Errorf("prepare ingest: %w", err)
	}
	src := &source{ds: ds, format: format, path: inputPath}
	switch format {
	case FormatCSV, FormatNDJSON, FormatJSON:
	default:
		return nil, fmt.Errorf("prepare ingest: unknown format %q", format)
	}
	fi, err := os.Stat(inputPath)
	if err != nil {
		return nil, fmt.Errorf("prepare ingest: %w", err)
	}
	if fi.Size() == 0 {
		return nil, &InputError{Message: "empty input: no rows"}
	}
	src.size, src.threads = fi.Size(), e.threads

	conn, err := e.db.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("prepare ingest: %w", err)
	}
	defer conn.Close()

	id := e.nextID()
	if format == FormatCSV {
		if err := src.readCSVHeader(); err != nil {
			return nil, err
		}
	} else {
		files, ok, err := e.ingestDetected(ctx, conn, src, id, outDir)
		if err != nil || ok {
			return files, err
		}
		if err := src.scanJSONKeys(ctx, conn); err != nil {
			return nil, err
		}
	}
	w, err := e.writePartitioned(ctx, conn, ds, "SELECT "+src.projection()+" FROM "+src.reader(false, ""), id, outDir)
	switch {
	case err != nil:
		return nil, err
	case w.readErr != nil:
		if ctx.Err() != nil {
			return nil, fmt.Errorf("prepare ingest: %w", ctx.Err())
		}
		return nil, src.diagnose(ctx, conn, w.readErr)
	case w.rows == 0:
		return nil, &InputError{Message: "no rows"}
	case src.missingTime:
		return nil, &InputError{Column: ds.TimeColumn, Message: "missing time column: no object has the key"}
	case w.timeNulls:
		return nil, src.diagnose(ctx, conn, nil)
	case w.extra:
		return nil, errors.New("prepare ingest: the typed read returned columns outside the schema")
	}
	return w.files, nil
}

// ingestDetected is the fast path for JSON: one read that both parses the
// values and rejects unknown keys. Without "columns", DuckDB's JSON reader
// detects the keys and types from a sample and then fails on any object with
// a key outside the sample, provided every detected column is read; with
// "columns" it would ignore unknown keys, and checking them needs a second
// parse of the whole file (json_keys), as long as the read itself.
//
// It applies when the sample shows only schema columns, including the time
// column, with types that convert to the declared ones, and every row has a
// time value. It reports false, and leaves no file, when it does not apply or
// the read fails for any reason; the caller then takes the exact path, which
// also explains errors.
//
// It first reads with guardedSelect, which needs one detection (sampling the
// input costs about a tenth of the whole read); when that does not bind,
// typically because the sample lacks a schema column, it detects the columns
// with DESCRIBE and reads with them (describedSelect), detecting again.
func (e *Engine) ingestDetected(ctx context.Context, conn *sql.Conn, src *source, id uint64, outDir string) ([]WindowFile, bool, error) {
	w, err := e.writePartitioned(ctx, conn, src.ds, src.guardedSelect(), id, outDir)
	if err != nil {
		return nil, false, err
	}
	var de *duckdb.Error
	if errors.As(w.readErr, &de) && de.Type == duckdb.ErrorTypeBinder {
		sel, ok, err := src.describedSelect(ctx, conn)
		if err != nil || !ok {
			return nil, false, err
		}
		if w, err = e.writePartitioned(ctx, conn, src.ds, sel, id, outDir); err != nil {
			return nil, false, err
		}
	}
	if w.readErr != nil || w.rows == 0 || w.timeNulls || w.extra {
		return nil, false, ctxErr(ctx)
	}
	detectedReads.Add(1)
	return w.files, true, nil
}

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

// ctxErr wraps the context's error, if any.
func ctxErr(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("prepare ingest: %w", err)
	}
	return nil
}

func randomTag() (string, error) {
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("random file tag: %w", err)
	}
	return "-" + hex.EncodeToString(b[:]), nil
}

// source is one input file being ingested into a dataset.
type source struct {
	ds     catalog.Dataset
	format Format
	path   string
	// size is the input's size in bytes; threads, DuckDB's thread count
	// (see csvBufferSize).
	size    int64
	threads int
	// header lists the CSV columns in file order.
	header []string
	// missingTime is set when no JSON object has the time column's key.
	missingTime bool
}

// readType is the type the reader produces for a column: the declared type,
// except for timestamps, which are read as text and parsed by timeExpr.
// (DuckDB's CSV reader also turns unparsable TIMESTAMPTZ values into NULL
// instead of failing.)
func readType(t string) string {
	if t == catalog.TypeTimestamp || t == catalog.TypeTimestampTZ {
		return "VARCHAR"
	}
	s, _ := sqlType(t)
	return s
}

// zoneSuffix matches text ending in a UTC offset or a zone name.
const zoneSuffix = `([A-Za-z]|[+-][0-9][0-9](:?[0-9][0-9])?)$`

// timeExpr parses the text column q as a value of the time type t. A value
// with a UTC offset or zone is converted to UTC (also for plain timestamps,
// whose offset DuckDB would otherwise drop); a value without one is UTC.
// With try, a bad value gives NULL instead of an error.
//
// Text with a '+' past its first character or a '-' after a ':' carries a
// numeric offset and goes through ICU's TIMESTAMPTZ cast, which applies it.
// Other text is first read with DuckDB's plain TIMESTAMP cast: it cannot drop
// an offset there, accepts no zone name but UTC, and costs a fraction of the
// regular expression and of ICU. Only what it rejects (zone names,
// infinities, bad values) takes the general path: ICU for text ending in a
// zone name, the plain cast (failing, or NULL with try) otherwise. Text the
// plain cast reads never reaches ICU, which in DuckDB 1.5 reads text without
// a zone in the zone that an earlier row of the same batch named.
func timeExpr(q, t string, try bool) string {
	cast := "CAST"
	if try {
		cast = "TRY_CAST"
	}
	offset := fmt.Sprintf("(strpos(%[1]s, '+') > 1 OR %[1]s LIKE '%%:%%-%%')", q)
	zone := fmt.Sprintf("(%s OR regexp_matches(%s, '%s'))", offset, q, zoneSuffix)
	// make_timestamp(epoch_us(x)) and make_timestamptz(epoch_us(x)) give
	// the UTC wall clock or instant of x without ICU; infinities become NULL.
	fast := fmt.Sprintf("epoch_us(TRY_CAST(%s AS TIMESTAMP))", q)
	var general string
	if t == catalog.TypeTimestampTZ {
		fast = "make_timestamptz(" + fast + ")"
		general = fmt.Sprintf("%s(CASE WHEN %s THEN %s ELSE %s || 'Z' END AS TIMESTAMPTZ)", cast, zone, q, q)
	} else {
		fast = "make_timestamp(" + fast + ")"
		general = fmt.Sprintf("CASE WHEN %s THEN make_timestamp(epoch_us(%s(%s AS TIMESTAMPTZ))) ELSE %s(%s AS TIMESTAMP) END",
			zone, cast, q, cast, q)
	}
	return fmt.Sprintf("coalesce(CASE WHEN NOT %s THEN %s END, %s)", offset, fast, general)
}

// isTime reports whether a column type is a timestamp type.
func isTime(t string) bool {
	return t == catalog.TypeTimestamp || t == catalog.TypeTimestampTZ
}

// inputColumns are the dataset columns the input provides, in input order
// (CSV: header order; JSON: schema order).
func (s *source) inputColumns() []catalog.Column {
	if s.format != FormatCSV {
		return s.ds.Columns
	}
	cols := make([]catalog.Column, len(s.header))
	for i, h := range s.header {
		cols[i], _ = s.ds.Column(h)
	}
	return cols
}

// reader is the DuckDB table function call reading the input, with declared
// types or, when varchar is set, every column as VARCHAR. extra is appended
// to the options.
func (s *source) reader(varchar bool, extra string) string {
	var cols strings.Builder
	cols.WriteString("{")
	for i, c := range s.inputColumns() {
		if i > 0 {
			cols.WriteString(", ")
		}
		t := "VARCHAR"
		if !varchar {
			t = readType(c.Type)
		}
		cols.WriteString(quoteString(c.Name) + ": " + quoteString(t))
	}
	cols.WriteString("}")
	p := quoteString(s.path)
	var call string
	switch s.format {
	case FormatCSV:
		call = fmt.Sprintf("read_csv(%s, header = true, auto_detect = false, delim = ',', quote = '\"', escape = '\"', strict_mode = true, buffer_size = %d, columns = %s",
			p, s.csvBufferSize(), cols.String())
	case FormatNDJSON:
		call = fmt.Sprintf("read_json(%s, format = 'newline_delimited', records = true, columns = %s", p, cols.String())
	default:
		call = fmt.Sprintf("read_json(%s, format = 'array', records = true, columns = %s", p, cols.String())
	}
	return call + extra + ")"
}

// objectsReader reads each JSON record as one JSON value.
func (s *source) objectsReader() string {
	format := "newline_delimited"
	if s.format == FormatJSON {
		format = "array"
	}
	return fmt.Sprintf("read_json_objects(%s, format = '%s')", quoteString(s.path), format)
}

// projection selects the schema's columns in order, converted to their
// declared types; columns absent from the input are NULL.
func (s *source) projection() string {
	present := map[string]bool{}
	for _, c := range s.inputColumns() {
		present[c.Name] = true
	}
	parts := make([]string, len(s.ds.Columns))
	for i, c := range s.ds.Columns {
		t, _ := sqlType(c.Type)
		q := quoteIdent(c.Name)
		if !present[c.Name] {
			parts[i] = fmt.Sprintf("CAST(NULL AS %s) AS %s", t, q)
			continue
		}
		if isTime(c.Type) {
			parts[i] = timeExpr(q, c.Type, false) + " AS " + q
			continue
		}
		parts[i] = q
	}
	return strings.Join(parts, ", ")
}

func (s *source) columnNames() string {
	names := make([]string, len(s.ds.Columns))
	for i, c := range s.ds.Columns {
		names[i] = c.Name
	}
	return strings.Join(names, ", ")
}

// readCSVHeader reads and checks the header line.
func (s *source) readCSVHeader() error {
	f, err := os.Open(s.path)
	if err != nil {
		return fmt.Errorf("prepare ingest: %w", err)
	}
	defer f.Close()
	r := csv.NewReader(bufio.NewReaderSize(f, 64<<10))
	r.FieldsPerRecord = -1
	header, err := r.Read()
	if errors.Is(err, io.EOF) {
		return &InputError{Message: "empty input: no header row"}
	}
	if err != nil {
		return &InputError{Message: fmt.Sprintf("malformed CSV header: %v", err)}
	}
	if len(header) > 0 {
		header[0] = strings.TrimPrefix(header[0], "\uFEFF")
	}
	seen := make(map[string]bool, len(header))
	for i, h := range header {
		h = strings.TrimSpace(h)
		header[i] = h
		switch {
		case h == "":
			return &InputError{Message: fmt.Sprintf("CSV header: column %d has no name", i+1)}
		case seen[h]:
			return &InputError{Column: h, Message: "CSV header: duplicate column"}
		}
		seen[h] = true
		if _, ok := s.ds.Column(h); !ok {
			return &InputError{Column: h, Message: fmt.Sprintf("CSV header: unknown column (dataset %s has columns %s)", s.ds.Name, s.columnNames())}
		}
	}
	if !seen[s.ds.TimeColumn] {
		return &InputError{Column: s.ds.TimeColumn, Message: "CSV header: missing time column"}
	}
	s.header = header
	return nil
}

// noDateDetection keeps DuckDB's JSON type detection from turning text into
// dates or timestamps (which would drop UTC offsets): a format no input has.
const noDateDetection = ", dateformat = '%Y-%m-%d (timestore: no date detection)', timestampformat = '%Y-%m-%d %H:%M:%S (timestore: no timestamp detection)'"

// csvBufferSize is the buffer_size of the CSV reads: the input's size
// divided by DuckDB's thread count, so that each thread reads one contiguous
// part of the input, between DuckDB's max_line_size (2 MiB) and its default
// buffer_size (32 MiB). The partitioned write (writePartitioned) puts the
// rows of a window that two threads read in the order the threads hand them
// over, so a file out of order (rewritten) comes from a window read by two
// threads: with the default buffer, which DuckDB splits among its threads,
// the benchmark's 12 windows needed two or three rewrites per ingest, with
// this one none, and the read was faster.
func (s *source) csvBufferSize() int64 {
	n := s.size/int64(max(s.threads, 1)) + 64<<10
	return min(max(n, 2<<20), 32<<20)
}

// jsonMaxObjectSize is the maximum_object_size of the fast path's JSON
// reads, which sizes their read buffers (twice as large). Against DuckDB's
// default (16 MiB) it made the benchmark's read a little faster, and takes
// less fresh memory. DuckDB 1.5 reads larger records anyway
// (TestPrepareIngestJSONDetection); should a version refuse them, the fast
// path fails and the exact path, with DuckDB's default, reads them. (For
// JSON, unlike CSV, the buffers do not decide the order of the partitioned
// write: one to three files per ingest come out of order whatever their
// size.)
const jsonMaxObjectSize = 1 << 20

// detectedReads counts inputs ingested by ingestDetected (for tests).
var detectedReads atomic.Int64

// detectedReader is the read_json call of the fast path: keys and types
// detected from a sample, every other object checked against them.
func (s *source) detectedReader() string {
	format := "newline_delimited"
	if s.format == FormatJSON {
		format = "array"
	}
	return fmt.Sprintf("read_json(%s, format = '%s', records = 'true', maximum_object_size = %d%s)",
		quoteString(s.path), format, jsonMaxObjectSize, noDateDetection)
}

// numericFromJSON lists, per numeric column type, the types DuckDB detects
// for JSON integers, which the fast path casts to the column's type.
var numericFromJSON = map[string][]string{
	catalog.TypeBigint:  {"BIGINT", "UBIGINT", "HUGEINT"},
	catalog.TypeInteger: {"BIGINT", "UBIGINT", "HUGEINT"},
	catalog.TypeDouble:  {"BIGINT", "UBIGINT", "HUGEINT"},
}

// guardedSelect reads the input with a single detection: it selects every
// detected column (SELECT *), replacing each schema column by an expression
// that is its value converted to the declared type when the detected key and
// type are acceptable, and an error otherwise. DuckDB folds typeof() when it
// plans the query, so a wrong type fails on the first batch; alias() gives
// the detected key's spelling, which must match the column's exactly
// (identifiers are case-insensitive in SQL, keys are not). A key outside the
// schema is an extra column, which writePartitioned reports. The query does
// not bind when the sample lacks a schema column.
func (s *source) guardedSelect() string {
	replace := make([]string, len(s.ds.Columns))
	for i, c := range s.ds.Columns {
		t, _ := sqlType(c.Type)
		q := quoteIdent(c.Name)
		accept := []string{t}
		conv := q
		switch {
		case isTime(c.Type):
			accept = []string{"VARCHAR"}
			// The cast, a no-op for VARCHAR, lets the expression bind for
			// any detected type; typeof() decides.
			conv = timeExpr("CAST("+q+" AS VARCHAR)", c.Type, false)
		case numericFromJSON[c.Type] != nil:
			// JSON integers; an overflow fails the read.
			accept = append(accept, numericFromJSON[c.Type]...)
			conv = fmt.Sprintf("CAST(%s AS %s)", q, t)
		}
		quoted := make([]string, len(accept))
		for j, a := range accept {
			quoted[j] = quoteString(a)
		}
		replace[i] = fmt.Sprintf("CASE WHEN typeof(%[1]s) IN (%[2]s) AND alias(%[1]s) = %[3]s THEN %[4]s ELSE error('timestore: detected key or type does not fit') END AS %[1]s",
			q, strings.Join(quoted, ", "), quoteString(c.Name), conv)
	}
	return fmt.Sprintf("SELECT * REPLACE (%s) FROM %s", strings.Join(replace, ", "), s.detectedReader())
}

// describedSelect detects the input's keys and types with DESCRIBE and, when
// they are all schema columns, including the time column, with types that
// convert to the declared ones, returns the query reading the schema's
// columns with them (absent ones NULL). ok is false otherwise.
func (s *source) describedSelect(ctx context.Context, conn *sql.Conn) (string, bool, error) {
	reader := s.detectedReader()
	rows, err := conn.QueryContext(ctx, "SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM "+reader+")")
	if err != nil {
		return "", false, ctxErr(ctx)
	}
	detected := map[string]string{}
	for rows.Next() {
		var name, typ string
		if err := rows.Scan(&name, &typ); err != nil {
			rows.Close()
			return "", false, fmt.Errorf("prepare ingest: %w", err)
		}
		detected[name] = typ
	}
	rows.Close()
	if rows.Err() != nil || detected[s.ds.TimeColumn] == "" {
		return "", false, ctxErr(ctx)
	}
	for name := range detected {
		if _, ok := s.ds.Column(name); !ok {
			return "", false, nil
		}
	}
	parts := make([]string, len(s.ds.Columns))
	for i, c := range s.ds.Columns {
		t, _ := sqlType(c.Type)
		q := quoteIdent(c.Name)
		got, ok := detected[c.Name]
		switch {
		case !ok:
			parts[i] = fmt.Sprintf("CAST(NULL AS %s) AS %s", t, q)
		case got == t:
			parts[i] = q
		case isTime(c.Type) && got == "VARCHAR":
			parts[i] = timeExpr(q, c.Type, false) + " AS " + q
		case slices.Contains(numericFromJSON[c.Type], got):
			// JSON integers; an overflow fails the read and takes the exact path.
			parts[i] = fmt.Sprintf("CAST(%s AS %s) AS %s", q, t, q)
		default:
			return "", false, nil
		}
	}
	return fmt.Sprintf("SELECT %s FROM %s", strings.Join(parts, ", "), reader), true, nil
}

// scanJSONKeys checks that every key of every object is a column.
func (s *source) scanJSONKeys(ctx context.Context, conn *sql.Conn) error {
	rows, err := conn.QueryContext(ctx, "SELECT DISTINCT unnest(json_keys(json)) FROM "+s.objectsReader())
	if err != nil {
		return s.readError(ctx, err)
	}
	var keys []string
	for rows.Next() {
		var k string
		if err := rows.Scan(&k); err != nil {
			rows.Close()
			return fmt.Errorf("prepare ingest: scan keys: %w", err)
		}
		keys = append(keys, k)
	}
	if err := rows.Err(); err != nil {
		return s.readError(ctx, err)
	}
	rows.Close()
	known := make([]string, len(s.ds.Columns))
	for i, c := range s.ds.Columns {
		known[i] = c.Name
	}
	s.missingTime = !slices.Contains(keys, s.ds.TimeColumn)
	for _, k := range keys {
		if slices.Contains(known, k) {
			continue
		}
		// Name the first object with an unknown key.
		list := make([]string, len(known))
		for i, k := range known {
			list[i] = quoteString(k)
		}
		q := fmt.Sprintf(`SELECT rn, list_filter(json_keys(json), k -> NOT list_contains([%[1]s], k))[1]
			FROM (SELECT row_number() OVER () AS rn, json FROM %[2]s)
			WHERE NOT list_has_all([%[1]s], json_keys(json)) ORDER BY rn LIMIT 1`,
			strings.Join(list, ", "), s.objectsReader())
		var row int64
		var key string
		if err := conn.QueryRowContext(ctx, q).Scan(&row, &key); err != nil {
			return &InputError{Column: k, Message: fmt.Sprintf("unknown column (dataset %s has columns %s)", s.ds.Name, s.columnNames())}
		}
		return &InputError{Row: row, Column: key, Message: fmt.Sprintf("unknown column (dataset %s has columns %s)", s.ds.Name, s.columnNames())}
	}
	return nil
}

// readError turns a failed read of the input into an *InputError when DuckDB
// rejected the input itself, or an internal error otherwise.
func (s *source) readError(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("prepare ingest: %w", ctx.Err())
	}
	var de *duckdb.Error
	if !errors.As(err, &de) {
		return fmt.Errorf("prepare ingest: read input: %w", err)
	}
	switch de.Type {
	case duckdb.ErrorTypeInvalidInput, duckdb.ErrorTypeConversion:
	default:
		return fmt.Errorf("prepare ingest: read input: %w", err)
	}
	msg := cleanDuckDBMessage(de.Msg)
	if s.format == FormatCSV {
		return &InputError{Row: max(submatchInt(reCSVLine, de.Msg)-1, 0), Message: "malformed CSV: " + msg}
	}
	row := submatchInt(reJSONRecord, de.Msg)
	if strings.Contains(msg, "Expected top-level JSON array") {
		return &InputError{Message: "expected a JSON array of objects: the input does not start with '['"}
	}
	msg = reJSONTransform.ReplaceAllString(msg, "invalid JSON record: ")
	if strings.HasPrefix(msg, "Malformed JSON") {
		// DuckDB numbers the record after the malformed one (seen in 1.5.6,
		// NDJSON and arrays alike); the message keeps its own wording.
		msg = "malformed JSON" + strings.TrimPrefix(msg, "Malformed JSON")
		row = max(row-1, 0)
		msg = reJSONRecord.ReplaceAllString(msg, fmt.Sprintf("in record %d", row))
	}
	return &InputError{Row: row, Message: msg}
}

// diagnose finds why the typed read of the input failed (cause) or, with a
// nil cause, which row lacks a time value. It reads the input again with
// every column as VARCHAR: structural problems (malformed CSV or JSON) show
// there; otherwise the first row with a missing time value or a value that
// does not convert to its column's type is reported.
func (s *source) diagnose(ctx context.Context, conn *sql.Conn, cause error) error {
	extra := ""
	rejects := ""
	if s.format == FormatCSV {
		id := fmt.Sprintf("%d", time.Now().UnixNano())
		rejects = "ingest_rejects_" + id
		extra = fmt.Sprintf(", store_rejects = true, rejects_table = '%s', rejects_scan = '%s_scan'", rejects, rejects)
		defer func() {
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			defer cancel()
			_, _ = conn.ExecContext(cctx, "DROP TABLE IF EXISTS "+rejects)
			_, _ = conn.ExecContext(cctx, "DROP TABLE IF EXISTS "+rejects+"_scan")
		}()
	}
	cols := s.inputColumns()
	var sel, bad strings.Builder
	tc := quoteIdent(s.ds.TimeColumn)
	fmt.Fprintf(&sel, "rn, (%s IS NULL OR trim(%s) = '')", tc, tc)
	fmt.Fprintf(&bad, "%s IS NULL OR trim(%s) = ''", tc, tc)
	for _, c := range cols {
		q := quoteIdent(c.Name)
		cond := "false"
		switch {
		case isTime(c.Type):
			cond = fmt.Sprintf("(%s IS NOT NULL AND %s IS NULL)", q, timeExpr(q, c.Type, true))
		case c.Type != catalog.TypeVarchar:
			t, _ := sqlType(c.Type)
			cond = fmt.Sprintf("(%s IS NOT NULL AND TRY_CAST(%s AS %s) IS NULL)", q, q, t)
		}
		if cond != "false" {
			fmt.Fprintf(&bad, " OR %s", cond)
		}
		fmt.Fprintf(&sel, ", %s, %s", cond, q)
	}
	q := fmt.Sprintf("SELECT %s FROM (SELECT row_number() OVER () AS rn, * FROM %s) WHERE %s ORDER BY rn LIMIT 1",
		sel.String(), s.reader(true, extra), bad.String())
	rows, err := conn.QueryContext(ctx, q)
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("prepare ingest: %w", ctx.Err())
		}
		// Even the VARCHAR read fails: the file is malformed.
		return s.readError(ctx, err)
	}
	defer rows.Close()
	found := false
	vals := make([]any, 2+2*len(cols))
	if rows.Next() {
		ptrs := make([]any, len(vals))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return fmt.Errorf("prepare ingest: diagnose: %w", err)
		}
		found = true
	}
	if err := rows.Err(); err != nil {
		return s.readError(ctx, err)
	}
	rows.Close()

	if rejects != "" {
		if ierr := s.csvReject(ctx, conn, rejects); ierr != nil {
			return ierr
		}
	}
	if found {
		row, _ := toInt64(vals[0])
		if b, _ := vals[1].(bool); b {
			return &InputError{Row: row, Column: s.ds.TimeColumn, Message: "missing time value"}
		}
		for i, c := range cols {
			if b, _ := vals[2+2*i].(bool); b {
				v, _ := vals[3+2*i].(string)
				return &InputError{Row: row, Column: c.Name, Message: fmt.Sprintf("value %q is not a valid %s", v, c.Type)}
			}
		}
	}
	if cause == nil {
		return fmt.Errorf("prepare ingest: rows without a time value but none found on a second read")
	}
	return s.readError(ctx, cause)
}

// csvReject reports the first line DuckDB's CSV reader rejected, if any.
func (s *source) csvReject(ctx context.Context, conn *sql.Conn, table string) error {
	var line int64
	var column sql.NullString
	var kind, msg string
	err := conn.QueryRowContext(ctx, fmt.Sprintf(
		"SELECT line, column_name, CAST(error_type AS VARCHAR), error_message FROM %s ORDER BY line, column_idx LIMIT 1", table)).
		Scan(&line, &column, &kind, &msg)
	if errors.Is(err, sql.ErrNoRows) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("prepare ingest: read CSV rejects: %w", err)
	}
	ie := &InputError{Row: max(line-1, 0)}
	switch kind {
	case "TOO MANY COLUMNS", "MISSING COLUMNS":
		ie.Message = fmt.Sprintf("malformed CSV on line %d: %s", line, msg)
	case "CAST":
		ie.Column = column.String
		ie.Message = cleanDuckDBMessage(msg)
	default:
		ie.Message = fmt.Sprintf("malformed CSV on line %d: %s", line, cleanDuckDBMessage(msg))
	}
	return ie
}
