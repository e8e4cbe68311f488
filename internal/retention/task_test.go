package retention

import (
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"timestore/internal/jobs"
)

// TestSummaryJSON: the job outputs' keys are the ones `jobs show` has
// always shown.
func TestSummaryJSON(t *testing.T) {
	t.Parallel()
	s := &Service{}
	require.Equal(t, jobs.KindRetention, s.RetentionTask().Kind())
	require.Equal(t, jobs.KindSweep, s.SweepTask().Kind())

	apply := ApplyResult{Dataset: "cpu", Plan: Plan{Selected: []PlannedPartition{{ID: 4, Rule: "max_age"}}}}
	out := jsonObject(t, apply.Summary())
	require.Equal(t, []string{"bytes_over_budget", "dataset", "held", "kept_back", "kept_back_reasons", "manifest_version",
		"notes", "planned_version", "remain", "removed", "removed_by_rule", "removed_ids", "replanned", "sweep_enqueued"}, keys(out))
	require.Equal(t, map[string]any{"max_age": 1.0}, out["removed_by_rule"])
	require.Equal(t, []any{4.0}, out["removed_ids"])

	sweep := SweepResult{Dataset: "cpu", Datasets: []DatasetSweep{}, NextSweepIn: 90 * time.Second}
	out = jsonObject(t, sweep.Summary())
	require.Equal(t, []string{"already_gone", "dataset", "datasets", "delete_errors", "kept_by_grace", "kept_by_lease",
		"next_sweep_after", "next_sweep_in_s", "objects_deleted", "purged", "purged_bytes"}, keys(out))
	require.Equal(t, 90.0, out["next_sweep_in_s"])
	require.Equal(t, "1m30s", out["next_sweep_after"])
}

func jsonObject(t *testing.T, v any) map[string]any {
	t.Helper()
	b, err := json.Marshal(v)
	require.NoError(t, err)
	var out map[string]any
	require.NoError(t, json.Unmarshal(b, &out))
	return out
}

func keys(m map[string]any) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}
