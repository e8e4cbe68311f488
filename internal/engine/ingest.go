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

	conn, err := e.db.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("prepare ingest: %w", err)
	}
	defer conn.Close()

	// One parse of the input, typed, into a table that the window writers
	// below share.
	id := e.nextID()
	table := quoteIdent(fmt.Sprintf("ingest_%d", id))
	created := false
	if format != FormatCSV {
		if created, err = src.createFromDetected(ctx, conn, table); err != nil {
			return nil, err
		}
	}
	if !created {
		// Check the column names first: the CSV header, or every key of
		// every JSON object.
		if format == FormatCSV {
			if err := src.readCSVHeader(); err != nil {
				return nil, err
			}
		} else if err := src.scanJSONKeys(ctx, conn); err != nil {
			return nil, err
		}
		create := fmt.Sprintf("CREATE TABLE %s AS SELECT %s FROM %s", table, src.projection(), src.reader(false, ""))
		if _, err := conn.ExecContext(ctx, create); err != nil {
			if ctx.Err() != nil {
				return nil, fmt.Errorf("prepare ingest: %w", ctx.Err())
			}
			return nil, src.diagnose(ctx, conn, err)
		}
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		_, _ = conn.ExecContext(cctx, "DROP TABLE IF EXISTS "+table)
	}()
	// Time series usually arrive in time order: sort only when a cheap
	// check finds rows out of order. LAG over the table in insertion order
	// runs as a streaming window in DuckDB; the tests shuffle their input.
	tc := quoteIdent(ds.TimeColumn)
	var unsorted int64
	if err := conn.QueryRowContext(ctx, fmt.Sprintf(
		"SELECT count(*) FROM (SELECT %s AS t, lag(%s) OVER () AS prev FROM %s) WHERE t < prev", tc, tc, table)).Scan(&unsorted); err != nil {
		return nil, fmt.Errorf("prepare ingest: check order: %w", err)
	}
	if unsorted > 0 {
		if _, err := conn.ExecContext(ctx, fmt.Sprintf("CREATE OR REPLACE TABLE %s AS SELECT * FROM %s ORDER BY %s", table, table, tc)); err != nil {
			return nil, fmt.Errorf("prepare ingest: sort: %w", err)
		}
	}
	rows, err := conn.QueryContext(ctx, statsSQL(ds, table, true))
	if err != nil {
		return nil, fmt.Errorf("prepare ingest: stats: %w", err)
	}
	windows, err := scanStats(rows, ds, true)
	if err != nil {
		return nil, fmt.Errorf("prepare ingest: %w", err)
	}
	var total int64
	for _, w := range windows {
		total += w.RowCount
	}
	if total == 0 {
		return nil, &InputError{Message: "no rows"}
	}
	if src.missingTime {
		return nil, &InputError{Column: ds.TimeColumn, Message: "missing time column: no object has the key"}
	}
	timeIdx := slices.IndexFunc(ds.Columns, func(c catalog.Column) bool { return c.Name == ds.TimeColumn })
	for _, w := range windows {
		if w.Stats[timeIdx].NullCount > 0 {
			return nil, src.diagnose(ctx, conn, nil)
		}
	}

	files, err := e.writeWindows(ctx, ds, table, id, outDir, windows)
	if err != nil {
		return nil, fmt.Errorf("prepare ingest: %w", err)
	}
	return files, nil
}

// parquetOptions are the COPY options of partition files: zstd, and Parquet
// format version 2, whose encodings (delta for timestamps and integers, byte
// stream split for doubles) made the benchmark's files about 25% smaller and
// faster to write than version 1. Partition files are read by DuckDB only;
// exports for other tools choose their own options.
const parquetOptions = "FORMAT parquet, COMPRESSION zstd, PARQUET_VERSION v2"

// writeWindows copies each window's rows of table into its own Parquet file,
// several windows in parallel.
func (e *Engine) writeWindows(ctx context.Context, ds catalog.Dataset, table string, id uint64, outDir string, windows []catalog.PartitionFile) ([]WindowFile, error) {
	tc, _ := ds.Column(ds.TimeColumn)
	literal := "TIMESTAMP "
	suffix := ""
	if tc.Type == catalog.TypeTimestampTZ {
		literal, suffix = "TIMESTAMPTZ ", "+00"
	}
	tag, err := randomTag()
	if err != nil {
		return nil, err
	}
	// The table's columns may be in input order.
	names := make([]string, len(ds.Columns))
	for i, c := range ds.Columns {
		names[i] = quoteIdent(c.Name)
	}
	cols := strings.Join(names, ", ")
	files := make([]WindowFile, len(windows))
	for i, w := range windows {
		name := fmt.Sprintf("%s-%s-%d%s.parquet", ds.Name, w.WindowStart.Format("20060102T150405Z"), id, tag)
		files[i] = WindowFile{Path: filepath.Join(outDir, name), PartitionFile: w}
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(e.threads)
	for i := range files {
		f := &files[i]
		g.Go(func() error {
			query := "SELECT " + cols + " FROM " + table
			if len(files) > 1 {
				start := f.WindowStart
				end := catalog.WindowEnd(ds.Partition, start)
				const layout = "2006-01-02 15:04:05"
				query += fmt.Sprintf(" WHERE %s >= %s'%s%s' AND %s < %s'%s%s'",
					quoteIdent(tc.Name), literal, start.Format(layout), suffix,
					quoteIdent(tc.Name), literal, end.Format(layout), suffix)
			}
			copySQL := fmt.Sprintf("COPY (%s) TO %s (%s)", query, quoteString(f.Path), parquetOptions)
			if _, err := e.db.ExecContext(gctx, copySQL); err != nil {
				return fmt.Errorf("write window %s: %w", f.WindowStart.Format(time.RFC3339), err)
			}
			fi, err := os.Stat(f.Path)
			if err != nil {
				return fmt.Errorf("write window %s: %w", f.WindowStart.Format(time.RFC3339), err)
			}
			f.SizeBytes = fi.Size()
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		for _, f := range files {
			_ = os.Remove(f.Path)
		}
		return nil, err
	}
	return files, nil
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
		call = fmt.Sprintf("read_csv(%s, header = true, auto_detect = false, delim = ',', quote = '\"', escape = '\"', strict_mode = true, columns = %s", p, cols.String())
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

// detectedReads counts inputs read by createFromDetected (for tests).
var detectedReads atomic.Int64

// detectedReader is the read_json call of the fast path: keys and types
// detected from a sample, every other object checked against them.
func (s *source) detectedReader() string {
	format := "newline_delimited"
	if s.format == FormatJSON {
		format = "array"
	}
	return fmt.Sprintf("read_json(%s, format = '%s', records = 'true'%s)", quoteString(s.path), format, noDateDetection)
}

// createFromDetected is the fast path for JSON: one read that both parses the
// values and rejects unknown keys. Without "columns", DuckDB's JSON reader
// detects the keys and types from a sample and then fails on any object with
// a key outside the sample, provided every detected column is read; with
// "columns" it would ignore unknown keys, and checking them needs a second
// parse of the whole file (json_keys), as long as the read itself.
//
// The fast path applies when the sample shows only schema columns, including
// the time column, with types that convert to the declared ones. It reports
// false, and leaves no table, when it does not apply or the read fails for any
// reason; the caller then takes the exact path, which also explains errors.
//
// It first tries createGuarded, which needs one detection (sampling the
// input costs about a tenth of the whole read); when the sample lacks a schema
// column, it detects the columns with DESCRIBE and creates the table from
// them, detecting again.
func (s *source) createFromDetected(ctx context.Context, conn *sql.Conn, table string) (bool, error) {
	ok, bindErr, err := s.createGuarded(ctx, conn, table)
	if err != nil || ok || !bindErr {
		return ok, err
	}
	reader := s.detectedReader()
	rows, err := conn.QueryContext(ctx, "SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM "+reader+")")
	if err != nil {
		return false, ctxErr(ctx)
	}
	detected := map[string]string{}
	for rows.Next() {
		var name, typ string
		if err := rows.Scan(&name, &typ); err != nil {
			rows.Close()
			return false, fmt.Errorf("prepare ingest: %w", err)
		}
		detected[name] = typ
	}
	rows.Close()
	if rows.Err() != nil || detected[s.ds.TimeColumn] == "" {
		return false, ctxErr(ctx)
	}
	for name := range detected {
		if _, ok := s.ds.Column(name); !ok {
			return false, nil
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
			return false, nil
		}
	}
	create := fmt.Sprintf("CREATE TABLE %s AS SELECT %s FROM %s", table, strings.Join(parts, ", "), reader)
	if _, err := conn.ExecContext(ctx, create); err != nil {
		return false, ctxErr(ctx)
	}
	detectedReads.Add(1)
	return true, nil
}

// numericFromJSON lists, per numeric column type, the types DuckDB detects
// for JSON integers, which the fast path casts to the column's type.
var numericFromJSON = map[string][]string{
	catalog.TypeBigint:  {"BIGINT", "UBIGINT", "HUGEINT"},
	catalog.TypeInteger: {"BIGINT", "UBIGINT", "HUGEINT"},
	catalog.TypeDouble:  {"BIGINT", "UBIGINT", "HUGEINT"},
}

// createGuarded is createFromDetected with a single detection: it selects
// every detected column (SELECT *), replacing each schema column by an
// expression that is its value converted to the declared type when the
// detected key and type are acceptable, and an error otherwise. DuckDB folds
// typeof() when it plans the query, so a wrong type fails on the first batch;
// alias() gives the detected key's spelling, which must match the column's
// exactly (identifiers are case-insensitive in SQL, keys are not). A key
// outside the schema leaves an extra column, found before any use of the
// table.
//
// bindErr reports that the statement did not bind, typically because the
// sample lacks a schema column; the caller then detects the columns first.
// Every other failure is reported as ok == false with no table left.
func (s *source) createGuarded(ctx context.Context, conn *sql.Conn, table string) (ok, bindErr bool, err error) {
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
	create := fmt.Sprintf("CREATE TABLE %s AS SELECT * REPLACE (%s) FROM %s", table, strings.Join(replace, ", "), s.detectedReader())
	if _, err := conn.ExecContext(ctx, create); err != nil {
		if ctx.Err() != nil {
			return false, false, fmt.Errorf("prepare ingest: %w", ctx.Err())
		}
		var de *duckdb.Error
		return false, errors.As(err, &de) && de.Type == duckdb.ErrorTypeBinder, nil
	}
	var n int
	if err := conn.QueryRowContext(ctx, "SELECT count(*) FROM (DESCRIBE "+table+")").Scan(&n); err != nil {
		dropTable(ctx, conn, table)
		return false, false, fmt.Errorf("prepare ingest: %w", err)
	}
	if n != len(s.ds.Columns) {
		// A key outside the schema in the sample.
		dropTable(ctx, conn, table)
		return false, false, nil
	}
	detectedReads.Add(1)
	return true, false, nil
}

// dropTable drops table, also when ctx is done.
func dropTable(ctx context.Context, conn *sql.Conn, table string) {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	_, _ = conn.ExecContext(cctx, "DROP TABLE IF EXISTS "+table)
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
