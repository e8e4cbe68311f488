// Package engine is timestore's DuckDB layer. It turns uploaded rows (CSV,
// NDJSON, JSON) into sorted, zstd-compressed Parquet files, one per partition
// window, computes their statistics, and runs user SQL over a dataset's
// Parquet files inside a locked-down DuckDB instance.
//
// Small uploads (Config.NativeInputMaxBytes) are first read by a strict Go
// reader that writes the same files without DuckDB's fixed cost per request
// (native.go); whatever it does not read with certainty, every refusal
// included, goes to DuckDB. docs/design.md ("How an ingest body becomes
// files") explains the split.
//
// The Engine owns one long-lived DuckDB instance for trusted work (ingest,
// statistics, later compaction and export). User queries never run there:
// they run in separate in-memory DuckDB instances, each restricted to the
// Parquet files of one query's file set with its configuration locked (see
// Query).
package engine

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"net/url"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"

	duckdb "github.com/duckdb/duckdb-go/v2"
	"go.opentelemetry.io/otel/trace"

	"timestore/internal/catalog"
)

// Defaults of Config.
const (
	// MemoryLimitDefault leaves DuckDB's own default (80% of the machine's RAM).
	MemoryLimitDefault = ""
	// TempDirDefault makes New create a private directory under os.TempDir(),
	// removed again by Close.
	TempDirDefault = ""
	// ThreadsDefault uses one DuckDB thread per CPU core.
	ThreadsDefault = 0
	// NativeInputMaxBytesDefault is the server's default for
	// Config.NativeInputMaxBytes: 1 MiB.
	NativeInputMaxBytesDefault = 1 << 20
)

// Config tunes the DuckDB instances of an Engine. The zero value is valid.
type Config struct {
	// MemoryLimit caps the memory of the trusted DuckDB instance and, separately,
	// of each query's sandbox instance, in DuckDB syntax such as "2GB" or
	// "512MiB". Larger work spills to TempDir. Defaults to MemoryLimitDefault
	// (DuckDB's default of 80% of RAM).
	MemoryLimit string
	// TempDir is where DuckDB spills data that does not fit in memory. Each
	// query sandbox spills into its own subdirectory, removed when the sandbox
	// is closed. Defaults to TempDirDefault: a private directory under
	// os.TempDir() that Close removes.
	TempDir string
	// Threads is the number of DuckDB worker threads per instance; it also
	// bounds how many partition files one ingest writes in parallel. Defaults
	// to ThreadsDefault (0): the number of CPU cores.
	Threads int
	// QuerySpillLimit bounds the disk each query's sandbox may spill to
	// (DuckDB's max_temp_directory_size, e.g. "4GiB"). Defaults to DuckDB's
	// (90% of the free disk).
	QuerySpillLimit string
	// NativeInputMaxBytes is the size up to which PrepareIngest reads an
	// input in Go instead of DuckDB, saving DuckDB's fixed cost per request
	// (see prepareNative); input the Go reader does not read with certainty
	// still goes to DuckDB. 0 (the zero value) reads every input with
	// DuckDB; the server's default is NativeInputMaxBytesDefault.
	NativeInputMaxBytes int64
}

// Validate reports a configuration error.
func (c Config) Validate() error {
	if c.Threads < 0 {
		return fmt.Errorf("engine: threads must be >= 0, not %d", c.Threads)
	}
	if c.NativeInputMaxBytes < 0 {
		return fmt.Errorf("engine: native input max bytes must be >= 0, not %d", c.NativeInputMaxBytes)
	}
	if strings.ContainsAny(c.MemoryLimit, "'\"\n") {
		return fmt.Errorf("engine: invalid memory limit %q", c.MemoryLimit)
	}
	if strings.ContainsAny(c.QuerySpillLimit, "'\"\n") {
		return fmt.Errorf("engine: invalid query spill limit %q", c.QuerySpillLimit)
	}
	return nil
}

// Engine runs DuckDB work for timestore. It is safe for concurrent use.
type Engine struct {
	cfg        Config
	threads    int
	tempDir    string
	ownTempDir bool
	connector  *duckdb.Connector
	db         *sql.DB
	sandboxes  *sandboxPool
	seq        atomic.Uint64
	closed     atomic.Bool
	// tracer is set by SetTracerProvider; nil means no spans.
	tracer atomic.Pointer[trace.Tracer]
}

// New opens the trusted DuckDB instance with cfg applied.
func New(cfg Config) (*Engine, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	e := &Engine{cfg: cfg, threads: cfg.Threads, tempDir: cfg.TempDir}
	e.sandboxes = &sandboxPool{e: e}
	if e.threads == 0 {
		e.threads = runtime.NumCPU()
	}
	if e.tempDir == "" {
		dir, err := os.MkdirTemp("", "timestore-engine-")
		if err != nil {
			return nil, fmt.Errorf("engine: create temp dir: %w", err)
		}
		e.tempDir, e.ownTempDir = dir, true
	} else if err := os.MkdirAll(e.tempDir, 0o755); err != nil {
		return nil, fmt.Errorf("engine: create temp dir: %w", err)
	}
	connector, err := duckdb.NewConnector(e.dsn(e.tempDir), initSession)
	if err != nil {
		e.removeTempDir()
		return nil, fmt.Errorf("engine: open duckdb: %w", err)
	}
	e.connector = connector
	e.db = sql.OpenDB(connector)
	e.db.SetMaxIdleConns(2 * e.threads)
	if err := e.db.Ping(); err != nil {
		_ = e.Close()
		return nil, fmt.Errorf("engine: open duckdb: %w", err)
	}
	if cfg.QuerySpillLimit != "" {
		// Refuse a limit DuckDB cannot read now, not at every query.
		sb, err := e.newSandbox(context.Background())
		if err == nil {
			err = sb.exec(context.Background(), "SET GLOBAL max_temp_directory_size = "+quoteString(cfg.QuerySpillLimit))
			_ = sb.close()
		}
		if err != nil {
			_ = e.Close()
			return nil, fmt.Errorf("engine: query spill limit %q: %w", cfg.QuerySpillLimit, err)
		}
	}
	e.sandboxes.refill()
	return e, nil
}

// Close closes the trusted DuckDB instance and the spare query sandboxes.
// Queries still open keep their own sandbox instances until their Rows are
// closed.
func (e *Engine) Close() error {
	if e.closed.Swap(true) {
		return nil
	}
	e.sandboxes.close()
	err := e.db.Close() // closes the connector too
	e.removeTempDir()
	if err != nil {
		return fmt.Errorf("engine: close: %w", err)
	}
	return nil
}

func (e *Engine) removeTempDir() {
	if e.ownTempDir {
		_ = os.RemoveAll(e.tempDir)
	}
}

// dsn returns the DuckDB connection string with the configured limits.
func (e *Engine) dsn(tempDir string) string {
	v := url.Values{}
	v.Set("threads", strconv.Itoa(e.threads))
	if e.cfg.MemoryLimit != "" {
		v.Set("memory_limit", e.cfg.MemoryLimit)
	}
	v.Set("temp_directory", tempDir)
	v.Set("autoinstall_known_extensions", "false")
	v.Set("autoload_known_extensions", "false")
	return "?" + v.Encode()
}

// initSession runs on every new connection: timestamps are rendered and
// truncated in UTC whatever the machine's time zone.
func initSession(execer driver.ExecerContext) error {
	_, err := execer.ExecContext(context.Background(), "SET TimeZone = 'UTC'", nil)
	return err
}

// nextID returns a process-unique number for table and file names.
func (e *Engine) nextID() uint64 { return e.seq.Add(1) }

func (e *Engine) checkOpen() error {
	if e.closed.Load() {
		return errors.New("engine: closed")
	}
	return nil
}

// quoteIdent quotes a SQL identifier.
func quoteIdent(s string) string {
	return `"` + strings.ReplaceAll(s, `"`, `""`) + `"`
}

// quoteString quotes a SQL string literal.
func quoteString(s string) string {
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}

// sqlType maps a catalog column type to its DuckDB type.
func sqlType(t string) (string, error) {
	switch t {
	case catalog.TypeTimestamp:
		return "TIMESTAMP", nil
	case catalog.TypeTimestampTZ:
		return "TIMESTAMPTZ", nil
	case catalog.TypeBigint:
		return "BIGINT", nil
	case catalog.TypeInteger:
		return "INTEGER", nil
	case catalog.TypeDouble:
		return "DOUBLE", nil
	case catalog.TypeVarchar:
		return "VARCHAR", nil
	case catalog.TypeBoolean:
		return "BOOLEAN", nil
	}
	return "", fmt.Errorf("unknown column type %q", t)
}

// checkDataset validates the parts of a dataset definition the engine relies on.
func checkDataset(ds catalog.Dataset) error {
	if err := catalog.ValidateName("dataset", ds.Name); err != nil {
		return err
	}
	if len(ds.Columns) == 0 {
		return fmt.Errorf("dataset %s: no columns", ds.Name)
	}
	seen := make(map[string]bool, len(ds.Columns))
	for _, c := range ds.Columns {
		if err := catalog.ValidateName("column", c.Name); err != nil {
			return fmt.Errorf("dataset %s: %w", ds.Name, err)
		}
		if seen[c.Name] {
			return fmt.Errorf("dataset %s: duplicate column %q", ds.Name, c.Name)
		}
		seen[c.Name] = true
		if _, err := sqlType(c.Type); err != nil {
			return fmt.Errorf("dataset %s: column %s: %w", ds.Name, c.Name, err)
		}
	}
	tc, ok := ds.Column(ds.TimeColumn)
	if !ok {
		return fmt.Errorf("dataset %s: time column %q is not a column", ds.Name, ds.TimeColumn)
	}
	if tc.Type != catalog.TypeTimestamp && tc.Type != catalog.TypeTimestampTZ {
		return fmt.Errorf("dataset %s: time column %q must be timestamp or timestamptz", ds.Name, ds.TimeColumn)
	}
	switch ds.Partition {
	case catalog.WindowHour, catalog.WindowDay, catalog.WindowMonth:
	default:
		return fmt.Errorf("dataset %s: unknown partition window %q", ds.Name, ds.Partition)
	}
	return nil
}
