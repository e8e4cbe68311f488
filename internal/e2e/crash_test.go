package e2e

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"timestore/internal/faultpoint"
	"timestore/internal/jobs"
	"timestore/internal/reconcile"
)

// crashScenario is the crash test of one fault point: the protocol family
// that reaches it, and how the process is armed.
type crashScenario struct {
	point string
	// nth fires the point on its nth hit (mid-delete points: die with some
	// deletions done and some not). Zero or one: the first hit.
	nth int
	// orphans: the kill must leave unreferenced partition objects (an
	// upload whose commit never happened), for reconcile to reclaim.
	orphans bool
	// lost: the killed process's node never returns. The restart gets a
	// new node identity (its node-id file removed), so nothing hands the
	// job back; River's rescuer must recover it once it is older than
	// crashLostRescueAfter.
	lost   bool
	family crashFamily
}

// crashFamily drives one protocol: it prepares the state through the API
// (first node), triggers the protocol on the armed node, finishes what the
// client must finish after a restart, and checks what is specific to it.
type crashFamily struct {
	name   string
	policy string
	// kind is the lifecycle job the armed process dies in; "" for ingest.
	kind    string
	prepare func(e *crashEnv)
	// trigger starts the protocol on the armed node; it returns when the
	// process has been asked to do it (for an ingest: when it dropped the
	// request).
	trigger func(e *crashEnv)
	// recover runs on the restarted node before the jobs are awaited.
	recover func(e *crashEnv)
	// keep selects the committed rows that must still be queryable.
	keep  func(e *crashEnv) func(crashRow) bool
	check func(e *crashEnv)
}

// crashBatchKey is the idempotency key of the ingest the ingest scenarios kill.
const crashBatchKey = "crash-batch"

var crashIngest = crashFamily{
	name: "ingest",
	prepare: func(e *crashEnv) {
		e.mustIngest("crash-base", e.recent(20))
		e.pending = e.daysAgo(15, 3, 2) // two partitions
	},
	trigger: func(e *crashEnv) {
		_, err := e.ingest(crashBatchKey, e.pending)
		require.True(e.t, crashKilled(err), "the ingest got an answer from a process that should have died: %v", err)
	},
	recover: func(e *crashEnv) {
		// The client retries with the same key and body: exactly once.
		var committedVersion int64
		committed := e.count(`SELECT count(*) FROM timestore.idempotency_keys WHERE key = $1`, crashBatchKey) == 1
		if committed {
			require.NoError(e.t, e.db.QueryRow(e.ctx, `SELECT manifest_version FROM timestore.idempotency_keys WHERE key = $1`,
				crashBatchKey).Scan(&committedVersion))
		}
		require.Equal(e.t, e.sc.point == faultpoint.IngestAfterCommit, committed,
			"the ingest's commit is durable exactly when the process died after it")
		res := e.mustIngest(crashBatchKey, e.pending)
		require.Equal(e.t, committed, res.Replayed, "the retry must replay the first result exactly when it committed")
		require.EqualValues(e.t, 2, res.PartitionsWritten)
		if committed {
			require.Equal(e.t, committedVersion, res.ManifestVersion, "the replay returns the first result")
		}
	},
	check: func(e *crashEnv) {
		require.Equal(e.t, 2, e.operations("ingest"), "ingest manifest versions: the base and the killed batch, once")
		require.Equal(e.t, 1, e.count(`SELECT count(*) FROM timestore.idempotency_keys WHERE key = $1 AND rows_written = $2`,
			crashBatchKey, len(e.pending)))
	},
}

// Compaction: four ingests over two day windows leave four small partitions
// per window, so a run merges two groups. The inputs stay removed, not
// purged, for the default grace period: their objects must stay.
var crashCompaction = crashFamily{
	name:   "compaction",
	policy: `{"compaction":{"min_input_files":4}}`,
	kind:   "compaction",
	prepare: func(e *crashEnv) {
		for i := range 4 {
			e.mustIngest("prep-"+string(rune('a'+i)), e.daysAgo(5, 3, 2))
		}
	},
	trigger: func(e *crashEnv) { e.trigger("compaction") },
	check: func(e *crashEnv) {
		require.Equal(e.t, 2, e.operations("compaction"), "each group is merged exactly once")
		var live, removed int
		for _, p := range e.partitions() {
			if p.Removed {
				removed++
				require.False(e.t, p.Purged, "input %d purged within the grace period", p.ID)
				continue
			}
			live++
			require.Equal(e.t, 1, p.Level, "live partition %d is not a merge output", p.ID)
			require.EqualValues(e.t, 20, p.Rows, "live partition %d", p.ID)
		}
		require.Equal(e.t, 2, live, "one merged partition per window")
		require.Equal(e.t, 8, removed, "every input replaced")
	},
}

// crashOldDays are the day windows (days ago) beyond retention's max_age:
// more than the sweeper deletes at once (8), so that a sweep killed after
// its second deletion has deleted some objects and not others.
var crashOldDays = []int{8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19}

// Retention: twelve old day windows beyond max_age and recent rows; grace 0,
// so the follow-up sweep purges and deletes at once. The sweep scenarios
// trigger retention too: its sweep follows in the same process.
func crashRetentionFamily(name, kind string) crashFamily {
	return crashFamily{
		name:   name,
		policy: `{"retention":{"max_age":"2d","grace":"0"}}`,
		kind:   kind,
		prepare: func(e *crashEnv) {
			e.mustIngest("old", e.daysAgo(5, crashOldDays...))
			e.mustIngest("recent", e.recent(20))
		},
		trigger: func(e *crashEnv) { e.trigger("retention") },
		keep: func(e *crashEnv) func(crashRow) bool {
			cutoff := e.now.Add(-2 * 24 * time.Hour)
			return func(r crashRow) bool { return r.TS.After(cutoff) }
		},
		check: func(e *crashEnv) {
			n := len(crashOldDays)
			require.Equal(e.t, 1, e.operations("retention"), "retention removes once")
			var removed, leftByKill int
			for _, p := range e.partitions() {
				old := p.WindowStart.Before(e.day.AddDate(0, 0, -7))
				require.Equal(e.t, old, p.Removed, "partition %d of window %s", p.ID, p.WindowStart)
				if p.Removed {
					removed++
					require.True(e.t, p.Purged && p.Deleted, "removed partition %d not swept", p.ID)
					if _, ok := e.afterKill[p.Key]; ok {
						leftByKill++
					}
				}
			}
			require.Equal(e.t, n, removed)
			require.Len(e.t, e.audited("retention.remove"), n)
			require.Len(e.t, e.audited("retention.purge"), n, "one purge audit row per partition")
			// What the killed sweep had deleted.
			switch e.sc.point {
			case faultpoint.SweepBeforeDelete:
				require.Equal(e.t, n, leftByKill, "objects left by a sweep killed before deleting")
			case faultpoint.SweepMidDelete:
				require.True(e.t, leftByKill > 0 && leftByKill <= n-2, "%d of %d objects left by a sweep killed after its second deletion", leftByKill, n)
			case faultpoint.SweepBeforeCommit:
				require.Zero(e.t, leftByKill, "objects left by a sweep killed after deleting")
			}
		},
	}
}

var (
	crashRetention = crashRetentionFamily("retention", "retention")
	crashSweep     = crashRetentionFamily("sweep", "sweep")
)

// Export: two cold day windows of two partitions each, and recent rows that
// are not due. Export is disabled in the policy so that only the manual run
// exports.
var crashExport = crashFamily{
	name:   "export",
	policy: `{"export":{"enabled":false,"target":"remote","after":"1d","window":"day"}}`,
	kind:   "export",
	prepare: func(e *crashEnv) {
		e.mustIngest("cold-1", e.daysAgo(6, 4, 3))
		e.mustIngest("cold-2", e.daysAgo(6, 4, 3))
		e.mustIngest("recent", e.recent(10))
	},
	trigger: func(e *crashEnv) { e.trigger("export") },
	check: func(e *crashEnv) {
		want := map[string]int64{}
		for _, r := range e.committed {
			if r.TS.Before(e.day.AddDate(0, 0, -2)) {
				want[r.TS.Format("2006-01-02")]++
			}
		}
		require.Len(e.t, want, 2)
		got := map[string]int64{}
		for _, x := range e.exports() {
			require.Equal(e.t, "verified", x.State, "export %d of window %s", x.ID, x.Window)
			require.Equal(e.t, 1, x.Version, "window %s exported more than once", x.Window)
			got[x.Window] = x.Rows
		}
		require.Equal(e.t, want, got, "one verified version per cold window, with all its rows")
		require.Len(e.t, e.audited("export.verified"), 2)
	},
}

// Reconcile: three planted orphans (well-formed partition objects no
// partition references), old enough to be deleted.
var crashReconcile = crashFamily{
	name: "reconcile",
	kind: "reconcile",
	prepare: func(e *crashEnv) {
		e.mustIngest("rows", append(e.daysAgo(5, 3), e.recent(10)...))
		planted := e.plantOrphans(3)
		deadline := time.Now().Add(30 * time.Second)
		for e.dryReconcile().OrphansFound != len(planted) {
			require.True(e.t, time.Now().Before(deadline), "reconcile does not see the planted orphans as old")
			time.Sleep(100 * time.Millisecond)
		}
	},
	trigger: func(e *crashEnv) { e.trigger("reconcile") },
	check: func(e *crashEnv) {
		deleted := e.audited(reconcile.ActionDeleteOrphan)
		slices.Sort(deleted)
		deleted = slices.Compact(deleted)
		require.Len(e.t, deleted, 3, "each planted orphan deleted with an audit row")
	},
}

// crashScenarios covers every fault point; TestCrashPoints fails if one is
// missing.
var crashScenarios = []crashScenario{
	{point: faultpoint.IngestBeforeUpload, family: crashIngest},
	{point: faultpoint.IngestAfterUpload, family: crashIngest, orphans: true},
	{point: faultpoint.IngestAfterCommit, family: crashIngest},

	{point: faultpoint.CompactionBeforeUpload, family: crashCompaction},
	{point: faultpoint.CompactionAfterUpload, family: crashCompaction, orphans: true},
	{point: faultpoint.CompactionAfterCommit, family: crashCompaction},

	{point: faultpoint.RetentionBeforeCommit, family: crashRetention},
	{point: faultpoint.RetentionAfterCommit, family: crashRetention},

	{point: faultpoint.SweepBeforeDelete, family: crashSweep},
	{point: faultpoint.SweepMidDelete, nth: 2, family: crashSweep},
	{point: faultpoint.SweepBeforeCommit, family: crashSweep},

	{point: faultpoint.ExportBeforeUpload, family: crashExport},
	{point: faultpoint.ExportAfterUpload, family: crashExport},
	{point: faultpoint.ExportBeforeCommit, family: crashExport},
	{point: faultpoint.ExportAfterCommit, family: crashExport},

	{point: faultpoint.ReconcileBeforeDelete, family: crashReconcile, orphans: true},
	{point: faultpoint.ReconcileMidDelete, nth: 2, family: crashReconcile, orphans: true},
}

// TestCrashPoints kills a real `timestore serve` with SIGKILL at every fault
// point, restarts it on its data directory at once, lets the restarted
// process hand the interrupted job back and River retry it (or the client
// retry its request), runs reconcile, and checks that nothing was lost,
// duplicated or left dangling and that orphans were reclaimed with an audit
// trail (crashEnv.checkInvariants). River's rescue_after is 10 minutes
// (crashRescueAfter), so a job recovered within crashRecoverTimeout was
// handed back; the test also checks the hand-back's error, audit row and
// maintenance status.
func TestCrashPoints(t *testing.T) {
	var covered []string
	for _, sc := range crashScenarios {
		require.True(t, faultpoint.Known(sc.point), "scenario for unknown fault point %q", sc.point)
		require.NotContains(t, covered, sc.point, "two scenarios for %s", sc.point)
		require.True(t, strings.HasPrefix(sc.point, sc.family.name+"."), "%s is driven by the %s family", sc.point, sc.family.name)
		covered = append(covered, sc.point)
	}
	for _, p := range faultpoint.All() {
		require.Contains(t, covered, p, "fault point %s has no crash scenario: add one to crashScenarios", p)
	}
	for _, sc := range crashScenarios {
		t.Run(sc.point, func(t *testing.T) {
			t.Parallel()
			crashRun(t, sc)
		})
	}
}

// TestCrashLostNode: a node killed during a compaction never returns (the
// process started next has another node identity), so nothing hands its job
// back: River's rescuer recovers it once it is older than rescue_after, as
// it recovers the jobs of any node that is gone for good, and the crash
// test's invariants hold.
func TestCrashLostNode(t *testing.T) {
	t.Parallel()
	crashRun(t, crashScenario{point: faultpoint.CompactionAfterUpload, family: crashCompaction, orphans: true, lost: true})
}

// crashRun runs one scenario: prepare, arm, trigger, die, restart (hand
// back), recover, reconcile, check.
func crashRun(t *testing.T, sc crashScenario) {
	f := sc.family
	start := time.Now()
	e := crashSetup(t, sc)
	started := time.Since(start)
	e.createDataset(f.policy)
	f.prepare(e)
	prepared := time.Since(start)

	// Stop gracefully (River's leadership is resigned, not left to expire),
	// then start armed.
	e.node.Stop()
	e.node.Restart(faultpoint.Env + "=" + sc.faultSpec())
	armed := time.Since(start)
	e.remember(e.list())
	f.trigger(e)
	killed, err := e.node.WaitExit(crashExitTimeout)
	require.NoError(t, err, "the armed process did not die at %s", sc.point)
	require.True(t, killed, "the armed process exited without SIGKILL")
	require.Contains(t, e.node.Logs(), "fault point "+sc.point+": kill")
	killedAt := time.Now()
	untilKill := killedAt.Sub(start)

	// What the dead process left: objects, orphans, running jobs.
	e.afterKill = e.list()
	e.remember(e.afterKill)
	orphans := e.orphans(e.afterKill)
	if sc.orphans {
		require.NotEmpty(t, orphans, "the kill at %s left no orphan object", sc.point)
	} else {
		require.Empty(t, orphans, "the kill at %s left orphan objects", sc.point)
	}
	running := e.runningJobs()
	if f.kind != "" {
		require.Contains(t, slices.Collect(maps.Values(running)), f.kind, "no %s job was left running by the kill", f.kind)
	} else {
		require.Empty(t, running, "an ingest kill left lifecycle jobs running")
	}
	for id := range running {
		e.stuck = append(e.stuck, id)
	}

	// Restart at once: the new process hands the dead one's running jobs
	// back before it serves (River's rescuer, rescue_after 10m here, cannot
	// be what recovers them). A job that was not running at the kill (an
	// ingest's, or a sweep enqueued but not started) takes its ordinary path.
	// A lost node's jobs wait for the rescuer instead.
	var restartEnv []string
	if sc.lost {
		e.waitRescuable(crashLostRescueAfter)
		require.NoError(t, os.Remove(filepath.Join(e.node.DataDir(), crashNodeIDFile)))
		restartEnv = []string{"TIMESTORE_JOBS_RESCUE_AFTER=" + crashLostRescueAfter.String()}
	}
	restartAt := time.Now()
	e.node.Restart(restartEnv...)
	e.checkHandedBack()
	if f.recover != nil {
		f.recover(e)
	}
	settled := e.waitSettled(crashRecoverTimeout)
	recovered := time.Since(restartAt)
	// Each job of the killed process carries the hand-back (or, for a lost
	// node, River's rescue) as an error of its attempt; a completed one ran
	// again. (A snoozed sweep's attempt count is reset.)
	node := handbackNodeID(t, e.node)
	var retried []string
	for _, j := range settled {
		if slices.Contains(e.stuck, j.ID) {
			var handedBack, rescued string
			for _, je := range j.Errors {
				switch {
				case strings.HasPrefix(je.Error, jobs.HandBackErrorPrefix):
					handedBack = je.Error
				case strings.Contains(je.Error, crashRescueError):
					rescued = je.Error
				}
			}
			if sc.lost {
				require.Empty(t, handedBack, "job %d (%s) of a node that never returned was handed back: %+v", j.ID, j.Kind, j.Errors)
				require.NotEmpty(t, rescued, "job %d (%s) of a node that never returned settled without being rescued: %+v", j.ID, j.Kind, j.Errors)
			} else {
				require.NotEmpty(t, handedBack, "job %d (%s) of the killed process settled without being handed back: %+v", j.ID, j.Kind, j.Errors)
				require.Contains(t, handedBack, "the process "+node+"/", "the hand-back names the dead incarnation")
				require.Empty(t, rescued, "job %d (%s) was rescued as well as handed back: %+v", j.ID, j.Kind, j.Errors)
			}
			if j.State == "completed" {
				require.GreaterOrEqual(t, j.Attempt, 2, "job %d (%s) of the killed process completed without a retry", j.ID, j.Kind)
			}
			retried = append(retried, fmt.Sprintf("%s %d: %s, attempt %d, %s", j.Kind, j.ID, j.State, j.Attempt, crashJobOutput(j).Outcome))
		}
	}
	if f.kind != "" && !sc.lost {
		handbackCheckStatus(t, e, f.kind)
	}
	r := e.reconcile()
	round := func(d time.Duration) time.Duration { return d.Round(100 * time.Millisecond) }
	t.Logf("%s: node up %s, prepared %s, armed %s, killed %s; left %d orphans, stuck jobs [%s]; "+
		"jobs settled %s after the restart began; reconcile deleted %d orphans",
		sc.point, round(started), round(prepared), round(armed), round(untilKill), len(orphans), strings.Join(retried, "; "),
		round(recovered), r.OrphansDeleted)

	var keep func(crashRow) bool
	if f.keep != nil {
		keep = f.keep(e)
	}
	e.checkInvariants(keep)
	if f.check != nil {
		f.check(e)
	}
}
