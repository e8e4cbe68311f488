package engine

import (
	"bufio"
	"context"
	"database/sql"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync/atomic"

	"timestore/internal/catalog"
)

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
