package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"timestore/internal/catalog"
)

// diffOutcome is what comparing the native and the DuckDB path found.
type diffOutcome int

const (
	// diffFallback: the native path left the input to DuckDB.
	diffFallback diffOutcome = iota
	// diffSame: both accepted, with the same rows, schema and statistics.
	diffSame
)

// diffIngest ingests content with the native path and with the DuckDB path
// and requires that an input the native path accepts is accepted by DuckDB
// too, with files of the same windows, rows (as DuckDB reads them back),
// Parquet schema and statistics. An input the native path does not read
// must leave no file.
func diffIngest(t *testing.T, ds catalog.Dataset, format Format, content string) diffOutcome {
	t.Helper()
	in := writeFile(t, t.TempDir(), "in", content)
	nativeDir, duckDir := t.TempDir(), t.TempDir()
	native, nerr := testEngine.prepareNative(ds, format, in, nativeDir)
	duck, derr := testEngine.prepareDuckDB(context.Background(), ds, format, in, duckDir)
	if errors.Is(nerr, errNotNative) {
		left, err := os.ReadDir(nativeDir)
		require.NoError(t, err)
		require.Empty(t, left, "the native path left files")
		return diffFallback
	}
	require.NoError(t, nerr)
	require.NoError(t, derr, "the native path accepted what DuckDB refuses:\n%s", content)
	require.Len(t, native, len(duck), "files:\n%s", content)
	for i := range native {
		n, d := native[i], duck[i]
		require.Equal(t, d.WindowStart, n.WindowStart)
		require.Equal(t, d.TimeMin, n.TimeMin, "time min")
		require.Equal(t, d.TimeMax, n.TimeMax, "time max")
		require.Equal(t, d.RowCount, n.RowCount)
		require.Equal(t, d.Stats, n.Stats, "statistics of window %s:\n%s", n.WindowStart, content)
		fi, err := os.Stat(n.Path)
		require.NoError(t, err)
		require.Equal(t, fi.Size(), n.SizeBytes)
		require.Equal(t, strings.TrimSuffix(fileNamePrefix(d.Path), "-"), strings.TrimSuffix(fileNamePrefix(n.Path), "-"))
		require.Equal(t, parquetSchema(t, d.Path), parquetSchema(t, n.Path))
		require.Equal(t, parquetPhysical(t, d.Path), parquetPhysical(t, n.Path))
		nrows, drows := readParquet(t, n.Path), readParquet(t, d.Path)
		requireTimeOrder(t, ds, nrows)
		requireTimeOrder(t, ds, drows)
		require.Equal(t, canonicalRows(drows), canonicalRows(nrows), "rows of window %s:\n%s", n.WindowStart, content)
	}
	return diffSame
}

// fileNamePrefix is a partition file's name up to its suffix: dataset and
// window.
func fileNamePrefix(path string) string {
	base := path[strings.LastIndex(path, "/")+1:]
	i := strings.LastIndex(base, "Z-")
	return base[:i+2]
}

// parquetPhysical lists name, physical type, logical and converted type
// and repetition of every column, as parquet_schema() reads them.
func parquetPhysical(t testing.TB, path string) []string {
	t.Helper()
	rows, err := testEngine.db.QueryContext(context.Background(),
		"SELECT concat_ws(' ', name, type, converted_type, CAST(logical_type AS VARCHAR), repetition_type) FROM parquet_schema("+quoteString(path)+") WHERE num_children IS NULL OR num_children = 0")
	require.NoError(t, err)
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		require.NoError(t, rows.Scan(&s))
		out = append(out, s)
	}
	require.NoError(t, rows.Err())
	return out
}

func requireTimeOrder(t *testing.T, ds catalog.Dataset, rows [][]any) {
	t.Helper()
	ti := slices.IndexFunc(ds.Columns, func(c catalog.Column) bool { return c.Name == ds.TimeColumn })
	for i := 1; i < len(rows); i++ {
		a, b := rows[i-1][ti].(time.Time), rows[i][ti].(time.Time)
		require.False(t, b.Before(a), "row %d before row %d", i+1, i)
	}
}

// canonicalRows renders rows as text (NaN and the sign of zero kept),
// sorted: rows of equal time may be in either order.
func canonicalRows(rows [][]any) []string {
	out := make([]string, len(rows))
	for i, r := range rows {
		parts := make([]string, len(r))
		for j, v := range r {
			switch x := v.(type) {
			case time.Time:
				parts[j] = x.UTC().Format(time.RFC3339Nano)
			case float64:
				parts[j] = strconv.FormatFloat(x, 'g', -1, 64)
				if x == 0 && math.Signbit(x) {
					parts[j] = "-0"
				}
			default:
				parts[j] = fmt.Sprintf("%T:%#v", v, v)
			}
		}
		out[i] = strings.Join(parts, "|")
	}
	slices.Sort(out)
	return out
}

// TestNativeValues runs the type × value table and the JSON literals
// through both paths: whatever the native path accepts, DuckDB accepts with
// the same value and statistics; the rest it leaves to DuckDB.
func TestNativeValues(t *testing.T) {
	t.Parallel()
	var native, fallback int
	count := func(o diffOutcome) {
		if o == diffSame {
			native++
		} else {
			fallback++
		}
	}
	for _, tc := range valueCases() {
		field := tc.text
		if strings.ContainsAny(field, ", \"") {
			field = `"` + strings.ReplaceAll(field, `"`, `""`) + `"`
		}
		ds := valueDataset(tc.typ)
		o := diffIngest(t, ds, FormatCSV, "t,v\n2024-03-01T00:00:00Z,"+field+"\n")
		require.False(t, tc.want == refused && o == diffSame, "%s %q", tc.typ, tc.text)
		count(o)
		o = diffIngest(t, ds, FormatNDJSON, `{"t":"2024-03-01T00:00:00Z","v":`+strconv.Quote(tc.text)+"}\n")
		require.False(t, tc.want == refused && o == diffSame, "%s %q", tc.typ, tc.text)
		count(o)
		count(diffIngest(t, ds, FormatJSON, `[{"t":"2024-03-01T00:00:00Z","v":`+strconv.Quote(tc.text)+"}]"))
	}
	for _, typ := range []string{catalog.TypeInteger, catalog.TypeBigint, catalog.TypeDouble, catalog.TypeBoolean, catalog.TypeTimestamp, catalog.TypeTimestampTZ, catalog.TypeVarchar} {
		for _, lit := range []string{"42", "-0", "9007199254740993", "1.5", "1.0", "1e3", "-0.0", "true", "false", "null", `""`, "[1]", `{"a":1}`, "1e400", "99999999999999999999", "0", "1", "2.5e-310"} {
			count(diffIngest(t, valueDataset(typ), FormatNDJSON, `{"t":"2024-03-01T00:00:00Z","v":`+lit+"}\n"))
		}
		for _, field := range []string{"", `""`} {
			count(diffIngest(t, valueDataset(typ), FormatCSV, "t,v\n2024-03-01T00:00:00Z,"+field+"\n"))
		}
	}
	// JSON string escapes and white space.
	for _, line := range []string{
		`{"t":"2024-03-01T00:00:00Z","v":"\u00e9\/\\\"\b\f\n\r\t"}`,
		`{"t":"2024-03-01T00:00:00Z","v":"\ud83c\udf89 \u2028"}`,
		`{"t":"2024-03-01T00:00:00Z","v":"\ud83c"}`,
		`{"t":"2024-03-01T00:00:00Z","v":"\u0000"}`,
		`{"t":"2024-03-01T00:00:00Z","v":"a	b"}`,
		` { "t" : "2024-03-01T00:00:00Z" ,	"v" : "x" } `,
		`{"t":"2024-03-01T00:00:00Z","v":"x"}{"t":"2024-03-01T00:00:00Z"}`,
		`{"t":"2024-03-01T00:00:00Z","v":"x",}`,
		`{"t":"2024-03-01T00:00:00Z","t":"2024-03-01T00:00:01Z"}`,
		`{"t":"2024-03-01T00:00:00Z","V":"x"}`,
		`{}`,
	} {
		count(diffIngest(t, valueDataset(catalog.TypeVarchar), FormatNDJSON, line+"\n"))
	}
	t.Logf("native: %d inputs, left to DuckDB: %d", native, fallback)
	require.Greater(t, native, 100, "the native path read few inputs")
}

// randomBatch is a random dataset and a batch of rows for it in each
// format; bad, when set, has one value (or key) that may be refused.
type randomBatch struct {
	ds                   catalog.Dataset
	csv, ndjson, jsonArr string
}

var randomStrings = []string{"", "x", "hello, world", `say "hi"`, "ünïcödé", "日本語", "emoji 🎉", " padded ", "line\nbreak", "tab\there", "a,b,c", "NULL", "null", "1.5", "true", "\\N", "'", "ÿ", "zz", "A", "<a&b>", "\u2028", "é\\/"}

func randomTimeText(r *rand.Rand, exotic bool) (string, time.Time) {
	base := time.Date(2024, 3, 1, 0, 0, 0, 0, time.UTC)
	t := base.Add(time.Duration(r.Int64N(int64(6 * time.Hour))))
	if r.IntN(3) == 0 {
		t = t.Truncate(time.Second)
	} else {
		t = t.Truncate(time.Microsecond)
	}
	form := r.IntN(5)
	if exotic && r.IntN(3) == 0 {
		form = 5
	}
	switch form {
	case 0:
		return t.Format("2006-01-02T15:04:05.999999Z"), t
	case 1:
		return t.Format("2006-01-02 15:04:05.999999"), t
	case 2:
		loc := time.FixedZone("", (r.IntN(29)-14)*3600+r.IntN(2)*1800)
		return t.In(loc).Format("2006-01-02T15:04:05.999999-07:00"), t
	case 3:
		return t.Format("2006-01-02T15:04:05.000"), t.Truncate(time.Millisecond)
	case 5:
		// A form the native path leaves to DuckDB.
		return t.Format("2006-01-02T15:04:05-0700"), t.Truncate(time.Second)
	}
	return t.Format(time.RFC3339Nano), t
}

func randomValue(r *rand.Rand, typ string, bad, exotic bool) (text string, jsonLit string) {
	if bad {
		v := []string{"1.5", "abc", "0x10", "", "1e3", "true", "NaN", "-0", "2024-02-30T00:00:00", " 5", "+7"}[r.IntN(11)]
		return v, strconv.Quote(v)
	}
	switch typ {
	case catalog.TypeInteger:
		n := []int64{0, 1, -1, 42, math.MaxInt32, math.MinInt32, r.Int64N(1000) - 500}[r.IntN(7)]
		s := strconv.FormatInt(n, 10)
		return s, s
	case catalog.TypeBigint:
		n := []int64{0, -1, math.MaxInt64, math.MinInt64, 9007199254740993, r.Int64()}[r.IntN(6)]
		s := strconv.FormatInt(n, 10)
		if r.IntN(4) == 0 {
			return s, strconv.Quote(s)
		}
		return s, s
	case catalog.TypeDouble:
		f := []float64{0, 1.5, -0.25, 6.02e23, 1e-300, math.MaxFloat64, -math.MaxFloat64, 0.1, 1.0 / 3, r.NormFloat64() * 1e6, math.SmallestNonzeroFloat64, math.Copysign(0, -1)}[r.IntN(10)]
		if exotic && r.IntN(5) == 0 {
			f = []float64{math.SmallestNonzeroFloat64, math.Copysign(0, -1)}[r.IntN(2)]
		}
		s := strconv.FormatFloat(f, 'g', -1, 64)
		if r.IntN(3) == 0 {
			s = strconv.FormatFloat(f, 'e', -1, 64)
		}
		if r.IntN(4) == 0 {
			return s, strconv.Quote(s)
		}
		return s, s
	case catalog.TypeBoolean:
		b := strconv.FormatBool(r.IntN(2) == 0)
		if r.IntN(4) == 0 {
			return b, strconv.Quote(b)
		}
		return b, b
	case catalog.TypeTimestamp, catalog.TypeTimestampTZ:
		s, _ := randomTimeText(r, exotic)
		return s, strconv.Quote(s)
	}
	s := randomStrings[r.IntN(len(randomStrings))]
	b, _ := json.Marshal(s)
	return s, string(b)
}

func csvField(s string) string {
	if s == "" || strings.ContainsAny(s, ",\"\n\r") || strings.TrimSpace(s) != s {
		return `"` + strings.ReplaceAll(s, `"`, `""`) + `"`
	}
	return s
}

func newRandomBatch(r *rand.Rand) randomBatch {
	types := []string{catalog.TypeInteger, catalog.TypeBigint, catalog.TypeDouble, catalog.TypeBoolean, catalog.TypeVarchar, catalog.TypeTimestamp, catalog.TypeTimestampTZ}
	names := []string{"ts", "value", "host", "unit_2", "n", "flag", "region", "when_"}
	r.Shuffle(len(names), func(i, j int) { names[i], names[j] = names[j], names[i] })
	ncol := 1 + r.IntN(5)
	timeType := catalog.TypeTimestamp
	if r.IntN(2) == 0 {
		timeType = catalog.TypeTimestampTZ
	}
	ds := catalog.Dataset{Name: "rnd", TimeColumn: names[0], Partition: []string{catalog.WindowHour, catalog.WindowDay}[r.IntN(2)]}
	ds.Columns = append(ds.Columns, catalog.Column{Name: names[0], Type: timeType})
	for i := 1; i < ncol; i++ {
		ds.Columns = append(ds.Columns, catalog.Column{Name: names[i], Type: types[r.IntN(len(types))]})
	}
	r.Shuffle(len(ds.Columns), func(i, j int) { ds.Columns[i], ds.Columns[j] = ds.Columns[j], ds.Columns[i] })
	nrows := 1 + r.IntN(40)
	exotic := r.IntN(4) == 0
	badRow, badCol := -1, -1
	if r.IntN(5) == 0 {
		badRow, badCol = r.IntN(nrows), r.IntN(len(ds.Columns))
	}
	var csvB, ndB, arrB strings.Builder
	for i, c := range ds.Columns {
		if i > 0 {
			csvB.WriteString(",")
		}
		csvB.WriteString(csvField(c.Name))
	}
	csvB.WriteString("\n")
	arrB.WriteString("[")
	for i := range nrows {
		var obj []string
		for j, c := range ds.Columns {
			isTimeCol := c.Name == ds.TimeColumn
			null := !isTimeCol && r.IntN(6) == 0
			text, lit := randomValue(r, c.Type, i == badRow && j == badCol, exotic)
			if j > 0 {
				csvB.WriteString(",")
			}
			if null {
				if r.IntN(2) == 0 {
					obj = append(obj, strconv.Quote(c.Name)+":null")
				}
				continue
			}
			csvB.WriteString(csvField(text))
			key, _ := json.Marshal(c.Name)
			obj = append(obj, string(key)+":"+lit)
		}
		csvB.WriteString("\n")
		r.Shuffle(len(obj), func(a, b int) { obj[a], obj[b] = obj[b], obj[a] })
		line := "{" + strings.Join(obj, ",") + "}"
		ndB.WriteString(line + "\n")
		if i > 0 {
			arrB.WriteString(",\n")
		}
		arrB.WriteString(line)
	}
	arrB.WriteString("]")
	return randomBatch{ds: ds, csv: csvB.String(), ndjson: ndB.String(), jsonArr: arrB.String()}
}

// TestNativeRandomBatches is the property test: random schemas and batches
// (random types, NULLs and absent keys, unicode, times out of order over
// several windows and in several forms, edge numbers, now and then a bad
// value) in every format; whatever the native path accepts, DuckDB accepts
// with the same files.
func TestNativeRandomBatches(t *testing.T) {
	t.Parallel()
	seeds := 150
	if testing.Short() {
		seeds = 30
	}
	// TIMESTORE_TEST_NATIVE_SEEDS=n runs n seeds (a longer search).
	if n, err := strconv.Atoi(os.Getenv("TIMESTORE_TEST_NATIVE_SEEDS")); err == nil && n > 0 {
		seeds = n
	}
	var native, fallback int
	for seed := range seeds {
		r := rand.New(rand.NewPCG(uint64(seed), 14))
		b := newRandomBatch(r)
		for _, in := range []struct {
			format  Format
			content string
		}{{FormatCSV, b.csv}, {FormatNDJSON, b.ndjson}, {FormatJSON, b.jsonArr}} {
			t.Run(fmt.Sprintf("seed%d/%s", seed, in.format), func(t *testing.T) {
				if diffIngest(t, b.ds, in.format, in.content) == diffSame {
					native++
				} else {
					fallback++
				}
			})
		}
	}
	t.Logf("native: %d batches, left to DuckDB: %d", native, fallback)
	require.Greater(t, native, seeds/2, "the native path read few batches")
}
