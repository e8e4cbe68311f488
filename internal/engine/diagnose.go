package engine

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	duckdb "github.com/duckdb/duckdb-go/v2"

	"timestore/internal/catalog"
)

// explain turns the rows the exact read could not ingest into the user's
// error: why the read failed, no rows, a missing time column or value.
// Columns outside the schema cannot come from the exact read: that is an
// internal error.
func (s *source) explain(ctx context.Context, conn *sql.Conn, rejected *rejectedRead) error {
	switch rejected.reason {
	case readFailed:
		if ctx.Err() != nil {
			return fmt.Errorf("prepare ingest: %w", ctx.Err())
		}
		return s.diagnose(ctx, conn, rejected.cause)
	case noRows:
		return &InputError{Message: "no rows"}
	case timeNulls:
		if s.missingTime {
			return &InputError{Column: s.ds.TimeColumn, Message: "missing time column: no object has the key"}
		}
		return s.diagnose(ctx, conn, nil)
	}
	return errors.New("prepare ingest: the typed read returned columns outside the schema")
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
		if c.Type != catalog.TypeVarchar {
			cond = fmt.Sprintf("(%s IS NOT NULL AND %s IS NULL)", q, valueExpr(q, c.Type, true))
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
				return &InputError{Row: row, Column: c.Name, Message: fmt.Sprintf("value %q is not a valid %s: %s", v, c.Type, typeHint(c.Type))}
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
