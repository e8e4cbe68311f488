package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"timestore/internal/client"
	"timestore/internal/faultpoint"
	"timestore/internal/reconcile"
	"timestore/internal/storage"
	"timestore/internal/testutil/nodetest"
	"timestore/internal/testutil/pgtest"
	"timestore/internal/testutil/s3test"
)

// crashParallel is the -parallel default of this test binary. A crash
// scenario spends most of its wall time waiting, not on the CPU: for its
// database, bucket and processes to start and become ready, for Postgres and
// the S3 server, and for jobs to be picked up. With Go's default
// (GOMAXPROCS, 2 here) the scenarios would queue behind each other. An
// explicit -parallel on the command line still wins: it is parsed after this.
const crashParallel = 24

var _ = func() bool {
	testing.Init() // registers the test flags; m.Run parses them later
	if f := flag.Lookup("test.parallel"); f != nil && f.Value.String() == f.DefValue {
		_ = f.Value.Set(strconv.Itoa(max(runtime.GOMAXPROCS(0), crashParallel)))
	}
	return true
}()

// Timing of the crash scenarios.
const (
	// crashJobTimeout bounds one attempt: on a loaded machine an attempt
	// that hangs is cut and retried (after a backoff of attempt⁴ seconds)
	// well within crashRecoverTimeout.
	crashJobTimeout = "15s"
	// crashRescueAfter keeps River's rescuer out of the way: the restarted
	// process hands back the jobs its killed predecessor left running (issue
	// 19), and a job that settles within crashRecoverTimeout of the restart
	// cannot have been rescued instead.
	crashRescueAfter = "10m"
	// crashLostRescueAfter is rescue_after for the process that takes over
	// from a node that never returns (crashScenario.lost): River's rescuer
	// is then what recovers the job, and the test waits until the job is
	// that old before it starts the process (the dead leader's lease
	// expires at most 15s after its death, so the new process is elected at
	// once and its first rescuer run, at its election, rescues the job).
	crashLostRescueAfter = 16 * time.Second
	// crashSafetyAge lets reconcile delete orphans a second old.
	crashSafetyAge = "1s"
	// crashRecoverTimeout bounds how long a scenario waits, from the
	// restart, for the jobs of the killed process to be handed back,
	// retried and finished (issue 19 asks for 60 s).
	crashRecoverTimeout = 60 * time.Second
	// crashExitTimeout bounds how long the armed process takes to reach its
	// fault point once triggered.
	crashExitTimeout = 90 * time.Second
)

// Connection pool sizes. Every scenario runs its own server process at the
// same time as the others (and other tests may share the server), while
// Postgres accepts 100 connections by default: the catalog's default pool
// (16) times the scenarios would exhaust it.
const (
	crashNodeConns = 4
	crashTestConns = 1 // the checks run one after the other
)

// crashPoolURL bounds the pgx pool of a database URL to conns connections
// and closes the ones idle for a few seconds, so that a process holds only
// what it uses.
func crashPoolURL(dbURL string, conns int) string {
	sep := "?"
	if strings.Contains(dbURL, "?") {
		sep = "&"
	}
	return dbURL + sep + "pool_max_conns=" + strconv.Itoa(conns) +
		"&pool_max_conn_idle_time=3s&pool_health_check_period=1s"
}

// crashDataset is the dataset every scenario works on (each in its own
// database and bucket).
const crashDataset = "metrics"

var crashColumns = []client.Column{{Name: "ts", Type: "timestamp"}, {Name: "host", Type: "varchar"}, {Name: "value", Type: "double"}}

// crashRow is one ingested row. Values are distinct integers, so count,
// sum and count(DISTINCT value) tell lost and duplicated rows apart.
type crashRow struct {
	TS    time.Time
	Host  string
	Value int
}

// crashEnv is one scenario's world: its own catalog database, bucket and
// `timestore serve` process (restarted across the scenario), plus what the
// test knows it committed.
type crashEnv struct {
	t      *testing.T
	ctx    context.Context
	sc     crashScenario
	now    time.Time // when the scenario started
	day    time.Time // midnight UTC of now
	db     *pgxpool.Pool
	target *storage.Target // the dataset's bucket, for listing and planting objects
	node   *nodetest.Node
	c      *client.Client

	committed []crashRow // rows the server acknowledged
	nextValue int
	pending   []crashRow // rows of the ingest request that was killed
	stuck     []int64    // lifecycle jobs left running by the killed process
	// seen holds every object listed before the recovery: before the
	// trigger and right after the kill (the dead process changes nothing).
	seen map[string]storage.ObjectInfo
	// afterKill holds the objects listed right after the kill.
	afterKill map[string]storage.ObjectInfo
	// scratch holds objects bytes the test downloads.
	scratch string
}

// crashSetup makes a scenario's database, bucket and first node.
func crashSetup(t *testing.T, sc crashScenario) *crashEnv {
	t.Helper()
	ctx := context.Background()
	dbURL := pgtest.NewDatabaseURL(t)
	bucketURL := s3test.StartShared().NewBucket(t)
	db, err := pgxpool.New(ctx, crashPoolURL(dbURL, crashTestConns))
	require.NoError(t, err)
	t.Cleanup(db.Close)
	target, err := storage.NewTarget(ctx, "remote", bucketURL)
	require.NoError(t, err)
	t.Cleanup(func() { _ = target.Bucket.Close() })
	node := nodetest.Start(t, nodetest.Config{DatabaseURL: crashPoolURL(dbURL, crashNodeConns), Env: []string{
		"TIMESTORE_TARGET_REMOTE=" + bucketURL,
		"TIMESTORE_DUCKDB_THREADS=1",
		"TIMESTORE_JOBS_JOB_TIMEOUT=" + crashJobTimeout,
		"TIMESTORE_JOBS_RESCUE_AFTER=" + crashRescueAfter,
		"TIMESTORE_JOBS_SCHEDULER_INTERVAL=1s",
		"TIMESTORE_JOBS_RECONCILE_SCHEDULE=off",
		"TIMESTORE_JOBS_RECONCILE_SAFETY_AGE=" + crashSafetyAge,
	}})
	now := time.Now().UTC()
	return &crashEnv{
		t: t, ctx: ctx, sc: sc, now: now, day: now.Truncate(24 * time.Hour),
		db: db, target: target, node: node, c: node.Client,
		seen: map[string]storage.ObjectInfo{}, scratch: t.TempDir(),
	}
}

// createDataset creates the dataset on the remote target with policy ("" for none).
func (e *crashEnv) createDataset(policy string) {
	e.t.Helper()
	req := client.CreateDataset{Name: crashDataset, Columns: crashColumns, TimeColumn: "ts", Partition: "day", Target: "remote"}
	if policy != "" {
		req.Policy = json.RawMessage(policy)
	}
	_, err := e.c.CreateDataset(e.ctx, req)
	require.NoError(e.t, err)
}

// rows makes n rows from start, step apart, with fresh values.
func (e *crashEnv) rows(start time.Time, step time.Duration, n int) []crashRow {
	out := make([]crashRow, n)
	for i := range out {
		e.nextValue++
		out[i] = crashRow{TS: start.Add(time.Duration(i) * step), Host: "h" + strconv.Itoa(i%3), Value: e.nextValue}
	}
	return out
}

// daysAgo returns n rows per day for each of the days before today given
// (3: three days ago), spread over the day's first 21 hours.
func (e *crashEnv) daysAgo(n int, days ...int) []crashRow {
	var out []crashRow
	for _, d := range days {
		out = append(out, e.rows(e.day.AddDate(0, 0, -d).Add(30*time.Minute), 20*time.Hour/time.Duration(n), n)...)
	}
	return out
}

// recent returns n rows within the last two hours.
func (e *crashEnv) recent(n int) []crashRow {
	return e.rows(e.now.Add(-2*time.Hour), 90*time.Minute/time.Duration(n), n)
}

func crashCSV(rows []crashRow) string {
	var b strings.Builder
	b.WriteString("ts,host,value\n")
	for _, r := range rows {
		fmt.Fprintf(&b, "%s,%s,%d\n", r.TS.Format(time.RFC3339Nano), r.Host, r.Value)
	}
	return b.String()
}

// ingest sends rows with an idempotency key.
func (e *crashEnv) ingest(key string, rows []crashRow) (client.IngestResult, error) {
	ctx, cancel := context.WithTimeout(e.ctx, 60*time.Second)
	defer cancel()
	return e.c.Ingest(ctx, crashDataset, "csv", strings.NewReader(crashCSV(rows)), key)
}

// mustIngest ingests rows and records them as committed.
func (e *crashEnv) mustIngest(key string, rows []crashRow) client.IngestResult {
	e.t.Helper()
	res, err := e.ingest(key, rows)
	require.NoError(e.t, err, "ingest %s", key)
	require.EqualValues(e.t, len(rows), res.RowsWritten)
	e.committed = append(e.committed, rows...)
	return res
}

// trigger enqueues a lifecycle job.
func (e *crashEnv) trigger(kind string) client.Triggered {
	e.t.Helper()
	trig, err := e.c.RunMaintenance(e.ctx, kind, crashDataset)
	require.NoError(e.t, err, "trigger %s", kind)
	return trig
}

// list lists every object of the bucket.
func (e *crashEnv) list() map[string]storage.ObjectInfo {
	e.t.Helper()
	out := map[string]storage.ObjectInfo{}
	err := e.target.List(e.ctx, "", func(o storage.ObjectInfo) error {
		out[o.Key] = o
		return nil
	})
	require.NoError(e.t, err, "list the bucket")
	return out
}

// remember adds a listing to seen.
func (e *crashEnv) remember(objs map[string]storage.ObjectInfo) {
	for k, o := range objs {
		e.seen[k] = o
	}
}

// crashPartition is a partition row of the catalog.
type crashPartition struct {
	ID          int64
	Key         string
	Size        int64
	Rows        int64
	Level       int
	WindowStart time.Time
	Removed     bool
	Purged      bool
	Deleted     bool // object_deleted_at is set
}

func (e *crashEnv) partitions() []crashPartition {
	e.t.Helper()
	rows, err := e.db.Query(e.ctx, `
		SELECT p.id, p.object_key, p.size_bytes, p.row_count, p.level, p.window_start,
			p.removed_in_version IS NOT NULL, p.purged_at IS NOT NULL, p.object_deleted_at IS NOT NULL
		FROM timestore.partitions p JOIN timestore.datasets d ON d.id = p.dataset_id
		WHERE d.name = $1 ORDER BY p.id`, crashDataset)
	require.NoError(e.t, err)
	defer rows.Close()
	var out []crashPartition
	for rows.Next() {
		var p crashPartition
		require.NoError(e.t, rows.Scan(&p.ID, &p.Key, &p.Size, &p.Rows, &p.Level, &p.WindowStart, &p.Removed, &p.Purged, &p.Deleted))
		out = append(out, p)
	}
	require.NoError(e.t, rows.Err())
	return out
}

// crashReferenced returns the keys of the partitions that are not purged.
func crashReferenced(parts []crashPartition) map[string]crashPartition {
	out := map[string]crashPartition{}
	for _, p := range parts {
		if !p.Purged {
			out[p.Key] = p
		}
	}
	return out
}

// orphans returns the partition-shaped objects of objs that belong to no
// partition: neither referenced (not purged) nor awaiting the sweeper's
// deletion (purged, deletion not recorded).
func (e *crashEnv) orphans(objs map[string]storage.ObjectInfo) []string {
	owned := map[string]bool{}
	for _, p := range e.partitions() {
		owned[p.Key] = !p.Purged || !p.Deleted
	}
	var out []string
	for k := range objs {
		if !owned[k] && reconcile.IsPartitionKey(crashDataset, k) {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

// count runs a count query on the catalog.
func (e *crashEnv) count(sql string, args ...any) int {
	e.t.Helper()
	var n int
	require.NoError(e.t, e.db.QueryRow(e.ctx, sql, args...).Scan(&n), sql)
	return n
}

// operations counts the manifest versions of an operation.
func (e *crashEnv) operations(op string) int {
	return e.count(`SELECT count(*) FROM timestore.manifest_versions v JOIN timestore.datasets d ON d.id = v.dataset_id
		WHERE d.name = $1 AND v.operation = $2`, crashDataset, op)
}

// audited returns the object keys named by audit rows of action.
func (e *crashEnv) audited(action string) []string {
	e.t.Helper()
	rows, err := e.db.Query(e.ctx, `SELECT coalesce(details->>'key', '') FROM timestore.audit_log
		WHERE dataset = $1 AND action = $2 ORDER BY id`, crashDataset, action)
	require.NoError(e.t, err)
	defer rows.Close()
	var out []string
	for rows.Next() {
		var k string
		require.NoError(e.t, rows.Scan(&k))
		out = append(out, k)
	}
	require.NoError(e.t, rows.Err())
	return out
}

// runningJobs returns the lifecycle jobs River has as running, read from
// its table (the node may be dead).
func (e *crashEnv) runningJobs() map[int64]string {
	e.t.Helper()
	rows, err := e.db.Query(e.ctx, `SELECT id, kind FROM river_job WHERE state = 'running' AND kind <> 'scheduler'`)
	require.NoError(e.t, err)
	defer rows.Close()
	out := map[int64]string{}
	for rows.Next() {
		var id int64
		var kind string
		require.NoError(e.t, rows.Scan(&id, &kind))
		out[id] = kind
	}
	require.NoError(e.t, rows.Err())
	return out
}

// crashNodeIDFile is the node's identity in its data directory
// (server.NodeIDFile; the server package is not linked into this test).
const crashNodeIDFile = "node-id"

// crashRescueError is in the attempt error River's rescuer records.
const crashRescueError = "Stuck job rescued"

// waitRescuable polls until every stuck job has been running for longer
// than rescueAfter by the database's clock (River's): from then on, the
// first rescuer run of a new leader rescues it. Starting the next node
// earlier only risks an election before that, and then a rescuer run 30s
// later.
func (e *crashEnv) waitRescuable(rescueAfter time.Duration) {
	e.t.Helper()
	if len(e.stuck) == 0 {
		return
	}
	deadline := time.Now().Add(rescueAfter + 60*time.Second)
	for {
		var old bool
		err := e.db.QueryRow(e.ctx, `SELECT bool_and(attempted_at < now() - $2::interval) FROM river_job WHERE id = ANY($1)`,
			e.stuck, rescueAfter.String()).Scan(&old)
		require.NoError(e.t, err)
		if old {
			return
		}
		require.True(e.t, time.Now().Before(deadline), "stuck jobs %v not older than %s after %s", e.stuck, rescueAfter, rescueAfter+60*time.Second)
		time.Sleep(100 * time.Millisecond)
	}
}

// checkHandedBack checks, right after the restart, that the new process
// handed back every stuck job before it served: one job.hand_back audit row
// per job, the job made available at once. For a lost node (another
// identity took over), it checks that none was handed back.
func (e *crashEnv) checkHandedBack() {
	e.t.Helper()
	for _, id := range e.stuck {
		details := handbackAudits(e.t, e.db, id)
		if e.sc.lost {
			require.Empty(e.t, details, "job %d of a node that never returned was handed back", id)
			continue
		}
		require.Len(e.t, details, 1, "hand-back audit rows of job %d of the killed process once the restarted one serves", id)
		require.Equal(e.t, "available", details[0]["state"], "job %d was not made available again: %v", id, details[0])
	}
}

// crashOutput is the part of a job's output the tests read.
type crashOutput struct {
	Outcome string          `json:"outcome"`
	Error   string          `json:"error"`
	Summary json.RawMessage `json:"summary"`
}

func crashJobOutput(j client.Job) crashOutput {
	var o crashOutput
	_ = json.Unmarshal(j.Output, &o)
	return o
}

// crashSettled reports whether a job needs nothing more: it finished, or it did
// its work and snoozed (a sweep waiting for a grace period).
func crashSettled(j client.Job) bool {
	return j.Finished() || (j.State == "scheduled" && crashJobOutput(j).Outcome == "snoozed")
}

// waitSettled waits until every lifecycle job of the dataset has settled and
// the stuck ones completed, failing at once on a job that was discarded or
// cancelled (a job that will not recover by itself).
func (e *crashEnv) waitSettled(timeout time.Duration) []client.Job {
	e.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		jobs, err := e.c.Jobs(e.ctx, client.JobFilter{Dataset: crashDataset, Limit: 1000})
		require.NoError(e.t, err)
		done := true
		byID := map[int64]client.Job{}
		for _, j := range jobs {
			byID[j.ID] = j
			require.NotContains(e.t, []string{"discarded", "cancelled"}, j.State,
				"job %d (%s) will not run again: errors %+v, output %s", j.ID, j.Kind, j.Errors, j.Output)
			if !crashSettled(j) {
				done = false
			}
		}
		for _, id := range e.stuck {
			if j, ok := byID[id]; !ok || !crashSettled(j) {
				done = false
			}
		}
		if done {
			return jobs
		}
		if time.Now().After(deadline) {
			var states []string
			for _, j := range jobs {
				states = append(states, fmt.Sprintf("%d %s %s attempt %d errors %+v", j.ID, j.Kind, j.State, j.Attempt, j.Errors))
			}
			e.t.Fatalf("jobs not settled within %s (stuck after the kill: %v):\n%s", timeout, e.stuck, strings.Join(states, "\n"))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// waitJob polls a job until it completes.
func (e *crashEnv) waitJob(id int64, timeout time.Duration) client.Job {
	e.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		j, err := e.c.Job(e.ctx, id)
		require.NoError(e.t, err)
		if j.State == "completed" {
			return j
		}
		require.False(e.t, j.Finished(), "job %d (%s) ended %s: errors %+v, output %s", id, j.Kind, j.State, j.Errors, j.Output)
		require.True(e.t, time.Now().Before(deadline), "job %d (%s) still %s after %s: errors %+v", id, j.Kind, j.State, timeout, j.Errors)
		time.Sleep(100 * time.Millisecond)
	}
}

// crashReport is the part of a reconcile report the tests read.
type crashReport struct {
	OrphansFound   int `json:"orphans_found"`
	OrphansDeleted int `json:"orphans_deleted"`
	OrphansYoung   int `json:"orphans_young"`
	Foreign        int `json:"foreign"`
	Missing        int `json:"missing"`
}

// dryReconcile returns what a reconcile would find now.
func (e *crashEnv) dryReconcile() crashReport {
	e.t.Helper()
	plan, err := e.c.DryRun(e.ctx, "reconcile", crashDataset)
	require.NoError(e.t, err)
	var r crashReport
	require.NoError(e.t, json.Unmarshal(plan, &r), "%s", plan)
	return r
}

// waitOrphansOld polls dry runs until reconcile sees no young orphan (every
// unreferenced object is older than the safety age) and returns the report.
func (e *crashEnv) waitOrphansOld() crashReport {
	e.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		r := e.dryReconcile()
		if r.OrphansYoung == 0 {
			return r
		}
		require.True(e.t, time.Now().Before(deadline), "reconcile still sees %d young orphans after 30s", r.OrphansYoung)
		time.Sleep(100 * time.Millisecond)
	}
}

// reconcile runs a reconcile job to completion once no orphan is young, and
// checks it found nothing missing and that nothing is left to reclaim.
func (e *crashEnv) reconcile() crashReport {
	e.t.Helper()
	e.waitOrphansOld()
	trig := e.trigger("reconcile")
	require.False(e.t, trig.Duplicate, "a reconcile job was still pending")
	j := e.waitJob(trig.JobID, 60*time.Second)
	var r crashReport
	require.NoError(e.t, json.Unmarshal(crashJobOutput(j).Summary, &r), "%s", j.Output)
	require.Zero(e.t, r.Missing, "reconcile found referenced objects missing: %s", j.Output)
	require.Zero(e.t, r.Foreign, "reconcile found foreign objects under the dataset prefix: %s", j.Output)
	after := e.dryReconcile()
	require.Zero(e.t, after.OrphansFound+after.OrphansYoung, "orphans left after reconcile: %+v", after)
	return r
}

// totals queries count(*), sum(value) and count(DISTINCT value) through the API.
func (e *crashEnv) totals() (n, sum, distinct int64) {
	e.t.Helper()
	res, err := e.c.Query(e.ctx, crashDataset, client.QueryRequest{
		SQL: "SELECT count(*), coalesce(sum(value), 0), count(DISTINCT value) FROM " + crashDataset})
	require.NoError(e.t, err)
	require.Len(e.t, res.Rows, 1)
	var out [3]int64
	for i, v := range res.Rows[0] {
		f, err := strconv.ParseFloat(fmt.Sprint(v), 64)
		require.NoError(e.t, err, "column %d: %v", i, v)
		out[i] = int64(f)
	}
	return out[0], out[1], out[2]
}

// checkInvariants checks what must hold after any crash and recovery:
//
//   - the query totals are those of the committed rows minus what retention
//     removed (keep);
//   - every partition that is not purged has its object, of its size;
//     every purged one had its object deleted (nothing pending) and it is gone;
//   - every partition-shaped object is referenced (orphans were reclaimed),
//     and nothing else lies under the dataset's prefix;
//   - every object that existed before the recovery and is gone now was
//     deleted with an audit row (a purge or an orphan deletion), and every
//     audited deletion really happened;
//   - no export attempt is left writing or failed; every file and manifest
//     of every verified or superseded export exists, and nothing else lies
//     under the dataset's export prefix.
func (e *crashEnv) checkInvariants(keep func(crashRow) bool) {
	t := e.t
	t.Helper()
	var wantN, wantSum int64
	for _, r := range e.committed {
		if keep == nil || keep(r) {
			wantN++
			wantSum += int64(r.Value)
		}
	}
	n, sum, distinct := e.totals()
	require.Equal(t, wantN, n, "query row count")
	require.Equal(t, wantSum, sum, "query sum(value)")
	require.Equal(t, wantN, distinct, "query count(DISTINCT value): rows duplicated")

	objs := e.list()
	parts := e.partitions()
	refs := crashReferenced(parts)
	for _, p := range parts {
		o, ok := objs[p.Key]
		switch {
		case !p.Purged:
			require.True(t, ok, "partition %d (removed %v) references the missing object %s", p.ID, p.Removed, p.Key)
			require.Equal(t, p.Size, o.Size, "size of the object of partition %d", p.ID)
		default:
			require.True(t, p.Deleted, "purged partition %d still has its object deletion pending", p.ID)
			require.False(t, ok, "purged partition %d: its object %s is still there", p.ID, p.Key)
		}
	}

	exports := e.exports()
	exported := map[string]bool{}
	for _, x := range exports {
		require.NotContains(t, []string{"writing", "failed"}, x.State, "export %d of window %s left %s", x.ID, x.Window, x.State)
		for _, k := range append(slices.Clone(x.Keys), x.ManifestKey) {
			require.Contains(t, objs, k, "export %d (%s, window %s v%d) lists a missing object", x.ID, x.State, x.Window, x.Version)
			exported[k] = true
		}
	}
	for k := range objs {
		switch {
		case reconcile.IsPartitionKey(crashDataset, k):
			require.Contains(t, refs, k, "orphan object %s left after reconcile", k)
		case strings.HasPrefix(k, "exports/"+crashDataset+"/"):
			require.True(t, exported[k], "export object %s belongs to no export version", k)
		default:
			t.Fatalf("unexpected object %s in the bucket", k)
		}
	}

	audited := map[string]bool{}
	for _, action := range []string{"retention.purge", reconcile.ActionDeleteOrphan} {
		for _, k := range e.audited(action) {
			require.NotEmpty(t, k, "%s audit row without a key", action)
			require.NotContains(t, objs, k, "%s audited for %s, but the object is still there", action, k)
			audited[k] = true
		}
	}
	for k := range e.seen {
		if _, still := objs[k]; !still {
			require.True(t, audited[k], "object %s was deleted without an audit row", k)
		}
	}
}

// crashExportRow is an export version of the catalog.
type crashExportRow struct {
	ID          int64
	Window      string
	Version     int
	State       string
	Keys        []string
	ManifestKey string
	Rows        int64
	Attempts    int
}

func (e *crashEnv) exports() []crashExportRow {
	e.t.Helper()
	rows, err := e.db.Query(e.ctx, `
		SELECT x.id, x.window_label, x.version, x.state, x.keys, x.manifest_key, x.row_count, x.attempts
		FROM timestore.exports x JOIN timestore.datasets d ON d.id = x.dataset_id
		WHERE d.name = $1 ORDER BY x.window_start, x.version`, crashDataset)
	require.NoError(e.t, err)
	defer rows.Close()
	var out []crashExportRow
	for rows.Next() {
		var x crashExportRow
		require.NoError(e.t, rows.Scan(&x.ID, &x.Window, &x.Version, &x.State, &x.Keys, &x.ManifestKey, &x.Rows, &x.Attempts))
		out = append(out, x)
	}
	require.NoError(e.t, rows.Err())
	return out
}

// plantOrphans copies the object of a live partition to n fresh partition
// keys of the same window: well-formed partition objects no partition
// references, as an upload whose commit never happened leaves them.
func (e *crashEnv) plantOrphans(n int) []string {
	e.t.Helper()
	live, err := e.c.Partitions(e.ctx, crashDataset, "live")
	require.NoError(e.t, err)
	require.NotEmpty(e.t, live)
	src := live[0].Key
	local := filepath.Join(e.scratch, "orphan.parquet")
	_, _, err = e.target.GetFile(e.ctx, src, local)
	require.NoError(e.t, err)
	var keys []string
	for range n {
		key := path.Dir(src) + "/" + storage.NewObjectID() + ".parquet"
		require.True(e.t, reconcile.IsPartitionKey(crashDataset, key), key)
		_, _, err := e.target.PutFile(e.ctx, key, local)
		require.NoError(e.t, err)
		keys = append(keys, key)
	}
	return keys
}

// crashKilled reports whether err is what a client sees when the server dies
// while answering: no HTTP answer at all.
func crashKilled(err error) bool {
	var apiErr *client.Error
	return err != nil && !errors.As(err, &apiErr)
}

// faultSpec is the TIMESTORE_FAULTPOINTS value of a scenario.
func (sc crashScenario) faultSpec() string {
	if sc.nth > 1 {
		return fmt.Sprintf("%s=%s@%d", sc.point, faultpoint.Kill, sc.nth)
	}
	return sc.point + "=" + string(faultpoint.Kill)
}
