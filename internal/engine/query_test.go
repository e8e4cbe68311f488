package engine

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"timestore/internal/catalog"
)

// queryFixture is a dataset "m" of 48 hourly rows over two day files, and a
// file of another dataset.
type queryFixture struct {
	ds        catalog.Dataset
	files     []string
	otherFile string
	dir       string
}

var (
	fixtureOnce sync.Once
	fixture     queryFixture
	fixtureErr  error
)

func setupQuery(t *testing.T) queryFixture {
	t.Helper()
	fixtureOnce.Do(func() {
		fixture, fixtureErr = buildQueryFixture()
	})
	require.NoError(t, fixtureErr)
	return fixture
}

func buildQueryFixture() (queryFixture, error) {
	dir, err := os.MkdirTemp("", "timestore-engine-query-")
	if err != nil {
		return queryFixture{}, err
	}
	var b strings.Builder
	b.WriteString("ts,series,value\n")
	base := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := 0; i < 48; i++ {
		fmt.Fprintf(&b, "%s,s%d,%d\n", base.Add(time.Duration(i)*time.Hour).Format(time.RFC3339), i%2, i)
		fmt.Fprintf(&b, "%s,s%d,%d\n", base.Add(time.Duration(i)*time.Hour+30*time.Minute).Format(time.RFC3339), i%2, i)
	}
	in := filepath.Join(dir, "in.csv")
	if err := os.WriteFile(in, []byte(b.String()), 0o644); err != nil {
		return queryFixture{}, err
	}
	ds := metrics("m", catalog.WindowDay)
	out := filepath.Join(dir, "m")
	other := filepath.Join(dir, "other")
	for _, d := range []string{out, other} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return queryFixture{}, err
		}
	}
	files, err := testEngine.PrepareIngest(context.Background(), ds, FormatCSV, in, out)
	if err != nil {
		return queryFixture{}, err
	}
	otherFiles, err := testEngine.PrepareIngest(context.Background(), metrics("secret", catalog.WindowMonth), FormatCSV, in, other)
	if err != nil {
		return queryFixture{}, err
	}
	f := queryFixture{ds: ds, otherFile: otherFiles[0].Path, dir: dir}
	for _, wf := range files {
		f.files = append(f.files, wf.Path)
	}
	return f, nil
}

// collect runs a query and returns its columns and rows.
func collect(t *testing.T, req QueryRequest) ([]ColumnInfo, [][]any, error) {
	t.Helper()
	r, err := testEngine.Query(context.Background(), req)
	if err != nil {
		return nil, nil, err
	}
	defer func() { require.NoError(t, r.Close()) }()
	var rows [][]any
	for r.Next() {
		rows = append(rows, r.Values())
	}
	return r.Columns(), rows, r.Err()
}

func TestQueryAggregate(t *testing.T) {
	t.Parallel()
	f := setupQuery(t)
	cols, rows, err := collect(t, QueryRequest{
		Dataset: f.ds, Files: f.files, Timeout: 10 * time.Second,
		SQL: "SELECT time_bucket(INTERVAL '1 hour', ts) AS b, count(*), avg(value) FROM m GROUP BY b ORDER BY b",
	})
	require.NoError(t, err)
	require.Equal(t, []ColumnInfo{{"b", "TIMESTAMP"}, {"count_star()", "BIGINT"}, {"avg(\"value\")", "DOUBLE"}}, cols)
	require.Len(t, rows, 48)
	require.Equal(t, []any{time.Date(2024, 1, 1, 5, 0, 0, 0, time.UTC), int64(2), 5.0}, rows[5])
}

func TestQueryTimeRange(t *testing.T) {
	t.Parallel()
	f := setupQuery(t)
	from := time.Date(2024, 1, 1, 10, 0, 0, 0, time.UTC)
	to := time.Date(2024, 1, 2, 2, 30, 0, 0, time.UTC)
	_, rows, err := collect(t, QueryRequest{
		Dataset: f.ds, Files: f.files, From: &from, To: &to,
		SQL: "SELECT count(*), min(ts), max(ts) FROM m",
	})
	require.NoError(t, err)
	// 10:00 .. 02:00 the next day, half-hours included, 02:30 excluded.
	require.Equal(t, [][]any{{int64(33), from, time.Date(2024, 1, 2, 2, 0, 0, 0, time.UTC)}}, rows)

	// Only From.
	_, rows, err = collect(t, QueryRequest{Dataset: f.ds, Files: f.files, From: &from, SQL: "SELECT count(*) FROM m"})
	require.NoError(t, err)
	require.Equal(t, [][]any{{int64(76)}}, rows)
}

func TestQueryEmptyDataset(t *testing.T) {
	t.Parallel()
	ds := allTypes(catalog.WindowDay)
	cols, rows, err := collect(t, QueryRequest{Dataset: ds, SQL: "SELECT * FROM all_types"})
	require.NoError(t, err)
	require.Empty(t, rows)
	require.Equal(t, []ColumnInfo{
		{"ts", "TIMESTAMP"}, {"tz", "TIMESTAMPTZ"}, {"b", "BIGINT"}, {"i", "INTEGER"},
		{"d", "DOUBLE"}, {"s", "VARCHAR"}, {"f", "BOOLEAN"},
	}, cols)

	_, rows, err = collect(t, QueryRequest{Dataset: ds, SQL: "SELECT count(*), max(ts) FROM all_types"})
	require.NoError(t, err)
	require.Equal(t, [][]any{{int64(0), nil}}, rows)
}

// TestQueryValues checks the Go values of the seven column types and of
// other result types.
func TestQueryValues(t *testing.T) {
	t.Parallel()
	ds := allTypes(catalog.WindowDay)
	in := writeFile(t, t.TempDir(), "in.csv", allTypesCSV)
	files, err := testEngine.PrepareIngest(context.Background(), ds, FormatCSV, in, t.TempDir())
	require.NoError(t, err)
	cols, rows, err := collect(t, QueryRequest{Dataset: ds, Files: []string{files[0].Path}, SQL: "SELECT * FROM all_types ORDER BY ts"})
	require.NoError(t, err)
	require.Equal(t, "TIMESTAMPTZ", cols[1].Type)
	require.Equal(t, [][]any{
		{mustTime(t, "2024-03-01T09:30:00.123456Z"), nil, nil, nil, nil, nil, nil},
		{mustTime(t, "2024-03-01T10:00:00Z"), mustTime(t, "2024-03-01T10:00:00Z"), int64(9007199254740993), int64(-5), 1.5, "hello, world", true},
		{mustTime(t, "2024-03-01T11:00:00Z"), mustTime(t, "2024-03-01T00:00:00Z"), int64(-1), int64(2147483647), -0.25, `ünïcode "q"`, false},
	}, rows)

	cols, rows, err = collect(t, QueryRequest{Dataset: ds, SQL: `SELECT DATE '2024-01-02' AS d, TIME '03:04:05.5' AS t,
		INTERVAL '1 month 2 days 3 hours' AS iv, 1.25::DECIMAL(5,2) AS dec, sum(x) AS huge, [1, 2] AS l,
		{'a': 1, 'b': 'x'} AS st, MAP {'k': 1} AS mp, 'x'::BLOB AS bl,
		'8c2fd6ae-6a37-4b0d-9b9a-11c1b0f5d9a1'::UUID AS u, 3::TINYINT AS tiny, 1.5::FLOAT AS fl,
		18446744073709551615::UBIGINT AS ub
		FROM (VALUES (9223372036854775807::BIGINT), (1)) v(x)`})
	require.NoError(t, err)
	require.Equal(t, "DATE", cols[0].Type)
	require.Equal(t, [][]any{{
		"2024-01-02", "03:04:05.5", "1 month 2 days 03:00:00", 1.25, "9223372036854775808",
		[]any{int64(1), int64(2)}, map[string]any{"a": int64(1), "b": "x"}, map[string]any{"k": int64(1)}, `\x78`,
		"8c2fd6ae-6a37-4b0d-9b9a-11c1b0f5d9a1", int64(3), 1.5, "18446744073709551615",
	}}, rows)
}

// TestQuerySandbox checks that user SQL can read nothing but the dataset.
func TestQuerySandbox(t *testing.T) {
	t.Parallel()
	f := setupQuery(t)
	outside := filepath.Join(f.dir, "x.csv")
	for _, tc := range []struct {
		name string
		sql  string
		msg  string
	}{
		{"read_csv", "SELECT * FROM read_csv('/etc/passwd')", "table function read_csv is not allowed"},
		{"read_text", "SELECT * FROM read_text('/etc/passwd')", "table function read_text is not allowed"},
		{"replacement scan", "SELECT * FROM '/etc/passwd'", ""},
		{"other dataset file", "SELECT * FROM read_parquet(" + quoteString(f.otherFile) + ")", "Permission Error"},
		{"other file through glob", "SELECT * FROM read_parquet(" + quoteString(filepath.Join(f.dir, "*", "*.parquet")) + ")", ""},
		{"glob", "SELECT * FROM glob('/*')", "table function glob is not allowed"},
		{"attach", "ATTACH 'x.db'", "not ATTACH"},
		{"attach memory", "ATTACH ':memory:' AS x", "not ATTACH"},
		{"copy", "COPY (SELECT 1) TO " + quoteString(outside), "not COPY"},
		{"copy from", "COPY m FROM '/etc/passwd'", "not COPY"},
		{"export", "EXPORT DATABASE '/tmp/x'", "not"},
		{"install", "INSTALL httpfs", "not"},
		{"load", "LOAD httpfs", "not"},
		{"set", "SET memory_limit='1GB'", "not SET"},
		{"reset", "RESET memory_limit", "not"},
		{"pragma", "PRAGMA enable_profiling", "not PRAGMA"},
		{"pragma rewritten to select", "PRAGMA table_info('m')", "not PRAGMA"},
		{"pragma after comment", "/* hi */ -- there\n PRAGMA version", "not PRAGMA"},
		{"call", "CALL pragma_version()", "not CALL"},
		{"create table", "CREATE TABLE t AS SELECT 1", "not CREATE"},
		{"create macro", "CREATE MACRO f(x) AS x", "not CREATE"},
		{"insert", "INSERT INTO m VALUES (NULL, 'x', 1)", "not INSERT"},
		{"with insert", "WITH x AS (SELECT 1) INSERT INTO m SELECT NULL, 'x', 1 FROM x", "not an table"},
		{"drop view", "DROP VIEW m", "not DROP"},
		{"two statements", "SELECT 1; SELECT 2", "single SQL statement"},
		{"select then set", "SELECT 1; SET threads = 1", "single SQL statement"},
		{"use", "USE memory", "not USE"},
		{"checkpoint", "CHECKPOINT", "not CHECKPOINT"},
		{"begin", "BEGIN", "not BEGIN"},
		{"explain copy", "EXPLAIN COPY (SELECT 1) TO '/tmp/x.csv'", "EXPLAIN of a SELECT"},
		{"explain analyze copy", "EXPLAIN ANALYZE COPY (SELECT 1) TO '/tmp/x.csv'", "EXPLAIN of a SELECT"},
		{"query function", "SELECT * FROM query('SELECT * FROM read_csv(''/etc/passwd'')')", "table function query is not allowed"},
		// Table functions and system views that would change the instance
		// for later queries or show what is not the dataset.
		{"enable logging", "SELECT * FROM enable_logging(storage='file', storage_path='/tmp/x')", "table function enable_logging is not allowed"},
		{"enable logging in a subquery", "SELECT count(*) FROM m WHERE value IN (SELECT 1 FROM enable_logging())", "table function enable_logging is not allowed"},
		{"enable logging in a CTE", "WITH x AS (FROM enable_logging()) SELECT * FROM x", "table function enable_logging is not allowed"},
		{"explain enable logging", "EXPLAIN SELECT * FROM enable_logging()", "table function enable_logging is not allowed"},
		{"logs function", "SELECT * FROM duckdb_logs()", "table function duckdb_logs is not allowed"},
		{"logs view", "SELECT message FROM duckdb_logs", "system table duckdb_logs is not available"},
		{"settings", "SELECT * FROM duckdb_settings()", "table function duckdb_settings is not allowed"},
		{"settings in a lateral join", "SELECT * FROM m, LATERAL (SELECT * FROM duckdb_settings())", "table function duckdb_settings is not allowed"},
		{"current setting", "SELECT current_setting('temp_directory')", "settings are not available"},
		{"information schema", "SELECT * FROM information_schema.tables", "system table tables is not available"},
		{"checkpoint function", "SELECT * FROM checkpoint()", "table function checkpoint is not allowed"},
		{"profiling", "SELECT * FROM enable_profiling()", "not allowed"},
		{"empty", " ; ", "empty query"},
		{"comment only", "-- nothing", "empty query"},
		{"syntax error", "SELEC 1", `syntax error at or near "SELEC"`},
		{"parser error", "SELECT FROM WHERE", "Parser Error"},
		{"binder error", "SELECT nope FROM m", "Binder Error"},
		{"unknown table", "SELECT * FROM secret", `table "secret" does not exist: a query reads only the dataset it names`},
		{"parameters", "SELECT ?", "parameters"},
		{"current setting change", "SELECT * FROM m WHERE set_config('threads', '1') IS NULL", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, _, err := collect(t, QueryRequest{Dataset: f.ds, Files: f.files, SQL: tc.sql, Timeout: 10 * time.Second})
			var se *SQLError
			require.ErrorAs(t, err, &se, "got %v", err)
			require.Contains(t, se.Message, tc.msg)
			t.Log(se.Message)
		})
	}
	_, err := os.Stat(outside)
	require.True(t, errors.Is(err, os.ErrNotExist), "nothing was written")

	// Allowed: EXPLAIN, DESCRIBE, FROM-first, VALUES, the value generators,
	// and the dataset's own files.
	for _, q := range []string{
		"SELECT count(*) FROM range(3)",
		"SELECT sum(x) FROM generate_series(1, 3) t(x), unnest([1, 2])",
		"EXPLAIN SELECT count(*) FROM m",
		"EXPLAIN ANALYZE SELECT count(*) FROM m",
		"DESCRIBE m",
		"SUMMARIZE m",
		"FROM m LIMIT 1",
		"VALUES (1), (2)",
		"WITH x AS (SELECT value FROM m) SELECT sum(value) FROM x",
		"(SELECT 1) UNION ALL (SELECT 2)",
		"  -- leading comment\nSELECT 1;",
		"SELECT count(*) FROM read_parquet(" + quoteString(f.files[0]) + ")",
	} {
		_, rows, err := collect(t, QueryRequest{Dataset: f.ds, Files: f.files, SQL: q})
		require.NoError(t, err, q)
		require.NotEmpty(t, rows, q)
	}
	// The sandbox's configuration, read beside the query path (which
	// refuses duckdb_settings).
	sb, err := testEngine.sandboxes.get(context.Background(), f.files)
	require.NoError(t, err)
	conn, err := sb.connect(context.Background())
	require.NoError(t, err)
	drows, err := conn.QueryContext(context.Background(), "SELECT value FROM duckdb_settings() WHERE name IN ('enable_external_access', 'lock_configuration', 'autoload_known_extensions', 'autoinstall_known_extensions') ORDER BY name", nil)
	require.NoError(t, err)
	var settings []any
	dest := make([]driver.Value, 1)
	for drows.Next(dest) == nil {
		settings = append(settings, dest[0])
	}
	require.NoError(t, drows.Close())
	require.NoError(t, conn.Close())
	testEngine.sandboxes.put(sb, true)
	require.Equal(t, []any{"false", "false", "false", "true"}, settings)
}

// A query that tried to switch logging on is refused, and the queries after
// it over the same files (which reuse the instance) run: with logging on,
// they logged their text for other clients to read, and the next one after a
// file-logging call aborted the process.
func TestEnableLoggingRefused(t *testing.T) {
	t.Parallel()
	f := setupQuery(t)
	for _, q := range []string{
		"SELECT * FROM enable_logging(storage='file', storage_path='/tmp/timestore-logs')",
		"SELECT * FROM enable_logging()",
	} {
		_, _, err := collect(t, QueryRequest{Dataset: f.ds, Files: f.files, SQL: q})
		require.ErrorAs(t, err, new(*SQLError), q)
		_, rows, err := collect(t, QueryRequest{Dataset: f.ds, Files: f.files, SQL: "SELECT count(*) FROM m WHERE value > -1"})
		require.NoError(t, err)
		require.Equal(t, [][]any{{int64(96)}}, rows)
	}
	_, err := os.Stat("/tmp/timestore-logs")
	require.True(t, errors.Is(err, os.ErrNotExist))
}

func TestQueryTimeout(t *testing.T) {
	t.Parallel()
	f := setupQuery(t)
	start := time.Now()
	_, _, err := collect(t, QueryRequest{Dataset: f.ds, Files: f.files, Timeout: 200 * time.Millisecond,
		SQL: "SELECT count(*) FROM range(100000000000) a(x) WHERE x % 7 = 3"})
	var se *SQLError
	require.ErrorAs(t, err, &se, "got %v", err)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Contains(t, se.Message, "timed out after 200ms")
	require.Less(t, time.Since(start), 5*time.Second)

	// The caller's cancellation is not the user's SQL error.
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err = testEngine.Query(ctx, QueryRequest{Dataset: f.ds, Files: f.files, SQL: "SELECT count(*) FROM range(100000000000)"})
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.False(t, errors.As(err, &se))
}

func TestQueryMissingFileIsInternal(t *testing.T) {
	t.Parallel()
	f := setupQuery(t)
	_, err := testEngine.Query(context.Background(), QueryRequest{Dataset: f.ds, Files: []string{filepath.Join(t.TempDir(), "gone.parquet")}, SQL: "SELECT 1"})
	require.Error(t, err)
	require.False(t, errors.As(err, new(*SQLError)), "%v", err)
}

func TestQueryConcurrent(t *testing.T) {
	t.Parallel()
	f := setupQuery(t)
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := testEngine.Query(context.Background(), QueryRequest{Dataset: f.ds, Files: f.files, SQL: "SELECT sum(value) FROM m"})
			if err != nil {
				errs <- err
				return
			}
			defer r.Close()
			if !r.Next() || r.Values()[0] != 2256.0 {
				errs <- fmt.Errorf("unexpected result %v %v", r.Values(), r.Err())
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
}

func TestQueryCloseEarly(t *testing.T) {
	t.Parallel()
	f := setupQuery(t)
	r, err := testEngine.Query(context.Background(), QueryRequest{Dataset: f.ds, Files: f.files, SQL: "SELECT * FROM m"})
	require.NoError(t, err)
	require.True(t, r.Next())
	require.NoError(t, r.Close())
	require.False(t, r.Next())
	require.NoError(t, r.Close())
}

// TestQuerySpills checks that a sandbox can still spill to its temp dir.
func TestQuerySpills(t *testing.T) {
	t.Parallel()
	e, err := New(Config{MemoryLimit: "64MB", Threads: 1, TempDir: t.TempDir()})
	require.NoError(t, err)
	defer e.Close()
	f := setupQuery(t)
	r, err := e.Query(context.Background(), QueryRequest{Dataset: f.ds, Files: f.files,
		SQL: "SELECT count(*) FROM (SELECT x, md5(x::VARCHAR) AS h FROM range(3000000) t(x) ORDER BY h)"})
	require.NoError(t, err)
	require.True(t, r.Next(), r.Err())
	require.Equal(t, []any{int64(3000000)}, r.Values())
	require.NoError(t, r.Close())
	require.NoError(t, e.Close())
	entries, err := os.ReadDir(e.tempDir)
	require.NoError(t, err)
	require.Empty(t, entries, "sandbox temp dirs are removed")
}

// TestQuerySandboxReuse checks that reused instances keep queries apart.
func TestQuerySandboxReuse(t *testing.T) {
	t.Parallel()
	e, err := New(Config{Threads: 1})
	require.NoError(t, err)
	defer e.Close()
	f := setupQuery(t)
	run := func(req QueryRequest) ([][]any, error) {
		r, err := e.Query(context.Background(), req)
		if err != nil {
			return nil, err
		}
		defer r.Close()
		var rows [][]any
		for r.Next() {
			rows = append(rows, r.Values())
		}
		return rows, r.Err()
	}
	from := time.Date(2024, 1, 2, 0, 0, 0, 0, time.UTC)
	rows, err := run(QueryRequest{Dataset: f.ds, Files: f.files, From: &from, SQL: "SELECT count(*) FROM m"})
	require.NoError(t, err)
	require.Equal(t, [][]any{{int64(48)}}, rows)
	// Same files: the instance is reused, the earlier view is gone.
	rows, err = run(QueryRequest{Dataset: f.ds, Files: f.files, SQL: "SELECT count(*) FROM m"})
	require.NoError(t, err)
	require.Equal(t, [][]any{{int64(96)}}, rows)
	e.sandboxes.mu.Lock()
	require.Len(t, e.sandboxes.idle, 1)
	e.sandboxes.mu.Unlock()
	// A subset of the files gets its own instance: the other file is refused.
	_, err = run(QueryRequest{Dataset: f.ds, Files: f.files[:1], SQL: "SELECT count(*) FROM read_parquet(" + quoteString(f.files[1]) + ")"})
	require.ErrorContains(t, err, "Permission Error")
	// A user error does not spoil the instance; the next query works.
	_, err = run(QueryRequest{Dataset: f.ds, Files: f.files, SQL: "SELECT nope FROM m"})
	require.ErrorAs(t, err, new(*SQLError))
	rows, err = run(QueryRequest{Dataset: f.ds, Files: f.files, SQL: "SELECT count(*) FROM m"})
	require.NoError(t, err)
	require.Equal(t, [][]any{{int64(96)}}, rows)
}

// TestStatementTypeCheck exercises the statement type check alone, without
// the keyword check in front of it.
func TestStatementTypeCheck(t *testing.T) {
	t.Parallel()
	f := setupQuery(t)
	for _, q := range []string{"SET threads = 1", "ATTACH ':memory:' AS x", "CREATE TABLE t (a INT)", "PRAGMA enable_profiling", "INSTALL httpfs", "CHECKPOINT"} {
		sb, err := testEngine.sandboxes.get(context.Background(), f.files)
		require.NoError(t, err)
		r := &Rows{e: testEngine, sb: sb, cancel: func() {}}
		r.conn, err = sb.connect(context.Background())
		require.NoError(t, err)
		err = r.start(context.Background(), context.Background(), QueryRequest{SQL: q})
		var se *SQLError
		require.ErrorAs(t, err, &se, q)
		require.Contains(t, se.Message, "only a single SELECT statement is allowed, not ", q)
		require.NoError(t, r.Close())
	}
}

func TestCheckStatementStart(t *testing.T) {
	t.Parallel()
	for q, ok := range map[string]bool{
		"select 1":                               true,
		"  WITH a AS (SELECT 1) SELECT * FROM a": true,
		"(select 1)":                             true,
		"/* c */ from m":                         true,
		"explain select 1":                       true,
		"explain analyze with x as (select 1) select 1": true,
		"explain show tables":                           false,
		"explain (format json) select 1":                false,
		"pragma version":                                false,
		"set x = 1":                                     false,
		"":                                              false,
		"/* unterminated":                               false,
		"-- c\n":                                        false,
		"copy x to 'y'":                                 false,
	} {
		err := checkStatementStart(q)
		if ok {
			require.NoError(t, err, q)
		} else {
			require.Error(t, err, q)
		}
	}
	// A forbidden statement is named; a word that starts no statement is a
	// typo, reported as a syntax error.
	for q, want := range map[string]string{
		"insert into m values (1)": "only a single SELECT statement is allowed, not INSERT",
		"Attach 'x.db'":            "only a single SELECT statement is allowed, not ATTACH",
		"SELEC 1":                  `syntax error at or near "SELEC": a query starts with SELECT`,
		"sleect * from m":          `syntax error at or near "SLEECT"`,
	} {
		err := checkStatementStart(q)
		var se *SQLError
		require.ErrorAs(t, err, &se, q)
		require.Contains(t, se.Message, want, q)
	}
}
