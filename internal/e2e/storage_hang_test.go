package e2e

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"timestore/internal/client"
	"timestore/internal/storage"
	"timestore/internal/testutil/nodetest"
	"timestore/internal/testutil/pgtest"
	"timestore/internal/testutil/s3test"
)

// Bounds of TestHungStore (issue 13): a job whose S3 target stops answering
// records an error within hangErrorWithin of the hang, with the server's
// default storage_timeout and job timeout.
const (
	hangErrorWithin = 90 * time.Second
	hangRecoverIn   = 120 * time.Second
)

// TestHungStore stops a real S3 server (SIGSTOP: it keeps its port and its
// connections and answers nothing) under an export job: the job's attempt
// fails with the storage deadline's error within 90 s, not after the job
// timeout (4 minutes), and after SIGCONT `jobs retry` (or River's next
// backoff) completes it with every row exported once and the totals intact.
func TestHungStore(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := s3test.Start(t)
	bucketURL := srv.NewBucket(t)
	dbURL := pgtest.NewDatabaseURL(t)
	db, err := pgxpool.New(ctx, crashPoolURL(dbURL, crashTestConns))
	require.NoError(t, err)
	t.Cleanup(db.Close)
	target, err := storage.NewTarget(ctx, "remote", bucketURL)
	require.NoError(t, err)
	t.Cleanup(func() { _ = target.Bucket.Close() })
	// The defaults of storage_timeout and jobs.job_timeout are what is tested.
	node := nodetest.Start(t, nodetest.Config{DatabaseURL: crashPoolURL(dbURL, crashNodeConns), Env: []string{
		"TIMESTORE_TARGET_REMOTE=" + bucketURL,
		"TIMESTORE_DUCKDB_THREADS=1",
		"TIMESTORE_JOBS_SCHEDULER_INTERVAL=1s",
		"TIMESTORE_JOBS_RECONCILE_SCHEDULE=off",
		"TIMESTORE_JOBS_RECONCILE_SAFETY_AGE=" + crashSafetyAge,
	}})
	now := time.Now().UTC()
	e := &crashEnv{
		t: t, ctx: ctx, sc: crashScenario{point: "hung-store", family: crashExport}, now: now, day: now.Truncate(24 * time.Hour),
		db: db, target: target, node: node, c: node.Client,
		seen: map[string]storage.ObjectInfo{}, scratch: t.TempDir(),
	}
	e.createDataset(crashExport.policy)
	crashExport.prepare(e)
	e.remember(e.list())

	srv.Pause()
	hungAt := time.Now()
	t.Cleanup(srv.Resume) // a failed check must not leave the server stopped for the others
	trig := e.trigger("export")
	require.False(t, trig.Duplicate)

	// The attempt fails with the deadline's error; River schedules a retry.
	var failed client.Job
	mnPoll(ctx, t, hangErrorWithin, "an error recorded on the export job while S3 hangs", func() (bool, error) {
		j, err := e.c.Job(ctx, trig.JobID)
		if err != nil {
			return false, err
		}
		failed = j
		return len(j.Errors) > 0, nil
	})
	errorAfter := time.Since(hungAt)
	first := failed.Errors[0].Error
	require.Contains(t, first, "storage target did not answer in time", "the attempt's error: %+v", failed.Errors)
	require.Contains(t, first, "on target remote got no answer within 30s (storage_timeout)")
	require.NotEqual(t, "completed", failed.State)
	for _, x := range e.exports() {
		require.NotEqual(t, "verified", x.State, "export %d verified while S3 answered nothing", x.ID)
	}

	srv.Resume()
	resumedAt := time.Now()
	// `jobs retry` once the attempt in flight (another one may have started
	// on River's first backoff) has failed too; River's own backoff may
	// complete the job first.
	retried := false
	mnPoll(ctx, t, hangRecoverIn, "the export job completing after SIGCONT", func() (bool, error) {
		j, err := e.c.Job(ctx, trig.JobID)
		if err != nil {
			return false, err
		}
		require.False(t, j.State == "discarded" || j.State == "cancelled", "job ended %s: %+v", j.State, j.Errors)
		if j.State == "retryable" || j.State == "scheduled" {
			if _, err := e.c.RetryJob(ctx, j.ID); err == nil {
				retried = true
			} else if apiErr := (*client.Error)(nil); !errors.As(err, &apiErr) {
				return false, err
			}
		}
		return j.State == "completed", nil
	})
	t.Logf("S3 hung at 0s; the job's first error came after %s; the job completed %s after SIGCONT (jobs retry used: %v)",
		errorAfter.Round(100*time.Millisecond), time.Since(resumedAt).Round(100*time.Millisecond), retried)

	done, err := e.c.Job(ctx, trig.JobID)
	require.NoError(t, err)
	for _, je := range done.Errors {
		require.True(t, strings.Contains(je.Error, "storage_timeout"), "an attempt failed otherwise than by the deadline: %s", je.Error)
	}
	crashExport.check(e)
	e.reconcile()
	e.checkInvariants(nil)
}
