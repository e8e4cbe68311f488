package e2e

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"timestore/internal/testutil/testserver"

	"github.com/stretchr/testify/require"
)

// TestCompactionThroughCLI merges small ingests through the job harness and
// honours the no-compact mark.
func TestCompactionThroughCLI(t *testing.T) {
	// Not parallel: its in-process server holds full connection pools, and
	// this binary runs the crash scenarios 24 at a time (crashParallel);
	// sequential tests run before the parallel ones, never beside them.
	b := testserver.Start(t, testserver.Options{})
	ctx := context.Background()
	u := b.HTTP.URL
	b.CreateCPU(t, "cpu", "local", "day")
	_, err := b.Client.SetPolicy(ctx, "cpu", json.RawMessage(`{"compaction":{"min_input_files":2,"schedule":"@every 24h"}}`))
	require.NoError(t, err)
	var all []testserver.Row
	for i := 0; i < 6; i++ {
		rows := testserver.GenRows(50, time.Date(2024, 3, 1, i, 0, 0, 0, time.UTC), time.Minute)
		all = append(all, rows...)
		_, err := b.Client.Ingest(ctx, "cpu", "csv", strings.NewReader(testserver.Encode("csv", rows)), "")
		require.NoError(t, err)
	}
	parts, err := b.Client.Partitions(ctx, "cpu", "live")
	require.NoError(t, err)
	require.Len(t, parts, 6)
	// Keep the last one out of compaction.
	code, _, errs := runCLI(t, u, "partitions", "no-compact", "cpu", strconv.FormatInt(parts[5].ID, 10))
	require.Equal(t, 0, code, errs)

	code, out, errs := runCLI(t, u, "maintenance", "run", "compaction", "--dataset", "cpu", "--dry-run")
	require.Equal(t, 0, code, errs)
	require.Contains(t, out, "groups")
	code, _, errs = runCLI(t, u, "maintenance", "run", "compaction", "--dataset", "cpu", "--wait")
	require.Equal(t, 0, code, errs)

	live, err := b.Client.Partitions(ctx, "cpu", "live")
	require.NoError(t, err)
	require.Len(t, live, 2, "five merged into one, the marked one kept")
	levels := map[int]int{}
	for _, p := range live {
		levels[p.Level]++
	}
	require.Equal(t, map[int]int{0: 1, 1: 1}, levels)
	testserver.RequireAggregates(t, testserver.Expected(all), b.Aggregates(t, "cpu", "", ""))
	removed, err := b.Client.Partitions(ctx, "cpu", "removed")
	require.NoError(t, err)
	require.Len(t, removed, 5, "inputs are marked removed, not deleted")
	code, out, errs = runCLI(t, u, "audit", "--dataset", "cpu", "-o", "json")
	require.Equal(t, 0, code, errs)
	require.Contains(t, out, "partition.set_no_compact")
}
