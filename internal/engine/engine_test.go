package engine

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"timestore/internal/catalog"
)

// testEngine is shared by the tests, which run in parallel against it.
var testEngine *Engine

func TestMain(m *testing.M) {
	var err error
	cfg := Config{Threads: 2, MemoryLimit: "2GB"}
	// TIMESTORE_TEST_NATIVE_INGEST=1 runs every test with the native path
	// of small inputs in use (by default tests reach it directly).
	if os.Getenv("TIMESTORE_TEST_NATIVE_INGEST") == "1" {
		cfg.NativeInputMaxBytes = NativeInputMaxBytesDefault
	}
	testEngine, err = New(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	for _, dir := range []string{benchDir, fixture.dir} {
		if dir != "" {
			_ = os.RemoveAll(dir)
		}
	}
	if err := testEngine.Close(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		code = 1
	}
	os.Exit(code)
}

// allTypes is a dataset with one column of every type.
func allTypes(partition string) catalog.Dataset {
	return catalog.Dataset{
		Name: "all_types",
		Columns: []catalog.Column{
			{Name: "ts", Type: catalog.TypeTimestamp},
			{Name: "tz", Type: catalog.TypeTimestampTZ},
			{Name: "b", Type: catalog.TypeBigint},
			{Name: "i", Type: catalog.TypeInteger},
			{Name: "d", Type: catalog.TypeDouble},
			{Name: "s", Type: catalog.TypeVarchar},
			{Name: "f", Type: catalog.TypeBoolean},
		},
		TimeColumn: "ts",
		Partition:  partition,
	}
}

// metrics is a small dataset like the benchmark's.
func metrics(name, partition string) catalog.Dataset {
	return catalog.Dataset{
		Name: name,
		Columns: []catalog.Column{
			{Name: "ts", Type: catalog.TypeTimestamp},
			{Name: "series", Type: catalog.TypeVarchar},
			{Name: "value", Type: catalog.TypeDouble},
		},
		TimeColumn: "ts",
		Partition:  partition,
	}
}

// requireFastRead checks that an ingest since the counts were taken went
// through DuckDB's single-read JSON path (ingestDetected) or, only when the
// tests run with the native path in use, through the native path.
func requireFastRead(t testing.TB, detectedBefore, nativeBefore int64, msg string) {
	t.Helper()
	if testEngine.cfg.NativeInputMaxBytes > 0 && nativeReads.Load() > nativeBefore {
		return
	}
	require.Greater(t, detectedReads.Load(), detectedBefore, msg)
}

func writeFile(t testing.TB, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	require.NoError(t, os.WriteFile(p, []byte(content), 0o644))
	return p
}

func mustTime(t testing.TB, s string) time.Time {
	t.Helper()
	v, err := time.Parse(time.RFC3339Nano, s)
	require.NoError(t, err)
	return v.UTC()
}

func strp(s string) *string { return &s }

// readParquet returns every row of a Parquet file, read with the trusted
// instance.
func readParquet(t testing.TB, path string) [][]any {
	t.Helper()
	rows, err := testEngine.db.QueryContext(context.Background(), "SELECT * FROM read_parquet("+quoteString(path)+")")
	require.NoError(t, err)
	defer rows.Close()
	cols, err := rows.Columns()
	require.NoError(t, err)
	var out [][]any
	for rows.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		require.NoError(t, rows.Scan(ptrs...))
		out = append(out, vals)
	}
	require.NoError(t, rows.Err())
	return out
}

// parquetSchema returns "name type" per column of a Parquet file as DuckDB
// reads it.
func parquetSchema(t testing.TB, path string) []string {
	t.Helper()
	rows, err := testEngine.db.QueryContext(context.Background(),
		"SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM read_parquet("+quoteString(path)+"))")
	require.NoError(t, err)
	defer rows.Close()
	var out []string
	for rows.Next() {
		var n, typ string
		require.NoError(t, rows.Scan(&n, &typ))
		out = append(out, n+" "+typ)
	}
	require.NoError(t, rows.Err())
	return out
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	require.Error(t, Config{Threads: -1}.Validate())
	require.Error(t, Config{MemoryLimit: "1GB'; DROP"}.Validate())
	require.NoError(t, Config{}.Validate())
}

func TestNewAppliesConfig(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	e, err := New(Config{MemoryLimit: "256MB", TempDir: dir, Threads: 1})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, e.Close()) })

	var threads int64
	var tempDir, memLimit, tz string
	require.NoError(t, e.db.QueryRow(`SELECT current_setting('threads'), current_setting('temp_directory'),
		current_setting('memory_limit'), current_setting('TimeZone')`).Scan(&threads, &tempDir, &memLimit, &tz))
	require.EqualValues(t, 1, threads)
	require.Equal(t, dir, tempDir)
	require.Contains(t, memLimit, "MiB") // DuckDB renders 256MB as 244.1 MiB
	require.Equal(t, "UTC", tz)

	// The default temp dir is private and removed on Close.
	e2, err := New(Config{})
	require.NoError(t, err)
	require.DirExists(t, e2.tempDir)
	require.NoError(t, e2.Close())
	require.NoDirExists(t, e2.tempDir)
	require.NoError(t, e2.Close(), "second Close is a no-op")
}

// A query may spill only up to QuerySpillLimit: one that needs more fails
// with DuckDB's error instead of filling the disk, and the engine refuses a
// limit DuckDB cannot read when it starts.
func TestQuerySpillLimit(t *testing.T) {
	t.Parallel()
	_, err := New(Config{QuerySpillLimit: "lots"})
	require.ErrorContains(t, err, "query spill limit")
	require.Error(t, Config{QuerySpillLimit: "1GB'; SET x"}.Validate())

	e, err := New(Config{MemoryLimit: "64MB", Threads: 1, QuerySpillLimit: "8MB"})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, e.Close()) })
	f := setupQuery(t)
	// A sort of ~300 MB of strings: far more than memory, so it spills.
	r, err := e.Query(context.Background(), QueryRequest{Dataset: f.ds, Files: f.files, Timeout: time.Minute,
		SQL: "SELECT count(*) FROM (SELECT repeat('x', 100) || i AS s FROM range(3000000) t(i) ORDER BY s DESC)"})
	if err == nil {
		for r.Next() {
		}
		err = r.Err()
		require.NoError(t, r.Close())
	}
	require.ErrorContains(t, err, "max_temp_directory_size")

	// Within the limit, the same engine answers.
	r, err = e.Query(context.Background(), QueryRequest{Dataset: f.ds, Files: f.files, SQL: "SELECT count(*) FROM m"})
	require.NoError(t, err)
	require.True(t, r.Next())
	require.EqualValues(t, 96, r.Values()[0])
	require.NoError(t, r.Close())
}
