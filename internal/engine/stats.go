package engine

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/big"
	"os"
	"strconv"
	"strings"
	"time"

	"timestore/internal/catalog"
)

// windowExpr is SQL for the UTC start of the partition window of the time column.
func windowExpr(ds catalog.Dataset) string {
	tc, _ := ds.Column(ds.TimeColumn)
	col := quoteIdent(tc.Name)
	if tc.Type == catalog.TypeTimestampTZ {
		// The UTC wall clock of the instant, without ICU calendar arithmetic.
		col = "make_timestamp(epoch_us(" + col + "))"
	}
	return fmt.Sprintf("CAST(date_trunc(%s, %s) AS TIMESTAMP)", quoteString(ds.Partition), col)
}

// statsSQL is the one statistics query of the package, used for freshly
// ingested rows and for existing Parquet files alike. source is a table name
// or a table function call. With byWindow, it returns one row per partition
// window (first column: the window start), ordered by window; otherwise one
// row for the whole source. The remaining columns are the row count and, per
// dataset column in schema order, count, min and max.
func statsSQL(ds catalog.Dataset, source string, byWindow bool) string {
	var b strings.Builder
	b.WriteString("SELECT ")
	if byWindow {
		b.WriteString(windowExpr(ds))
		b.WriteString(" AS window_start, ")
	}
	b.WriteString("count(*)")
	for _, c := range ds.Columns {
		q := quoteIdent(c.Name)
		fmt.Fprintf(&b, ", count(%s), min(%s), max(%s)", q, q, q)
	}
	b.WriteString(" FROM ")
	b.WriteString(source)
	if byWindow {
		b.WriteString(" GROUP BY 1 ORDER BY 1 NULLS FIRST")
	}
	return b.String()
}

// scanStats reads the rows of statsSQL into partition files (everything but
// the path-dependent SizeBytes, Target, Key and Checksum). With byWindow, a
// window start of NULL (rows without a time value) yields a zero WindowStart.
func scanStats(rows *sql.Rows, ds catalog.Dataset, byWindow bool) ([]catalog.PartitionFile, error) {
	defer rows.Close()
	n := 1 + 3*len(ds.Columns)
	if byWindow {
		n++
	}
	vals := make([]any, n)
	ptrs := make([]any, n)
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	timeIdx := -1
	for i, c := range ds.Columns {
		if c.Name == ds.TimeColumn {
			timeIdx = i
		}
	}
	var out []catalog.PartitionFile
	for rows.Next() {
		if err := rows.Scan(ptrs...); err != nil {
			return nil, fmt.Errorf("scan stats: %w", err)
		}
		v := vals
		var pf catalog.PartitionFile
		if byWindow {
			if t, ok := v[0].(time.Time); ok {
				pf.WindowStart = t.UTC()
			}
			v = v[1:]
		}
		count, err := toInt64(v[0])
		if err != nil {
			return nil, fmt.Errorf("scan stats: row count: %w", err)
		}
		pf.RowCount = count
		pf.Stats = make([]catalog.ColumnStats, len(ds.Columns))
		for i, c := range ds.Columns {
			nonNull, err := toInt64(v[1+3*i])
			if err != nil {
				return nil, fmt.Errorf("scan stats: column %s: %w", c.Name, err)
			}
			pf.Stats[i] = catalog.ColumnStats{
				Column:    c.Name,
				Min:       renderStat(v[2+3*i]),
				Max:       renderStat(v[3+3*i]),
				NullCount: count - nonNull,
			}
			if i == timeIdx {
				if t, ok := v[2+3*i].(time.Time); ok {
					pf.TimeMin = t.UTC()
				}
				if t, ok := v[3+3*i].(time.Time); ok {
					pf.TimeMax = t.UTC()
				}
			}
		}
		if !byWindow && !pf.TimeMin.IsZero() {
			pf.WindowStart = catalog.WindowStart(ds.Partition, pf.TimeMin)
		}
		out = append(out, pf)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read stats: %w", err)
	}
	return out, nil
}

// renderStat renders a min or max value as catalog.ColumnStats text:
// timestamps in RFC 3339 (UTC), numbers in their shortest exact form.
func renderStat(v any) *string {
	var s string
	switch x := v.(type) {
	case nil:
		return nil
	case time.Time:
		s = x.UTC().Format(time.RFC3339Nano)
	case float64:
		s = strconv.FormatFloat(x, 'g', -1, 64)
	case float32:
		s = strconv.FormatFloat(float64(x), 'g', -1, 32)
	case int64:
		s = strconv.FormatInt(x, 10)
	case int32:
		s = strconv.FormatInt(int64(x), 10)
	case bool:
		s = strconv.FormatBool(x)
	case string:
		s = x
	default:
		s = fmt.Sprint(x)
	}
	return &s
}

// toInt64 converts an integer as returned by DuckDB.
func toInt64(v any) (int64, error) {
	switch x := v.(type) {
	case int64:
		return x, nil
	case int32:
		return int64(x), nil
	case uint64:
		return int64(x), nil
	case *big.Int:
		return x.Int64(), nil
	}
	return 0, fmt.Errorf("unexpected count type %T", v)
}

// FileStats recomputes the statistics of an existing Parquet file of ds, as
// PrepareIngest reports them: row count, time range, size and per-column
// min, max and null count. WindowStart is the window of the earliest row.
// Target, Key, Checksum and Level are left empty.
func (e *Engine) FileStats(ctx context.Context, ds catalog.Dataset, path string) (catalog.PartitionFile, error) {
	ctx, span := e.startSpan(ctx, spanFileStats, attrDataset.String(ds.Name))
	pf, err := e.fileStats(ctx, ds, path)
	span.SetAttributes(attrRows.Int64(pf.RowCount), attrBytes.Int64(pf.SizeBytes))
	endSpan(span, err)
	return pf, err
}

func (e *Engine) fileStats(ctx context.Context, ds catalog.Dataset, path string) (catalog.PartitionFile, error) {
	if err := e.checkOpen(); err != nil {
		return catalog.PartitionFile{}, err
	}
	if err := checkDataset(ds); err != nil {
		return catalog.PartitionFile{}, err
	}
	fi, err := os.Stat(path)
	if err != nil {
		return catalog.PartitionFile{}, fmt.Errorf("file stats: %w", err)
	}
	source := "read_parquet(" + quoteString(path) + ")"
	rows, err := e.db.QueryContext(ctx, statsSQL(ds, source, false))
	if err != nil {
		return catalog.PartitionFile{}, fmt.Errorf("file stats %s: %w", path, err)
	}
	files, err := scanStats(rows, ds, false)
	if err != nil {
		return catalog.PartitionFile{}, fmt.Errorf("file stats %s: %w", path, err)
	}
	if len(files) != 1 {
		return catalog.PartitionFile{}, errors.New("file stats: no result row")
	}
	pf := files[0]
	pf.SizeBytes = fi.Size()
	return pf, nil
}
