package jobs

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"
	"github.com/stretchr/testify/require"
)

// TestSnoozedJobShowsWaiting: a job that snoozed (a sweep waiting for its
// grace period) is shown as "waiting until T: reason", and its output
// carries the reason, not River's JobSnoozeError as an error.
func TestSnoozedJobShowsWaiting(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 12, 7, 5, 0, 0, 0, time.UTC)
	// The output the worker records for a snoozing sweep (see SweepTask.Run and Service.work).
	snooze := fmt.Errorf("2 removed partitions kept back (grace 2, leases 0): sweep again in 1h0m1s: %w", river.JobSnooze(time.Hour+900*time.Millisecond))
	out, err := json.Marshal(map[string]any{"output": map[string]any{
		"outcome": OutcomeSnoozed, "trigger": "followup", "summary": map[string]any{"purged": 0}, "error": snooze.Error(),
	}})
	require.NoError(t, err)
	require.Contains(t, string(out), "JobSnoozeError", "the recorded output is River's wording")
	row := &rivertype.JobRow{
		ID: 7, Kind: KindSweep, State: rivertype.JobStateScheduled, Attempt: 1, MaxAttempts: 10,
		EncodedArgs: []byte(`{"dataset":"cpu","dataset_id":1}`), Metadata: out, ScheduledAt: at, CreatedAt: at.Add(-time.Hour),
	}
	info := jobInfo(row)
	require.Equal(t, "waiting until 2026-12-07T05:00:00Z: 2 removed partitions kept back (grace 2, leases 0): sweep again in 1h0m1s", info.Waiting)
	require.NotContains(t, string(info.Output), "JobSnoozeError")
	require.NotContains(t, string(info.Output), `"error"`)
	var o map[string]any
	require.NoError(t, json.Unmarshal(info.Output, &o))
	require.Equal(t, "2 removed partitions kept back (grace 2, leases 0): sweep again in 1h0m1s", o["reason"])
	require.Equal(t, OutcomeSnoozed, info.Outcome)
	require.Empty(t, info.Errors)

	// Running again: the previous attempt's reason stays, but it is no longer waiting.
	row.State = rivertype.JobStateRunning
	info = jobInfo(row)
	require.Empty(t, info.Waiting)
	require.NotContains(t, string(info.Output), "JobSnoozeError")

	// A failed attempt's error is left as it is.
	failed, err := json.Marshal(map[string]any{"output": map[string]any{"outcome": OutcomeError, "error": "delete object: boom"}})
	require.NoError(t, err)
	row.State, row.Metadata = rivertype.JobStateRetryable, failed
	info = jobInfo(row)
	require.Empty(t, info.Waiting)
	require.Contains(t, string(info.Output), `"error":"delete object: boom"`)
}
