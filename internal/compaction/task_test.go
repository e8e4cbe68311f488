package compaction

import (
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"timestore/internal/jobs"
)

// TestSummaryJSON: the job output's keys are the ones `jobs show` has
// always shown.
func TestSummaryJSON(t *testing.T) {
	t.Parallel()
	require.Equal(t, jobs.KindCompaction, (&Compactor{}).Task().Kind())
	r := Result{Dataset: "cpu", Duration: 1500 * time.Millisecond, Merged: []Merged{{Partition: 9, Inputs: []int64{1, 2},
		Timings: Timings{Fetch: time.Second, Commit: 2 * time.Second}}}}
	b, err := json.Marshal(r.Summary())
	require.NoError(t, err)
	var out map[string]any
	require.NoError(t, json.Unmarshal(b, &out))
	require.Equal(t, []string{"conflicts", "dataset", "duration_seconds", "input_bytes", "input_partitions", "merged",
		"merged_not_listed", "merges", "output_bytes", "output_partitions", "planned_groups", "planned_version", "rows",
		"small_partitions_after", "small_partitions_before"}, keys(out))
	require.Equal(t, 1.5, out["duration_seconds"])
	merged := out["merged"].([]any)[0].(map[string]any)
	require.Equal(t, []string{"input_bytes", "inputs", "level", "manifest_version", "output_bytes", "partition", "rows", "seconds"}, keys(merged))
	require.Equal(t, map[string]any{"fetch": 1.0, "merge": 0.0, "upload": 0.0, "commit": 2.0}, merged["seconds"])
}

func keys(m map[string]any) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}
