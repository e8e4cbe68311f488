package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"timestore/internal/client"
	"timestore/internal/config"
	"timestore/internal/server"
)

// adminURL is the machine's Postgres, where both the catalog and the
// baseline's database are created (and dropped at the end).
const adminURL = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

// createDatabase creates a fresh database and returns its URL and a function
// that drops it.
func createDatabase(ctx context.Context, prefix string) (string, func(), error) {
	name := fmt.Sprintf("%s_%d", prefix, time.Now().UnixNano())
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return "", nil, fmt.Errorf("connect to %s: %w", adminURL, err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		return "", nil, fmt.Errorf("create database %s: %w", name, err)
	}
	drop := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if conn, err := pgx.Connect(ctx, adminURL); err == nil {
			conn.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
			conn.Close(ctx)
		}
	}
	return strings.Replace(adminURL, "/postgres?", "/"+name+"?", 1), drop, nil
}

// timestore is an in-process server answering HTTP on a loopback port, as
// `timestore serve` does (job workers running), with its spans going to
// phases.
type timestore struct {
	srv     *server.Server
	client  *client.Client
	dbURL   string
	objects string
	stop    func()
}

func startTimestore(ctx context.Context, dir string, phases sdktrace.SpanProcessor) (*timestore, error) {
	dbURL, drop, err := createDatabase(ctx, "timestore_bench_smallwrites")
	if err != nil {
		return nil, err
	}
	if _, err := server.Migrate(ctx, dbURL); err != nil {
		drop()
		return nil, err
	}
	cfg := config.Default()
	cfg.DatabaseURL = dbURL
	cfg.DataDir = dir
	log := slog.New(slog.DiscardHandler)
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(phases))
	srv, err := server.New(ctx, cfg, log, server.Options{Registry: prometheus.NewRegistry(), TracerProvider: tp})
	if err != nil {
		drop()
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		srv.Close()
		drop()
		return nil, err
	}
	sctx, cancel := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(sctx, ln) }()
	c := client.New("http://"+ln.Addr().String(), "")
	// Enough idle connections for every bench client to keep its own.
	c.HTTP = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64, MaxIdleConns: 64}}
	ts := &timestore{srv: srv, client: c, dbURL: dbURL, objects: filepath.Join(dir, "objects"), stop: func() {
		cancel()
		<-served
		srv.Close()
		drop()
	}}
	return ts, nil
}

// countObjects counts the Parquet files under the local target.
func (t *timestore) countObjects() (int, error) {
	n := 0
	err := filepath.WalkDir(t.objects, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if path == t.objects && errors.Is(err, fs.ErrNotExist) {
				return fs.SkipDir
			}
			return err
		}
		if !d.IsDir() && strings.HasSuffix(path, ".parquet") {
			n++
		}
		return nil
	})
	return n, err
}

func (t *timestore) createDataset(ctx context.Context, name string) error {
	_, err := t.client.CreateDataset(ctx, client.CreateDataset{
		Name: name, TimeColumn: "ts", Partition: "hour",
		Columns: []client.Column{{Name: "ts", Type: "timestamp"}, {Name: "host", Type: "varchar"}, {Name: "value", Type: "double"}},
	})
	return err
}

func (t *timestore) ingest(ctx context.Context, dataset string, rows []row) error {
	res, err := t.client.Ingest(ctx, dataset, "ndjson", bytes.NewReader(ndjson(rows)), "")
	if err != nil {
		return err
	}
	if res.RowsWritten != int64(len(rows)) {
		return fmt.Errorf("ingest wrote %d rows, want %d", res.RowsWritten, len(rows))
	}
	return nil
}

// query runs sql and returns the number of result rows and the first value.
func (t *timestore) query(ctx context.Context, dataset, sql string) (int, string, error) {
	res, err := t.client.Query(ctx, dataset, client.QueryRequest{SQL: sql})
	if err != nil {
		return 0, "", err
	}
	if len(res.Rows) == 0 || len(res.Rows[0]) == 0 {
		return 0, "", fmt.Errorf("query %q: no rows", sql)
	}
	return len(res.Rows), fmt.Sprint(res.Rows[0][0]), nil
}

// compact runs compaction jobs through the admin API, one after another,
// each waited for, until one merges nothing (at most five), and returns the
// time taken and the merges made.
func (t *timestore) compact(ctx context.Context, dataset string) (time.Duration, int, error) {
	start := time.Now()
	merges := 0
	for range 5 {
		tr, err := t.client.RunMaintenance(ctx, "compaction", dataset)
		if err != nil {
			return 0, 0, err
		}
		job, err := t.waitJob(ctx, tr.JobID, 10*time.Minute)
		if err != nil {
			return 0, 0, err
		}
		if job.State != "completed" {
			return 0, 0, fmt.Errorf("compaction job %d ended %s: %v", job.ID, job.State, job.Errors)
		}
		var out struct {
			Summary *struct {
				Merges int `json:"merges"`
			} `json:"summary"`
		}
		if err := json.Unmarshal(job.Output, &out); err != nil || out.Summary == nil {
			return 0, 0, fmt.Errorf("compaction job %d: output %s has no summary (%v)", job.ID, job.Output, err)
		}
		if out.Summary.Merges == 0 {
			break
		}
		merges += out.Summary.Merges
	}
	return time.Since(start), merges, nil
}

// waitJob polls the job until it finishes or the timeout passes.
func (t *timestore) waitJob(ctx context.Context, id int64, timeout time.Duration) (client.Job, error) {
	deadline := time.Now().Add(timeout)
	for {
		job, err := t.client.Job(ctx, id)
		if err != nil {
			return client.Job{}, err
		}
		if job.Finished() {
			return job, nil
		}
		if time.Now().After(deadline) {
			return job, fmt.Errorf("job %d still %s after %s", id, job.State, timeout)
		}
		time.Sleep(50 * time.Millisecond) // a poll with a deadline
	}
}

// postgres is the baseline: one table with an index on ts, each batch one
// COPY, in a database created for the run.
type postgres struct {
	pool *pgxpool.Pool
	drop func()
}

func startPostgres(ctx context.Context, clients int) (*postgres, error) {
	dbURL, drop, err := createDatabase(ctx, "smallwrites_baseline")
	if err != nil {
		return nil, err
	}
	cfg, err := pgxpool.ParseConfig(dbURL)
	if err != nil {
		drop()
		return nil, err
	}
	cfg.MaxConns = int32(clients + 1)
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		drop()
		return nil, err
	}
	return &postgres{pool: pool, drop: drop}, nil
}

func (p *postgres) close() {
	p.pool.Close()
	p.drop()
}

func (p *postgres) createTable(ctx context.Context, table string) error {
	_, err := p.pool.Exec(ctx, fmt.Sprintf(`CREATE TABLE %[1]s (ts timestamptz NOT NULL, host text NOT NULL, value double precision NOT NULL);
		CREATE INDEX %[1]s_ts ON %[1]s (ts)`, table))
	return err
}

func (p *postgres) copy(ctx context.Context, table string, rows []row) error {
	n, err := p.pool.CopyFrom(ctx, pgx.Identifier{table}, []string{"ts", "host", "value"},
		pgx.CopyFromSlice(len(rows), func(i int) ([]any, error) { return []any{rows[i].ts, rows[i].host, rows[i].value}, nil }))
	if err != nil {
		return err
	}
	if n != int64(len(rows)) {
		return fmt.Errorf("copy wrote %d rows, want %d", n, len(rows))
	}
	return nil
}

func (p *postgres) query(ctx context.Context, sql string) (int, string, error) {
	rows, err := p.pool.Query(ctx, sql)
	if err != nil {
		return 0, "", err
	}
	defer rows.Close()
	n := 0
	var first string
	for rows.Next() {
		vals, err := rows.Values()
		if err != nil {
			return 0, "", err
		}
		if n == 0 {
			first = fmt.Sprint(vals[0])
		}
		n++
	}
	return n, first, rows.Err()
}
