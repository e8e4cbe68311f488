// Package server assembles timestore's components (catalog, storage targets,
// read cache, DuckDB engine, ingest and query services, HTTP API) from a
// Config, and runs them until the context ends.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"timestore/internal/api"
	"timestore/internal/catalog"
	"timestore/internal/config"
	"timestore/internal/engine"
	"timestore/internal/ingest"
	"timestore/internal/query"
	"timestore/internal/storage"
)

// ShutdownTimeoutDefault bounds a graceful shutdown.
const ShutdownTimeoutDefault = 30 * time.Second

// Server is a running timestore process.
type Server struct {
	Config  config.Config
	Log     *slog.Logger
	Store   *catalog.Store
	Targets *storage.Targets
	Cache   *storage.Cache
	Engine  *engine.Engine
	Ingest  *ingest.Service
	Query   *query.Service
	API     *api.Server
}

// Options are the hooks a caller (tests, mostly) may set beside Config.
type Options struct {
	// Registry receives all metrics and is served at /metrics. Defaults to a new registry.
	Registry *prometheus.Registry
	// AfterUpload is passed to the ingest service (fault injection in tests).
	AfterUpload func(ctx context.Context, files []catalog.PartitionFile) error
}

// New opens every component. The catalog must have been migrated.
func New(ctx context.Context, cfg config.Config, log *slog.Logger, opts Options) (_ *Server, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	reg := opts.Registry
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	dataDir, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	tmpDir := filepath.Join(dataDir, "tmp")
	for _, d := range []string{dataDir, tmpDir, filepath.Join(dataDir, "cache"), filepath.Join(dataDir, "spill")} {
		if err := os.MkdirAll(d, 0o750); err != nil {
			return nil, fmt.Errorf("data dir: %w", err)
		}
	}
	s := &Server{Config: cfg, Log: log}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	if s.Store, err = catalog.Open(ctx, cfg.DatabaseURL); err != nil {
		return nil, err
	}
	if s.Targets, err = storage.NewTargets(ctx, dataDir, cfg.Targets); err != nil {
		return nil, err
	}
	if s.Cache, err = storage.NewCache(filepath.Join(dataDir, "cache"), cfg.CacheMaxBytes, reg); err != nil {
		return nil, err
	}
	if s.Engine, err = engine.New(engine.Config{
		MemoryLimit: cfg.DuckDBMemoryLimit,
		TempDir:     filepath.Join(dataDir, "spill"),
		Threads:     cfg.DuckDBThreads,
	}); err != nil {
		return nil, err
	}
	s.Ingest = ingest.New(ingest.Options{
		Store: s.Store, Targets: s.Targets, Engine: s.Engine, TempDir: tmpDir,
		Logger: log, Registerer: reg, AfterUpload: opts.AfterUpload,
	})
	s.Query = query.New(query.Options{
		Store: s.Store, Targets: s.Targets, Cache: s.Cache, Engine: s.Engine,
		Logger: log, Registerer: reg, Timeout: cfg.QueryTimeout,
	})
	adminEnabled := cfg.AdminToken != "" || cfg.ListensOnLoopback()
	if !adminEnabled {
		log.Warn("admin routes disabled: listening on a non-loopback address without TIMESTORE_ADMIN_TOKEN", "listen", cfg.Listen)
	}
	s.API = api.New(api.Options{
		Store: s.Store, Targets: s.Targets, Ingest: s.Ingest, Query: s.Query,
		Logger: log, Registerer: reg, Gatherer: reg,
		Token: cfg.Token, AdminToken: cfg.AdminToken, AdminEnabled: adminEnabled,
		MaxBodyBytes: cfg.MaxBodyBytes,
	})
	return s, nil
}

// Serve answers HTTP on ln until ctx ends, then shuts down gracefully.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	hs := &http.Server{
		Handler:           s.API,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(s.Log.Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	s.Log.Info("serving", "address", ln.Addr().String(), "targets", s.Targets.Names())
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), ShutdownTimeoutDefault)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("shutdown: %w", err)
	}
	return nil
}

// Close releases every component.
func (s *Server) Close() {
	if s.Engine != nil {
		s.Engine.Close()
	}
	if s.Targets != nil {
		s.Targets.Close()
	}
	if s.Store != nil {
		s.Store.Close()
	}
}

// Migrate applies the catalog migrations.
func Migrate(ctx context.Context, databaseURL string) error {
	st, err := catalog.Open(ctx, databaseURL)
	if err != nil {
		return err
	}
	defer st.Close()
	return st.Migrate(ctx)
}
