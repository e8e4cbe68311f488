package e2e

// Storage and database faults during lifecycle jobs: the S3 server stopped in
// the middle of an export, a compaction and a sweep, and every Postgres
// connection of the server killed in the middle of a compaction and an
// export. Each test checks that the job fails and is retried by River with
// backoff, that the admin API and the metrics show the failure while it
// lasts, and that after recovery the job completes with nothing lost.
//
// These tests arm process-global fault points, so they do not call
// t.Parallel: Go runs them before the package's parallel tests, never beside
// them.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"timestore/internal/testutil/logbuf"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"timestore/internal/client"
	"timestore/internal/config"
	"timestore/internal/export"
	"timestore/internal/faultpoint"
	"timestore/internal/jobs"
	"timestore/internal/storage"
	"timestore/internal/testutil/s3test"
	"timestore/internal/testutil/testserver"
)

// faultWait bounds every wait for a job to reach a state in these tests.
const faultWait = 60 * time.Second

// startFaultServer starts an in-process server whose "remote" target is a
// fresh bucket on s3srv, a versitygw of the test's own that it may stop, or
// on the shared one when s3srv is nil. Scheduled reconciles are off, so that
// only the jobs a test triggers (and their follow-ups) touch storage.
// The server's warnings and errors are printed if the test fails.
func startFaultServer(t *testing.T, s3srv *s3test.Server) *testserver.Bundle {
	t.Helper()
	logs := &faultLogBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("server log (warnings and errors):\n%s", logs.String())
		}
	})
	tb := testserver.Start(t, testserver.Options{
		S3: true, S3Server: s3srv,
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn})),
		Jobs: func(o *jobs.Options) {
			o.ReconcileSchedule = jobs.ReconcileScheduleOff
		},
		// Triggered reconciles may delete any orphan at once: the tests
		// trigger them only when no upload is in flight.
		Configure: func(c *config.Config) { c.Jobs.ReconcileSafetyAge = time.Millisecond },
	})
	return tb
}

// reconcileNow runs a reconcile of dataset to completion and returns how
// many orphans it deleted.
func reconcileNow(t *testing.T, b *testserver.Bundle, dataset string) int {
	t.Helper()
	tr, err := b.Client.RunMaintenance(context.Background(), "reconcile", dataset)
	require.NoError(t, err)
	j := waitFaultJob(t, b.Client, tr.JobID, "completed", func(j client.Job) bool { return j.State == "completed" })
	var out struct {
		OrphansDeleted int `json:"orphans_deleted"`
	}
	require.NoError(t, json.Unmarshal(j.Output, &out), "reconcile output %s", j.Output)
	return out.OrphansDeleted
}

// faultLogBuffer collects output written concurrently.
type faultLogBuffer = logbuf.Buffer

// stopS3OnFirstHit returns a fault point hook that stops srv the first time
// the point is hit and then lets the step go on (returns nil), so that the
// job's next S3 call meets a dead server. Hits racing the first one wait
// until srv is down; later hits (after a restart) do nothing. hits counts
// every hit.
func stopS3OnFirstHit(srv *s3test.Server, hits *atomic.Int64) faultpoint.Func {
	var once sync.Once
	return func(ctx context.Context) error {
		hits.Add(1)
		once.Do(srv.Stop)
		return nil
	}
}

// killResult is what a killMidCommit hook did.
type killResult struct {
	killed int   // sessions terminated
	err    error // why it could not
}

// killMidCommit returns a fault point hook that, on the first hit only,
// makes the job's next catalog transaction die half-way: from a session of
// its own it locks rows that transaction needs (lockSQL, with the dataset
// name as $1) and returns, letting the job go on; once a session waits for
// that lock it terminates every other session of the database (the waiting
// transaction, the server's pool, River's listener, elector and producers),
// waiting up to 5 s for each to exit, as a failover or an operator's
// pg_terminate_backend would; then it releases the lock. The result is sent
// on the returned channel.
func killMidCommit(dbURL, lockSQL, dataset string) (faultpoint.Func, <-chan killResult) {
	done := make(chan killResult, 1)
	var once sync.Once
	return func(ctx context.Context) error {
		var err error
		once.Do(func() {
			var conn *pgx.Conn
			var tx pgx.Tx
			if conn, err = pgx.Connect(ctx, dbURL); err != nil {
				err = fmt.Errorf("fault: connect: %w", err)
				done <- killResult{err: err}
				return
			}
			if tx, err = conn.Begin(ctx); err == nil {
				_, err = tx.Exec(ctx, lockSQL, dataset)
			}
			if err != nil {
				conn.Close(context.Background())
				err = fmt.Errorf("fault: lock: %w", err)
				done <- killResult{err: err}
				return
			}
			go func() {
				bg := context.Background()
				defer conn.Close(bg)
				defer tx.Rollback(bg) //nolint:errcheck // the session ends anyway
				res := killResult{}
				res.killed, res.err = killWhenBlocked(bg, tx)
				done <- res
			}()
		})
		return err
	}, done
}

// killWhenBlocked waits until another session waits for a lock, then
// terminates every other session of the database and returns how many.
func killWhenBlocked(ctx context.Context, tx pgx.Tx) (int, error) {
	deadline := time.Now().Add(faultWait)
	for {
		var waiting int
		if err := tx.QueryRow(ctx, `
			SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND pid <> pg_backend_pid() AND wait_event_type = 'Lock'`).Scan(&waiting); err != nil {
			return 0, fmt.Errorf("fault: watch for the blocked transaction: %w", err)
		}
		if waiting > 0 {
			break
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("fault: no session waited for the lock within %s", faultWait)
		}
		time.Sleep(5 * time.Millisecond)
	}
	var n int
	err := tx.QueryRow(ctx, `
		SELECT count(*) FILTER (WHERE terminated)
		FROM (SELECT pg_terminate_backend(pid, 5000) AS terminated
		      FROM pg_stat_activity
		      WHERE datname = current_database() AND pid <> pg_backend_pid()) k`).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("fault: terminate backends: %w", err)
	}
	return n, nil
}

// waitFaultJob polls job id until ok accepts it, failing the test if the job
// finishes otherwise or faultWait passes. Admin API errors are logged and
// polled through: they are expected while the catalog connections die.
func waitFaultJob(t *testing.T, c *client.Client, id int64, what string, ok func(client.Job) bool) client.Job {
	t.Helper()
	deadline := time.Now().Add(faultWait)
	var last client.Job
	var lastErr error
	for {
		j, err := c.Job(context.Background(), id)
		if err != nil {
			if lastErr == nil || lastErr.Error() != err.Error() {
				t.Logf("job %d: admin API: %v", id, err)
			}
			lastErr = err
		} else {
			last, lastErr = j, nil
			if ok(j) {
				return j
			}
			if j.Finished() {
				t.Fatalf("job %d (%s) ended %s while waiting for %s; errors: %s", id, j.Kind, j.State, what, jobErrors(j))
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("job %d (%s): no %s within %s; last seen %s after attempt %d/%d, errors: %s (last API error: %v)",
				id, last.Kind, what, faultWait, last.State, last.Attempt, last.MaxAttempts, jobErrors(last), lastErr)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// jobErrors renders a job's recorded errors for messages.
func jobErrors(j client.Job) string {
	var sb strings.Builder
	for _, e := range j.Errors {
		fmt.Fprintf(&sb, "\n  attempt %d at %s: %s", e.Attempt, e.At.Format(time.RFC3339Nano), e.Error)
	}
	return sb.String()
}

// jobOutcome returns the outcome recorded in a job's output.
func jobOutcome(t *testing.T, j client.Job) string {
	t.Helper()
	var out struct {
		Outcome string `json:"outcome"`
	}
	require.NoError(t, json.Unmarshal(j.Output, &out), "output of job %d: %s", j.ID, j.Output)
	return out.Outcome
}

// retryDelay is River's default backoff after the nth failed attempt:
// n⁴ seconds, with up to 10% jitter either way (timestore sets no retry
// policy of its own).
func retryDelay(n int) (lo, hi time.Duration) {
	base := math.Pow(float64(n), 4) * float64(time.Second)
	return time.Duration(0.9 * base), time.Duration(1.1 * base)
}

// requireBackoff checks that the failed attempts of j were spaced by River's
// backoff rather than retried in a hot loop: attempt n+1 started at least
// the n-th backoff after attempt n did (River records an error at the start
// time of its attempt).
func requireBackoff(t *testing.T, j client.Job) {
	t.Helper()
	for i, e := range j.Errors {
		require.Equal(t, i+1, e.Attempt, "error %d of job %d:%s", i, j.ID, jobErrors(j))
		if i == 0 {
			continue
		}
		lo, _ := retryDelay(i)
		gap := e.At.Sub(j.Errors[i-1].At)
		require.GreaterOrEqual(t, gap, lo, "attempt %d of job %d started %s after attempt %d: no backoff:%s", i+1, j.ID, gap, i, jobErrors(j))
	}
}

// requireRetryScheduled checks that j, seen at seen after its failed
// attempts, waits in state retryable for River's backoff after the last of
// them: its next attempt is scheduled at least the backoff after the last
// attempt started (River's error time) and at most the backoff after seen.
func requireRetryScheduled(t *testing.T, j client.Job, seen time.Time) {
	t.Helper()
	require.Equal(t, "retryable", j.State)
	n := len(j.Errors)
	require.Equal(t, n, j.Attempt, "attempts of job %d", j.ID)
	lo, hi := retryDelay(n)
	after := j.ScheduledAt.Sub(j.Errors[n-1].At)
	require.GreaterOrEqual(t, after, lo, "job %d: retry scheduled %s after its last attempt started: less than River's backoff after attempt %d", j.ID, after, n)
	ahead := j.ScheduledAt.Sub(seen)
	require.LessOrEqual(t, ahead, hi, "job %d: retry scheduled %s ahead, more than River's backoff after attempt %d", j.ID, ahead, n)
}

// faultMetric sums the samples of metric name whose labels include the given
// pairs: the value of counters and gauges, the sample count of histograms.
// It fails the test if no series matches.
func faultMetric(t *testing.T, reg *prometheus.Registry, name string, labelPairs ...string) float64 {
	t.Helper()
	v, found := metricSeries(t, reg, name, labelPairs...)
	require.True(t, found, "no series %s%v", name, labelPairs)
	return v
}

// metricSeries is faultMetric reporting whether any series matched.
func metricSeries(t *testing.T, reg *prometheus.Registry, name string, labelPairs ...string) (float64, bool) {
	t.Helper()
	families, err := reg.Gather()
	require.NoError(t, err)
	sum, found := 0.0, false
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	next:
		for _, m := range f.GetMetric() {
			for i := 0; i+1 < len(labelPairs); i += 2 {
				has := false
				for _, l := range m.GetLabel() {
					has = has || l.GetName() == labelPairs[i] && l.GetValue() == labelPairs[i+1]
				}
				if !has {
					continue next
				}
			}
			found = true
			switch {
			case m.GetCounter() != nil:
				sum += m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				sum += m.GetGauge().GetValue()
			case m.GetHistogram() != nil:
				sum += float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return sum, found
}

// requireNoBacklog checks that timestore_job_backlog counts no unfinished
// job of kind for dataset (it reports no series for none).
func requireNoBacklog(t *testing.T, reg *prometheus.Registry, kind, dataset string) {
	t.Helper()
	v, _ := metricSeries(t, reg, "timestore_job_backlog", "kind", kind, "dataset", dataset)
	require.Zero(t, v, "unfinished %s jobs of %s", kind, dataset)
}

// listKeys lists the keys of a target's objects under prefix.
func listKeys(t *testing.T, tgt *storage.Target, prefix string) []string {
	t.Helper()
	var keys []string
	require.NoError(t, tgt.List(context.Background(), prefix, func(o storage.ObjectInfo) error {
		keys = append(keys, o.Key)
		return nil
	}))
	return keys
}

// requirePartitionObjects checks a dataset's catalog against its target:
// every partition not purged has its object, with the size and checksum the
// catalog lists; every purged one has none; and no other object lies under
// the dataset's prefix. It returns the partitions by state.
func requirePartitionObjects(t *testing.T, b *testserver.Bundle, dataset, targetName string) map[string][]client.Partition {
	t.Helper()
	ctx := context.Background()
	tgt, err := b.Server.Targets.Get(targetName)
	require.NoError(t, err)
	all, err := b.Client.Partitions(ctx, dataset, "all")
	require.NoError(t, err)
	byState := map[string][]client.Partition{}
	var referenced []string
	for _, p := range all {
		byState[p.State] = append(byState[p.State], p)
		if p.State == "purged" {
			_, err := tgt.Attributes(ctx, p.Key)
			require.ErrorIs(t, err, storage.ErrNotExist, "object %s of purged partition %d is still on %s", p.Key, p.ID, targetName)
			continue
		}
		referenced = append(referenced, p.Key)
		require.NoError(t, tgt.Verify(ctx, p.Key, p.SizeBytes, p.Checksum), "object of %s partition %d", p.State, p.ID)
	}
	slices.Sort(referenced)
	require.Equal(t, referenced, listKeys(t, tgt, dataset+"/"), "objects on %s under %s/ must be exactly the unpurged partitions' objects", targetName, dataset)
	return byState
}

// requireNoDuplicates checks that no (ts, host) row of the dataset appears
// twice (the generated rows have distinct timestamps).
func requireNoDuplicates(t *testing.T, b *testserver.Bundle, dataset string) {
	t.Helper()
	res, err := b.Client.Query(context.Background(), dataset, client.QueryRequest{
		SQL: fmt.Sprintf("SELECT count(*) - count(DISTINCT (ts, host)) FROM %s", dataset),
	})
	require.NoError(t, err)
	require.Len(t, res.Rows, 1)
	require.EqualValues(t, 0, testserver.Num(t, res.Rows[0][0]), "duplicate rows in %s", dataset)
}

// requireVerifiedExports checks a dataset's exports to target after
// recovery: windows windows, each with exactly one version, verified; its
// manifest and files on the target as the catalog and the manifest list
// them; rows rows in all; and no other object under the exports' prefix
// (no leftover of a failed attempt). It returns the exports.
func requireVerifiedExports(t *testing.T, b *testserver.Bundle, dataset, targetName string, windows int, rows int64) []client.Export {
	t.Helper()
	ctx := context.Background()
	all, err := b.Client.Exports(ctx, dataset, "")
	require.NoError(t, err)
	tgt, err := b.Server.Targets.Get(targetName)
	require.NoError(t, err)
	var total int64
	var keys []string
	seen := map[string]bool{}
	for _, e := range all {
		require.Equal(t, "verified", e.State, "export %d of window %s", e.ID, e.WindowLabel)
		require.Equal(t, 1, e.Version, "window %s: one version, not one per attempt", e.WindowLabel)
		require.False(t, seen[e.WindowLabel], "window %s exported twice", e.WindowLabel)
		seen[e.WindowLabel] = true
		total += e.RowCount
		keys = append(keys, e.Keys...)
		keys = append(keys, e.ManifestKey)
		require.NoError(t, tgt.Verify(ctx, e.ManifestKey, -1, e.Checksum), "manifest of window %s", e.WindowLabel)
		rc, err := tgt.Bucket.NewReader(ctx, e.ManifestKey)
		require.NoError(t, err)
		var m export.Manifest
		err = json.NewDecoder(io.LimitReader(rc, 1<<20)).Decode(&m)
		rc.Close()
		require.NoError(t, err)
		require.Equal(t, e.RowCount, m.Rows, "rows in the manifest of window %s", e.WindowLabel)
		require.Len(t, m.Files, len(e.Keys))
		for i, f := range m.Files {
			info, err := tgt.Attributes(ctx, e.Keys[i])
			require.NoError(t, err, "file %d of window %s", i, e.WindowLabel)
			require.Equal(t, f.Bytes, info.Size, "size of %s", e.Keys[i])
		}
	}
	require.Len(t, seen, windows)
	require.Equal(t, rows, total, "every row exported once")
	slices.Sort(keys)
	require.Equal(t, keys, listKeys(t, tgt, export.KeyPrefix+dataset+"/"), "objects under %s%s/ must be exactly the verified exports' files and manifests", export.KeyPrefix, dataset)
	return all
}

// findJob waits until a job of kind for dataset exists and returns it.
func findJob(t *testing.T, c *client.Client, kind, dataset string) client.Job {
	t.Helper()
	deadline := time.Now().Add(faultWait)
	for {
		list, err := c.Jobs(context.Background(), client.JobFilter{Kind: kind, Dataset: dataset})
		require.NoError(t, err)
		if len(list) > 0 {
			return list[0]
		}
		require.True(t, time.Now().Before(deadline), "no %s job of %s within %s", kind, dataset, faultWait)
		time.Sleep(50 * time.Millisecond)
	}
}

// failedTwice waits until job id has failed two attempts and waits for its
// third in state retryable, and checks River's backoff between and after
// them.
func failedTwice(t *testing.T, c *client.Client, id int64) client.Job {
	t.Helper()
	j := waitFaultJob(t, c, id, "two failed attempts", func(j client.Job) bool {
		return j.State == "retryable" && len(j.Errors) >= 2
	})
	seen := time.Now()
	require.Len(t, j.Errors, 2, "job %d:%s", id, jobErrors(j))
	requireBackoff(t, j)
	requireRetryScheduled(t, j, seen)
	t.Logf("job %d (%s) while storage is down: state %s, attempt %d/%d, attempts started %s apart, next attempt in %s:%s", j.ID, j.Kind, j.State,
		j.Attempt, j.MaxAttempts, j.Errors[1].At.Sub(j.Errors[0].At).Round(time.Millisecond), j.ScheduledAt.Sub(seen).Round(time.Millisecond), jobErrors(j))
	return j
}

// requireConnectionErrors checks that every failed attempt of j failed on
// the dead S3 endpoint.
func requireConnectionErrors(t *testing.T, j client.Job, endpoint string) {
	t.Helper()
	host := strings.TrimPrefix(endpoint, "http://")
	for _, e := range j.Errors {
		require.Contains(t, e.Error, host, "attempt %d of job %d did not fail on the S3 server", e.Attempt, j.ID)
		require.Contains(t, e.Error, "connection refused", "attempt %d of job %d", e.Attempt, j.ID)
	}
}

// recoverJob restarts the S3 server and waits for job j, retryable after two
// failed attempts, to complete on its third. With retryNow an operator's
// retry (the admin API) runs it at once; otherwise River runs it when its
// backoff ends, not before.
func recoverJob(t *testing.T, b *testserver.Bundle, s3srv *s3test.Server, j client.Job, retryNow bool) client.Job {
	t.Helper()
	s3srv.Restart()
	if retryNow {
		_, err := b.Client.RetryJob(context.Background(), j.ID)
		require.NoError(t, err)
	}
	done := waitFaultJob(t, b.Client, j.ID, "completion after S3 came back", func(j client.Job) bool { return j.State == "completed" })
	require.Equal(t, "success", jobOutcome(t, done), "job %d output: %s", j.ID, done.Output)
	require.Equal(t, 3, done.Attempt, "job %d completes on its third attempt", j.ID)
	if !retryNow {
		started := lastAttemptedAt(t, b.DBURL, j.ID)
		require.False(t, started.Before(j.ScheduledAt), "River ran attempt 3 at %s, before its backoff ended at %s", started, j.ScheduledAt)
		t.Logf("job %d: River ran attempt 3 by itself %s after attempt 2 started (backoff ended %s after it)", j.ID,
			started.Sub(j.Errors[1].At).Round(time.Millisecond), j.ScheduledAt.Sub(j.Errors[1].At).Round(time.Millisecond))
	}
	return done
}

// TestS3StoppedDuringExport stops the export target's S3 server once a
// window's data files are uploaded, before its _manifest.json. The export job
// fails, River retries it with backoff (failing again while S3 is down), the
// export records, the job and the metrics show the failure, and once S3 is
// back the job completes: every window verified once, every file and
// manifest on S3, no leftovers of the failed attempts.
func TestS3StoppedDuringExport(t *testing.T) {
	s3srv := s3test.Start(t)
	b := startFaultServer(t, s3srv)
	ctx := context.Background()
	b.CreateCPU(t, "cpu", "local", "day")
	_, err := b.Client.SetPolicy(ctx, "cpu", json.RawMessage(`{"export":{"target":"remote","after":"1d","window":"day","schedule":"@daily"}}`))
	require.NoError(t, err)
	rows := testserver.GenRows(96, time.Date(2024, 2, 1, 0, 0, 0, 0, time.UTC), time.Hour) // four days
	_, err = b.Client.Ingest(ctx, "cpu", "csv", strings.NewReader(testserver.Encode("csv", rows)), "")
	require.NoError(t, err)

	var hits atomic.Int64
	defer faultpoint.Arm(faultpoint.ExportAfterUpload, stopS3OnFirstHit(s3srv, &hits))()
	tr, err := b.Client.RunMaintenance(ctx, "export", "cpu")
	require.NoError(t, err)

	// While S3 is down.
	j := failedTwice(t, b.Client, tr.JobID)
	requireConnectionErrors(t, j, s3srv.Endpoint)
	require.EqualValues(t, 1, hits.Load(), "the second attempt must fail before uploading")
	records, err := b.Client.Exports(ctx, "cpu", "")
	require.NoError(t, err)
	var first *client.Export
	for i, e := range records {
		t.Logf("export record while S3 is down: window %s version %d %s, %d attempts: %s", e.WindowLabel, e.Version, e.State, e.Attempts, e.Error)
		if e.WindowLabel == "2024-02-01" {
			first = &records[i]
		}
	}
	require.NotNil(t, first, "no export record of the first window")
	require.Equal(t, "failed", first.State, "the failed attempts are recorded")
	require.Equal(t, 2, first.Attempts)
	require.Contains(t, first.Error, "connection refused")
	verified, err := b.Client.Exports(ctx, "cpu", "verified")
	require.NoError(t, err)
	require.Empty(t, verified, "nothing is verified while S3 is down")
	reg := b.Registry
	require.EqualValues(t, 2, faultMetric(t, reg, "timestore_job_runs_total", "kind", "export", "outcome", "error"))
	require.EqualValues(t, 0, faultMetric(t, reg, "timestore_job_runs_total", "kind", "export", "outcome", "success"))
	exportFailures := faultMetric(t, reg, "timestore_export_failures_total", "dataset", "cpu")
	require.GreaterOrEqual(t, exportFailures, 2.0)
	require.EqualValues(t, 1, faultMetric(t, reg, "timestore_job_backlog", "kind", "export", "dataset", "cpu"))
	t.Logf("metrics while S3 is down: job_runs_total{export,error}=2, export_failures_total{cpu}=%v, job_backlog{export,cpu}=1; export record: window %s version %d %s after %d attempts: %s",
		exportFailures, first.WindowLabel, first.Version, first.State, first.Attempts, first.Error)

	// After recovery.
	// River retries by itself once its backoff ends.
	j = recoverJob(t, b, s3srv, j, false)
	require.Len(t, j.Errors, 2)
	all := requireVerifiedExports(t, b, "cpu", "remote", 4, int64(len(rows)))
	for _, e := range all {
		if e.WindowLabel == first.WindowLabel {
			require.Equal(t, 3, e.Attempts, "attempts at window %s", e.WindowLabel)
		}
	}
	require.EqualValues(t, 1, faultMetric(t, reg, "timestore_job_runs_total", "kind", "export", "outcome", "success"))
	requireNoBacklog(t, reg, "export", "cpu")
	testserver.RequireAggregates(t, testserver.Expected(rows), b.Aggregates(t, "cpu", "", ""))
}

// TestS3StoppedDuringCompaction stops the dataset's S3 server right after the
// first of two merges uploaded its output. That merge commits (its commit
// needs only Postgres); the second cannot fetch or upload, so the job fails
// and River retries it with backoff. Once S3 is back the job completes the
// second merge: both windows compacted, every row once, every referenced
// object present and no orphan.
func TestS3StoppedDuringCompaction(t *testing.T) {
	s3srv := s3test.Start(t)
	b := startFaultServer(t, s3srv)
	ctx := context.Background()
	b.CreateCPU(t, "cpu", "remote", "day")
	_, err := b.Client.SetPolicy(ctx, "cpu", json.RawMessage(`{"compaction":{"min_input_files":2,"schedule":"@every 24h"}}`))
	require.NoError(t, err)
	// Three ingests over the same two days: two windows of three small
	// partitions each.
	var rows []testserver.Row
	for i := 0; i < 3; i++ {
		r := testserver.GenRows(48, time.Date(2024, 3, 1, 0, i, 0, 0, time.UTC), time.Hour)
		rows = append(rows, r...)
		_, err := b.Client.Ingest(ctx, "cpu", "csv", strings.NewReader(testserver.Encode("csv", r)), "")
		require.NoError(t, err)
	}
	live, err := b.Client.Partitions(ctx, "cpu", "live")
	require.NoError(t, err)
	require.Len(t, live, 6)

	var hits atomic.Int64
	defer faultpoint.Arm(faultpoint.CompactionAfterUpload, stopS3OnFirstHit(s3srv, &hits))()
	tr, err := b.Client.RunMaintenance(ctx, "compaction", "cpu")
	require.NoError(t, err)

	// While S3 is down.
	j := failedTwice(t, b.Client, tr.JobID)
	requireConnectionErrors(t, j, s3srv.Endpoint)
	require.EqualValues(t, 1, hits.Load(), "only the first merge reaches its upload")
	live, err = b.Client.Partitions(ctx, "cpu", "live")
	require.NoError(t, err)
	levels := map[int]int{}
	for _, p := range live {
		levels[p.Level]++
	}
	require.Equal(t, map[int]int{0: 3, 1: 1}, levels, "the first merge committed, the second did not")
	reg := b.Registry
	require.EqualValues(t, 2, faultMetric(t, reg, "timestore_job_runs_total", "kind", "compaction", "outcome", "error"))
	require.EqualValues(t, 1, faultMetric(t, reg, "timestore_compaction_merges_total", "dataset", "cpu"))
	mergeErrors := faultMetric(t, reg, "timestore_compaction_duration_seconds", "outcome", "error")
	require.EqualValues(t, 2, mergeErrors)
	require.EqualValues(t, 1, faultMetric(t, reg, "timestore_job_backlog", "kind", "compaction", "dataset", "cpu"))
	t.Logf("metrics while S3 is down: job_runs_total{compaction,error}=2, compaction_merges_total{cpu}=1, compaction_duration_seconds_count{error}=%v, job_backlog{compaction,cpu}=1", mergeErrors)

	// After recovery.
	// An operator's retry skips the rest of the backoff.
	recoverJob(t, b, s3srv, j, true)
	byState := requirePartitionObjects(t, b, "cpu", "remote")
	require.Len(t, byState["live"], 2)
	for _, p := range byState["live"] {
		require.Equal(t, 1, p.Level)
	}
	require.Len(t, byState["removed"], 6, "the inputs stay until the sweeper's grace has passed")
	require.EqualValues(t, 2, faultMetric(t, reg, "timestore_compaction_merges_total", "dataset", "cpu"))
	require.EqualValues(t, 1, faultMetric(t, reg, "timestore_job_runs_total", "kind", "compaction", "outcome", "success"))
	requireNoBacklog(t, reg, "compaction", "cpu")
	testserver.RequireAggregates(t, testserver.Expected(rows), b.Aggregates(t, "cpu", "", ""))
	requireNoDuplicates(t, b, "cpu")
}

// TestS3StoppedDuringSweep stops the S3 server right after the sweeper
// deleted the first object of nine purged partitions. The deletions in
// flight may finish; the rest fail, stay pending and fail the job, which
// River retries with backoff. Once S3 is back the job deletes exactly the
// pending objects: every purged partition's object gone, every live one kept.
func TestS3StoppedDuringSweep(t *testing.T) {
	s3srv := s3test.Start(t)
	b := startFaultServer(t, s3srv)
	ctx := context.Background()
	b.CreateCPU(t, "cpu", "remote", "day")
	// Nine days older than the retention's 30 days (one partition each) and
	// the last hour. The sweeper deletes 8 objects at once: with nine, at
	// least one deletion starts after S3 is down.
	const oldDays = 9
	old := time.Now().UTC().AddDate(0, 0, -50).Truncate(24 * time.Hour)
	recent := testserver.GenRows(10, time.Now().UTC().Truncate(time.Second).Add(-time.Hour), time.Minute)
	_, err := b.Client.Ingest(ctx, "cpu", "csv", strings.NewReader(testserver.Encode("csv", append(testserver.GenRows(oldDays*24, old, time.Hour), recent...))), "")
	require.NoError(t, err)
	before, err := b.Client.Partitions(ctx, "cpu", "live")
	require.NoError(t, err)
	oldKeys := map[string]bool{}
	for _, p := range before {
		if p.TimeMax.Before(old.AddDate(0, 0, oldDays)) {
			oldKeys[p.Key] = true
		}
	}
	require.Len(t, oldKeys, oldDays)
	_, err = b.Client.SetPolicy(ctx, "cpu", json.RawMessage(`{"retention":{"max_age":"30d","grace":"0s"}}`))
	require.NoError(t, err)

	var hits atomic.Int64
	defer faultpoint.Arm(faultpoint.SweepMidDelete, stopS3OnFirstHit(s3srv, &hits))()
	// Retention removes the old days (a catalog change only) and enqueues
	// the sweep, which purges them at once (no grace) and deletes their
	// objects.
	tr, err := b.Client.RunMaintenance(ctx, "retention", "cpu")
	require.NoError(t, err)
	waitFaultJob(t, b.Client, tr.JobID, "completion", func(j client.Job) bool { return j.State == "completed" })
	sweep := findJob(t, b.Client, "sweep", "cpu")

	// While S3 is down.
	j := failedTwice(t, b.Client, sweep.ID)
	deleted := int(hits.Load()) // deletions that succeeded before S3 died
	require.True(t, deleted >= 1 && deleted <= 8, "%d deletions before S3 stopped; at most the sweeper's concurrency (8) can be in flight", deleted)
	pending := oldDays - deleted
	require.Contains(t, j.Errors[0].Error, fmt.Sprintf("%d objects of purged partitions could not be deleted", pending))
	require.Contains(t, j.Errors[1].Error, fmt.Sprintf("%d objects of purged partitions could not be deleted", pending))
	purged, err := b.Client.Partitions(ctx, "cpu", "purged")
	require.NoError(t, err)
	require.Len(t, purged, oldDays, "purging is a catalog change: done while S3 is down")
	require.Equal(t, pending, pendingDeletes(t, b, "cpu"), "objects recorded deleted: exactly those deleted before S3 stopped")
	reg := b.Registry
	require.EqualValues(t, 2, faultMetric(t, reg, "timestore_job_runs_total", "kind", "sweep", "outcome", "error"))
	require.EqualValues(t, oldDays, faultMetric(t, reg, "timestore_sweep_purged_partitions_total", "dataset", "cpu"))
	deleteErrors := faultMetric(t, reg, "timestore_sweep_delete_errors_total", "target", "remote")
	require.EqualValues(t, 2*pending, deleteErrors, "each pending object failed once per attempt")
	require.EqualValues(t, 1, faultMetric(t, reg, "timestore_job_backlog", "kind", "sweep", "dataset", "cpu"))
	t.Logf("metrics while S3 is down: %d objects deleted before the stop, %d pending; job_runs_total{sweep,error}=2, sweep_purged_partitions_total{cpu}=%d, sweep_delete_errors_total{remote}=%v, job_backlog{sweep,cpu}=1",
		deleted, pending, oldDays, deleteErrors)

	// After recovery.
	j = recoverJob(t, b, s3srv, j, true)
	var out struct {
		Summary struct {
			ObjectsDeleted int `json:"objects_deleted"`
			AlreadyGone    int `json:"already_gone"`
		} `json:"summary"`
	}
	require.NoError(t, json.Unmarshal(j.Output, &out), "%s", j.Output)
	require.Equal(t, pending, out.Summary.ObjectsDeleted, "the retry finishes the pending deletions: %s", j.Output)
	// Deletions in flight when S3 died may have been done by the server with
	// the response lost: they failed for the sweeper, stayed pending, and
	// the retry finds their objects already gone.
	require.LessOrEqual(t, out.Summary.AlreadyGone, 8-deleted, "only deletions in flight at the stop can be gone: %s", j.Output)
	t.Logf("after recovery: the retry deleted %d pending objects, %d of them already gone (deleted by S3 as it died, the response lost)", pending, out.Summary.AlreadyGone)
	require.Zero(t, pendingDeletes(t, b, "cpu"))
	byState := requirePartitionObjects(t, b, "cpu", "remote")
	require.Len(t, byState["purged"], oldDays)
	for _, p := range byState["purged"] {
		require.True(t, oldKeys[p.Key], "purged partition %d (%s) was not an old day", p.ID, p.Key)
	}
	require.Empty(t, byState["removed"])
	require.Equal(t, len(before)-oldDays, len(byState["live"]))
	require.EqualValues(t, deleteErrors, faultMetric(t, reg, "timestore_sweep_delete_errors_total", "target", "remote"))
	require.EqualValues(t, 1, faultMetric(t, reg, "timestore_job_runs_total", "kind", "sweep", "outcome", "success"))
	requireNoBacklog(t, reg, "sweep", "cpu")
	testserver.RequireAggregates(t, testserver.Expected(recent), b.Aggregates(t, "cpu", "", ""))
}

// pendingDeletes counts a dataset's purged partitions whose object is not
// recorded deleted yet.
func pendingDeletes(t *testing.T, b *testserver.Bundle, dataset string) int {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, b.DBURL)
	require.NoError(t, err)
	defer conn.Close(ctx)
	var n int
	require.NoError(t, conn.QueryRow(ctx, `
		SELECT count(*) FROM timestore.partitions p JOIN timestore.datasets d ON d.id = p.dataset_id
		WHERE d.name = $1 AND p.purged_at IS NOT NULL AND p.object_deleted_at IS NULL`, dataset).Scan(&n))
	return n
}

// lastAttemptedAt reads when River last started job id.
func lastAttemptedAt(t *testing.T, dbURL string, id int64) time.Time {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dbURL)
	require.NoError(t, err)
	defer conn.Close(ctx)
	var at time.Time
	require.NoError(t, conn.QueryRow(ctx, `SELECT attempted_at FROM river_job WHERE id = $1`, id).Scan(&at))
	return at
}

// TestPostgresConnectionsKilledMidJob terminates every Postgres session of
// the server (its catalog pool, River's listener, elector and producers)
// while a job's catalog transaction is open: a compaction's commit, after
// its merged file is uploaded, and an export's verified record, after its
// files and manifest are uploaded and read back. (Killing the sessions
// between two steps is not enough to fail a job: pgxpool pings connections
// idle for over a second when they are acquired and replaces dead ones.)
// Each attempt fails on its dead connection; River retries it after its
// backoff on fresh connections and it completes, leaving no orphan and no
// duplicate. River keeps working afterwards: the scheduler keeps ticking and
// a job triggered later completes at its first attempt.
func TestPostgresConnectionsKilledMidJob(t *testing.T) {
	b := startFaultServer(t, nil)
	ctx := context.Background()
	reg := b.Registry
	b.CreateCPU(t, "cpu", "local", "day")
	_, err := b.Client.SetPolicy(ctx, "cpu", json.RawMessage(`{
		"compaction":{"min_input_files":2,"schedule":"@every 24h"},
		"export":{"target":"remote","after":"1d","window":"day","schedule":"@daily"}}`))
	require.NoError(t, err)
	var rows []testserver.Row
	for i := 0; i < 3; i++ {
		r := testserver.GenRows(48, time.Date(2024, 3, 1, 0, i, 0, 0, time.UTC), time.Hour)
		rows = append(rows, r...)
		_, err := b.Client.Ingest(ctx, "cpu", "csv", strings.NewReader(testserver.Encode("csv", r)), "")
		require.NoError(t, err)
	}

	// runKilled triggers a job of kind whose catalog transaction lockSQL
	// blocks is killed, with every other session, after point, and waits
	// for the job to complete after a retry.
	runKilled := func(kind, point, lockSQL string) client.Job {
		t.Helper()
		hook, result := killMidCommit(b.DBURL, lockSQL, "cpu")
		disarm := faultpoint.Arm(point, hook)
		defer disarm()
		errorsBefore := faultMetric(t, reg, "timestore_job_runs_total", "kind", kind, "outcome", "error")
		tr, err := b.Client.RunMaintenance(ctx, kind, "cpu")
		require.NoError(t, err)
		j := waitFaultJob(t, b.Client, tr.JobID, "completion after the sessions were killed", func(j client.Job) bool { return j.State == "completed" })
		var res killResult
		select {
		case res = <-result:
		case <-time.After(faultWait):
			t.Fatalf("the %s fault did not finish", point)
		}
		require.NoError(t, res.err)
		require.Positive(t, res.killed, "no session was terminated")
		require.Equal(t, "success", jobOutcome(t, j), "job %d output: %s", j.ID, j.Output)
		require.GreaterOrEqual(t, j.Attempt, 2, "the attempt whose transaction was killed must fail")
		require.Len(t, j.Errors, j.Attempt-1, "job %d:%s", j.ID, jobErrors(j))
		requireBackoff(t, j)
		lo, _ := retryDelay(len(j.Errors))
		last := j.Errors[len(j.Errors)-1].At
		retried := lastAttemptedAt(t, b.DBURL, j.ID)
		require.GreaterOrEqual(t, retried.Sub(last), lo, "the successful attempt started %s after the failed one: no backoff", retried.Sub(last))
		require.Contains(t, j.Errors[0].Error, "SQLSTATE 57P01", "the first attempt fails on its terminated connection:%s", jobErrors(j))
		require.EqualValues(t, len(j.Errors), faultMetric(t, reg, "timestore_job_runs_total", "kind", kind, "outcome", "error")-errorsBefore)
		t.Logf("%s job %d: %d sessions terminated after %s; attempts %d, the last started %s after the failed one:%s", kind, j.ID, res.killed, point,
			j.Attempt, retried.Sub(last).Round(time.Millisecond), jobErrors(j))
		return j
	}

	// Compaction: the merged file is uploaded; the commit transaction, which
	// locks the dataset row, is killed while it waits for that lock.
	runKilled("compaction", faultpoint.CompactionAfterUpload,
		`SELECT 1 FROM timestore.datasets WHERE name = $1 FOR NO KEY UPDATE`)
	// When the connection dies during the commit, its outcome is unknown to
	// the job: it deletes its upload only if it can check the upload is not
	// referenced, and with the pool's connections dead that check may fail
	// too. It then leaves the file for reconcile, which finds it here.
	if n := reconcileNow(t, b, "cpu"); n > 0 {
		t.Logf("reconcile deleted %d orphan(s) the killed commit left", n)
	}
	byState := requirePartitionObjects(t, b, "cpu", "local")
	require.Len(t, byState["live"], 2, "both windows merged")
	require.Len(t, byState["removed"], 6)
	testserver.RequireAggregates(t, testserver.Expected(rows), b.Aggregates(t, "cpu", "", ""))
	requireNoDuplicates(t, b, "cpu")

	// Export: files and manifest are uploaded and read back; the transaction
	// recording the version verified, which locks its export row, is killed
	// while it waits for that lock.
	runKilled("export", faultpoint.ExportBeforeCommit,
		`SELECT 1 FROM timestore.exports WHERE dataset_id = (SELECT id FROM timestore.datasets WHERE name = $1) FOR UPDATE`)
	requireVerifiedExports(t, b, "cpu", "remote", 2, int64(len(rows)))

	// River still works on its new connections: the scheduler ticks and a
	// job triggered now completes at its first attempt.
	ticks := faultMetric(t, reg, "timestore_job_runs_total", "kind", "scheduler", "outcome", "success")
	_, err = b.Client.SetPolicy(ctx, "cpu", json.RawMessage(`{"retention":{"max_age":"30d"}}`))
	require.NoError(t, err)
	tr, err := b.Client.RunMaintenance(ctx, "retention", "cpu")
	require.NoError(t, err)
	j := waitFaultJob(t, b.Client, tr.JobID, "completion", func(j client.Job) bool { return j.State == "completed" })
	require.Equal(t, 1, j.Attempt)
	require.Equal(t, "success", jobOutcome(t, j))
	deadline := time.Now().Add(faultWait)
	for faultMetric(t, reg, "timestore_job_runs_total", "kind", "scheduler", "outcome", "success") <= ticks {
		require.True(t, time.Now().Before(deadline), "the scheduler has not ticked for %s since the sessions were killed", faultWait)
		time.Sleep(100 * time.Millisecond)
	}
	live, err := b.Client.Partitions(ctx, "cpu", "live")
	require.NoError(t, err)
	require.Empty(t, live, "retention removed the 2024 data")
	removed, err := b.Client.Partitions(ctx, "cpu", "removed")
	require.NoError(t, err)
	var removedRows int64
	for _, p := range removed {
		if p.Level == 1 {
			removedRows += p.RowCount
		}
	}
	require.EqualValues(t, len(rows), removedRows, "the merged partitions hold every row, restorable within grace")
	require.Zero(t, faultMetric(t, reg, "timestore_job_invariant_violations_total"))
}
