package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"timestore/internal/client"
	"timestore/internal/testutil/testserver"
)

// valuesColumns has one column of every type; docs/api.md, "Column types
// and accepted values", documents what each takes.
var valuesColumns = []client.Column{
	{Name: "ts", Type: "timestamp"}, {Name: "i", Type: "integer"}, {Name: "b", Type: "bigint"},
	{Name: "d", Type: "double"}, {Name: "f", Type: "boolean"}, {Name: "tz", Type: "timestamptz"},
	{Name: "s", Type: "varchar"},
}

func TestIngestValuesOverHTTP(t *testing.T) {
	t.Parallel()
	tb := testserver.Start(t, testserver.Options{})
	ctx := context.Background()
	_, err := tb.Client.CreateDataset(ctx, client.CreateDataset{Name: "vals", Columns: valuesColumns, TimeColumn: "ts", Partition: "day"})
	require.NoError(t, err)
	_, err = tb.Client.Ingest(ctx, "vals", "csv", strings.NewReader("ts,i\n2024-03-01T00:00:00Z,1\n"), "")
	require.NoError(t, err)
	before := datasetState(t, tb, "vals")

	refusedValues := map[string][]string{
		"i":  {"1.5", "2.5", "1.0", "0x10", "0b101", "1e3", "NaN", "Infinity", "true", "t", "  ", "2147483648", "1 000", "2024-03-01"},
		"b":  {"1.5", "-0.0", "0x10", "1E3", "-inf", "false", "9223372036854775808", "99999999999999999999"},
		"d":  {"0x10", "true", "  ", "1,5", "2024-03-01", "one"},
		"f":  {"1.5", "2", "-1", "maybe", "on", " true ", "NaN"},
		"ts": {"1709287200", "1709287200000", "1.5", "infinity", "-infinity", "now", "NaN", "2024-13-01", "2024-02-30", "01/03/2024", "true"},
		"tz": {"1709287200", "inf", "now", "2024-02-30T10:00:00Z", "true", "  "},
	}
	type attempt struct{ format, body, column, value string }
	var attempts []attempt
	for col, values := range refusedValues {
		for _, v := range values {
			field := v
			if strings.ContainsAny(field, ", ") {
				field = `"` + field + `"`
			}
			// The bad value in the second row: the first is good.
			good := "2024-03-02T00:00:00Z"
			bad := "2024-03-02T00:00:01Z"
			if col == "ts" {
				bad = field
			}
			csvBody := fmt.Sprintf("ts,%s\n%s,\n%s,%s\n", col, good, bad, field)
			if col == "ts" {
				csvBody = "ts\n" + good + "\n" + field + "\n"
			}
			attempts = append(attempts, attempt{"csv", csvBody, col, v})
			ndjson := fmt.Sprintf(`{"ts":%q}`+"\n"+`{"ts":%q,%q:%s}`+"\n", good, "2024-03-02T00:00:01Z", col, strconv.Quote(v))
			if col == "ts" {
				ndjson = fmt.Sprintf(`{"ts":%q}`+"\n"+`{"ts":%s}`+"\n", good, strconv.Quote(v))
			}
			attempts = append(attempts, attempt{"ndjson", ndjson, col, v})
		}
	}
	// JSON numbers and booleans, not strings.
	for _, lit := range []struct{ column, literal, shown string }{
		{"i", "1.5", "1.5"}, {"i", "1e3", "1000.0"}, {"i", "true", "true"}, {"b", "2.0", "2.0"},
		{"d", "true", "true"}, {"f", "1.5", "1.5"}, {"f", "2", "2"}, {"ts", "1709287200", "1709287200"},
	} {
		attempts = append(attempts, attempt{"ndjson",
			fmt.Sprintf(`{"ts":"2024-03-02T00:00:00Z"}`+"\n"+`{"ts":"2024-03-02T00:00:01Z",%q:%s}`+"\n", lit.column, lit.literal),
			lit.column, lit.shown})
		if lit.column == "ts" {
			attempts[len(attempts)-1].body = `{"ts":"2024-03-02T00:00:00Z"}` + "\n" + `{"ts":` + lit.literal + "}\n"
		}
	}

	for _, a := range attempts {
		t.Run(a.format+"/"+a.column+"/"+a.value, func(t *testing.T) {
			_, err := tb.Client.Ingest(ctx, "vals", a.format, strings.NewReader(a.body), "")
			var ce *client.Error
			require.ErrorAs(t, err, &ce, "accepted %q for %s", a.value, a.column)
			require.Equal(t, 400, ce.Status, ce.Message)
			require.Equal(t, "invalid_input", ce.Code)
			require.Equal(t, int64(2), ce.Row, ce.Message)
			require.Equal(t, a.column, ce.Column, ce.Message)
			require.Contains(t, ce.Message, "row 2")
			require.Contains(t, ce.Message, fmt.Sprintf("column %q", a.column))
			require.Contains(t, ce.Message, fmt.Sprintf("value %q is not a valid", a.value))
		})
	}
	require.Equal(t, before, datasetState(t, tb, "vals"), "a refused ingest changed the dataset")

	// The accepted tricky values, as they are stored.
	csvBody := "ts,i,b,d,f,tz,s\n" +
		`2024-03-03T10:00:00Z,+5," 7 ",-0,yes,2024-03-03T12:00:00+02:00,"  "` + "\n" +
		`2024-03-03 10:00:01,1_000,-0,1e3,0,2024-03-03 11:00:01 Europe/Paris,0x10` + "\n" +
		`2024-03-03T10:00:02,,,NaN,T,,` + "\n"
	_, err = tb.Client.Ingest(ctx, "vals", "csv", strings.NewReader(csvBody), "")
	require.NoError(t, err)
	ndjsonBody := `{"ts":"2024-03-03T10:00:03Z","i":"42","b":9007199254740993,"d":"-Infinity","f":1,"s":5}` + "\n"
	_, err = tb.Client.Ingest(ctx, "vals", "ndjson", strings.NewReader(ndjsonBody), "")
	require.NoError(t, err)
	res, err := tb.Client.Query(ctx, "vals", client.QueryRequest{
		SQL:  "SELECT i, b, CAST(d AS VARCHAR), f, CAST(tz AS VARCHAR), s FROM vals ORDER BY ts",
		From: "2024-03-03T00:00:00Z",
	})
	require.NoError(t, err)
	n := func(s string) any { return json.Number(s) }
	require.Equal(t, [][]any{
		{n("5"), n("7"), "-0.0", true, "2024-03-03 10:00:00+00", "  "},
		{n("1000"), n("0"), "1000.0", false, "2024-03-03 10:00:01+00", "0x10"},
		{nil, nil, "nan", true, nil, nil},
		{n("42"), n("9007199254740993"), "-inf", true, nil, "5"},
	}, res.Rows)
}

// TestMessagesOverHTTP: the messages of a CSV with another delimiter and
// of a query naming another dataset's table, as a client sees them.
func TestMessagesOverHTTP(t *testing.T) {
	t.Parallel()
	tb := testserver.Start(t, testserver.Options{})
	ctx := context.Background()
	for _, name := range []string{"cpu", "mem"} {
		_, err := tb.Client.CreateDataset(ctx, client.CreateDataset{Name: name, Columns: []client.Column{
			{Name: "ts", Type: "timestamp"}, {Name: "host", Type: "varchar"}, {Name: "value", Type: "double"},
		}, TimeColumn: "ts", Partition: "day"})
		require.NoError(t, err)
	}
	before := datasetState(t, tb, "cpu")
	_, err := tb.Client.Ingest(ctx, "cpu", "csv", strings.NewReader("ts;host;value\n2024-01-01T00:00:00Z;a;1\n"), "")
	var ce *client.Error
	require.ErrorAs(t, err, &ce)
	require.Equal(t, 400, ce.Status)
	require.Equal(t, "ts;host;value", ce.Column)
	require.Contains(t, ce.Message, "looks ';'-separated")
	require.Contains(t, ce.Message, "comma-separated")
	require.Equal(t, before, datasetState(t, tb, "cpu"))

	_, err = tb.Client.Query(ctx, "mem", client.QueryRequest{SQL: "SELECT * FROM cpu"})
	require.ErrorAs(t, err, &ce)
	require.Equal(t, 400, ce.Status)
	require.Contains(t, ce.Message, "a query reads only the dataset it names (here: mem)")
	require.Contains(t, ce.Message, "/v1/datasets/cpu/query")
	require.NotContains(t, ce.Message, "Did you mean")
}
