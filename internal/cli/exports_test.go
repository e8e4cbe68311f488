package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestExportsList runs `exports list` against a stub of the route (the
// route itself is tested in internal/api).
func TestExportsList(t *testing.T) {
	t.Parallel()
	var gotPath, gotQuery string
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotPath, gotQuery = r.URL.Path, r.URL.RawQuery
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"exports":[{"id":3,"target":"remote","window":"day","window_label":"2024-03-01",
			"version":2,"state":"verified","keys":["exports/cpu/window=2024-03-01/part-0000.parquet","exports/cpu/window=2024-03-01/part-0001.parquet"],
			"row_count":1250,"size_bytes":40960,"manifest_version":9,"time_min":"2024-03-01T01:00:00Z","time_max":"2024-03-01T22:59:00Z",
			"verified_at":"2024-03-05T00:00:01Z"}]}`))
	}))
	t.Cleanup(hs.Close)

	run := func(output string, args ...string) (string, error) {
		var out, errb bytes.Buffer
		g := &globals{server: hs.URL, output: output, stdout: &out, stderr: &errb}
		cmd := newExportsCmd(g)
		cmd.SetArgs(args)
		cmd.SetOut(&out)
		cmd.SetErr(&errb)
		err := cmd.ExecuteContext(context.Background())
		return out.String(), err
	}

	out, err := run("table", "list", "cpu")
	require.NoError(t, err)
	require.Equal(t, "/v1/datasets/cpu/exports", gotPath)
	require.Empty(t, gotQuery)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	require.Len(t, lines, 2, out)
	require.Contains(t, lines[0], "WINDOW")
	for _, want := range []string{"2024-03-01", "verified", "1250", "40960", "2024-03-01T01:00:00Z", "remote"} {
		require.Contains(t, lines[1], want)
	}

	out, err = run("json", "list", "cpu", "--state", "verified")
	require.NoError(t, err)
	require.Equal(t, "state=verified", gotQuery)
	var doc struct {
		Exports []struct {
			ID   int64    `json:"id"`
			Keys []string `json:"keys"`
		} `json:"exports"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &doc))
	require.Len(t, doc.Exports, 1)
	require.Len(t, doc.Exports[0].Keys, 2)

	_, err = run("table", "list")
	require.Error(t, err)
}
