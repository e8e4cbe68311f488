package catalog

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// MaxConnsDefault is the connection pool size unless the database URL sets pool_max_conns.
const MaxConnsDefault = 16

// Store is the Postgres catalog. Every table lives in the schema "timestore".
// A Store is safe for concurrent use.
type Store struct {
	pool *pgxpool.Pool
}

// Open connects to the catalog database at databaseURL (a postgres:// URL or
// a key=value connection string) and checks that it answers. It does not
// migrate; call Migrate.
func Open(ctx context.Context, databaseURL string) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(databaseURL)
	if err != nil {
		return nil, fmt.Errorf("open catalog: parse database url: %w", err)
	}
	// pgxpool's default (4 or the core count) is too small for a process that
	// serves queries (each holds a connection while it takes its lease), runs
	// jobs and keeps one connection listening for River; pool_max_conns in the
	// URL still wins.
	if !strings.Contains(databaseURL, "pool_max_conns") {
		cfg.MaxConns = MaxConnsDefault
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open catalog: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("open catalog: ping %s: %w", cfg.ConnConfig.Host, err)
	}
	return &Store{pool: pool}, nil
}

// Close closes every connection of the pool.
func (s *Store) Close() { s.pool.Close() }

// Ping checks that the catalog database answers (for readiness probes).
func (s *Store) Ping(ctx context.Context) error {
	if err := s.pool.Ping(ctx); err != nil {
		return fmt.Errorf("ping catalog: %w", err)
	}
	return nil
}

// Pool returns the connection pool, for components that share the catalog
// database (River).
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// querier runs statements: the pool, or a transaction.
type querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// readCommitted is the isolation of every writing transaction: the dataset row
// lock serializes the changes of one dataset, and each statement after the lock
// sees the rows committed before it.
var readCommitted = pgx.TxOptions{IsoLevel: pgx.ReadCommitted}

// consistentRead is a read-only transaction whose statements all see one snapshot.
var consistentRead = pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}

// inTx runs fn in a transaction, committing when it returns nil.
func (s *Store) inTx(ctx context.Context, opts pgx.TxOptions, fn func(tx pgx.Tx) error) error {
	return pgx.BeginTxFunc(ctx, s.pool, opts, fn)
}

// Postgres error codes the store maps to its own errors.
const (
	codeUniqueViolation     = "23505"
	codeForeignKeyViolation = "23503"
)

// pgCode returns the SQLSTATE of err and, for constraint violations, the constraint name.
func pgCode(err error) (code, constraint string) {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code, pgErr.ConstraintName
	}
	return "", ""
}

// notFound maps pgx.ErrNoRows to ErrNotFound.
func notFound(err error) error {
	if errors.Is(err, pgx.ErrNoRows) {
		return ErrNotFound
	}
	return err
}

// invalidError marks a validation error as ErrInvalid without changing its text.
type invalidError struct{ err error }

func (e invalidError) Error() string   { return e.err.Error() }
func (e invalidError) Unwrap() []error { return []error{ErrInvalid, e.err} }

// invalid wraps err so that errors.Is(err, ErrInvalid) holds.
func invalid(err error) error { return invalidError{err} }
