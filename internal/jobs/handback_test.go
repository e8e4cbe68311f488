package jobs_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"timestore/internal/catalog"
	"timestore/internal/jobs"
	"timestore/internal/policy"
)

// A service started with a node id hands back the jobs the node's earlier
// incarnations left running, at once and audited, and touches no job whose
// last attempt another node made.
func TestHandBack(t *testing.T) {
	b := setup(t, setupOpts{})
	trigger := func(dataset string) int64 {
		t.Helper()
		if dataset != "metrics" {
			b.createDataset(t, dataset, policy.Policy{})
		}
		job, _, err := b.svc.Trigger(b.ctx, jobs.KindCompaction, dataset, "test")
		require.NoError(t, err)
		return job.ID
	}
	// running marks a job as running an attempt made by the given clients
	// (the last made the current attempt), as a process that died leaves it.
	running := func(id int64, attempt int, attemptedBy ...string) {
		t.Helper()
		_, err := b.store.Pool().Exec(b.ctx, `UPDATE river_job SET state = 'running', attempt = $2, attempted_at = now(),
			attempted_by = $3 WHERE id = $1`, id, attempt, attemptedBy)
		require.NoError(t, err)
	}
	mine := trigger("metrics")
	running(mine, 1, "node-a/20261207T000000.000000Z")
	exhausted := trigger("exhausted")
	running(exhausted, jobs.MaxAttemptsDefault, "node-b/1", "node-a/20261207T000000.000000Z")
	theirs := trigger("theirs")
	running(theirs, 1, "node-b/20261207T000000.000000Z")
	rescued := trigger("rescued") // node A's attempt was rescued; node B runs it now
	running(rescued, 2, "node-a/20261207T000000.000000Z", "node-b/20261207T000000.000000Z")
	prefix := trigger("prefix") // a node whose id starts like A's is another node
	running(prefix, 1, "node-ab/20261207T000000.000000Z")

	svc, _ := b.newService(t, true, func(o *jobs.Options) { o.NodeID = "node-a" })
	require.True(t, strings.HasPrefix(svc.ClientID(), "node-a/"), svc.ClientID())

	done := waitState(t, svc, mine, "completed")
	require.Equal(t, 2, done.Attempt, "the handed-back job ran its next attempt")
	require.Len(t, done.Errors, 1)
	require.True(t, strings.HasPrefix(done.Errors[0].Error, jobs.HandBackErrorPrefix), done.Errors[0].Error)
	require.Contains(t, done.Errors[0].Error, "node-a/20261207T000000.000000Z died while running attempt 1")
	require.Contains(t, done.Errors[0].Error, svc.ClientID())
	require.Len(t, b.task.runsOf("metrics"), 1)

	gone, err := svc.Get(b.ctx, exhausted)
	require.NoError(t, err)
	require.Equal(t, "discarded", gone.State, "a job out of attempts is discarded, as River's rescuer would")
	for _, id := range []int64{theirs, rescued, prefix} {
		j, err := svc.Get(b.ctx, id)
		require.NoError(t, err)
		require.Equal(t, "running", j.State, "job %d of another node was touched", id)
		require.Empty(t, j.Errors)
	}

	// Audited, once per job.
	entries, err := b.store.ListAudit(b.ctx, catalog.AuditFilter{Action: jobs.ActionHandBack})
	require.NoError(t, err)
	got := map[string]string{}
	for _, e := range entries {
		require.Equal(t, "node:node-a", e.Actor)
		require.Equal(t, svc.ClientID(), e.Details["client"])
		got[e.Dataset] = e.Details["state"].(string)
	}
	require.Equal(t, map[string]string{"metrics": "available", "exhausted": "discarded"}, got)

	// Again: nothing is left to hand back.
	again, err := svc.HandBack(b.ctx)
	require.NoError(t, err)
	require.Empty(t, again)

	// The lifecycle status says when the kind's job was handed back.
	st, err := svc.Lifecycle(b.ctx, "metrics")
	require.NoError(t, err)
	var compaction jobs.KindStatus
	for _, k := range st.Kinds {
		if k.Kind == jobs.KindCompaction {
			compaction = k
		}
	}
	require.NotNil(t, compaction.LastHandedBack)
	require.Equal(t, mine, compaction.LastHandedBack.JobID)
	require.Equal(t, done.Errors[0].At, compaction.LastHandedBack.At)
	st, err = svc.Lifecycle(b.ctx, "theirs")
	require.NoError(t, err)
	for _, k := range st.Kinds {
		require.Nil(t, k.LastHandedBack, "kind %s of dataset theirs", k.Kind)
	}
}
