package engine

import (
	"context"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"timestore/internal/catalog"
)

// refused marks a value that ingest must refuse.
type refusedValue struct{}

var refused = refusedValue{}

// valueCase is one text value of one column type and what it is stored as
// (or refused), the same from a CSV field and from a JSON string.
type valueCase struct {
	typ, text string
	want      any
}

// valueCases is the type × tricky value table; docs/api.md ("Column types
// and accepted values") documents the same decisions.
func valueCases() []valueCase {
	ts := func(s string) time.Time { v, _ := time.Parse(time.RFC3339Nano, s); return v.UTC() }
	var cases []valueCase
	add := func(typ string, pairs ...any) {
		for i := 0; i < len(pairs); i += 2 {
			cases = append(cases, valueCase{typ, pairs[i].(string), pairs[i+1]})
		}
	}
	for _, typ := range []string{catalog.TypeInteger, catalog.TypeBigint} {
		n := func(v int64) any {
			if typ == catalog.TypeInteger {
				return int32(v)
			}
			return v
		}
		add(typ,
			"42", n(42), "-7", n(-7), "+5", n(5), " 5 ", n(5), "-0", n(0), "007", n(7), "1_000", n(1000),
			"1.5", refused, "2.5", refused, "1.0", refused, "-0.0", refused, "0x10", refused, "0b101", refused,
			"1e3", refused, "1E3", refused, "NaN", refused, "Infinity", refused, "-inf", refused,
			"true", refused, "t", refused, "  ", refused, "1 000", refused, "1,5", refused,
			"1709287200", n(1709287200), "2024-03-01T10:00:00Z", refused,
		)
	}
	add(catalog.TypeInteger, "2147483647", int32(math.MaxInt32), "-2147483648", int32(math.MinInt32), "2147483648", refused, "-2147483649", refused)
	add(catalog.TypeBigint, "9223372036854775807", int64(math.MaxInt64), "-9223372036854775808", int64(math.MinInt64),
		"9223372036854775808", refused, "99999999999999999999", refused)
	add(catalog.TypeDouble,
		"1.5", 1.5, "-0.25", -0.25, "6.02e23", 6.02e23, "1e3", 1000.0, "1E-3", 0.001, " 5 ", 5.0, "+5", 5.0, "1_000", 1000.0,
		"NaN", math.NaN(), "nan", math.NaN(), "Infinity", math.Inf(1), "inf", math.Inf(1), "-Infinity", math.Inf(-1),
		"-0", math.Copysign(0, -1), "-0.0", math.Copysign(0, -1), "1.7976931348623157e308", math.MaxFloat64,
		"1e999", math.Inf(1), "-1e999", math.Inf(-1), "0x10", refused, "true", refused, "  ", refused, "1,5", refused, "2024-03-01", refused,
	)
	add(catalog.TypeBoolean,
		"true", true, "false", false, "TRUE", true, "t", true, "f", false, "1", true, "0", false,
		"yes", true, "no", false, "y", true, "n", false, "on", refused, "off", refused, " true ", refused,
		"1.5", refused, "2", refused, "-1", refused, "maybe", refused, "  ", refused, "NaN", refused,
	)
	for _, typ := range []string{catalog.TypeTimestamp, catalog.TypeTimestampTZ} {
		add(typ,
			"2024-03-01T10:00:00Z", ts("2024-03-01T10:00:00Z"),
			"2024-03-01 10:00:00", ts("2024-03-01T10:00:00Z"),
			"2024-03-01T10:00:00.123456", ts("2024-03-01T10:00:00.123456Z"),
			"2024-03-01T12:00:00+02:00", ts("2024-03-01T10:00:00Z"),
			"2024-03-01T05:00:00-05", ts("2024-03-01T10:00:00Z"),
			"2024-03-01 11:00:00 Europe/Paris", ts("2024-03-01T10:00:00Z"),
			"2024-03-01", ts("2024-03-01T00:00:00Z"),
			" 2024-03-01T10:00:00Z ", ts("2024-03-01T10:00:00Z"),
			"1709287200", refused, "1709287200000", refused, "0", refused, "1.5", refused,
			"infinity", refused, "-infinity", refused, "inf", refused, "now", refused, "NaN", refused,
			"2024-13-01", refused, "2024-02-30", refused, "01/03/2024", refused, "true", refused, "  ", refused,
		)
	}
	add(catalog.TypeVarchar, "1.5", "1.5", "0x10", "0x10", "  ", "  ", "NaN", "NaN", "true", "true", " x ", " x ")
	return cases
}

// valueDataset has the time column t and one column v of type typ.
func valueDataset(typ string) catalog.Dataset {
	return catalog.Dataset{
		Name:       "vals",
		Columns:    []catalog.Column{{Name: "t", Type: catalog.TypeTimestamp}, {Name: "v", Type: typ}},
		TimeColumn: "t",
		Partition:  catalog.WindowDay,
	}
}

// ingestOne ingests content and returns the stored value of v in its one
// row, or the *InputError; it checks that a refusal leaves no file.
func ingestOne(t *testing.T, typ string, format Format, content string) (any, *InputError) {
	t.Helper()
	in := writeFile(t, t.TempDir(), "in", content)
	out := t.TempDir()
	files, err := testEngine.PrepareIngest(context.Background(), valueDataset(typ), format, in, out)
	if err != nil {
		var ie *InputError
		require.ErrorAs(t, err, &ie, "an input error, not %v", err)
		left, rerr := os.ReadDir(out)
		require.NoError(t, rerr)
		require.Empty(t, left, "a refused input left files")
		return nil, ie
	}
	require.Len(t, files, 1)
	rows := readParquet(t, files[0].Path)
	require.Len(t, rows, 1)
	return rows[0][1], nil
}

func requireStored(t *testing.T, typ string, want, got any, ie *InputError) {
	t.Helper()
	if want == refused {
		require.NotNil(t, ie, "accepted and stored %#v", got)
		require.Equal(t, int64(1), ie.Row, "row of %q", ie.Error())
		require.Equal(t, "v", ie.Column, "column of %q", ie.Error())
		require.Contains(t, ie.Message, "is not a valid "+typ)
		require.Contains(t, ie.Message, typeHint(typ))
		return
	}
	require.Nil(t, ie, "refused")
	if f, ok := want.(float64); ok {
		g, ok := got.(float64)
		require.True(t, ok, "stored %T", got)
		if math.IsNaN(f) {
			require.True(t, math.IsNaN(g), "stored %v", g)
			return
		}
		require.Equal(t, f, g)
		require.Equal(t, math.Signbit(f), math.Signbit(g), "sign of %v", g)
		return
	}
	if w, ok := want.(time.Time); ok {
		g, ok := got.(time.Time)
		require.True(t, ok, "stored %T %v", got, got)
		require.True(t, w.Equal(g), "stored %s, want %s", g, w)
		return
	}
	require.Equal(t, want, got)
}

// TestIngestValues is the type × tricky value table: each text value is
// stored or refused the same from a CSV field and from an NDJSON string, and
// a refusal names row 1 and column v.
func TestIngestValues(t *testing.T) {
	t.Parallel()
	for _, tc := range valueCases() {
		t.Run(tc.typ+"/"+tc.text, func(t *testing.T) {
			t.Parallel()
			field := tc.text
			if strings.ContainsAny(field, ", \"") {
				field = `"` + strings.ReplaceAll(field, `"`, `""`) + `"`
			}
			got, ie := ingestOne(t, tc.typ, FormatCSV, "t,v\n2024-03-01T00:00:00Z,"+field+"\n")
			requireStored(t, tc.typ, tc.want, got, ie)
			got, ie = ingestOne(t, tc.typ, FormatNDJSON, `{"t":"2024-03-01T00:00:00Z","v":`+strconv.Quote(tc.text)+"}\n")
			requireStored(t, tc.typ, tc.want, got, ie)
		})
	}
}

// TestIngestJSONLiterals covers JSON values other than strings: numbers
// and booleans are held to the same forms as text.
func TestIngestJSONLiterals(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		typ, literal string
		want         any
	}{
		{catalog.TypeBigint, "42", int64(42)},
		{catalog.TypeBigint, "-0", int64(0)},
		{catalog.TypeBigint, "9007199254740993", int64(9007199254740993)},
		{catalog.TypeBigint, "1.5", refused},
		{catalog.TypeBigint, "1.0", refused},
		{catalog.TypeBigint, "1e3", refused},
		{catalog.TypeBigint, "true", refused},
		{catalog.TypeBigint, "99999999999999999999", refused},
		{catalog.TypeInteger, "2.5", refused},
		{catalog.TypeInteger, "false", refused},
		{catalog.TypeDouble, "1.5", 1.5},
		{catalog.TypeDouble, "1e3", 1000.0},
		{catalog.TypeDouble, "-0.0", math.Copysign(0, -1)},
		{catalog.TypeDouble, "-0", 0.0}, // a JSON integer: no sign
		{catalog.TypeDouble, "true", refused},
		{catalog.TypeBoolean, "true", true},
		{catalog.TypeBoolean, "0", false},
		{catalog.TypeBoolean, "1", true},
		{catalog.TypeBoolean, "1.5", refused},
		{catalog.TypeBoolean, "2", refused},
		{catalog.TypeTimestamp, "1709287200", refused},
		{catalog.TypeTimestampTZ, "true", refused},
		{catalog.TypeVarchar, "5", "5"},
		{catalog.TypeVarchar, "true", "true"},
		{catalog.TypeBigint, "null", nil},
		{catalog.TypeBigint, `""`, refused},
		{catalog.TypeDouble, "[1]", refused},
	} {
		t.Run(tc.typ+"/"+tc.literal, func(t *testing.T) {
			t.Parallel()
			got, ie := ingestOne(t, tc.typ, FormatNDJSON, `{"t":"2024-03-01T00:00:00Z","v":`+tc.literal+"}\n")
			requireStored(t, tc.typ, tc.want, got, ie)
		})
	}
	// An empty CSV field, quoted or not, is NULL whatever the type.
	for _, typ := range []string{catalog.TypeInteger, catalog.TypeDouble, catalog.TypeBoolean, catalog.TypeTimestampTZ} {
		for _, field := range []string{"", `""`} {
			got, ie := ingestOne(t, typ, FormatCSV, "t,v\n2024-03-01T00:00:00Z,"+field+"\n")
			require.Nil(t, ie)
			require.Nil(t, got, "%s %q", typ, field)
		}
	}
}

// TestIngestJSONLateValues: DuckDB's JSON reader detects types from a
// sample of the first objects and converts later values to them loosely
// (1.5 to the integer 2, true to the double 1). A value after the sample is
// held to the same forms as one inside it.
func TestIngestJSONLateValues(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		typ, common, late string
		want              any
	}{
		{catalog.TypeBigint, "5", "1.5", refused},
		{catalog.TypeBigint, "5", "true", refused},
		{catalog.TypeInteger, "5", "1e3", refused},
		{catalog.TypeDouble, "1.5", "true", refused},
		{catalog.TypeBoolean, "true", "1.5", refused},
		{catalog.TypeBigint, "5", "7", int64(7)},
		{catalog.TypeDouble, "1.5", "-0.0", math.Copysign(0, -1)},
	} {
		t.Run(tc.typ+"/"+tc.late, func(t *testing.T) {
			t.Parallel()
			const n = 25_000 // more than DuckDB's sample of 20480 objects
			var b strings.Builder
			for range n {
				fmt.Fprintf(&b, `{"t":"2024-03-01T00:00:00Z","v":%s}`+"\n", tc.common)
			}
			fmt.Fprintf(&b, `{"t":"2024-03-01T00:00:01Z","v":%s}`+"\n", tc.late)
			in := writeFile(t, t.TempDir(), "in", b.String())
			out := t.TempDir()
			files, err := testEngine.PrepareIngest(context.Background(), valueDataset(tc.typ), FormatNDJSON, in, out)
			if tc.want == refused {
				var ie *InputError
				require.ErrorAs(t, err, &ie, "stored a late %s", tc.late)
				require.Equal(t, int64(n+1), ie.Row, ie.Error())
				require.Equal(t, "v", ie.Column)
				left, _ := os.ReadDir(out)
				require.Empty(t, left)
				return
			}
			require.NoError(t, err)
			rows := readParquet(t, files[0].Path)
			require.Len(t, rows, n+1)
			requireStored(t, tc.typ, tc.want, rows[n][1], nil)
		})
	}
}

// TestIngestJSONArrayHinted: the fast path reads a JSON array after a byte
// order mark and white space, and holds a late value of an array to the
// same forms as one of NDJSON.
func TestIngestJSONArrayHinted(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	ds := valueDataset(catalog.TypeBigint)
	in := writeFile(t, t.TempDir(), "in", "\uFEFF \n [{\"t\":\"2024-03-01T00:00:00Z\",\"v\":5},{\"t\":\"2024-03-01T00:00:01Z\",\"v\":\"6\"}]")
	files, err := testEngine.PrepareIngest(ctx, ds, FormatJSON, in, t.TempDir())
	require.NoError(t, err)
	require.Equal(t, [][]any{{mustTime(t, "2024-03-01T00:00:00Z"), int64(5)}, {mustTime(t, "2024-03-01T00:00:01Z"), int64(6)}}, readParquet(t, files[0].Path))

	in = writeFile(t, t.TempDir(), "in", "\uFEFF \n [{\"t\":\"2024-03-01T00:00:00Z\",\"v\":5}]")
	before := detectedReads.Load()
	_, err = testEngine.PrepareIngest(ctx, ds, FormatJSON, in, t.TempDir())
	require.NoError(t, err)
	require.Greater(t, detectedReads.Load(), before, "the fast path read the array")

	var b strings.Builder
	b.WriteString("[")
	for range 25_000 {
		b.WriteString(`{"t":"2024-03-01T00:00:00Z","v":5},`)
	}
	b.WriteString(`{"t":"2024-03-01T00:00:00Z","v":2.5}]`)
	in = writeFile(t, t.TempDir(), "in", b.String())
	out := t.TempDir()
	_, err = testEngine.PrepareIngest(ctx, ds, FormatJSON, in, out)
	var ie *InputError
	require.ErrorAs(t, err, &ie)
	require.Equal(t, InputError{Row: 25_001, Column: "v", Message: `value "2.5" is not a valid bigint: ` + typeHint(catalog.TypeBigint)}, *ie)
	left, _ := os.ReadDir(out)
	require.Empty(t, left)

	for _, content := range []string{"[]", " [ ] ", "{}"} {
		in = writeFile(t, t.TempDir(), "in", content)
		_, err = testEngine.PrepareIngest(ctx, ds, FormatJSON, in, t.TempDir())
		require.ErrorAs(t, err, &ie, content)
	}
}
