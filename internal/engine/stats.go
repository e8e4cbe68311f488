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

	duckdb "github.com/duckdb/duckdb-go/v2"

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

// statsColumns is the select list of a statistics row: the row count and,
// per dataset column in schema order, count, min and max.
func statsColumns(ds catalog.Dataset) string {
	var b strings.Builder
	b.WriteString("count(*)")
	for _, c := range ds.Columns {
		q := quoteIdent(c.Name)
		fmt.Fprintf(&b, ", count(%s), min(%s), max(%s)", q, q, q)
	}
	return b.String()
}

// statsSQL is the statistics query of existing Parquet files: one row for
// the whole source (a table function call), as scanStats reads it.
func statsSQL(ds catalog.Dataset, source string) string {
	return "SELECT " + statsColumns(ds) + " FROM " + source
}

// scanStats reads statistics rows (statsColumns, or the writer's statistics
// rendered by writerStatsSQL) into partition files: everything but the
// path-dependent SizeBytes, Target, Key and Checksum. WindowStart is the
// window of the earliest row. With keys set, every row starts with a BIGINT
// key, appended to *keys in the order of the files returned.
func scanStats(rows *sql.Rows, ds catalog.Dataset, keys *[]int64) ([]catalog.PartitionFile, error) {
	defer rows.Close()
	n := 1 + 3*len(ds.Columns)
	if keys != nil {
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
		if keys != nil {
			k, err := toInt64(v[0])
			if err != nil {
				return nil, fmt.Errorf("scan stats: key: %w", err)
			}
			*keys = append(*keys, k)
			v = v[1:]
		}
		var pf catalog.PartitionFile
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
		if !pf.TimeMin.IsZero() {
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

// parseWriterStats reads the column_statistics of COPY ... RETURN_STATS:
// per column, its statistics (min, max, null_count, has_nan, ...) as text.
func parseWriterStats(stats duckdb.OrderedMap) map[string]map[string]string {
	columns := map[string]map[string]string{}
	for i, k := range stats.Keys() {
		// Keys are column paths with quoted identifiers: "ts".
		col, _ := k.(string)
		if len(col) >= 2 && col[0] == '"' && col[len(col)-1] == '"' {
			col = strings.ReplaceAll(col[1:len(col)-1], `""`, `"`)
		}
		inner, ok := stats.Values()[i].(duckdb.OrderedMap)
		if !ok {
			continue
		}
		m := map[string]string{}
		for j, ik := range inner.Keys() {
			key, _ := ik.(string)
			if v, ok := inner.Values()[j].(string); ok {
				m[key] = v
			}
		}
		columns[col] = m
	}
	return columns
}

// writerStatsSQL renders the writer's statistics of a file of rows rows as
// the select list of a statistics row (see scanStats): the row count and,
// per column, the non-null count, min and max. ok is false when they are not
// complete and exact for every column.
func writerStatsSQL(ds catalog.Dataset, rows int64, columns map[string]map[string]string) (string, bool) {
	var b strings.Builder
	fmt.Fprintf(&b, "CAST(%d AS BIGINT)", rows)
	for _, c := range ds.Columns {
		st, ok := columns[c.Name]
		if !ok {
			return "", false
		}
		nulls, err := strconv.ParseInt(st["null_count"], 10, 64)
		if err != nil || nulls < 0 || nulls > rows {
			return "", false
		}
		t, _ := sqlType(c.Type)
		mn, hasMin := st["min"]
		mx, hasMax := st["max"]
		nonNull := rows - nulls
		switch {
		case nonNull > 0 && (!hasMin || !hasMax):
			return "", false // e.g. strings too long for statistics
		case st["has_nan"] == "true":
			return "", false // min/max disagree with DuckDB's NaN ordering
		case c.Type == catalog.TypeDouble && (strings.HasPrefix(mn, "-0") || strings.HasPrefix(mx, "-0")):
			return "", false // the sign of a zero may differ
		case strings.ContainsRune(mn, 0) || strings.ContainsRune(mx, 0):
			return "", false // a NUL byte would end the SQL text passed to DuckDB
		}
		lit := func(v string) string {
			if nonNull == 0 {
				return "NULL"
			}
			return fmt.Sprintf("CAST(%s AS %s)", quoteString(v), t)
		}
		fmt.Fprintf(&b, ", CAST(%d AS BIGINT), %s, %s", nonNull, lit(mn), lit(mx))
	}
	return b.String(), true
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
	rows, err := e.db.QueryContext(ctx, statsSQL(ds, source))
	if err != nil {
		return catalog.PartitionFile{}, fmt.Errorf("file stats %s: %w", path, err)
	}
	files, err := scanStats(rows, ds, nil)
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
