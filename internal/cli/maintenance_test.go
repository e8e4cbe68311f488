package cli_test

import (
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"timestore/internal/testutil/testserver"
)

// maintenance status and jobs show say when a job was handed back after a
// restart: the server starts on a data directory whose previous process died
// running a compaction (its row left as a SIGKILLed process leaves it:
// running, last attempted by an earlier client of the same node), hands the
// job back at start-up and runs it again.
func TestCLIShowsHandBack(t *testing.T) {
	t.Parallel()
	b := testserver.Start(t, testserver.Options{NoWorkers: true})
	url := b.HTTP.URL
	ctx := t.Context()
	r := runCLI(t, url, "dataset", "create", "cpu", "--columns", "ts:timestamp,v:double", "--time-column", "ts")
	require.Equal(t, 0, r.code, r.stderr)
	trig, err := b.Client.RunMaintenance(ctx, "compaction", "cpu")
	require.NoError(t, err)
	id := strconv.FormatInt(trig.JobID, 10)

	r = runCLI(t, url, "maintenance", "status", "cpu")
	require.Equal(t, 0, r.code, r.stderr)
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	require.Equal(t, []string{"KIND", "ENABLED", "SCHEDULE", "LAST_RUN", "LAST_STATUS", "NEXT_RUN", "BACKLOG", "LAST_HANDED_BACK", "LAST_ERROR"},
		strings.Fields(lines[0]))
	require.NotContains(t, r.stdout, "(job ", "nothing was handed back yet")

	db, err := pgx.Connect(ctx, b.DBURL)
	require.NoError(t, err)
	defer db.Close(ctx)
	dead := b.Server.NodeID + "/20200101T000000.000000Z"
	tag, err := db.Exec(ctx, `UPDATE river_job SET state = 'running', attempt = 1, attempted_at = now(), attempted_by = ARRAY[$2::text]
		WHERE id = $1 AND state = 'available'`, trig.JobID, dead)
	require.NoError(t, err)
	require.EqualValues(t, 1, tag.RowsAffected())
	require.NoError(t, b.Server.Start(ctx))
	testserver.WaitJobState(t, b.Client, trig.JobID, "completed")

	r = runCLI(t, url, "maintenance", "status", "cpu")
	require.Equal(t, 0, r.code, r.stderr)
	var compaction string
	for _, l := range strings.Split(r.stdout, "\n") {
		if strings.HasPrefix(l, "compaction ") {
			compaction = l
			continue
		}
		require.NotContains(t, l, "(job ", "only the compaction was handed back")
	}
	require.Regexp(t, `^compaction\s+.*\s+success\s+.*\s20[0-9-]+T[0-9:]+Z \(job `+id+`\)`, compaction, r.stdout)

	r = runCLI(t, url, "maintenance", "status", "cpu", "-o", "csv")
	require.Equal(t, 0, r.code, r.stderr)
	require.Regexp(t, `(?m)^compaction,.*,20[0-9-]+T[0-9:]+Z \(job `+id+`\),`, r.stdout)

	r = runCLI(t, url, "jobs", "show", id)
	require.Equal(t, 0, r.code, r.stderr)
	require.Regexp(t, `(?m)^handed back:\s+20[0-9-]+T[0-9:]+Z, after a restart: the process running attempt 1 died and its successor on the data directory put the job back in the queue$`, r.stdout)
	require.Regexp(t, `(?m)^error \(attempt 1\):\s+\S+ handed back after a restart: the process `+regexp.QuoteMeta(dead)+` died`, r.stdout)
	require.Regexp(t, `(?m)^state:\s+completed$`, r.stdout)
}
