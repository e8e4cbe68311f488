package engine

import (
	"bytes"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"timestore/internal/catalog"
)

// The native path reads a small input in Go instead of DuckDB (see
// prepareNative). It accepts only input whose every value it reads with
// certainty exactly as the DuckDB path would; anything else — a value the
// DuckDB path might refuse, an unusual but valid form, a CSV or JSON corner —
// is errNotNative, and the caller reads the input with DuckDB, which decides
// and explains. A refusal therefore always comes from the DuckDB path, with
// its row, column and message; the differential tests
// (native_test.go) check that every input the native path accepts gives the
// same rows and statistics as the DuckDB path.

// errNotNative: the native path does not read this input with certainty.
var errNotNative = errors.New("input not read natively")

// nativeReads counts inputs ingested by the native path (for tests).
var nativeReads atomic.Int64

// nativeValue is one decoded value; which field holds it depends on the
// column type (times in microseconds since the epoch, UTC).
type nativeValue struct {
	null bool
	i    int64
	f    float64
	b    bool
	s    string
}

// nativeRow is one decoded row in schema order, with its time.
type nativeRow struct {
	t    int64
	vals []nativeValue
}

// nativeDecoder decodes the values of one dataset.
type nativeDecoder struct {
	ds      catalog.Dataset
	colIdx  map[string]int
	timeIdx int
}

func newNativeDecoder(ds catalog.Dataset) *nativeDecoder {
	d := &nativeDecoder{ds: ds, colIdx: make(map[string]int, len(ds.Columns))}
	for i, c := range ds.Columns {
		d.colIdx[c.Name] = i
		if c.Name == ds.TimeColumn {
			d.timeIdx = i
		}
	}
	return d
}

// decodeNative decodes body (in format) into rows, or returns errNotNative.
func decodeNative(ds catalog.Dataset, format Format, body []byte) ([]nativeRow, error) {
	if len(body) == 0 || bytes.IndexByte(body, '\r') >= 0 || bytes.IndexByte(body, 0) >= 0 || !utf8.Valid(body) || bytes.HasPrefix(body, []byte("\uFEFF")) {
		return nil, errNotNative
	}
	d := newNativeDecoder(ds)
	var rows []nativeRow
	var err error
	switch format {
	case FormatCSV:
		rows, err = d.decodeCSV(body)
	case FormatNDJSON:
		rows, err = d.decodeNDJSON(body)
	case FormatJSON:
		rows, err = d.decodeJSONArray(body)
	default:
		return nil, errNotNative
	}
	if err != nil || len(rows) == 0 {
		return nil, errNotNative
	}
	return rows, nil
}

// newRow returns a row of NULLs.
func (d *nativeDecoder) newRow() nativeRow {
	vals := make([]nativeValue, len(d.ds.Columns))
	for i := range vals {
		vals[i].null = true
	}
	return nativeRow{vals: vals}
}

// finish checks that the row has a time value and records it.
func (d *nativeDecoder) finish(r *nativeRow) error {
	tv := r.vals[d.timeIdx]
	if tv.null {
		return errNotNative
	}
	r.t = tv.i
	return nil
}

// decodeCSV reads comma-separated rows under a header of distinct column
// names that includes the time column. Empty lines, quoted empty fields and
// ragged rows are not read natively.
func (d *nativeDecoder) decodeCSV(body []byte) ([]nativeRow, error) {
	if bytes.Contains(body, []byte("\n\n")) || body[0] == '\n' {
		return nil, errNotNative
	}
	r := csv.NewReader(bytes.NewReader(body))
	header, err := r.Read()
	if err != nil {
		return nil, errNotNative
	}
	cols := make([]int, len(header))
	seen := make(map[int]bool, len(header))
	for i, h := range header {
		c, ok := d.colIdx[h]
		if !ok || seen[c] {
			return nil, errNotNative
		}
		seen[c] = true
		cols[i] = c
	}
	if !seen[d.timeIdx] {
		return nil, errNotNative
	}
	lineStarts := []int{0}
	for i, c := range body {
		if c == '\n' {
			lineStarts = append(lineStarts, i+1)
		}
	}
	var rows []nativeRow
	for {
		rec, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, errNotNative
		}
		row := d.newRow()
		for i, field := range rec {
			c := cols[i]
			if field == "" {
				// A quoted empty field is not read natively.
				line, col := r.FieldPos(i)
				if line < 1 || line > len(lineStarts) {
					return nil, errNotNative
				}
				if off := lineStarts[line-1] + col - 1; off < len(body) && body[off] == '"' {
					return nil, errNotNative
				}
				continue
			}
			v, ok := d.fromText(c, field)
			if !ok {
				return nil, errNotNative
			}
			row.vals[c] = v
		}
		if err := d.finish(&row); err != nil {
			return nil, err
		}
		rows = append(rows, row)
	}
	return rows, nil
}

// decodeNDJSON reads one object per line; blank lines are not read
// natively.
func (d *nativeDecoder) decodeNDJSON(body []byte) ([]nativeRow, error) {
	body = bytes.TrimSuffix(body, []byte("\n"))
	var rows []nativeRow
	for len(body) > 0 {
		line := body
		if i := bytes.IndexByte(body, '\n'); i >= 0 {
			line, body = body[:i], body[i+1:]
			if len(body) == 0 {
				return nil, errNotNative // a blank last line
			}
		} else {
			body = nil
		}
		sc := &jsonScanner{buf: line}
		row, err := d.decodeObject(sc)
		if err != nil {
			return nil, err
		}
		if !sc.atEnd() {
			return nil, errNotNative
		}
		rows = append(rows, row)
	}
	return rows, nil
}

// decodeJSONArray reads an array of objects.
func (d *nativeDecoder) decodeJSONArray(body []byte) ([]nativeRow, error) {
	sc := &jsonScanner{buf: body}
	if !sc.consume('[') {
		return nil, errNotNative
	}
	var rows []nativeRow
	for {
		row, err := d.decodeObject(sc)
		if err != nil {
			return nil, err
		}
		rows = append(rows, row)
		if sc.consume(',') {
			continue
		}
		if !sc.consume(']') || !sc.atEnd() {
			return nil, errNotNative
		}
		return rows, nil
	}
}

// decodeObject reads one flat object whose keys are distinct columns.
func (d *nativeDecoder) decodeObject(sc *jsonScanner) (nativeRow, error) {
	row := d.newRow()
	seen := make([]bool, len(d.ds.Columns))
	ok := sc.object(func(key string, kind jsonKind, text string) bool {
		c, ok := d.colIdx[key]
		if !ok || seen[c] {
			return false
		}
		seen[c] = true
		v, ok := d.fromJSON(c, kind, text)
		row.vals[c] = v
		return ok
	})
	if !ok {
		return nativeRow{}, errNotNative
	}
	if err := d.finish(&row); err != nil {
		return nativeRow{}, err
	}
	return row, nil
}

// fromJSON converts a JSON value of column c: null, a string read as text,
// a number or boolean literal where the column's type takes it.
func (d *nativeDecoder) fromJSON(c int, kind jsonKind, text string) (nativeValue, bool) {
	typ := d.ds.Columns[c].Type
	switch kind {
	case jsonNull:
		return nativeValue{null: true}, true
	case jsonString:
		return d.fromText(c, text)
	case jsonNumber:
		switch {
		case isInteger(typ):
			return parseNativeInt(typ, text)
		case typ == catalog.TypeDouble:
			return parseNativeDouble(text)
		}
	case jsonBool:
		if typ == catalog.TypeBoolean {
			return nativeValue{b: text == "true"}, true
		}
	}
	return nativeValue{}, false
}

// fromText converts text of column c.
func (d *nativeDecoder) fromText(c int, s string) (nativeValue, bool) {
	typ := d.ds.Columns[c].Type
	switch {
	case typ == catalog.TypeVarchar:
		return nativeValue{s: s}, true
	case isInteger(typ):
		return parseNativeInt(typ, s)
	case typ == catalog.TypeDouble:
		return parseNativeDouble(s)
	case typ == catalog.TypeBoolean:
		switch s {
		case "true":
			return nativeValue{b: true}, true
		case "false":
			return nativeValue{b: false}, true
		}
	case isTime(typ):
		us, ok := parseNativeTime(s)
		return nativeValue{i: us}, ok
	}
	return nativeValue{}, false
}

// parseNativeInt reads -?[0-9]+ in the range of the integer type.
func parseNativeInt(typ, s string) (nativeValue, bool) {
	digits := strings.TrimPrefix(s, "-")
	if digits == "" || len(digits) > 19 {
		return nativeValue{}, false
	}
	for i := 0; i < len(digits); i++ {
		if digits[i] < '0' || digits[i] > '9' {
			return nativeValue{}, false
		}
	}
	bits := 64
	if typ == catalog.TypeInteger {
		bits = 32
	}
	n, err := strconv.ParseInt(s, 10, bits)
	if err != nil {
		return nativeValue{}, false
	}
	return nativeValue{i: n}, true
}

// parseNativeDouble reads a JSON number (-?int frac? exp?) that is a
// finite, normal double or an unsigned zero. Negative zeros, subnormals,
// overflows, NaN and infinities take the DuckDB path.
func parseNativeDouble(s string) (nativeValue, bool) {
	if !isJSONNumber(s) {
		return nativeValue{}, false
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
		return nativeValue{}, false
	}
	if f == 0 {
		mantissa, _, _ := strings.Cut(strings.ToLower(s), "e")
		if strings.HasPrefix(s, "-") || strings.Trim(mantissa, "0.") != "" {
			return nativeValue{}, false
		}
		return nativeValue{f: 0}, true
	}
	if math.Abs(f) < 0x1p-1022 {
		return nativeValue{}, false
	}
	return nativeValue{f: f}, true
}

// isJSONNumber reports whether s is a number in JSON's grammar.
func isJSONNumber(s string) bool {
	i := 0
	if i < len(s) && s[i] == '-' {
		i++
	}
	digits := func() int {
		j := i
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
		return i - j
	}
	start := i
	n := digits()
	if n == 0 || (n > 1 && s[start] == '0') {
		return false
	}
	if i < len(s) && s[i] == '.' {
		i++
		if digits() == 0 {
			return false
		}
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			i++
		}
		if digits() == 0 {
			return false
		}
	}
	return i == len(s)
}

// parseNativeTime reads YYYY-MM-DD[T ]HH:MM:SS[.f{1,6}][Z|±HH:MM] (years
// 1000 to 9999, offsets below 15 hours) as microseconds since the epoch,
// UTC; without an offset the time is UTC.
func parseNativeTime(s string) (int64, bool) {
	if len(s) < 19 || (s[10] != 'T' && s[10] != ' ') || s[4] != '-' || s[7] != '-' || s[13] != ':' || s[16] != ':' {
		return 0, false
	}
	num := func(a, b int) (int, bool) {
		n := 0
		for i := a; i < b; i++ {
			if s[i] < '0' || s[i] > '9' {
				return 0, false
			}
			n = n*10 + int(s[i]-'0')
		}
		return n, true
	}
	year, ok1 := num(0, 4)
	month, ok2 := num(5, 7)
	day, ok3 := num(8, 10)
	hour, ok4 := num(11, 13)
	minute, ok5 := num(14, 16)
	sec, ok6 := num(17, 19)
	if !(ok1 && ok2 && ok3 && ok4 && ok5 && ok6) || year < 1000 || month < 1 || month > 12 || day < 1 || hour > 23 || minute > 59 || sec > 59 {
		return 0, false
	}
	rest := s[19:]
	micros := 0
	if strings.HasPrefix(rest, ".") {
		n := 1
		for n < len(rest) && rest[n] >= '0' && rest[n] <= '9' {
			n++
		}
		frac := rest[1:n]
		if len(frac) == 0 || len(frac) > 6 {
			return 0, false
		}
		for i := 0; i < 6; i++ {
			micros *= 10
			if i < len(frac) {
				micros += int(frac[i] - '0')
			}
		}
		rest = rest[n:]
	}
	offset := 0
	switch {
	case rest == "" || rest == "Z":
	case len(rest) == 6 && (rest[0] == '+' || rest[0] == '-') && rest[3] == ':':
		h, okh := parseTwo(rest[1:3])
		m, okm := parseTwo(rest[4:6])
		if !okh || !okm || h > 14 || m > 59 {
			return 0, false
		}
		offset = h*3600 + m*60
		if rest[0] == '-' {
			offset = -offset
		}
	default:
		return 0, false
	}
	t := time.Date(year, time.Month(month), day, hour, minute, sec, micros*1000, time.UTC)
	if t.Day() != day || t.Month() != time.Month(month) {
		return 0, false // e.g. February 30
	}
	t = t.Add(-time.Duration(offset) * time.Second)
	if t.Year() < 1000 || t.Year() > 9999 {
		return 0, false
	}
	return t.UnixMicro(), true
}

func parseTwo(s string) (int, bool) {
	if len(s) != 2 || s[0] < '0' || s[0] > '9' || s[1] < '0' || s[1] > '9' {
		return 0, false
	}
	return int(s[0]-'0')*10 + int(s[1]-'0'), true
}

// nativeWindow is the rows of one partition window, sorted by time.
type nativeWindow struct {
	start time.Time
	rows  []nativeRow
}

// splitWindows groups rows by the window of their time, each window's rows
// sorted by time (stable), windows in time order.
func splitWindows(ds catalog.Dataset, rows []nativeRow) []nativeWindow {
	slices.SortStableFunc(rows, func(a, b nativeRow) int {
		switch {
		case a.t < b.t:
			return -1
		case a.t > b.t:
			return 1
		}
		return 0
	})
	var windows []nativeWindow
	for _, r := range rows {
		ws := catalog.WindowStart(ds.Partition, time.UnixMicro(r.t))
		if n := len(windows); n == 0 || !windows[n-1].start.Equal(ws) {
			windows = append(windows, nativeWindow{start: ws})
		}
		windows[len(windows)-1].rows = append(windows[len(windows)-1].rows, r)
	}
	return windows
}

// nativeStats computes a window's statistics as scanStats renders them.
func nativeStats(ds catalog.Dataset, w nativeWindow) catalog.PartitionFile {
	pf := catalog.PartitionFile{
		WindowStart: w.start,
		TimeMin:     time.UnixMicro(w.rows[0].t).UTC(),
		TimeMax:     time.UnixMicro(w.rows[len(w.rows)-1].t).UTC(),
		RowCount:    int64(len(w.rows)),
		Stats:       make([]catalog.ColumnStats, len(ds.Columns)),
	}
	for c, col := range ds.Columns {
		st := catalog.ColumnStats{Column: col.Name}
		var lo, hi *nativeValue
		for i := range w.rows {
			v := &w.rows[i].vals[c]
			if v.null {
				st.NullCount++
				continue
			}
			if lo == nil || nativeLess(col.Type, v, lo) {
				lo = v
			}
			if hi == nil || nativeLess(col.Type, hi, v) {
				hi = v
			}
		}
		if lo != nil {
			st.Min, st.Max = renderNative(col.Type, lo), renderNative(col.Type, hi)
		}
		pf.Stats[c] = st
	}
	return pf
}

func nativeLess(typ string, a, b *nativeValue) bool {
	switch {
	case typ == catalog.TypeVarchar:
		return a.s < b.s
	case typ == catalog.TypeDouble:
		return a.f < b.f
	case typ == catalog.TypeBoolean:
		return !a.b && b.b
	}
	return a.i < b.i
}

// renderNative renders a value as renderStat renders DuckDB's.
func renderNative(typ string, v *nativeValue) *string {
	switch {
	case isTime(typ):
		return renderStat(time.UnixMicro(v.i).UTC())
	case typ == catalog.TypeVarchar:
		return renderStat(v.s)
	case typ == catalog.TypeDouble:
		return renderStat(v.f)
	case typ == catalog.TypeBoolean:
		return renderStat(v.b)
	}
	return renderStat(v.i)
}

// prepareNative is PrepareIngest's path for small inputs: it decodes the
// input in Go (decodeNative), splits and sorts the rows by window and writes
// each window's Parquet file (writeNativeParquet) into outDir, with the
// schema, types and statistics of the DuckDB path. It returns errNotNative,
// leaving no file, for input it does not read with certainty.
func (e *Engine) prepareNative(ds catalog.Dataset, format Format, inputPath, outDir string) (_ []WindowFile, err error) {
	body, err := os.ReadFile(inputPath)
	if err != nil {
		return nil, fmt.Errorf("prepare ingest: %w", err)
	}
	rows, err := decodeNative(ds, format, body)
	if err != nil {
		return nil, err
	}
	tag, err := randomTag()
	if err != nil {
		return nil, err
	}
	suffix := fmt.Sprintf("%d%s", e.nextID(), tag)
	windows := splitWindows(ds, rows)
	files := make([]WindowFile, 0, len(windows))
	defer func() {
		if err != nil {
			for _, f := range files {
				_ = os.Remove(f.Path)
			}
		}
	}()
	for _, w := range windows {
		path := filepath.Join(outDir, fmt.Sprintf("%s-%s-%s.parquet", ds.Name, w.start.Format("20060102T150405Z"), suffix))
		size, err := writeNativeParquet(ds, w.rows, path)
		if err != nil {
			_ = os.Remove(path)
			return nil, fmt.Errorf("prepare ingest: write %s: %w", filepath.Base(path), err)
		}
		pf := nativeStats(ds, w)
		pf.SizeBytes = size
		files = append(files, WindowFile{Path: path, PartitionFile: pf})
	}
	nativeReads.Add(1)
	return files, nil
}
