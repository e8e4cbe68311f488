package pgtest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
)

// SlowCommits makes the COMMIT of every transaction that adds a partition to
// the catalog behind pool take d, deaf to cancel requests, and then succeed:
// a deferred constraint trigger waits at commit time. It models a commit
// whose outcome its writer cannot learn in time (a slow WAL flush or
// synchronous replica, a connection lost after COMMIT was sent): the writer's
// deadline passes, or it goes away, while the server goes on and commits.
// The returned function removes the trigger (also done when t ends).
func SlowCommits(t testing.TB, pool *pgxpool.Pool, d time.Duration) (remove func()) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	_, err := pool.Exec(ctx, fmt.Sprintf(`
		CREATE OR REPLACE FUNCTION timestore.pgtest_slow_commit() RETURNS trigger LANGUAGE plpgsql AS $f$
		DECLARE until timestamptz := clock_timestamp() + interval '%d microseconds';
		BEGIN
			WHILE clock_timestamp() < until LOOP
				BEGIN
					PERFORM pg_sleep(0.02);
				EXCEPTION WHEN query_canceled THEN
					-- deaf to cancel requests, like a commit already under way
				END;
			END LOOP;
			RETURN NULL;
		END $f$;
		DROP TRIGGER IF EXISTS pgtest_slow_commit ON timestore.partitions;
		CREATE CONSTRAINT TRIGGER pgtest_slow_commit AFTER INSERT ON timestore.partitions
			DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION timestore.pgtest_slow_commit();`, d.Microseconds()))
	require.NoError(t, err)
	remove = func() {
		ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
		defer cancel()
		_, err := pool.Exec(ctx, `DROP TRIGGER IF EXISTS pgtest_slow_commit ON timestore.partitions`)
		require.NoError(t, err)
	}
	t.Cleanup(remove)
	return remove
}

// WaitCommitInFlight waits until another session of the database behind pool
// is running a COMMIT (one that SlowCommits slowed down), or fails t after
// timeout.
func WaitCommitInFlight(t testing.TB, pool *pgxpool.Pool, timeout time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for {
		var n int
		err := pool.QueryRow(ctx, `
			SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND pid <> pg_backend_pid()
				AND state = 'active' AND query ILIKE 'commit%'`).Scan(&n)
		if err == nil && n > 0 {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("no COMMIT in flight within %s (last error: %v)", timeout, err)
		case <-time.After(5 * time.Millisecond):
		}
	}
}
