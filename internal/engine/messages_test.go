package engine

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"timestore/internal/catalog"
)

// TestMessageOtherDelimiter: a CSV separated by another delimiter reads as
// one header field; the message says which delimiter it looks like and that
// timestore reads commas.
func TestMessageOtherDelimiter(t *testing.T) {
	t.Parallel()
	ds := metrics("cpu", catalog.WindowDay)
	for _, tc := range []struct{ header, column, delimiter string }{
		{"ts;series;value", "ts;series;value", "';'"},
		{"ts\tseries\tvalue", "ts\tseries\tvalue", "tab"},
		{"ts|series|value", "ts|series|value", "'|'"},
	} {
		in := writeFile(t, t.TempDir(), "in.csv", tc.header+"\n2024-01-01T00:00:00Z;a;1\n")
		_, err := testEngine.PrepareIngest(context.Background(), ds, FormatCSV, in, t.TempDir())
		var ie *InputError
		require.ErrorAs(t, err, &ie)
		require.Equal(t, tc.column, ie.Column)
		require.Contains(t, ie.Message, "looks "+tc.delimiter+"-separated")
		require.Contains(t, ie.Message, "comma-separated")
		require.Contains(t, ie.Message, "ts, series, value", "the columns expected")
	}
	// An unknown column that is no other delimiter's header keeps the plain message.
	in := writeFile(t, t.TempDir(), "in.csv", "ts,series,value,colour;x\n2024-01-01T00:00:00Z,a,1,red\n")
	_, err := testEngine.PrepareIngest(context.Background(), ds, FormatCSV, in, t.TempDir())
	var ie *InputError
	require.ErrorAs(t, err, &ie)
	require.Equal(t, "colour;x", ie.Column)
	require.NotContains(t, ie.Message, "separated")
}

// TestMessageBadTimestamp: a value of a time column that does not parse is
// refused with the accepted forms.
func TestMessageBadTimestamp(t *testing.T) {
	t.Parallel()
	ds := metrics("cpu", catalog.WindowDay)
	for _, format := range []Format{FormatCSV, FormatNDJSON} {
		content := "ts,series,value\n2024-01-01T00:00:00Z,a,1\n03/01/2024 10:00,a,2\n"
		if format == FormatNDJSON {
			content = `{"ts":"2024-01-01T00:00:00Z","value":1}` + "\n" + `{"ts":"03/01/2024 10:00","value":2}` + "\n"
		}
		in := writeFile(t, t.TempDir(), "in", content)
		_, err := testEngine.PrepareIngest(context.Background(), ds, format, in, t.TempDir())
		var ie *InputError
		require.ErrorAs(t, err, &ie, format)
		require.Equal(t, int64(2), ie.Row)
		require.Equal(t, "ts", ie.Column)
		for _, fact := range []string{`"03/01/2024 10:00"`, "ISO 8601", "2024-03-01T10:00:00Z", "2024-03-01 10:00:00", "+02:00", "epoch numbers"} {
			require.Contains(t, ie.Message, fact, format)
		}
	}
}

// TestMessageOtherDataset: a query naming another table than its dataset
// says that a query reads only the dataset it names, not DuckDB's guess
// of a system table.
func TestMessageOtherDataset(t *testing.T) {
	t.Parallel()
	f := setupQuery(t)
	_, _, err := collect(t, QueryRequest{Dataset: f.ds, Files: f.files, SQL: "SELECT * FROM cpu"})
	var se *SQLError
	require.ErrorAs(t, err, &se)
	require.Contains(t, se.Message, `table "cpu" does not exist`)
	require.Contains(t, se.Message, "a query reads only the dataset it names (here: m)")
	require.Contains(t, se.Message, "/v1/datasets/cpu/query")
	require.NotContains(t, se.Message, "Did you mean")
	require.NotContains(t, se.Message, "pg_")

	// Other binder errors keep DuckDB's message.
	_, _, err = collect(t, QueryRequest{Dataset: f.ds, Files: f.files, SQL: "SELECT nope FROM m"})
	require.ErrorAs(t, err, &se)
	require.Contains(t, se.Message, "nope")
	require.NotContains(t, se.Message, "reads only the dataset")
}
