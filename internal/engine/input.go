package engine

import (
	"bufio"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/csv"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"unicode"

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
			t = readType(c.Type, s.format)
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
		if readType(c.Type, s.format) == t {
			parts[i] = q
			continue
		}
		parts[i] = valueExpr(q, c.Type, false) + " AS " + q
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

// otherDelimiter returns the name of the delimiter that a header field
// not naming a column seems separated by (';', tab, '|'), when splitting
// it by that delimiter gives a column name; "" otherwise.
func (s *source) otherDelimiter(field string) string {
	for _, d := range []struct{ sep, name string }{{";", "';'"}, {"\t", "tab"}, {"|", "'|'"}} {
		if !strings.Contains(field, d.sep) {
			continue
		}
		for _, part := range strings.Split(field, d.sep) {
			if _, ok := s.ds.Column(strings.TrimSpace(part)); ok {
				return d.name
			}
		}
	}
	return ""
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
			msg := fmt.Sprintf("CSV header: unknown column (dataset %s has columns %s)", s.ds.Name, s.columnNames())
			if d := s.otherDelimiter(h); d != "" {
				msg = fmt.Sprintf("CSV header: unknown column: the header looks %s-separated, but timestore reads comma-separated CSV: separate the fields with commas (dataset %s has columns %s)", d, s.ds.Name, s.columnNames())
			}
			return &InputError{Column: h, Message: msg}
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

// writeHinted writes the fast path's input next to the output: the input
// with one hint object first (inside the array for FormatJSON) that gives
// the time column a random marker and every other schema column an empty
// string. Read first, it makes DuckDB detect every schema column, as text
// or, mixed with other input values, as JSON; guardedSelect leaves its row
// out by the marker. (A list of two files, the hint and the input, reads the
// same but took about twice as long in the benchmark: DuckDB's multi-file
// JSON scan, not the copy, is the cost.) ok is false when a JSON input does
// not start with '[': the exact path reports it.
func (s *source) writeHinted(outDir string, id uint64) (path, marker string, ok bool, err error) {
	tag, err := randomTag()
	if err != nil {
		return "", "", false, err
	}
	var rnd [16]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return "", "", false, fmt.Errorf("prepare ingest: hint marker: %w", err)
	}
	marker = "timestore-hint-" + hex.EncodeToString(rnd[:])
	obj := make(map[string]string, len(s.ds.Columns))
	for _, c := range s.ds.Columns {
		obj[c.Name] = ""
	}
	obj[s.ds.TimeColumn] = marker
	hint, err := json.Marshal(obj)
	if err != nil {
		return "", "", false, fmt.Errorf("prepare ingest: hint: %w", err)
	}
	in, err := os.Open(s.path)
	if err != nil {
		return "", "", false, fmt.Errorf("prepare ingest: %w", err)
	}
	defer in.Close()
	r := bufio.NewReaderSize(in, 64<<10)
	if s.format == FormatJSON {
		// Skip a byte order mark and white space up to the '['.
		for {
			c, _, err := r.ReadRune()
			if err != nil {
				return "", "", false, nil
			}
			if c == '[' {
				break
			}
			if c != '\uFEFF' && !unicode.IsSpace(c) {
				return "", "", false, nil
			}
		}
		hint = append(append([]byte("["), hint...), ',')
	} else {
		hint = append(hint, '\n')
	}
	path = filepath.Join(outDir, fmt.Sprintf(".ingest-hinted-%d%s.json", id, tag))
	out, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", "", false, fmt.Errorf("prepare ingest: %w", err)
	}
	_, err = out.Write(hint)
	if err == nil {
		_, err = io.Copy(out, r)
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(path)
		return "", "", false, fmt.Errorf("prepare ingest: write hinted input: %w", err)
	}
	return path, marker, true, nil
}

// guardedSelect reads the hinted input (writeHinted) with a single
// detection: it selects every detected column (SELECT *) of every row but
// the hint's, replacing each schema column by an expression that is its
// value converted to the declared type (valueExpr) when the detected key and
// type are acceptable, and an error otherwise. DuckDB folds typeof() when it
// plans the query, so a wrong type fails on the first batch; alias() gives
// the detected key's spelling, which must match the column's exactly
// (identifiers are case-insensitive in SQL, keys are not). A key outside the
// schema is an extra column, which writePartitioned reports.
//
// Text columns must be detected as text: JSON numbers there take the exact
// path. Other columns may be JSON too; their JSON text converts like the
// exact path's text, and a JSON string fails here and takes the exact path.
func (s *source) guardedSelect(hinted, marker string) string {
	replace := make([]string, len(s.ds.Columns))
	for i, c := range s.ds.Columns {
		q := quoteIdent(c.Name)
		accept := "'VARCHAR'"
		conv := q
		if c.Type != catalog.TypeVarchar {
			conv = valueExpr("CAST("+q+" AS VARCHAR)", c.Type, false)
			if !isTime(c.Type) {
				accept = "'VARCHAR', 'JSON'"
			}
		}
		replace[i] = fmt.Sprintf("CASE WHEN typeof(%[1]s) IN (%[2]s) AND alias(%[1]s) = %[3]s THEN %[4]s ELSE error('timestore: detected key or type does not fit') END AS %[1]s",
			q, accept, quoteString(c.Name), conv)
	}
	format := "newline_delimited"
	if s.format == FormatJSON {
		format = "array"
	}
	reader := fmt.Sprintf("read_json(%s, format = '%s', records = 'true', maximum_object_size = %d%s)",
		quoteString(hinted), format, jsonMaxObjectSize, noDateDetection)
	return fmt.Sprintf("SELECT * REPLACE (%s) FROM %s WHERE CAST(%s AS VARCHAR) IS DISTINCT FROM %s",
		strings.Join(replace, ", "), reader, quoteIdent(s.ds.TimeColumn), quoteString(marker))
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
