package jobs

import (
	"context"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivermigrate"
)

// migrateLockID is the session advisory lock that serializes concurrent
// Migrate calls on one database.
var migrateLockID = int64(crc32.ChecksumIEEE([]byte("timestore.jobs.migrate")))

// Migrate brings River's tables (river_job, river_leader, …, in the default
// schema of the pool's database) up to the latest version. It is idempotent
// and safe to run from several processes (or goroutines) at once: they take
// turns on an advisory lock. River's migrations run one transaction each
// (some cannot share one), so a concurrent caller must not start before the
// first is done.
//
// The lock is held on a connection of its own, outside the pool: callers
// waiting for it must not take the pool's connections from the one
// migrating.
func Migrate(ctx context.Context, pool *pgxpool.Pool) error {
	_, err := MigrateUp(ctx, pool)
	return err
}

// MigrateUp is Migrate, reporting how many migrations it applied.
func MigrateUp(ctx context.Context, pool *pgxpool.Pool) (int, error) {
	conn, err := pgx.ConnectConfig(ctx, pool.Config().ConnConfig.Copy())
	if err != nil {
		return 0, fmt.Errorf("migrate jobs: connect: %w", err)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = conn.Close(cctx) // ending the session releases the lock
	}()
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock($1)`, migrateLockID); err != nil {
		return 0, fmt.Errorf("migrate jobs: lock: %w", err)
	}

	migrator, err := rivermigrate.New(riverpgxv5.New(pool), &rivermigrate.Config{
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		return 0, fmt.Errorf("migrate jobs: %w", err)
	}
	res, err := migrator.Migrate(ctx, rivermigrate.DirectionUp, nil)
	if err != nil {
		return 0, fmt.Errorf("migrate jobs: %w", err)
	}
	return len(res.Versions), nil
}
