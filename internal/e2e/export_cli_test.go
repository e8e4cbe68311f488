package e2e

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"timestore/internal/testutil/testserver"

	"github.com/stretchr/testify/require"
)

// TestExportThroughCLI exports cold data to the S3 target through the job
// harness and lists it.
func TestExportThroughCLI(t *testing.T) {
	// Not parallel: its in-process server holds full connection pools, and
	// this binary runs the crash scenarios 24 at a time (crashParallel);
	// sequential tests run before the parallel ones, never beside them.
	b := testserver.Start(t, testserver.Options{S3: true})
	ctx := context.Background()
	u := b.HTTP.URL
	b.CreateCPU(t, "cpu", "local", "day")
	_, err := b.Client.SetPolicy(ctx, "cpu", json.RawMessage(`{"export":{"target":"remote","after":"1d","window":"day","schedule":"@daily"}}`))
	require.NoError(t, err)
	_, err = b.Client.Ingest(ctx, "cpu", "csv", strings.NewReader(testserver.Encode("csv", testserver.GenRows(96, time.Date(2024, 2, 1, 0, 0, 0, 0, time.UTC), time.Hour))), "")
	require.NoError(t, err)

	code, out, errs := runCLI(t, u, "maintenance", "run", "export", "--dataset", "cpu", "--dry-run")
	require.Equal(t, 0, code, errs)
	require.Contains(t, out, "2024-02-01")
	code, _, errs = runCLI(t, u, "maintenance", "run", "export", "--dataset", "cpu", "--wait")
	require.Equal(t, 0, code, errs)
	code, out, errs = runCLI(t, u, "exports", "list", "cpu", "-o", "json")
	require.Equal(t, 0, code, errs)
	require.Equal(t, 4, strings.Count(out, `"verified"`), out)
	require.Contains(t, out, "exports/cpu/window=2024-02-01/part-0000.parquet")
}
