package jobs

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestRiverLogHandlerDemotesRoutineRecords(t *testing.T) {
	t.Parallel()
	for _, level := range []slog.Level{slog.LevelInfo, slog.LevelDebug} {
		var buf bytes.Buffer
		log := slog.New(riverLogHandler{slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: level})}).With("component", "river")
		log.Info("producer: Producer job counts", "num_completed_jobs", 3)
		log.Info("JobCleaner: Ran successfully", "num_jobs_deleted", 0)
		log.Info("jobexecutor.JobExecutor: Job errored; retrying", "job_id", 7)
		log.Warn("elector: something worth a look")
		log.Debug("producer: polling")
		out := buf.String()
		lines := strings.Count(out, "\n")
		require.Contains(t, out, `"msg":"jobexecutor.JobExecutor: Job errored; retrying","component":"river","job_id":7`)
		require.Contains(t, out, `"level":"WARN"`)
		if level == slog.LevelInfo {
			require.Equal(t, 2, lines, out)
			require.NotContains(t, out, "Producer job counts")
			require.NotContains(t, out, "Ran successfully")
			continue
		}
		require.Equal(t, 5, lines, out)
		require.Contains(t, out, `"level":"DEBUG","msg":"producer: Producer job counts"`)
		require.Contains(t, out, `"level":"DEBUG","msg":"JobCleaner: Ran successfully"`)
	}
}
