package testserver

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"timestore/internal/client"
)

// CPUColumns are the columns of the cpu datasets the tests create: a
// timestamp ts, a varchar host and a double value.
var CPUColumns = []client.Column{{Name: "ts", Type: "timestamp"}, {Name: "host", Type: "varchar"}, {Name: "value", Type: "double"}}

// CreateCPU creates a dataset of CPUColumns with ts as its time column.
func (b *Bundle) CreateCPU(t testing.TB, name, target, partition string) {
	t.Helper()
	_, err := b.Client.CreateDataset(context.Background(), client.CreateDataset{
		Name: name, Columns: CPUColumns, TimeColumn: "ts", Partition: partition, Target: target,
	})
	require.NoError(t, err)
}

// Row is one generated cpu row.
type Row struct {
	TS    time.Time
	Host  string
	Value float64
}

// GenRows returns n rows step apart from start, over seven hosts.
func GenRows(n int, start time.Time, step time.Duration) []Row {
	rows := make([]Row, n)
	for i := range rows {
		rows[i] = Row{TS: start.Add(time.Duration(i) * step), Host: fmt.Sprintf("h%d", i%7), Value: float64(i%1000)/8 - 3}
	}
	return rows
}

// Encode writes rows as an ingest body in format "csv", "ndjson" or "json".
func Encode(format string, rows []Row) string {
	var sb strings.Builder
	switch format {
	case "csv":
		sb.WriteString("ts,host,value\n")
		for _, r := range rows {
			fmt.Fprintf(&sb, "%s,%s,%v\n", r.TS.Format(time.RFC3339Nano), r.Host, r.Value)
		}
	case "ndjson":
		for _, r := range rows {
			fmt.Fprintf(&sb, `{"ts":%q,"host":%q,"value":%v}`+"\n", r.TS.Format(time.RFC3339Nano), r.Host, r.Value)
		}
	case "json":
		sb.WriteString("[")
		for i, r := range rows {
			if i > 0 {
				sb.WriteString(",")
			}
			fmt.Fprintf(&sb, `{"ts":%q,"host":%q,"value":%v}`, r.TS.Format(time.RFC3339Nano), r.Host, r.Value)
		}
		sb.WriteString("]")
	}
	return sb.String()
}

// Aggregates summarise cpu rows: count, sum, min and max of value, and the
// first and last ts.
type Aggregates struct {
	Count         int64
	Sum, Min, Max float64
	TMin, TMax    time.Time
}

// Expected computes the Aggregates of rows in Go, to compare with a query's.
func Expected(rows []Row) Aggregates {
	a := Aggregates{Min: math.Inf(1), Max: math.Inf(-1)}
	for i, r := range rows {
		a.Count++
		a.Sum += r.Value
		a.Min = math.Min(a.Min, r.Value)
		a.Max = math.Max(a.Max, r.Value)
		if i == 0 || r.TS.Before(a.TMin) {
			a.TMin = r.TS
		}
		if i == 0 || r.TS.After(a.TMax) {
			a.TMax = r.TS
		}
	}
	return a
}

// Num reads a JSON number from a query answer's cell.
func Num(t testing.TB, v any) float64 {
	t.Helper()
	n, ok := v.(json.Number)
	require.True(t, ok, "want a number, got %T %v", v, v)
	f, err := n.Float64()
	require.NoError(t, err)
	return f
}

// Aggregates queries the Aggregates of dataset name between from and to
// (either may be empty) through the HTTP API.
func (b *Bundle) Aggregates(t testing.TB, name string, from, to string) Aggregates {
	t.Helper()
	res, err := b.Client.Query(context.Background(), name, client.QueryRequest{
		SQL:  fmt.Sprintf("SELECT count(*), coalesce(sum(value), 0), min(value), max(value), min(ts), max(ts) FROM %s", name),
		From: from, To: to,
	})
	require.NoError(t, err)
	require.Len(t, res.Rows, 1)
	r := res.Rows[0]
	a := Aggregates{Count: int64(Num(t, r[0])), Sum: Num(t, r[1])}
	if a.Count > 0 {
		a.Min, a.Max = Num(t, r[2]), Num(t, r[3])
		var err error
		a.TMin, err = time.Parse(time.RFC3339Nano, r[4].(string))
		require.NoError(t, err)
		a.TMax, err = time.Parse(time.RFC3339Nano, r[5].(string))
		require.NoError(t, err)
	}
	return a
}

// RequireAggregates fails the test unless got equals want (the sum within
// 1e-6).
func RequireAggregates(t testing.TB, want, got Aggregates) {
	t.Helper()
	require.Equal(t, want.Count, got.Count, "row count")
	require.InDelta(t, want.Sum, got.Sum, 1e-6, "sum")
	if want.Count > 0 {
		require.Equal(t, want.Min, got.Min, "min")
		require.Equal(t, want.Max, got.Max, "max")
		require.True(t, want.TMin.Equal(got.TMin), "min(ts) want %s got %s", want.TMin, got.TMin)
		require.True(t, want.TMax.Equal(got.TMax), "max(ts) want %s got %s", want.TMax, got.TMax)
	}
}
