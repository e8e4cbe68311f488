package catalog

import (
	"context"
	"embed"
	"fmt"
	"io"
	"io/fs"
	"log/slog"

	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// Migration bookkeeping.
const (
	// versionTable is goose's table of applied migrations, kept in our schema.
	versionTable = "timestore.goose_db_version"
	// migrateLockID is the advisory lock that serializes concurrent Migrate calls
	// on one database (crc32 of "timestore.migrate"); distinct from goose's
	// default so that other goose users of the database do not wait on us.
	migrateLockID int64 = 0x77ed5c29
	// migrateLockPollSeconds and migrateLockPolls bound the wait for a
	// concurrent migration: poll every second, up to five minutes.
	migrateLockPollSeconds = 1
	migrateLockPolls       = 300
)

// Migrations returns the embedded SQL migrations (goose format), e.g. to
// fingerprint the schema.
func Migrations() fs.FS {
	sub, err := fs.Sub(migrationFiles, "migrations")
	if err != nil {
		panic(err) // the directory is embedded; it cannot be missing
	}
	return sub
}

// Migrate brings the catalog schema up to date. It is idempotent, and safe when
// several processes run it at once: they take turns on an advisory lock.
func (s *Store) Migrate(ctx context.Context) error {
	_, _, err := s.MigrateUp(ctx)
	return err
}

// MigrateUp is Migrate, reporting how many migrations it applied and the
// schema version it left.
func (s *Store) MigrateUp(ctx context.Context) (applied int, version int64, err error) {
	// goose creates its version table inside our schema before it runs the
	// first migration, so the schema must exist first. Two concurrent
	// CREATE SCHEMA IF NOT EXISTS can still collide, hence the lock (the one
	// goose takes below).
	err = s.inTx(ctx, readCommitted, func(tx Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, migrateLockID); err != nil {
			return err
		}
		var exists bool
		if err := tx.QueryRow(ctx, `SELECT to_regnamespace('timestore') IS NOT NULL`).Scan(&exists); err != nil || exists {
			return err // an existing schema needs no CREATE privilege on the database
		}
		_, err := tx.Exec(ctx, `CREATE SCHEMA timestore`)
		return err
	})
	if err != nil {
		return 0, 0, fmt.Errorf("migrate catalog: create schema: %w", err)
	}

	locker, err := lock.NewPostgresSessionLocker(
		lock.WithLockID(migrateLockID),
		lock.WithLockTimeout(migrateLockPollSeconds, migrateLockPolls),
	)
	if err != nil {
		return 0, 0, fmt.Errorf("migrate catalog: %w", err)
	}
	db := stdlib.OpenDBFromPool(s.pool)
	defer db.Close()
	provider, err := goose.NewProvider(goose.DialectPostgres, db, Migrations(),
		goose.WithTableName(versionTable),
		goose.WithSessionLocker(locker),
		goose.WithDisableGlobalRegistry(true),
		goose.WithSlog(slog.New(slog.NewTextHandler(io.Discard, nil))),
	)
	if err != nil {
		return 0, 0, fmt.Errorf("migrate catalog: %w", err)
	}
	results, err := provider.Up(ctx)
	if err != nil {
		return 0, 0, fmt.Errorf("migrate catalog: %w", err)
	}
	if version, err = provider.GetDBVersion(ctx); err != nil {
		return 0, 0, fmt.Errorf("migrate catalog: version: %w", err)
	}
	return len(results), version, nil
}
