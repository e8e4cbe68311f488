package e2e

import (
	"context"
	"encoding/json"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"timestore/internal/faultpoint"
	"timestore/internal/jobs"
	"timestore/internal/storage"
	"timestore/internal/testutil/nodetest"
	"timestore/internal/testutil/pgtest"
	"timestore/internal/testutil/s3test"
)

// Timing of the hand-back tests (issue 19).
const (
	// handbackRescueAfter keeps River's rescuer out of the way: a job of a
	// killed process that completes within handbackWithin of the restart
	// was handed back by the restarted process, not rescued.
	handbackRescueAfter = "10m"
	handbackWithin      = 60 * time.Second
)

// handbackEnv is the environment every run of a hand-back node gets, on top
// of crashSetup's (later entries win).
var handbackEnv = []string{"TIMESTORE_JOBS_RESCUE_AFTER=" + handbackRescueAfter}

// handbackScenarios kill a process in the middle of each kind of lifecycle
// job (the faultpoint package lists what is durable at each point).
var handbackScenarios = []crashScenario{
	{point: faultpoint.CompactionAfterUpload, family: crashCompaction, orphans: true},
	{point: faultpoint.ExportAfterUpload, family: crashExport},
	{point: faultpoint.SweepMidDelete, nth: 2, family: crashSweep},
	{point: faultpoint.ReconcileMidDelete, nth: 2, family: crashReconcile, orphans: true},
}

// TestHandBack kills a real `timestore serve` (SIGKILL at a fault point)
// while it runs a compaction, an export, a retention sweep or a reconcile,
// restarts it on the same data directory at once, and checks that the
// restarted process hands the dead one's job back: it completes within 60 s
// of the restart (River's rescue_after is 10 minutes here), its errors and
// the maintenance status say it was handed back, the hand-back is audited,
// the dead process's leases are gone as soon as the new one serves, and
// nothing is lost, duplicated or left dangling (crashEnv.checkInvariants).
func TestHandBack(t *testing.T) {
	for _, sc := range handbackScenarios {
		t.Run(sc.point, func(t *testing.T) {
			t.Parallel()
			handbackRun(t, sc)
		})
	}
}

func handbackRun(t *testing.T, sc crashScenario) {
	f := sc.family
	e := crashSetup(t, sc)
	e.createDataset(f.policy)
	f.prepare(e)
	e.node.Stop()
	e.node.Restart(append([]string{faultpoint.Env + "=" + sc.faultSpec()}, handbackEnv...)...)
	e.remember(e.list())
	f.trigger(e)
	killed, err := e.node.WaitExit(crashExitTimeout)
	require.NoError(t, err, "the armed process did not die at %s", sc.point)
	require.True(t, killed, "the armed process exited without SIGKILL")

	e.afterKill = e.list()
	e.remember(e.afterKill)
	if sc.orphans {
		require.NotEmpty(t, e.orphans(e.afterKill), "the kill at %s left no orphan object", sc.point)
	}
	running := e.runningJobs()
	require.Contains(t, slices.Collect(maps.Values(running)), f.kind, "no %s job was left running by the kill", f.kind)
	for id := range running {
		e.stuck = append(e.stuck, id)
	}
	deadLeases := e.count(`SELECT count(*) FROM timestore.query_leases WHERE node IS NOT NULL`)
	if f.kind == jobs.KindExport {
		require.Positive(t, deadLeases, "the killed export held no lease")
	}

	restartAt := time.Now()
	e.node.Restart(handbackEnv...)
	// Released before the process served: a sweep no longer waits for them.
	require.Zero(t, e.count(`SELECT count(*) FROM timestore.query_leases WHERE created_at < $1`, restartAt),
		"leases of the killed process survive its restart")
	settled := e.waitSettled(handbackWithin)
	took := time.Since(restartAt)
	require.Less(t, took, handbackWithin)

	node := handbackNodeID(t, e.node)
	for _, j := range settled {
		if !slices.Contains(e.stuck, j.ID) {
			continue
		}
		require.NotEmpty(t, j.Errors, "job %d (%s) of the killed process", j.ID, j.Kind)
		var handedBack string
		for _, je := range j.Errors {
			if strings.HasPrefix(je.Error, jobs.HandBackErrorPrefix) {
				handedBack = je.Error
			}
		}
		require.NotEmpty(t, handedBack, "job %d (%s) was not handed back: %+v", j.ID, j.Kind, j.Errors)
		require.Contains(t, handedBack, "the process "+node+"/", "the error names the dead incarnation")
		if j.State == "completed" {
			require.GreaterOrEqual(t, j.Attempt, 2, "job %d (%s) completed without a retry", j.ID, j.Kind)
		}
		details := handbackAudits(t, e.db, j.ID)
		require.Len(t, details, 1, "hand-back audit rows of job %d", j.ID)
		require.Equal(t, "available", details[0]["state"])
	}
	handbackCheckStatus(t, e, f.kind)
	t.Logf("%s: the job of the killed process settled %s after the restart", sc.point, took.Round(100*time.Millisecond))

	e.reconcile()
	var keep func(crashRow) bool
	if f.keep != nil {
		keep = f.keep(e)
	}
	e.checkInvariants(keep)
	f.check(e)
	require.Zero(t, e.count(`SELECT count(*) FROM timestore.query_leases WHERE created_at < $1`, restartAt),
		"leases of the killed process left behind")
}

// TestHandBackOtherNode: two nodes share a catalog and a bucket. Node A dies
// running a compaction; restarting node B leaves A's job alone (it is
// another node's, which may be alive); restarting A hands it back, and the
// job completes within 60 s of A's restart.
func TestHandBackOtherNode(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dbURL := pgtest.NewDatabaseURL(t)
	bucketURL := s3test.StartShared().NewBucket(t)
	db, err := pgxpool.New(ctx, crashPoolURL(dbURL, crashTestConns))
	require.NoError(t, err)
	t.Cleanup(db.Close)
	target, err := storage.NewTarget(ctx, "remote", bucketURL)
	require.NoError(t, err)
	t.Cleanup(func() { _ = target.Bucket.Close() })
	env := append([]string{
		"TIMESTORE_TARGET_REMOTE=" + bucketURL,
		"TIMESTORE_DUCKDB_THREADS=1",
		"TIMESTORE_JOBS_JOB_TIMEOUT=" + crashJobTimeout,
		"TIMESTORE_JOBS_SCHEDULER_INTERVAL=1s",
		"TIMESTORE_JOBS_RECONCILE_SCHEDULE=off",
		"TIMESTORE_JOBS_RECONCILE_SAFETY_AGE=" + crashSafetyAge,
	}, handbackEnv...)
	cfg := nodetest.Config{DatabaseURL: crashPoolURL(dbURL, crashNodeConns), Env: env}
	nodeA := nodetest.Start(t, cfg)
	nodeB := nodetest.Start(t, cfg)
	idA, idB := handbackNodeID(t, nodeA), handbackNodeID(t, nodeB)
	require.NotEqual(t, idA, idB, "two data directories, two nodes")

	now := time.Now().UTC()
	sc := crashScenario{point: faultpoint.CompactionAfterUpload, family: crashCompaction, orphans: true}
	e := &crashEnv{
		t: t, ctx: ctx, sc: sc, now: now, day: now.Truncate(24 * time.Hour),
		db: db, target: target, node: nodeA, c: nodeA.Client,
		seen: map[string]storage.ObjectInfo{}, scratch: t.TempDir(),
	}
	e.createDataset(crashCompaction.policy)
	crashCompaction.prepare(e)

	// Only A runs when the compaction is triggered, so A takes it.
	nodeB.Stop()
	nodeA.Stop()
	nodeA.Restart(faultpoint.Env + "=" + sc.faultSpec())
	e.remember(e.list())
	e.trigger(jobs.KindCompaction)
	killed, err := nodeA.WaitExit(crashExitTimeout)
	require.NoError(t, err)
	require.True(t, killed, "node A exited without SIGKILL")
	var stuck int64
	for id, kind := range e.runningJobs() {
		if kind == jobs.KindCompaction {
			stuck = id
		}
	}
	require.NotZero(t, stuck, "node A left no compaction running")
	e.stuck = []int64{stuck}
	e.afterKill = e.list()
	e.remember(e.afterKill)

	// B's start-up hand-back runs before it serves: once B is ready, it is
	// known to have left A's job alone.
	nodeB.Restart()
	var state string
	var attemptedBy []string
	require.NoError(t, db.QueryRow(ctx, `SELECT state, attempted_by FROM river_job WHERE id = $1`, stuck).Scan(&state, &attemptedBy))
	require.Equal(t, "running", state, "restarting node B changed node A's job")
	require.True(t, strings.HasPrefix(attemptedBy[len(attemptedBy)-1], idA+"/"), "attempted by %v", attemptedBy)
	require.Empty(t, handbackAudits(t, db, stuck), "node B audited a hand-back of node A's job")
	require.NotContains(t, nodeB.Logs(), "job handed back")

	restartAt := time.Now()
	nodeA.Restart()
	e.c = nodeB.Client // either node may run the handed-back job
	e.waitSettled(handbackWithin)
	took := time.Since(restartAt)
	require.Less(t, took, handbackWithin)
	audits := handbackAudits(t, db, stuck)
	require.Len(t, audits, 1)
	require.True(t, strings.HasPrefix(audits[0]["client"].(string), idA+"/"), "handed back by %v", audits[0]["client"])
	t.Logf("node A's job settled %s after A's restart", took.Round(100*time.Millisecond))

	e.reconcile()
	e.checkInvariants(nil)
	crashCompaction.check(e)
}

// handbackNodeID reads a node's identity from its data directory (the file
// server.NodeIDFile; the server package is not linked into this test).
func handbackNodeID(t *testing.T, n *nodetest.Node) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(n.DataDir(), "node-id"))
	require.NoError(t, err)
	return strings.TrimSpace(string(b))
}

// handbackAudits returns the details of the hand-back audit rows of a job.
func handbackAudits(t *testing.T, db *pgxpool.Pool, jobID int64) []map[string]any {
	t.Helper()
	rows, err := db.Query(context.Background(), `SELECT details FROM timestore.audit_log
		WHERE action = $1 AND (details->>'job_id')::bigint = $2 ORDER BY id`, jobs.ActionHandBack, jobID)
	require.NoError(t, err)
	defer rows.Close()
	var out []map[string]any
	for rows.Next() {
		var d map[string]any
		require.NoError(t, rows.Scan(&d))
		out = append(out, d)
	}
	require.NoError(t, rows.Err())
	return out
}

// handbackCheckStatus checks that `maintenance status` names the hand-back
// of the kind's job.
func handbackCheckStatus(t *testing.T, e *crashEnv, kind string) {
	t.Helper()
	raw, err := e.c.Lifecycle(e.ctx, crashDataset)
	require.NoError(t, err)
	var st struct {
		Kinds []struct {
			Kind           string `json:"kind"`
			LastHandedBack *struct {
				JobID int64     `json:"job_id"`
				At    time.Time `json:"at"`
				Error string    `json:"error"`
			} `json:"last_handed_back"`
		} `json:"kinds"`
	}
	require.NoError(t, json.Unmarshal(raw, &st), "%s", raw)
	for _, k := range st.Kinds {
		if k.Kind != kind {
			continue
		}
		require.NotNil(t, k.LastHandedBack, "maintenance status of %s: %s", kind, raw)
		require.Contains(t, e.stuck, k.LastHandedBack.JobID)
		require.True(t, strings.HasPrefix(k.LastHandedBack.Error, jobs.HandBackErrorPrefix))
		require.WithinDuration(t, time.Now(), k.LastHandedBack.At, 2*time.Minute)
		return
	}
	t.Fatalf("maintenance status has no %s: %s", kind, raw)
}
