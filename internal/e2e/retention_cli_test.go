package e2e

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"timestore/internal/client"
	"timestore/internal/testutil/testserver"
)

// TestRetentionThroughCLI drives retention, holds, restore and the sweep
// through the CLI and the jobs of a running server.
func TestRetentionThroughCLI(t *testing.T) {
	// Not parallel: its in-process server holds full connection pools, and
	// this binary runs the crash scenarios 24 at a time (crashParallel);
	// sequential tests run before the parallel ones, never beside them.
	b := testserver.Start(t, testserver.Options{})
	ctx := context.Background()
	u := b.HTTP.URL
	b.CreateCPU(t, "cpu", "local", "day")
	// Three old days and today.
	old := time.Now().UTC().AddDate(0, 0, -40).Truncate(24 * time.Hour)
	recent := testserver.GenRows(10, time.Now().UTC().Truncate(time.Second).Add(-time.Hour), time.Minute)
	rows := append(testserver.GenRows(72, old, time.Hour), recent...)
	recentDays := map[time.Time]bool{}
	for _, r := range recent {
		recentDays[r.TS.Truncate(24*time.Hour)] = true
	}
	nRecent := len(recentDays) // one, or two around midnight
	_, err := b.Client.Ingest(ctx, "cpu", "csv", strings.NewReader(testserver.Encode("csv", rows)), "")
	require.NoError(t, err)
	_, err = b.Client.SetPolicy(ctx, "cpu", json.RawMessage(`{"retention":{"max_age":"30d","grace":"1h"}}`))
	require.NoError(t, err)

	// A hold on the second old day keeps it.
	heldDay := old.AddDate(0, 0, 1)
	code, _, errs := runCLI(t, u, "holds", "add", "cpu", "--from", heldDay.Format(time.RFC3339), "--to", heldDay.AddDate(0, 0, 1).Format(time.RFC3339), "--reason", "legal")
	require.Equal(t, 0, code, errs)

	before, err := b.Client.GetDataset(ctx, "cpu")
	require.NoError(t, err)
	code, out, errs := runCLI(t, u, "maintenance", "run", "retention", "--dataset", "cpu", "--dry-run")
	require.Equal(t, 0, code, errs)
	require.Contains(t, out, "max_age")
	after, err := b.Client.GetDataset(ctx, "cpu")
	require.NoError(t, err)
	require.Equal(t, before.ManifestVersion, after.ManifestVersion, "dry run changed the manifest")

	code, _, errs = runCLI(t, u, "maintenance", "run", "retention", "--dataset", "cpu", "--wait")
	require.Equal(t, 0, code, errs)
	removed, err := b.Client.Partitions(ctx, "cpu", "removed")
	require.NoError(t, err)
	require.Len(t, removed, 2, "two old, unheld days removed")
	live, err := b.Client.Partitions(ctx, "cpu", "live")
	require.NoError(t, err)
	require.Len(t, live, 1+nRecent, "the held day and today stay")
	testserver.RequireAggregates(t, testserver.Expected(filterRows(rows, heldDay, heldDay.AddDate(0, 0, 1), true)), b.Aggregates(t, "cpu", "", ""))

	// Restore one removed day within grace: its rows come back.
	code, _, errs = runCLI(t, u, "partitions", "restore", "cpu", strconv.FormatInt(removed[0].ID, 10))
	require.Equal(t, 0, code, errs)
	live, err = b.Client.Partitions(ctx, "cpu", "live")
	require.NoError(t, err)
	require.Len(t, live, 2+nRecent)

	// The audit log shows who removed what.
	code, out, errs = runCLI(t, u, "audit", "--dataset", "cpu", "--action", "retention.remove", "-o", "json")
	require.Equal(t, 0, code, errs)
	require.Contains(t, out, strconv.FormatInt(removed[1].ID, 10))
	code, out, errs = runCLI(t, u, "holds", "list", "cpu", "-o", "json")
	require.Equal(t, 0, code, errs)
	require.Contains(t, out, "legal")

	// Releasing the hold lets the next run remove that day too.
	var holds struct {
		Holds []struct {
			ID int64 `json:"id"`
		} `json:"holds"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &holds), out)
	require.Len(t, holds.Holds, 1)
	code, _, errs = runCLI(t, u, "holds", "release", strconv.FormatInt(holds.Holds[0].ID, 10), "--yes")
	require.Equal(t, 0, code, errs)
	code, _, errs = runCLI(t, u, "maintenance", "run", "retention", "--dataset", "cpu", "--wait")
	require.Equal(t, 0, code, errs)
	live, err = b.Client.Partitions(ctx, "cpu", "live")
	require.NoError(t, err)
	require.Len(t, live, nRecent, "only today is left")

	// Retention enqueued a sweep; within the grace period it purges nothing.
	list, err := b.Client.Jobs(ctx, client.JobFilter{Kind: "sweep", Dataset: "cpu"})
	require.NoError(t, err)
	require.NotEmpty(t, list, "retention did not enqueue a sweep")
	purged, err := b.Client.Partitions(ctx, "cpu", "purged")
	require.NoError(t, err)
	require.Empty(t, purged)
}

func filterRows(rows []testserver.Row, from, to time.Time, exclude bool) []testserver.Row {
	var out []testserver.Row
	cut := time.Now().UTC().AddDate(0, 0, -30)
	for _, r := range rows {
		in := !r.TS.Before(from) && r.TS.Before(to)
		if r.TS.After(cut) || in == exclude {
			out = append(out, r)
		}
	}
	return out
}
