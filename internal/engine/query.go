package engine

import (
	"context"
	"database/sql/driver"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"math/big"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	duckdb "github.com/duckdb/duckdb-go/v2"

	"timestore/internal/catalog"
)

// QueryRequest is one user query over one dataset.
type QueryRequest struct {
	// Dataset is the dataset queried; in SQL its name is a view over Files.
	Dataset catalog.Dataset
	// Files are the local Parquet paths of the live partitions to read. The
	// query can read these files and nothing else.
	Files []string
	// From and To, when set, restrict the view to rows with From <= time < To.
	From, To *time.Time
	// SQL is one SELECT statement (WITH ... SELECT, FROM-first, VALUES,
	// DESCRIBE/SHOW/SUMMARIZE and EXPLAIN of those are accepted too).
	SQL string
	// Timeout interrupts the query when it runs longer; 0 means no timeout
	// other than ctx's.
	Timeout time.Duration
}

// ColumnInfo describes one result column.
type ColumnInfo struct {
	// Name is the column's name in the result.
	Name string `json:"name"`
	// Type is DuckDB's type name, e.g. TIMESTAMP, BIGINT, DOUBLE, VARCHAR.
	Type string `json:"type"`
}

// Query runs req.SQL in a sandbox: a separate in-memory DuckDB instance that
// can read req.Files and nothing else (enable_external_access off with
// allowed_paths set to exactly those files), cannot install or load
// extensions, and has its configuration locked. The dataset's name is a
// temporary view over the files restricted to [From, To); with no files it
// is an empty view of the right columns and types.
//
// Instances are not shared between file sets: an instance restricted to a
// set of files is kept for a minute and reused, one query at a time, only by
// later queries over exactly the same files, each on a fresh connection with
// its own view. A statement cannot change the instance (see below), so such
// queries cannot see each other.
//
// Only one statement is accepted, and only a read: SQL that is refused, does
// not parse or bind, reads a forbidden file or runs past req.Timeout fails
// with *SQLError. Other errors are internal. The caller must Close the Rows.
func (e *Engine) Query(ctx context.Context, req QueryRequest) (*Rows, error) {
	ctx, span := e.startSpan(ctx, spanQuery, attrDataset.String(req.Dataset.Name), attrFiles.Int(len(req.Files)))
	rows, err := e.query(ctx, req)
	endSpan(span, err)
	return rows, err
}

func (e *Engine) query(ctx context.Context, req QueryRequest) (*Rows, error) {
	if err := e.checkOpen(); err != nil {
		return nil, err
	}
	if err := checkDataset(req.Dataset); err != nil {
		return nil, fmt.Errorf("query: %w", err)
	}
	if err := checkStatementStart(req.SQL); err != nil {
		return nil, err
	}
	files := make([]string, len(req.Files))
	for i, f := range req.Files {
		abs, err := filepath.Abs(f)
		if err != nil {
			return nil, fmt.Errorf("query: file %s: %w", f, err)
		}
		files[i] = abs
	}

	parent := ctx
	cancel := context.CancelFunc(func() {})
	if req.Timeout > 0 {
		ctx, cancel = context.WithTimeout(ctx, req.Timeout)
	}
	sb, err := e.sandboxes.get(ctx, files)
	if err != nil {
		cancel()
		if parent.Err() == nil && ctx.Err() != nil {
			return nil, timeoutError(req.Timeout)
		}
		return nil, err
	}
	r := &Rows{e: e, sb: sb, cancel: cancel}
	if r.conn, err = sb.connect(ctx); err != nil {
		_ = r.Close()
		return nil, fmt.Errorf("query: connect sandbox: %w", err)
	}
	view := "CREATE TEMP VIEW " + quoteIdent(req.Dataset.Name) + " AS " + viewSQL(req.Dataset, files, req.From, req.To)
	if _, err := r.conn.ExecContext(ctx, view, nil); err != nil {
		r.broken = true
		_ = r.Close()
		if parent.Err() == nil && ctx.Err() != nil {
			return nil, timeoutError(req.Timeout)
		}
		return nil, fmt.Errorf("query: create view: %w", err)
	}
	if err := r.start(ctx, parent, req); err != nil {
		_ = r.Close()
		return nil, err
	}
	return r, nil
}

// viewSQL defines the dataset's view over its files.
func viewSQL(ds catalog.Dataset, files []string, from, to *time.Time) string {
	cols := make([]string, len(ds.Columns))
	if len(files) == 0 {
		for i, c := range ds.Columns {
			t, _ := sqlType(c.Type)
			cols[i] = fmt.Sprintf("CAST(NULL AS %s) AS %s", t, quoteIdent(c.Name))
		}
		return "SELECT " + strings.Join(cols, ", ") + " WHERE false"
	}
	for i, c := range ds.Columns {
		cols[i] = quoteIdent(c.Name)
	}
	quoted := make([]string, len(files))
	for i, f := range files {
		quoted[i] = quoteString(f)
	}
	q := "SELECT " + strings.Join(cols, ", ") + " FROM read_parquet([" + strings.Join(quoted, ", ") + "])"
	tc, _ := ds.Column(ds.TimeColumn)
	var conds []string
	if from != nil {
		conds = append(conds, quoteIdent(tc.Name)+" >= "+timeLiteral(tc.Type, *from))
	}
	if to != nil {
		conds = append(conds, quoteIdent(tc.Name)+" < "+timeLiteral(tc.Type, *to))
	}
	if len(conds) > 0 {
		q += " WHERE " + strings.Join(conds, " AND ")
	}
	return q
}

// timeLiteral renders t as a SQL literal of the time column's type.
func timeLiteral(colType string, t time.Time) string {
	s := t.UTC().Format("2006-01-02 15:04:05.999999")
	if colType == catalog.TypeTimestampTZ {
		return "TIMESTAMPTZ '" + s + "+00'"
	}
	return "TIMESTAMP '" + s + "'"
}

// readStatements are the words a statement may start with.
var readStatements = map[string]bool{
	"SELECT": true, "WITH": true, "FROM": true, "VALUES": true,
	"DESCRIBE": true, "SHOW": true, "SUMMARIZE": true,
}

// otherStatements are the words DuckDB's other statements start with, which
// a query may not: a first word that is in neither list is reported as a
// syntax error rather than as a forbidden statement.
var otherStatements = map[string]bool{
	"INSERT": true, "UPDATE": true, "DELETE": true, "MERGE": true, "TRUNCATE": true,
	"CREATE": true, "DROP": true, "ALTER": true, "COMMENT": true,
	"COPY": true, "EXPORT": true, "IMPORT": true, "ATTACH": true, "DETACH": true, "USE": true,
	"INSTALL": true, "LOAD": true, "FORCE": true, "UPDATE_EXTENSIONS": true,
	"SET": true, "RESET": true, "PRAGMA": true, "CALL": true,
	"BEGIN": true, "START": true, "COMMIT": true, "END": true, "ROLLBACK": true, "ABORT": true,
	"PREPARE": true, "EXECUTE": true, "DEALLOCATE": true,
	"VACUUM": true, "ANALYZE": true, "CHECKPOINT": true, "PIVOT": true, "UNPIVOT": true,
}

// checkStatementStart refuses SQL that does not start like a read. DuckDB
// rewrites some PRAGMAs into SELECTs before reporting a statement type, so
// the statement type alone does not catch them.
func checkStatementStart(q string) error {
	words := leadingWords(q, 3)
	if len(words) == 0 {
		if strings.HasPrefix(skipSpaceAndComments(q), "(") {
			return nil
		}
		return &SQLError{Message: "empty query: expected one SELECT statement"}
	}
	w := words[0]
	if w == "EXPLAIN" {
		rest := words[1:]
		if len(rest) > 0 && rest[0] == "ANALYZE" {
			rest = rest[1:]
		}
		if len(rest) > 0 && readStatements[rest[0]] && rest[0] != "SHOW" {
			return nil
		}
		return &SQLError{Message: "only EXPLAIN of a SELECT statement is allowed"}
	}
	if !readStatements[w] {
		if !otherStatements[w] {
			// Not a statement DuckDB knows either: most likely a typo.
			return &SQLError{Message: fmt.Sprintf("syntax error at or near %q: a query starts with SELECT, WITH, FROM, VALUES, DESCRIBE, SHOW, SUMMARIZE or EXPLAIN", w)}
		}
		return &SQLError{Message: fmt.Sprintf("only a single SELECT statement is allowed, not %s", w)}
	}
	return nil
}

// leadingWords returns up to n leading keywords of q, upper-cased, skipping
// whitespace and comments; it stops at the first non-word character.
func leadingWords(q string, n int) []string {
	var words []string
	for len(words) < n {
		q = skipSpaceAndComments(q)
		i := 0
		for i < len(q) && (q[i] == '_' || q[i] >= 'a' && q[i] <= 'z' || q[i] >= 'A' && q[i] <= 'Z') {
			i++
		}
		if i == 0 {
			break
		}
		words = append(words, strings.ToUpper(q[:i]))
		q = q[i:]
	}
	return words
}

func skipSpaceAndComments(q string) string {
	for {
		q = strings.TrimLeft(q, " \t\r\n\f\v")
		switch {
		case strings.HasPrefix(q, "--"):
			i := strings.IndexByte(q, '\n')
			if i < 0 {
				return ""
			}
			q = q[i+1:]
		case strings.HasPrefix(q, "/*"):
			i := strings.Index(q[2:], "*/")
			if i < 0 {
				return ""
			}
			q = q[i+4:]
		default:
			return q
		}
	}
}

var statementTypeNames = map[duckdb.StmtType]string{
	duckdb.STATEMENT_TYPE_INSERT:       "INSERT",
	duckdb.STATEMENT_TYPE_UPDATE:       "UPDATE",
	duckdb.STATEMENT_TYPE_DELETE:       "DELETE",
	duckdb.STATEMENT_TYPE_PREPARE:      "PREPARE",
	duckdb.STATEMENT_TYPE_CREATE:       "CREATE",
	duckdb.STATEMENT_TYPE_EXECUTE:      "EXECUTE",
	duckdb.STATEMENT_TYPE_ALTER:        "ALTER",
	duckdb.STATEMENT_TYPE_TRANSACTION:  "a transaction statement",
	duckdb.STATEMENT_TYPE_COPY:         "COPY",
	duckdb.STATEMENT_TYPE_ANALYZE:      "ANALYZE",
	duckdb.STATEMENT_TYPE_VARIABLE_SET: "SET",
	duckdb.STATEMENT_TYPE_CREATE_FUNC:  "CREATE FUNCTION",
	duckdb.STATEMENT_TYPE_DROP:         "DROP",
	duckdb.STATEMENT_TYPE_EXPORT:       "EXPORT",
	duckdb.STATEMENT_TYPE_PRAGMA:       "PRAGMA",
	duckdb.STATEMENT_TYPE_VACUUM:       "VACUUM",
	duckdb.STATEMENT_TYPE_CALL:         "CALL",
	duckdb.STATEMENT_TYPE_SET:          "SET",
	duckdb.STATEMENT_TYPE_LOAD:         "LOAD or INSTALL",
	duckdb.STATEMENT_TYPE_ATTACH:       "ATTACH",
	duckdb.STATEMENT_TYPE_DETACH:       "DETACH",
	duckdb.STATEMENT_TYPE_MULTI:        "multiple statements",
}

// Rows is the result of Query, read row by row. It is not safe for
// concurrent use. The result is computed by the time Query returns; Next
// hands it over one row at a time without copying it all into Go.
type Rows struct {
	e       *Engine
	sb      *sandbox
	conn    *duckdb.Conn
	broken  bool // the sandbox must not be reused
	cancel  context.CancelFunc
	stmt    *duckdb.Stmt
	rows    driver.Rows
	columns []ColumnInfo
	dest    []driver.Value
	values  []any
	err     error
	closed  bool
}

// start prepares, checks and executes the statement.
func (r *Rows) start(ctx, parent context.Context, req QueryRequest) error {
	mapErr := func(err error) error {
		switch {
		case parent.Err() != nil:
			return fmt.Errorf("query: %w", parent.Err())
		case ctx.Err() != nil:
			return timeoutError(req.Timeout)
		}
		err = otherTableError(sqlError(err), req.Dataset.Name)
		if !errors.As(err, new(*SQLError)) {
			r.broken = true
		}
		return err
	}
	// Before Prepare, which binds the statement: some table functions act
	// when they are bound.
	if err := checkReferences(ctx, r.conn, req.SQL); err != nil {
		var se *SQLError
		if errors.As(err, &se) {
			return err
		}
		return mapErr(err)
	}
	ds, err := r.conn.Prepare(req.SQL)
	if err != nil {
		var de *duckdb.Error
		if !errors.As(err, &de) {
			if strings.Contains(err.Error(), "multi-statement") {
				return &SQLError{Message: "only a single SQL statement is allowed", Err: err}
			}
			if strings.Contains(err.Error(), "empty query") {
				return &SQLError{Message: "empty query: expected one SELECT statement", Err: err}
			}
		}
		return mapErr(err)
	}
	r.stmt = ds.(*duckdb.Stmt)
	st, err := r.stmt.StatementType()
	if err != nil {
		return fmt.Errorf("query: statement type: %w", err)
	}
	if st != duckdb.STATEMENT_TYPE_SELECT && st != duckdb.STATEMENT_TYPE_EXPLAIN {
		name := statementTypeNames[st]
		if name == "" {
			name = fmt.Sprintf("statement type %d", st)
		}
		return &SQLError{Message: fmt.Sprintf("only a single SELECT statement is allowed, not %s", name)}
	}
	if r.stmt.NumInput() > 0 {
		return &SQLError{Message: "query parameters ($1, ?) are not supported"}
	}

	rows, err := r.stmt.QueryContext(ctx, nil)
	if err != nil {
		return mapErr(err)
	}
	r.rows = rows
	names := rows.Columns()
	r.columns = make([]ColumnInfo, len(names))
	typed, _ := rows.(driver.RowsColumnTypeDatabaseTypeName)
	for i, n := range names {
		r.columns[i].Name = n
		if typed != nil {
			r.columns[i].Type = typed.ColumnTypeDatabaseTypeName(i)
		}
	}
	r.dest = make([]driver.Value, len(names))
	return nil
}

func timeoutError(d time.Duration) error {
	return &SQLError{Message: fmt.Sprintf("query timed out after %s", d), Err: context.DeadlineExceeded}
}

// sqlError classifies a DuckDB error of user SQL: problems of the statement
// are *SQLError, failures of the machinery are internal.
func sqlError(err error) error {
	var de *duckdb.Error
	if !errors.As(err, &de) {
		return fmt.Errorf("query: %w", err)
	}
	switch de.Type {
	case duckdb.ErrorTypeInternal, duckdb.ErrorTypeFatal, duckdb.ErrorTypeIO, duckdb.ErrorTypeConnection:
		return fmt.Errorf("query: %w", err)
	}
	return &SQLError{Message: de.Msg, Err: err}
}

// reMissingTable finds the table name in DuckDB's error for a table that
// does not exist.
var reMissingTable = regexp.MustCompile(`Table with name (.+?) does not exist!`)

// otherTableError rewrites DuckDB's error for a table that does not exist
// (which suggests some system table instead: Did you mean "pg_sequence"?)
// to say that a query reads only its own dataset. Other errors are returned
// as they are.
func otherTableError(err error, dataset string) error {
	var se *SQLError
	if !errors.As(err, &se) {
		return err
	}
	m := reMissingTable.FindStringSubmatch(se.Message)
	if m == nil {
		return err
	}
	return &SQLError{
		Message: fmt.Sprintf("table %q does not exist: a query reads only the dataset it names (here: %s), as the table %s; to read dataset %s, send the query to that dataset (POST /v1/datasets/%s/query, or timestore query %s)",
			m[1], dataset, dataset, m[1], m[1], m[1]),
		Err: se.Err,
	}
}

// Columns describes the result columns.
func (r *Rows) Columns() []ColumnInfo { return r.columns }

// Next advances to the next row; it returns false at the end or on error
// (see Err). At the end the sandbox is released.
func (r *Rows) Next() bool {
	if r.closed || r.err != nil || r.rows == nil {
		return false
	}
	if err := r.rows.Next(r.dest); err != nil {
		if !errors.Is(err, io.EOF) {
			r.err = sqlError(err)
			if !errors.As(r.err, new(*SQLError)) {
				r.broken = true
			}
		}
		_ = r.Close()
		return false
	}
	vals := make([]any, len(r.dest))
	for i, v := range r.dest {
		vals[i] = goValue(v, r.columns[i].Type)
	}
	r.values = vals
	return true
}

// Values returns the current row: time.Time (UTC) for timestamps, int64,
// float64, string, bool, nil; DATE, TIME, INTERVAL, UUID and BLOB as strings,
// HUGEINT as int64 (string if too large), DECIMAL as float64, lists as []any
// and structs and maps as map[string]any. The slice is the caller's.
func (r *Rows) Values() []any { return r.values }

// Err returns the error that ended iteration, if any.
func (r *Rows) Err() error { return r.err }

// Close releases the result and its sandbox. It is safe to call twice.
func (r *Rows) Close() error {
	if r.closed {
		return nil
	}
	r.closed = true
	var errs []error
	if r.rows != nil {
		errs = append(errs, r.rows.Close())
	}
	if r.stmt != nil {
		errs = append(errs, r.stmt.Close())
	}
	if r.conn != nil {
		errs = append(errs, r.conn.Close())
	}
	r.e.sandboxes.put(r.sb, !r.broken && errors.Join(errs...) == nil)
	r.cancel()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("query: close: %w", err)
	}
	return nil
}

// goValue converts a driver value to the plain Go values Rows promises.
func goValue(v any, dbType string) any {
	switch x := v.(type) {
	case nil, bool, string, int64, float64:
		return x
	case int8:
		return int64(x)
	case int16:
		return int64(x)
	case int32:
		return int64(x)
	case uint8:
		return int64(x)
	case uint16:
		return int64(x)
	case uint32:
		return int64(x)
	case uint64:
		if x > math.MaxInt64 {
			return fmt.Sprint(x)
		}
		return int64(x)
	case float32:
		return float64(x)
	case *big.Int:
		if x.IsInt64() {
			return x.Int64()
		}
		return x.String()
	case duckdb.Decimal:
		return x.Float64()
	case time.Time:
		switch dbType {
		case "DATE":
			return x.Format("2006-01-02")
		case "TIME":
			return x.Format("15:04:05.999999")
		case "TIMETZ":
			return x.Format("15:04:05.999999Z07:00")
		}
		return x.UTC()
	case duckdb.Interval:
		return formatInterval(x)
	case []byte:
		if dbType == "UUID" && len(x) == 16 {
			h := hex.EncodeToString(x)
			return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
		}
		return `\x` + hex.EncodeToString(x)
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = goValue(e, "")
		}
		return out
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = goValue(e, "")
		}
		return out
	case duckdb.OrderedMap:
		keys, vals := x.Keys(), x.Values()
		out := make(map[string]any, len(keys))
		for i, k := range keys {
			out[fmt.Sprint(goValue(k, ""))] = goValue(vals[i], "")
		}
		return out
	case duckdb.Map:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[fmt.Sprint(goValue(k, ""))] = goValue(e, "")
		}
		return out
	case duckdb.Union:
		return goValue(x.Value, "")
	case fmt.Stringer:
		return x.String()
	}
	return fmt.Sprint(v)
}

// formatInterval renders an interval the way DuckDB prints it, e.g.
// "1 month 2 days 03:04:05.5".
func formatInterval(iv duckdb.Interval) string {
	var parts []string
	plural := func(n int64, unit string) string {
		if n == 1 || n == -1 {
			return fmt.Sprintf("%d %s", n, unit)
		}
		return fmt.Sprintf("%d %ss", n, unit)
	}
	if y, m := iv.Months/12, iv.Months%12; y != 0 || m != 0 {
		if y != 0 {
			parts = append(parts, plural(int64(y), "year"))
		}
		if m != 0 {
			parts = append(parts, plural(int64(m), "month"))
		}
	}
	if iv.Days != 0 {
		parts = append(parts, plural(int64(iv.Days), "day"))
	}
	if iv.Micros != 0 || len(parts) == 0 {
		us := iv.Micros
		sign := ""
		if us < 0 {
			sign, us = "-", -us
		}
		d := time.Duration(us) * time.Microsecond
		h := int64(d / time.Hour)
		mnt := int64(d % time.Hour / time.Minute)
		sec := d % time.Minute
		s := fmt.Sprintf("%s%02d:%02d:%02d", sign, h, mnt, int64(sec/time.Second))
		if frac := int64(sec % time.Second / time.Microsecond); frac != 0 {
			s += strings.TrimRight(fmt.Sprintf(".%06d", frac), "0")
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, " ")
}
