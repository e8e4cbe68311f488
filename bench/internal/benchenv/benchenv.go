// Package benchenv starts an in-process timestore (real Postgres, real
// DuckDB, local or S3 target) for the benchmark programs under bench/.
package benchenv

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"timestore/internal/client"
	"timestore/internal/config"
	"timestore/internal/server"
)

// Env is a running server with a throwaway catalog database.
type Env struct {
	Server  *server.Server
	HTTP    *httptest.Server
	Client  *client.Client
	DataDir string
	adminDB string
	dbName  string
}

// Start creates a database on TIMESTORE_BENCH_DATABASE_URL (default: the
// local Postgres), migrates it and starts a server with its data under dir.
func Start(ctx context.Context, dir string, targets map[string]string) (*Env, error) {
	admin := os.Getenv("TIMESTORE_BENCH_DATABASE_URL")
	if admin == "" {
		admin = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
	}
	name := fmt.Sprintf("timestore_bench_%d", time.Now().UnixNano())
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		return nil, err
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		return nil, err
	}
	dbURL := strings.Replace(admin, "/postgres?", "/"+name+"?", 1)
	if _, err := server.Migrate(ctx, dbURL); err != nil {
		return nil, err
	}
	cfg := config.Default()
	cfg.DatabaseURL = dbURL
	cfg.DataDir = dir
	for k, v := range targets {
		cfg.Targets[k] = v
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	srv, err := server.New(ctx, cfg, log, server.Options{Registry: prometheus.NewRegistry()})
	if err != nil {
		return nil, err
	}
	hs := httptest.NewServer(srv.API)
	return &Env{Server: srv, HTTP: hs, Client: client.New(hs.URL, ""), DataDir: dir, adminDB: admin, dbName: name}, nil
}

// Close stops the server and drops the database.
func (e *Env) Close(ctx context.Context) {
	e.HTTP.Close()
	e.Server.Close()
	if conn, err := pgx.Connect(ctx, e.adminDB); err == nil {
		conn.Exec(ctx, "DROP DATABASE IF EXISTS "+e.dbName+" WITH (FORCE)")
		conn.Close(ctx)
	}
}

// DuckDB opens a plain in-memory DuckDB for the raw baselines.
func DuckDB() (*sql.DB, error) {
	db, err := sql.Open("duckdb", "")
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(1)
	return db, nil
}

// Machine describes the machine for the report.
func Machine() string {
	cpu := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, "model name") {
				_, v, _ := strings.Cut(line, ":")
				cpu = strings.TrimSpace(v)
				break
			}
		}
	}
	mem := ""
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		line, _, _ := strings.Cut(string(b), "\n")
		mem = strings.Join(strings.Fields(line)[1:], " ")
	}
	return fmt.Sprintf("%s, %d cores, %s memory, %s %s/%s", cpu, runtime.NumCPU(), mem, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}
