// Package pgtest gives each test a fresh, migrated catalog database of its own
// on the Postgres server named by TIMESTORE_TEST_DATABASE_URL.
//
// The first call in a process makes sure a template database holding the
// current migrations exists (named after a hash of the migration files, built
// once per server under an advisory lock and published by an atomic rename);
// every test database is then a CREATE DATABASE … TEMPLATE copy of it, and is
// dropped when the test ends. Tests and test binaries may run in parallel.
package pgtest

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash/crc32"
	"io/fs"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"timestore/internal/catalog"
)

const (
	// EnvDatabaseURL names the environment variable holding the URL of a
	// database on the test server; the user must be allowed to create databases.
	EnvDatabaseURL = "TIMESTORE_TEST_DATABASE_URL"
	// DatabaseURLDefault is used when EnvDatabaseURL is unset.
	DatabaseURLDefault = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

	templatePrefix = "timestore_tmpl_"
	testPrefix     = "timestore_test_"
	// staleAfter is the age beyond which a test database left behind by a
	// killed test process is dropped by the next process that starts.
	staleAfter = 6 * time.Hour
	// setupTimeout bounds building the template and each create or drop.
	setupTimeout = 2 * time.Minute
)

// setupLockID serializes template builds across processes (advisory locks are
// per database: this one is taken in the database of the base URL).
var setupLockID = int64(crc32.ChecksumIEEE([]byte("timestore.pgtest")))

var server struct {
	once     sync.Once
	err      error
	base     *url.URL
	admin    *pgxpool.Pool // on the base database; lives as long as the process
	template string
}

// NewStore returns a catalog.Store opened on a new migrated database that is
// dropped when t ends; the store is closed first.
func NewStore(t testing.TB) *catalog.Store {
	t.Helper()
	dbURL := NewDatabaseURL(t)
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	store, err := catalog.Open(ctx, dbURL)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	t.Cleanup(store.Close)
	if err := store.Migrate(ctx); err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	return store
}

// NewDatabaseURL creates a new database holding the current catalog schema and
// returns its URL. The database is dropped (WITH (FORCE)) when t ends.
func NewDatabaseURL(t testing.TB) string {
	t.Helper()
	return newDatabase(t, true)
}

// NewEmptyDatabaseURL is NewDatabaseURL without the schema, for tests of
// migrations themselves.
func NewEmptyDatabaseURL(t testing.TB) string {
	t.Helper()
	return newDatabase(t, false)
}

func newDatabase(t testing.TB, migrated bool) string {
	t.Helper()
	server.once.Do(func() { server.err = setup() })
	if server.err != nil {
		t.Fatalf("pgtest: %v", server.err)
	}
	template := "template0"
	if migrated {
		template = server.template
	}
	name := testPrefix + strconv.FormatInt(time.Now().Unix(), 10) + "_" + randomHex(6)
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	if _, err := server.admin.Exec(ctx, `CREATE DATABASE `+ident(name)+` TEMPLATE `+ident(template)); err != nil {
		t.Fatalf("pgtest: create database %s from %s: %v", name, template, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
		defer cancel()
		if _, err := server.admin.Exec(ctx, `DROP DATABASE IF EXISTS `+ident(name)+` WITH (FORCE)`); err != nil {
			t.Errorf("pgtest: drop database %s: %v", name, err)
		}
	})
	return databaseURL(name)
}

// setup connects to the server and makes sure the template exists.
func setup() error {
	raw := os.Getenv(EnvDatabaseURL)
	if raw == "" {
		raw = DatabaseURLDefault
	}
	base, err := url.Parse(raw)
	if err != nil || (base.Scheme != "postgres" && base.Scheme != "postgresql") {
		return fmt.Errorf("%s must be a postgres:// URL, got %q", EnvDatabaseURL, raw)
	}
	server.base = base
	hash, err := migrationsHash()
	if err != nil {
		return err
	}
	server.template = templatePrefix + hash

	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	server.admin, err = pgxpool.New(ctx, raw)
	if err != nil {
		return fmt.Errorf("connect to test server: %w", err)
	}
	// A dedicated connection holds the session lock: closing it releases the
	// lock whatever happens.
	conn, err := pgx.Connect(ctx, raw)
	if err != nil {
		return fmt.Errorf("connect to test server (set %s): %w", EnvDatabaseURL, err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock($1)`, setupLockID); err != nil {
		return fmt.Errorf("lock test server: %w", err)
	}
	dropStale(ctx, conn)
	return ensureTemplate(ctx, conn)
}

// ensureTemplate builds the template under a temporary name, migrates it and
// renames it into place, so that a template that exists is complete. The
// caller holds the setup lock.
func ensureTemplate(ctx context.Context, conn *pgx.Conn) error {
	var exists bool
	if err := conn.QueryRow(ctx,
		`SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, server.template).Scan(&exists); err != nil {
		return fmt.Errorf("look for template %s: %w", server.template, err)
	}
	if exists {
		return nil
	}
	building := server.template + "_building"
	for _, stmt := range []string{
		`DROP DATABASE IF EXISTS ` + ident(building) + ` WITH (FORCE)`, // left by a crash
		`CREATE DATABASE ` + ident(building) + ` TEMPLATE template0`,
	} {
		if _, err := conn.Exec(ctx, stmt); err != nil {
			return fmt.Errorf("build template: %w", err)
		}
	}
	store, err := catalog.Open(ctx, databaseURL(building))
	if err != nil {
		return fmt.Errorf("build template: %w", err)
	}
	err = store.Migrate(ctx)
	store.Close()
	if err != nil {
		return fmt.Errorf("build template: %w", err)
	}
	// Postgres waits a few seconds for closed sessions to go away before it
	// refuses a rename of a database that is being accessed.
	if _, err := conn.Exec(ctx, `ALTER DATABASE `+ident(building)+` RENAME TO `+ident(server.template)); err != nil {
		return fmt.Errorf("publish template %s: %w", server.template, err)
	}
	return nil
}

// dropStale drops test databases left behind by test processes that were
// killed before their cleanup ran. Best effort.
func dropStale(ctx context.Context, conn *pgx.Conn) {
	rows, err := conn.Query(ctx, `SELECT datname FROM pg_database WHERE starts_with(datname, $1)`, testPrefix)
	if err != nil {
		return
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return
	}
	for _, name := range names {
		stamp, _, _ := strings.Cut(strings.TrimPrefix(name, testPrefix), "_")
		sec, err := strconv.ParseInt(stamp, 10, 64)
		if err != nil || time.Since(time.Unix(sec, 0)) < staleAfter {
			continue
		}
		_, _ = conn.Exec(ctx, `DROP DATABASE IF EXISTS `+ident(name)+` WITH (FORCE)`)
	}
}

// migrationsHash fingerprints the embedded migrations, so that a change to
// them gets a template of its own.
func migrationsHash() (string, error) {
	h := sha256.New()
	fsys := catalog.Migrations()
	err := fs.WalkDir(fsys, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(fsys, path)
		if err != nil {
			return err
		}
		fmt.Fprintf(h, "%s\x00%d\x00", path, len(b))
		h.Write(b)
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("hash migrations: %w", err)
	}
	return hex.EncodeToString(h.Sum(nil))[:16], nil
}

// databaseURL is the base URL with its database replaced by name.
func databaseURL(name string) string {
	u := *server.base
	u.Path = "/" + name
	u.RawPath = ""
	return u.String()
}

// ident quotes a database name; ours are plain lowercase letters, digits and underscores.
func ident(name string) string { return pgx.Identifier{name}.Sanitize() }

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
