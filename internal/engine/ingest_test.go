package engine

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"timestore/internal/catalog"
)

const allTypesCSV = `ts,tz,b,i,d,s,f
2024-03-01T10:00:00Z,2024-03-01T12:00:00+02:00,9007199254740993,-5,1.5,"hello, world",true
2024-03-01T09:30:00.123456,,,,,,
2024-03-01 11:00:00,2024-03-01T00:00:00Z,-1,2147483647,-0.25,"ünïcode ""q""",false
`

const allTypesNDJSON = `{"ts":"2024-03-01T10:00:00Z","tz":"2024-03-01T12:00:00+02:00","b":9007199254740993,"i":-5,"d":1.5,"s":"hello, world","f":true}
{"ts":"2024-03-01T09:30:00.123456","tz":null,"b":null}

{"ts":"2024-03-01 11:00:00","tz":"2024-03-01T00:00:00Z","b":-1,"i":2147483647,"d":-0.25,"s":"ünïcode \"q\"","f":false}
`

const allTypesJSON = `[
 {"ts":"2024-03-01T10:00:00Z","tz":"2024-03-01T12:00:00+02:00","b":9007199254740993,"i":-5,"d":1.5,"s":"hello, world","f":true},
 {"ts":"2024-03-01T09:30:00.123456","tz":null,"b":null},
 {"ts":"2024-03-01 11:00:00","tz":"2024-03-01T00:00:00Z","b":-1,"i":2147483647,"d":-0.25,"s":"ünïcode \"q\"","f":false}
]`

func TestPrepareIngestRoundTrip(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		format  Format
		content string
	}{
		{FormatCSV, allTypesCSV},
		{FormatNDJSON, allTypesNDJSON},
		{FormatJSON, allTypesJSON},
	} {
		t.Run(string(tc.format), func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			in := writeFile(t, dir, "in."+string(tc.format), tc.content)
			out := t.TempDir()
			ds := allTypes(catalog.WindowDay)

			before, nativeBefore := detectedReads.Load(), nativeReads.Load()
			files, err := testEngine.PrepareIngest(context.Background(), ds, tc.format, in, out)
			require.NoError(t, err)
			if tc.format != FormatCSV {
				requireFastRead(t, before, nativeBefore, "JSON took the single-read path")
			}
			require.Len(t, files, 1)
			f := files[0]
			require.FileExists(t, f.Path)
			require.True(t, strings.HasPrefix(f.Path, out+string(os.PathSeparator)))
			require.Equal(t, mustTime(t, "2024-03-01T00:00:00Z"), f.WindowStart)
			require.Equal(t, mustTime(t, "2024-03-01T09:30:00.123456Z"), f.TimeMin)
			require.Equal(t, mustTime(t, "2024-03-01T11:00:00Z"), f.TimeMax)
			require.EqualValues(t, 3, f.RowCount)
			fi, err := os.Stat(f.Path)
			require.NoError(t, err)
			require.Equal(t, fi.Size(), f.SizeBytes)
			require.Empty(t, f.Target)
			require.Empty(t, f.Key)
			require.Empty(t, f.Checksum)

			require.Equal(t, []string{
				"ts TIMESTAMP", "tz TIMESTAMP WITH TIME ZONE", "b BIGINT", "i INTEGER",
				"d DOUBLE", "s VARCHAR", "f BOOLEAN",
			}, parquetSchema(t, f.Path))

			rows := readParquet(t, f.Path)
			require.Equal(t, [][]any{
				{mustTime(t, "2024-03-01T09:30:00.123456Z"), nil, nil, nil, nil, nil, nil},
				{mustTime(t, "2024-03-01T10:00:00Z"), mustTime(t, "2024-03-01T10:00:00Z"), int64(9007199254740993), int32(-5), 1.5, "hello, world", true},
				{mustTime(t, "2024-03-01T11:00:00Z"), mustTime(t, "2024-03-01T00:00:00Z"), int64(-1), int32(2147483647), -0.25, `ünïcode "q"`, false},
			}, rows)

			require.Equal(t, []catalog.ColumnStats{
				{Column: "ts", Min: strp("2024-03-01T09:30:00.123456Z"), Max: strp("2024-03-01T11:00:00Z")},
				{Column: "tz", Min: strp("2024-03-01T00:00:00Z"), Max: strp("2024-03-01T10:00:00Z"), NullCount: 1},
				{Column: "b", Min: strp("-1"), Max: strp("9007199254740993"), NullCount: 1},
				{Column: "i", Min: strp("-5"), Max: strp("2147483647"), NullCount: 1},
				{Column: "d", Min: strp("-0.25"), Max: strp("1.5"), NullCount: 1},
				{Column: "s", Min: strp("hello, world"), Max: strp(`ünïcode "q"`), NullCount: 1},
				{Column: "f", Min: strp("false"), Max: strp("true"), NullCount: 1},
			}, f.Stats)

			// FileStats recomputes the same statistics from the file.
			pf, err := testEngine.FileStats(context.Background(), ds, f.Path)
			require.NoError(t, err)
			require.Equal(t, f.PartitionFile, pf)
		})
	}
}

func TestPrepareIngestCSVColumnsReorderedAndAbsent(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	// Header in another order, with spaces and a BOM; tz, i and f absent.
	in := writeFile(t, dir, "in.csv", "\uFEFFs, d ,ts,b\r\nx,2.5,2024-05-05T05:05:05Z,7\r\n")
	files, err := testEngine.PrepareIngest(context.Background(), allTypes(catalog.WindowHour), FormatCSV, in, t.TempDir())
	require.NoError(t, err)
	require.Len(t, files, 1)
	require.Equal(t, [][]any{{mustTime(t, "2024-05-05T05:05:05Z"), nil, int64(7), nil, 2.5, "x", nil}}, readParquet(t, files[0].Path))
	require.Equal(t, catalog.ColumnStats{Column: "f", NullCount: 1}, files[0].Stats[6])
	require.Equal(t, "i INTEGER", parquetSchema(t, files[0].Path)[3])
}

func TestPrepareIngestJSONAllKeysAbsentButTime(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	in := writeFile(t, dir, "in.ndjson", `{"ts":"2024-05-05T05:05:05Z"}`)
	files, err := testEngine.PrepareIngest(context.Background(), allTypes(catalog.WindowHour), FormatNDJSON, in, t.TempDir())
	require.NoError(t, err)
	require.Equal(t, [][]any{{mustTime(t, "2024-05-05T05:05:05Z"), nil, nil, nil, nil, nil, nil}}, readParquet(t, files[0].Path))
}

// TestPrepareIngestWindows checks the split into hour, day and month windows
// of shuffled rows, including rows exactly on window boundaries.
func TestPrepareIngestWindows(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		partition  string
		start, end string
		step       time.Duration
		wantFiles  int
	}{
		{catalog.WindowHour, "2024-01-31T22:00:00Z", "2024-02-01T03:00:00Z", 7 * time.Minute, 5},
		{catalog.WindowDay, "2024-02-27T00:00:00Z", "2024-03-02T00:00:00Z", 53 * time.Minute, 4},
		{catalog.WindowMonth, "2023-12-01T00:00:00Z", "2024-03-01T00:00:00Z", 9*time.Hour + 17*time.Minute, 3},
	} {
		for _, format := range []Format{FormatCSV, FormatNDJSON, FormatJSON} {
			t.Run(tc.partition+"/"+string(format), func(t *testing.T) {
				t.Parallel()
				start, end := mustTime(t, tc.start), mustTime(t, tc.end)
				var times []time.Time
				for ts := start; ts.Before(end); ts = ts.Add(tc.step) {
					times = append(times, ts)
				}
				// Boundaries: the last instant of a window and the first of the next.
				for ws := start; ws.Before(end); ws = catalog.WindowEnd(tc.partition, ws) {
					times = append(times, ws, ws.Add(-time.Microsecond))
				}
				var kept []time.Time
				for _, ts := range times {
					if !ts.Before(start) && ts.Before(end) {
						kept = append(kept, ts)
					}
				}
				times = kept
				rng := rand.New(rand.NewPCG(1, 2))
				rng.Shuffle(len(times), func(i, j int) { times[i], times[j] = times[j], times[i] })

				in := writeRows(t, t.TempDir(), format, times)
				ds := metrics("w_"+tc.partition, tc.partition)
				files, err := testEngine.PrepareIngest(context.Background(), ds, format, in, t.TempDir())
				require.NoError(t, err)
				require.Len(t, files, tc.wantFiles)

				want := map[time.Time][]time.Time{}
				for _, ts := range times {
					ws := catalog.WindowStart(tc.partition, ts)
					want[ws] = append(want[ws], ts)
				}
				var total int64
				for i, f := range files {
					if i > 0 {
						require.True(t, files[i-1].WindowStart.Before(f.WindowStart), "files ordered by window")
					}
					exp := want[f.WindowStart]
					require.NotEmpty(t, exp, "unexpected window %s", f.WindowStart)
					sort.Slice(exp, func(i, j int) bool { return exp[i].Before(exp[j]) })
					require.EqualValues(t, len(exp), f.RowCount)
					require.Equal(t, exp[0], f.TimeMin)
					require.Equal(t, exp[len(exp)-1], f.TimeMax)
					got := readParquet(t, f.Path)
					require.Len(t, got, len(exp))
					for j, row := range got {
						require.Equal(t, exp[j], row[0], "row %d of window %s sorted by time", j, f.WindowStart)
					}
					total += f.RowCount
				}
				require.EqualValues(t, len(times), total)
			})
		}
	}
}

// writeRows writes rows (ts, series, value) in the given order; value is the
// row's position.
func writeRows(t testing.TB, dir string, format Format, times []time.Time) string {
	t.Helper()
	var b strings.Builder
	switch format {
	case FormatCSV:
		b.WriteString("ts,series,value\n")
	case FormatJSON:
		b.WriteString("[")
	}
	for i, ts := range times {
		s := ts.Format(time.RFC3339Nano)
		switch format {
		case FormatCSV:
			fmt.Fprintf(&b, "%s,s%d,%d\n", s, i%3, i)
		case FormatNDJSON:
			fmt.Fprintf(&b, "{\"ts\":%q,\"series\":\"s%d\",\"value\":%d}\n", s, i%3, i)
		case FormatJSON:
			if i > 0 {
				b.WriteString(",\n")
			}
			fmt.Fprintf(&b, "{\"ts\":%q,\"series\":\"s%d\",\"value\":%d}", s, i%3, i)
		}
	}
	if format == FormatJSON {
		b.WriteString("]")
	}
	return writeFile(t, dir, "rows."+string(format), b.String())
}

func TestPrepareIngestTimestampTZ(t *testing.T) {
	t.Parallel()
	ds := catalog.Dataset{
		Name: "tzs",
		Columns: []catalog.Column{
			{Name: "at", Type: catalog.TypeTimestampTZ},
			{Name: "local", Type: catalog.TypeTimestamp},
		},
		TimeColumn: "at",
		Partition:  catalog.WindowDay,
	}
	// 23:30 at -02:00 is 01:30 UTC the next day; 00:30 at +02:00 is 22:30
	// UTC the day before. A timestamp column converts offsets to UTC too.
	in := writeFile(t, t.TempDir(), "in.csv", "at,local\n"+
		"2024-06-01T23:30:00-02:00,2024-06-01T23:30:00-02:00\n"+
		"2024-06-02 00:30:00+02,2024-06-02 00:30:00\n"+
		"2024-06-02T12:00:00Z,2024-06-02T12:00:00Z\n"+
		// Text order differs from time order: 06:00Z sorts after 05:00Z.
		"2024-06-02T06:00:00Z,2024-06-02T06:00:00\n"+
		"2024-06-02T10:00:00+05:00,2024-06-02T10:00:00+05:00\n")
	files, err := testEngine.PrepareIngest(context.Background(), ds, FormatCSV, in, t.TempDir())
	require.NoError(t, err)
	require.Len(t, files, 2)
	require.Equal(t, mustTime(t, "2024-06-01T00:00:00Z"), files[0].WindowStart)
	require.Equal(t, mustTime(t, "2024-06-01T22:30:00Z"), files[0].TimeMin)
	require.Equal(t, mustTime(t, "2024-06-02T00:00:00Z"), files[1].WindowStart)
	require.Equal(t, mustTime(t, "2024-06-02T01:30:00Z"), files[1].TimeMin)
	require.Equal(t, mustTime(t, "2024-06-02T12:00:00Z"), files[1].TimeMax)
	require.Equal(t, []string{"at TIMESTAMP WITH TIME ZONE", "local TIMESTAMP"}, parquetSchema(t, files[0].Path))
	require.Equal(t, [][]any{
		{mustTime(t, "2024-06-02T01:30:00Z"), mustTime(t, "2024-06-02T01:30:00Z")},
		{mustTime(t, "2024-06-02T05:00:00Z"), mustTime(t, "2024-06-02T05:00:00Z")},
		{mustTime(t, "2024-06-02T06:00:00Z"), mustTime(t, "2024-06-02T06:00:00Z")},
		{mustTime(t, "2024-06-02T12:00:00Z"), mustTime(t, "2024-06-02T12:00:00Z")},
	}, readParquet(t, files[1].Path))
	require.Equal(t, strp("2024-06-01T22:30:00Z"), files[0].Stats[0].Min)

	// The Parquet column is UTC-adjusted: another reader sees the instant.
	var isUTC bool
	require.NoError(t, testEngine.db.QueryRow(
		"SELECT logical_type LIKE '%isAdjustedToUTC=1%' FROM parquet_schema("+quoteString(files[0].Path)+") WHERE name = 'at'").Scan(&isUTC))
	require.True(t, isUTC)
}

func TestPrepareIngestBadInput(t *testing.T) {
	t.Parallel()
	ds := allTypes(catalog.WindowDay)
	const okCSV = "2024-01-01T00:00:00Z,,1,1,1,x,true\n"
	const okObj = `{"ts":"2024-01-01T00:00:00Z","b":1}`
	for _, tc := range []struct {
		name    string
		format  Format
		content string
		row     int64
		column  string
		msg     string
	}{
		{"csv unknown column", FormatCSV, "ts,nope\n2024-01-01,1\n", 0, "nope", "unknown column"},
		{"csv duplicate column", FormatCSV, "ts,b,b\n2024-01-01,1,2\n", 0, "b", "duplicate column"},
		{"csv missing time column", FormatCSV, "b,i\n1,2\n", 0, "ts", "missing time column"},
		{"csv empty column name", FormatCSV, "ts,,b\n2024-01-01,1,2\n", 0, "", "column 2 has no name"},
		{"csv empty time", FormatCSV, "ts,tz,b,i,d,s,f\n" + okCSV + ",,2,2,2,y,false\n", 2, "ts", "missing time value"},
		{"csv wrong type", FormatCSV, "ts,tz,b,i,d,s,f\n" + okCSV + okCSV + "2024-01-01T00:00:00Z,,3,3,abc,z,true\n", 3, "d", `"abc" is not a valid double`},
		{"csv bad boolean", FormatCSV, "ts,f\n2024-01-01,true\n2024-01-02,maybe\n", 2, "f", `"maybe" is not a valid boolean`},
		{"csv integer overflow", FormatCSV, "ts,i\n2024-01-01,1\n2024-01-02,2147483648\n", 2, "i", "not a valid integer"},
		{"csv bad timestamp", FormatCSV, "ts,b\n2024-01-01,1\nyesterday,2\n", 2, "ts", `"yesterday" is not a valid timestamp`},
		{"csv bad timestamptz", FormatCSV, "ts,tz\n2024-01-01,2024-13-01\n", 1, "tz", "not a valid timestamptz"},
		{"csv too many fields", FormatCSV, "ts,b\n2024-01-01,1\n2024-01-01,2,3\n", 2, "", "Expected Number of Columns: 2 Found: 3"},
		{"csv too few fields", FormatCSV, "ts,b,i\n2024-01-01,1,1\n2024-01-01,2\n", 2, "", "malformed CSV"},
		{"csv unterminated quote", FormatCSV, "ts,s\n2024-01-01,\"abc\n", 1, "", "unterminated quote"},
		{"csv empty file", FormatCSV, "", 0, "", "empty input"},
		{"csv header only", FormatCSV, "ts,b\n", 0, "", "no rows"},
		{"ndjson unknown key", FormatNDJSON, okObj + "\n" + okObj + "\n" + `{"ts":"2024-01-01","zz":1}` + "\n", 3, "zz", "unknown column"},
		{"ndjson missing time column", FormatNDJSON, `{"b":1}` + "\n" + `{"i":2}` + "\n", 0, "ts", "missing time column"},
		{"ndjson null time", FormatNDJSON, okObj + "\n" + `{"ts":null,"b":2}` + "\n", 2, "ts", "missing time value"},
		{"ndjson absent time", FormatNDJSON, okObj + "\n" + okObj + "\n" + `{"b":2}` + "\n", 3, "ts", "missing time value"},
		{"ndjson empty time", FormatNDJSON, okObj + "\n" + `{"ts":"","b":2}` + "\n", 2, "ts", "missing time value"},
		{"ndjson wrong type", FormatNDJSON, okObj + "\n" + `{"ts":"2024-01-01","b":"many"}` + "\n", 2, "b", `"many" is not a valid bigint`},
		{"ndjson object for number", FormatNDJSON, okObj + "\n" + `{"ts":"2024-01-01","d":{"x":1}}` + "\n", 2, "d", "not a valid double"},
		{"ndjson malformed", FormatNDJSON, okObj + "\n" + `{"ts":"2024-01-01","b":2]` + "\n" + okObj + "\n", 2, "", "malformed JSON"},
		{"ndjson not an object", FormatNDJSON, okObj + "\n[1,2]\n", 2, "", "Expected OBJECT"},
		{"ndjson duplicate key", FormatNDJSON, okObj + "\n" + `{"ts":"2024-01-01","b":1,"b":2}` + "\n", 2, "", "duplicate key"},
		{"ndjson blank", FormatNDJSON, "\n\n", 0, "", "no rows"},
		{"json unknown key", FormatJSON, "[" + okObj + ",\n" + `{"ts":"2024-01-01","Ts":1}` + "]", 2, "Ts", "unknown column"},
		{"json wrong type", FormatJSON, "[" + okObj + "," + okObj + "," + `{"ts":"2024-01-01","i":"x"}` + "]", 3, "i", `"x" is not a valid integer`},
		{"json malformed", FormatJSON, "[" + okObj + "," + `{"ts":"2024-01-01" "b":1}` + "]", 2, "", "malformed JSON"},
		{"json not an array", FormatJSON, okObj, 0, "", "expected a JSON array of objects"},
		{"json empty array", FormatJSON, "[]", 0, "", "no rows"},
		{"json null time", FormatJSON, "[" + okObj + `,{"ts":null}]`, 2, "ts", "missing time value"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			in := writeFile(t, t.TempDir(), "in", tc.content)
			out := t.TempDir()
			_, err := testEngine.PrepareIngest(context.Background(), ds, tc.format, in, out)
			var ie *InputError
			require.ErrorAs(t, err, &ie, "got %v", err)
			require.Equal(t, tc.row, ie.Row, "row: %v", err)
			require.Equal(t, tc.column, ie.Column, "column: %v", err)
			require.Contains(t, ie.Message, tc.msg)
			t.Log(err)
			require.NotContains(t, ie.Error(), in, "no server path in user messages")
			entries, err := os.ReadDir(out)
			require.NoError(t, err)
			require.Empty(t, entries, "no files left behind")
		})
	}
}

// TestPrepareIngestBadInputDeep checks that problems are found anywhere in a
// large file, with exact row numbers, beyond any sample or buffer.
func TestPrepareIngestBadInputDeep(t *testing.T) {
	t.Parallel()
	const n = 200_000
	const badRow = 187_654
	ds := metrics("deep", catalog.WindowDay)
	base := mustTime(t, "2024-01-01T00:00:00Z")
	build := func(format Format, bad func(i int) string) string {
		var b strings.Builder
		switch format {
		case FormatCSV:
			b.WriteString("ts,series,value\n")
		case FormatJSON:
			b.WriteString("[")
		}
		for i := 1; i <= n; i++ {
			if i == badRow {
				b.WriteString(bad(i))
				continue
			}
			ts := base.Add(time.Duration(i) * time.Second).Format(time.RFC3339)
			switch format {
			case FormatCSV:
				fmt.Fprintf(&b, "%s,s%d,%d.5\n", ts, i%7, i)
			case FormatNDJSON:
				fmt.Fprintf(&b, "{\"ts\":%q,\"series\":\"s%d\",\"value\":%d.5}\n", ts, i%7, i)
			case FormatJSON:
				fmt.Fprintf(&b, "{\"ts\":%q,\"series\":\"s%d\",\"value\":%d.5},\n", ts, i%7, i)
			}
		}
		if format == FormatJSON {
			b.WriteString(`{"ts":"2024-01-01T00:00:00Z"}]`)
		}
		return b.String()
	}
	for _, tc := range []struct {
		name    string
		format  Format
		bad     string
		column  string
		message string
	}{
		{"csv wrong type", FormatCSV, "2024-01-02T00:00:00Z,x,notanumber\n", "value", "not a valid double"},
		{"csv empty time", FormatCSV, ",x,1\n", "ts", "missing time value"},
		{"csv field count", FormatCSV, "2024-01-02T00:00:00Z,x,1,2\n", "", "malformed CSV"},
		{"ndjson unknown key", FormatNDJSON, `{"ts":"2024-01-02T00:00:00Z","extra":1}` + "\n", "extra", "unknown column"},
		{"ndjson wrong type", FormatNDJSON, `{"ts":"2024-01-02T00:00:00Z","value":"NaNa"}` + "\n", "value", "not a valid double"},
		{"ndjson null time", FormatNDJSON, `{"ts":null,"value":1}` + "\n", "ts", "missing time value"},
		{"ndjson malformed", FormatNDJSON, `{"ts":"2024-01-02T00:00:00Z","value":1]` + "\n", "", "malformed JSON"},
		{"ndjson time with offset where sample had none", FormatNDJSON, `{"ts":"2024-01-02T00:00:00+01:00","series":"x","value":1,"bad":1}` + "\n", "bad", "unknown column"},
		{"json unknown key", FormatJSON, `{"ts":"2024-01-02T00:00:00Z","extra":1}` + ",\n", "extra", "unknown column"},
		{"json wrong type", FormatJSON, `{"ts":"2024-01-02T00:00:00Z","value":"x1"}` + ",\n", "value", "not a valid double"},
		{"json bad time", FormatJSON, `{"ts":"2024-01-02T25:00:00Z","value":1}` + ",\n", "ts", "not a valid timestamp"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			in := writeFile(t, t.TempDir(), "in", build(tc.format, func(int) string { return tc.bad }))
			_, err := testEngine.PrepareIngest(context.Background(), ds, tc.format, in, t.TempDir())
			var ie *InputError
			require.ErrorAs(t, err, &ie, "got %v", err)
			require.EqualValues(t, badRow, ie.Row, "%v", err)
			require.Equal(t, tc.column, ie.Column)
			require.Contains(t, ie.Message, tc.message)
		})
	}
}

func TestPrepareIngestInternalErrors(t *testing.T) {
	t.Parallel()
	ds := metrics("m", catalog.WindowDay)
	_, err := testEngine.PrepareIngest(context.Background(), ds, "xml", "/nonexistent", t.TempDir())
	require.Error(t, err)
	require.False(t, errors.As(err, new(*InputError)))

	_, err = testEngine.PrepareIngest(context.Background(), ds, FormatCSV, "/nonexistent/in.csv", t.TempDir())
	require.Error(t, err)
	require.False(t, errors.As(err, new(*InputError)))

	in := writeFile(t, t.TempDir(), "in.csv", "ts,value\n2024-01-01,1\n")
	_, err = testEngine.PrepareIngest(context.Background(), ds, FormatCSV, in, "/nonexistent/out")
	require.Error(t, err)
	require.False(t, errors.As(err, new(*InputError)), "unwritable output is not the user's fault: %v", err)

	bad := ds
	bad.TimeColumn = "series"
	_, err = testEngine.PrepareIngest(context.Background(), bad, FormatCSV, in, t.TempDir())
	require.ErrorContains(t, err, "must be timestamp")

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = testEngine.PrepareIngest(ctx, ds, FormatCSV, in, t.TempDir())
	require.ErrorIs(t, err, context.Canceled)
}

func TestPrepareIngestConcurrent(t *testing.T) {
	t.Parallel()
	ds := metrics("conc", catalog.WindowHour)
	out := t.TempDir() // shared: file names must not collide
	errs := make(chan error, 8)
	for w := 0; w < 8; w++ {
		go func() {
			var times []time.Time
			for i := 0; i < 1000; i++ {
				times = append(times, mustTime(t, "2024-01-01T00:00:00Z").Add(time.Duration(i*w+i)*time.Second))
			}
			in := writeRows(t, t.TempDir(), FormatCSV, times)
			files, err := testEngine.PrepareIngest(context.Background(), ds, FormatCSV, in, out)
			if err == nil {
				var n int64
				for _, f := range files {
					n += f.RowCount
				}
				if n != 1000 {
					err = fmt.Errorf("worker %d: %d rows", w, n)
				}
			}
			errs <- err
		}()
	}
	for w := 0; w < 8; w++ {
		require.NoError(t, <-errs)
	}
	entries, err := os.ReadDir(out)
	require.NoError(t, err)
	require.GreaterOrEqual(t, len(entries), 8)
}

// TestPrepareIngestTimeText checks the conversion of time text to UTC, value
// by value and in one batch: offsets anywhere in the text (also with seconds or
// followed by spaces), zone names, and text without either, which is UTC even
// after a row that named a zone (ICU's cast would read it in that zone).
func TestPrepareIngestTimeText(t *testing.T) {
	t.Parallel()
	ds := catalog.Dataset{
		Name: "times",
		Columns: []catalog.Column{
			{Name: "n", Type: catalog.TypeBigint},
			{Name: "at", Type: catalog.TypeTimestampTZ},
			{Name: "local", Type: catalog.TypeTimestamp},
		},
		TimeColumn: "at",
		Partition:  catalog.WindowMonth,
	}
	cases := []struct{ in, want string }{
		{"2024-01-01 10:00:00", "2024-01-01T10:00:00Z"},
		{"2024-01-01T10:00:00Z", "2024-01-01T10:00:00Z"},
		{"2024-01-01 10:00:00 UTC", "2024-01-01T10:00:00Z"},
		{"2024-01-01 10:00:00 CET", "2024-01-01T09:00:00Z"},
		// Zone-less text after a zone name: UTC, not CET.
		{"2024-01-01 10:00:00", "2024-01-01T10:00:00Z"},
		{"2024-01-01", "2024-01-01T00:00:00Z"},
		{"2024-01-01 10:00:00 America/New_York", "2024-01-01T15:00:00Z"},
		{"2024-01-01T10:00:00.5", "2024-01-01T10:00:00.5Z"},
		{"2024-01-01T10:00:00+01:00", "2024-01-01T09:00:00Z"},
		{"2024-01-01T10:00:00-0130", "2024-01-01T11:30:00Z"},
		{"2024-01-01T10:00:00+05", "2024-01-01T05:00:00Z"},
		{"2024-01-01T10:00:00.5-05:00", "2024-01-01T15:00:00.5Z"},
		{"2024-01-01T10:00:00+02:00:30", "2024-01-01T07:59:30Z"},
		{"2024-01-01T10:00:00+01:00 ", "2024-01-01T09:00:00Z"},
		{"2024-01-01 10:00:00 Etc/GMT-5", "2024-01-01T05:00:00Z"},
		{"2024-01-01 24:00:00", "2024-01-02T00:00:00Z"},
		{"2024-1-2 3:04:05", "2024-01-02T03:04:05Z"},
	}
	var csvBody, ndjson strings.Builder
	csvBody.WriteString("n,at,local\n")
	for i, c := range cases {
		fmt.Fprintf(&csvBody, "%d,%s,%s\n", i, c.in, c.in)
		fmt.Fprintf(&ndjson, "{\"n\":%d,\"at\":%q,\"local\":%q}\n", i, c.in, c.in)
	}
	for _, tc := range []struct {
		format  Format
		content string
	}{{FormatCSV, csvBody.String()}, {FormatNDJSON, ndjson.String()}} {
		t.Run(string(tc.format), func(t *testing.T) {
			t.Parallel()
			in := writeFile(t, t.TempDir(), "in", tc.content)
			files, err := testEngine.PrepareIngest(context.Background(), ds, tc.format, in, t.TempDir())
			require.NoError(t, err)
			got := map[int64][2]any{}
			for _, f := range files {
				for _, row := range readParquet(t, f.Path) {
					got[row[0].(int64)] = [2]any{row[1], row[2]}
				}
			}
			require.Len(t, got, len(cases))
			for i, c := range cases {
				want := mustTime(t, c.want)
				require.Equal(t, [2]any{want, want}, got[int64(i)], "%q", c.in)
			}
		})
	}
}

// TestPrepareIngestJSONDetection covers the single-read JSON path: integers in
// a double column, keys that differ from a column only in case, keys of the
// schema missing from the sample, and detected types that do not fit.
func TestPrepareIngestJSONDetection(t *testing.T) {
	t.Parallel()
	ds := allTypes(catalog.WindowDay)
	ctx := context.Background()

	t.Run("integers for doubles and bigints", func(t *testing.T) {
		t.Parallel()
		in := writeFile(t, t.TempDir(), "in", `{"ts":"2024-01-01T00:00:00Z","d":1,"b":2,"i":3}`+"\n"+`{"ts":"2024-01-01T00:00:01Z","d":-4,"b":5,"i":6}`+"\n")
		before, nativeBefore := detectedReads.Load(), nativeReads.Load()
		files, err := testEngine.PrepareIngest(ctx, ds, FormatNDJSON, in, t.TempDir())
		require.NoError(t, err)
		requireFastRead(t, before, nativeBefore, "JSON took the single-read path")
		require.Equal(t, []string{"ts TIMESTAMP", "tz TIMESTAMP WITH TIME ZONE", "b BIGINT", "i INTEGER", "d DOUBLE", "s VARCHAR", "f BOOLEAN"}, parquetSchema(t, files[0].Path))
		rows := readParquet(t, files[0].Path)
		require.Equal(t, []any{int64(2), int32(3), 1.0}, rows[0][2:5])
		require.Equal(t, []any{int64(5), int32(6), -4.0}, rows[1][2:5])
	})

	t.Run("integer overflow", func(t *testing.T) {
		t.Parallel()
		in := writeFile(t, t.TempDir(), "in", `{"ts":"2024-01-01T00:00:00Z","i":1}`+"\n"+`{"ts":"2024-01-01T00:00:01Z","i":2147483648}`+"\n")
		_, err := testEngine.PrepareIngest(ctx, ds, FormatNDJSON, in, t.TempDir())
		var ie *InputError
		require.ErrorAs(t, err, &ie)
		require.Equal(t, InputError{Row: 2, Column: "i", Message: `value "2147483648" is not a valid integer: ` + typeHint(catalog.TypeInteger)}, *ie)
	})

	t.Run("key differs in case", func(t *testing.T) {
		t.Parallel()
		for _, content := range []string{
			`{"ts":"2024-01-01T00:00:00Z","D":1.5}` + "\n",
			`{"TS":"2024-01-01T00:00:00Z","d":1.5}` + "\n",
		} {
			in := writeFile(t, t.TempDir(), "in", content)
			_, err := testEngine.PrepareIngest(ctx, ds, FormatNDJSON, in, t.TempDir())
			var ie *InputError
			require.ErrorAs(t, err, &ie, "%s: %v", content, err)
			require.Contains(t, ie.Message, "unknown column")
			require.EqualValues(t, 1, ie.Row)
		}
	})

	t.Run("schema keys missing from the sample", func(t *testing.T) {
		t.Parallel()
		// tz and s first appear after DuckDB's sample of 20480 objects.
		var b strings.Builder
		base := mustTime(t, "2024-01-01T00:00:00Z")
		for i := 0; i < 25000; i++ {
			fmt.Fprintf(&b, "{\"ts\":%q,\"d\":%d.5}\n", base.Add(time.Duration(i)*time.Second).Format(time.RFC3339), i)
		}
		b.WriteString(`{"ts":"2024-01-02T00:00:00Z","tz":"2024-01-02T01:00:00+01:00","s":"late"}` + "\n")
		in := writeFile(t, t.TempDir(), "in", b.String())
		files, err := testEngine.PrepareIngest(ctx, ds, FormatNDJSON, in, t.TempDir())
		require.NoError(t, err)
		require.Len(t, files, 2)
		require.EqualValues(t, 1, files[1].RowCount)
		require.Equal(t, [][]any{{mustTime(t, "2024-01-02T00:00:00Z"), mustTime(t, "2024-01-02T00:00:00Z"), nil, nil, nil, "late", nil}}, readParquet(t, files[1].Path))
		require.Equal(t, catalog.ColumnStats{Column: "tz", NullCount: 25000}, files[0].Stats[1])
	})

	t.Run("records larger than the maximum object size", func(t *testing.T) {
		t.Parallel()
		// A record of 3 MiB between a few MiB of small ones: larger than
		// the fast path's maximum_object_size, and across the boundaries
		// of its read buffers.
		big := strings.Repeat("b", 3*jsonMaxObjectSize)
		for _, format := range []Format{FormatNDJSON, FormatJSON} {
			var b strings.Builder
			sep := "\n"
			if format == FormatJSON {
				b.WriteString("[")
				sep = ",\n"
			}
			for i := range 60_000 {
				if i == 30_000 {
					fmt.Fprintf(&b, `{"ts":"2024-01-01T12:00:00Z","s":%q}%s`, big, sep)
				}
				fmt.Fprintf(&b, `{"ts":"2024-01-01T00:00:00Z","s":"small %d"}`, i)
				if i < 59_999 || format == FormatNDJSON {
					b.WriteString(sep)
				}
			}
			if format == FormatJSON {
				b.WriteString("]")
			}
			in := writeFile(t, t.TempDir(), "in", b.String())
			files, err := testEngine.PrepareIngest(ctx, ds, format, in, t.TempDir())
			require.NoError(t, err, format)
			require.Len(t, files, 1)
			require.EqualValues(t, 60_001, files[0].RowCount)
			rows := readParquet(t, files[0].Path)
			require.Len(t, rows, 60_001)
			require.Equal(t, big, rows[60_000][5], "the large record, last in time order")
			pf, err := testEngine.FileStats(ctx, ds, files[0].Path)
			require.NoError(t, err)
			require.Equal(t, pf, files[0].PartitionFile)
		}
	})

	t.Run("types that do not fit", func(t *testing.T) {
		t.Parallel()
		// Numbers for a varchar column and a time column.
		in := writeFile(t, t.TempDir(), "in", `{"ts":"2024-01-01T00:00:00Z","s":5,"f":true}`+"\n")
		files, err := testEngine.PrepareIngest(ctx, ds, FormatNDJSON, in, t.TempDir())
		require.NoError(t, err)
		require.Equal(t, "5", readParquet(t, files[0].Path)[0][5])

		in = writeFile(t, t.TempDir(), "in", `{"ts":1704067200,"s":"x"}`+"\n")
		_, err = testEngine.PrepareIngest(ctx, ds, FormatNDJSON, in, t.TempDir())
		var ie *InputError
		require.ErrorAs(t, err, &ie, "%v", err)
		require.Equal(t, InputError{Row: 1, Column: "ts", Message: `value "1704067200" is not a valid timestamp: ` + typeHint(catalog.TypeTimestamp)}, *ie)
	})
}

// TestPrepareIngestPartitionedWrite covers the paths of the partitioned
// write: rows in time order keep the writer's statistics; statistics the
// writer cannot give exactly (NaN, -0.0, long strings) are computed by a
// scan; windows that DuckDB wrote into several files are merged into one.
// Whatever the path, every window has one file, holding its rows sorted by
// time, with the statistics FileStats computes.
//
// Not parallel: it counts the paths taken through package counters and
// changes DuckDB's global settings of partitioned writes.
func TestPrepareIngestPartitionedWrite(t *testing.T) {
	ctx := context.Background()
	type counts struct{ rewrites, merges, scans int64 }
	snapshot := func() counts {
		return counts{partitionedRewrites.Load(), partitionedMerges.Load(), partitionedScans.Load()}
	}
	// ingest checks the files against want, the input's rows in time order
	// (ts, series, value), and returns the paths taken. It reads with
	// DuckDB also when the tests run with the native path in use
	// (TIMESTORE_TEST_NATIVE_INGEST): the partitioned write is under test.
	ingest := func(t *testing.T, ds catalog.Dataset, format Format, in string, want [][]any) ([]WindowFile, counts) {
		t.Helper()
		before := snapshot()
		files, err := testEngine.prepareDuckDB(ctx, ds, format, in, t.TempDir())
		require.NoError(t, err)
		after := snapshot()
		var got [][]any
		for i, f := range files {
			if i > 0 {
				require.True(t, files[i-1].WindowStart.Before(f.WindowStart), "one file per window, ordered by window")
			}
			require.Equal(t, f.WindowStart, catalog.WindowStart(ds.Partition, f.TimeMin))
			require.Equal(t, f.WindowStart, catalog.WindowStart(ds.Partition, f.TimeMax))
			require.Zero(t, unsortedRows(t, testEngine.db, f.Path, ds.TimeColumn), "rows of %s sorted by time", f.Path)
			pf, err := testEngine.FileStats(ctx, ds, f.Path)
			require.NoError(t, err)
			require.Equal(t, pf, f.PartitionFile, "statistics as FileStats computes them")
			got = append(got, readParquet(t, f.Path)...)
		}
		require.Len(t, got, len(want))
		// The same rows, compared as text (NaN is not equal to itself).
		// Times must be in order; equal times may come in any order.
		text := func(rows [][]any) []string {
			out := make([]string, len(rows))
			for i, r := range rows {
				out[i] = fmt.Sprint(r...)
			}
			slices.Sort(out)
			return out
		}
		wantText, gotText := text(want), text(got)
		for i := range want {
			if !want[i][0].(time.Time).Equal(got[i][0].(time.Time)) {
				require.Failf(t, "rows out of time order", "row %d: want time %v, got %v", i, want[i][0], got[i][0])
			}
			if wantText[i] != gotText[i] {
				require.Failf(t, "rows differ", "want %s, got %s", wantText[i], gotText[i])
			}
		}
		return files, counts{after.rewrites - before.rewrites, after.merges - before.merges, after.scans - before.scans}
	}
	// rows writes n rows in time order, step apart from base, in format.
	rows := func(t *testing.T, format Format, base time.Time, step time.Duration, n int, series func(i int) string, value func(i int) string) (string, [][]any) {
		var b strings.Builder
		var want [][]any
		if format == FormatCSV {
			b.WriteString("ts,series,value\n")
		}
		for i := range n {
			ts := base.Add(time.Duration(i) * step)
			s, v := series(i), value(i)
			if format == FormatCSV {
				fmt.Fprintf(&b, "%s,%s,%s\n", ts.Format(time.RFC3339Nano), s, v)
			} else {
				fmt.Fprintf(&b, "{\"ts\":%q,\"series\":%q,\"value\":%s}\n", ts.Format(time.RFC3339Nano), s, v)
			}
			f, err := strconv.ParseFloat(v, 64)
			require.NoError(t, err)
			want = append(want, []any{ts, s, f})
		}
		return writeFile(t, t.TempDir(), "in."+string(format), b.String()), want
	}
	base := mustTime(t, "2024-04-01T00:00:00Z")

	t.Run("in order", func(t *testing.T) {
		for _, format := range []Format{FormatCSV, FormatNDJSON} {
			in, want := rows(t, format, base, 1300*time.Millisecond, 200_000,
				func(i int) string { return fmt.Sprintf("s%d", i%7) },
				func(i int) string { return strconv.FormatFloat(float64(i%1000)/8, 'g', -1, 64) })
			detected := detectedReads.Load()
			files, n := ingest(t, metrics("in_order", catalog.WindowDay), format, in, want)
			require.Len(t, files, 4, format)
			require.Zero(t, n.scans, "%s: the writer's statistics", format)
			require.Zero(t, n.merges, format)
			require.LessOrEqual(t, n.rewrites, int64(len(files)), format)
			if format == FormatNDJSON {
				require.Greater(t, detectedReads.Load(), detected, "single-read JSON path")
			}
		}
	})

	t.Run("inexact writer statistics", func(t *testing.T) {
		// One hour each with NaN, -0.0 and long strings, then a plain hour.
		long := strings.Repeat("x", 300)
		for _, format := range []Format{FormatCSV, FormatNDJSON} {
			value := func(i int) string {
				switch {
				case i == 10 && format == FormatCSV: // JSON has no NaN
					return "NaN"
				case i/100 == 1:
					return "-0.0"
				}
				return strconv.Itoa(i)
			}
			series := func(i int) string {
				if i/100 == 2 {
					return long + strconv.Itoa(i)
				}
				return "s"
			}
			in, want := rows(t, format, base, 36*time.Second, 400, series, value)
			files, n := ingest(t, metrics("inexact", catalog.WindowHour), format, in, want)
			require.Len(t, files, 4)
			require.Equal(t, strp("-0"), files[1].Stats[2].Min)
			if format == FormatCSV {
				require.True(t, math.IsNaN(want[10][2].(float64)))
				require.Equal(t, strp("NaN"), files[0].Stats[2].Max, "DuckDB orders NaN above every number")
				require.Equal(t, int64(3), n.scans, "NaN, -0.0 and long strings")
			} else {
				require.Equal(t, int64(2), n.scans, "-0.0 and long strings")
			}
		}
	})

	t.Run("several files per window", func(t *testing.T) {
		// Few open files and small thread buffers: DuckDB closes files and
		// opens new ones for the same window.
		var maxOpen, threshold string
		require.NoError(t, testEngine.db.QueryRow("SELECT current_setting('partitioned_write_max_open_files'), current_setting('partitioned_write_flush_threshold')").Scan(&maxOpen, &threshold))
		_, err := testEngine.db.Exec("SET GLOBAL partitioned_write_max_open_files = 2; SET GLOBAL partitioned_write_flush_threshold = 50")
		require.NoError(t, err)
		t.Cleanup(func() {
			_, err := testEngine.db.Exec(fmt.Sprintf("SET GLOBAL partitioned_write_max_open_files = %s; SET GLOBAL partitioned_write_flush_threshold = %s", maxOpen, threshold))
			require.NoError(t, err)
		})
		var times []time.Time
		for i := range 3000 {
			times = append(times, base.Add(time.Duration(i)*11*time.Second))
		}
		want := make([][]any, len(times))
		shuffled := slices.Clone(times)
		rand.New(rand.NewPCG(3, 4)).Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		pos := map[time.Time]int{}
		for i, ts := range shuffled {
			pos[ts] = i
		}
		for i, ts := range times {
			want[i] = []any{ts, fmt.Sprintf("s%d", pos[ts]%3), float64(pos[ts])}
		}
		for _, format := range []Format{FormatCSV, FormatNDJSON} {
			in := writeRows(t, t.TempDir(), format, shuffled)
			files, n := ingest(t, metrics("split", catalog.WindowHour), format, in, want)
			require.Len(t, files, 10)
			require.Positive(t, n.merges, format)
		}
	})
}
