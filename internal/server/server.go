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
	"runtime"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/riverqueue/river/rivertype"
	"github.com/riverqueue/rivercontrib/otelriver"
	"go.opentelemetry.io/otel/trace"
	"riverqueue.com/riverui"

	"timestore/internal/api"
	"timestore/internal/catalog"
	"timestore/internal/compaction"
	"timestore/internal/config"
	"timestore/internal/engine"
	"timestore/internal/export"
	"timestore/internal/faultpoint"
	"timestore/internal/ingest"
	"timestore/internal/jobs"
	"timestore/internal/query"
	"timestore/internal/reconcile"
	"timestore/internal/retention"
	"timestore/internal/storage"
	"timestore/internal/telemetry"
)

// ShutdownTimeoutDefault bounds a graceful shutdown.
const ShutdownTimeoutDefault = 30 * time.Second

// Server is a running timestore process.
type Server struct {
	Config    config.Config
	Log       *slog.Logger
	Store     *catalog.Store
	Targets   *storage.Targets
	Cache     *storage.Cache
	Engine    *engine.Engine
	Ingest    *ingest.Service
	Query     *query.Service
	Jobs      *jobs.Service
	Retention *retention.Service
	API       *api.Server

	tracer        trace.TracerProvider
	traceShutdown func(context.Context) error
	ui            *riverui.Handler
	// NodeID is the data directory's node identity (NodeIDFile).
	NodeID string
	// dataLock holds the data directory's lock while the server is open.
	dataLock *os.File
}

// Options are the hooks a caller (tests, mostly) may set beside Config.
type Options struct {
	// Registry receives all metrics and is served at /metrics. Defaults to a new registry.
	Registry *prometheus.Registry
	// AfterUpload is passed to the ingest service (fault injection in tests).
	AfterUpload func(ctx context.Context, files []catalog.PartitionFile) error
	// Jobs adjusts the job service's options before it is built (tests:
	// short intervals, extra tasks, a controllable clock).
	Jobs func(*jobs.Options)
	// TracerProvider overrides the one configured from OTEL_* variables (tests).
	TracerProvider trace.TracerProvider
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
	if s.dataLock, err = lockDataDir(dataDir); err != nil {
		return nil, err
	}
	if s.NodeID, err = loadNodeID(dataDir); err != nil {
		return nil, err
	}
	s.tracer = opts.TracerProvider
	if s.tracer == nil {
		if s.tracer, s.traceShutdown, err = telemetry.SetupTracing(ctx, "timestore", os.Environ()); err != nil {
			return nil, err
		}
	}
	// Every lease this process takes records its node, so that the next
	// incarnation can release what this one leaves behind if it dies.
	dbURL, err := catalog.WithLeaseNode(cfg.DatabaseURL, s.NodeID)
	if err != nil {
		return nil, err
	}
	if s.Store, err = catalog.Open(ctx, dbURL); err != nil {
		return nil, err
	}
	// The data directory is this process's alone (locked), so leases of its
	// node are a dead predecessor's: release them before taking any.
	released, err := s.Store.ReleaseNodeLeases(ctx, s.NodeID, "node:"+s.NodeID)
	if err != nil {
		return nil, err
	}
	if len(released) > 0 {
		log.Info("released the leases a previous process on this data directory left behind", "node", s.NodeID, "leases", len(released))
	}
	reg.MustRegister(catalog.NewCollector(s.Store, log))
	if s.Targets, err = storage.NewTargets(ctx, dataDir, cfg.Targets); err != nil {
		return nil, err
	}
	if err = s.Targets.WithTracing(s.tracer); err != nil {
		return nil, err
	}
	// A target that stops answering fails the call, and so the job's attempt,
	// within storage_timeout instead of hanging until the job timeout.
	if err = s.Targets.WithDeadlines(cfg.StorageTimeout); err != nil {
		return nil, err
	}
	if s.Cache, err = storage.NewCache(filepath.Join(dataDir, "cache"), cfg.CacheMaxBytes, reg, storage.WithCacheLogger(log)); err != nil {
		return nil, err
	}
	if s.Engine, err = engine.New(engine.Config{
		MemoryLimit: cfg.DuckDBMemoryLimit,
		TempDir:     filepath.Join(dataDir, "spill"),
		Threads:     cfg.DuckDBThreads,
		// Each query's sandbox spills under spill/ too, within this bound.
		QuerySpillLimit: cfg.QuerySpillLimit,
		// Small bodies are read in Go, without DuckDB's cost per request.
		NativeInputMaxBytes: cfg.NativeIngestMaxBytes,
	}); err != nil {
		return nil, err
	}
	s.Engine.SetTracerProvider(s.tracer)
	s.Ingest = ingest.New(ingest.Options{
		Store: s.Store, Targets: s.Targets, Engine: s.Engine, TempDir: tmpDir,
		Logger: log, Registerer: reg, AfterUpload: opts.AfterUpload,
	})
	s.Query = query.New(query.Options{
		Store: s.Store, Targets: s.Targets, Cache: s.Cache, Engine: s.Engine,
		Logger: log, Registerer: reg, Timeout: cfg.QueryTimeout, Concurrency: cfg.QueryConcurrency,
	})

	// Lifecycle decisions (what is old enough to remove, export or sweep)
	// follow the catalog database's clock, which every process shares.
	clock := s.Store.Clock()
	if off := offsetAtStart(clock); off > time.Second || off < -time.Second {
		log.Warn("this host's clock is off from the catalog database's; the lifecycle jobs follow the database's clock", "offset", off)
	}
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "timestore_clock_offset_seconds",
		Help: "How far the catalog database's clock is ahead of this process's (negative: behind).",
	}, func() float64 { return clock.Offset().Seconds() }))

	recon, err := reconcile.New(reconcile.Options{Store: s.Store, Targets: s.Targets, Logger: log, Registerer: reg,
		SafetyAge: cfg.Jobs.ReconcileSafetyAge})
	if err != nil {
		return nil, err
	}
	// Follow-up sweeps are enqueued in the transaction of the manifest change
	// that removed partitions (s.Jobs is set below, before any job runs).
	enqueueSweep := func(ctx context.Context, tx catalog.Tx, datasetID int64, dataset string) error {
		return s.Jobs.EnqueueTx(ctx, tx, jobs.KindSweep, dataset, datasetID, jobs.TriggerFollowup)
	}
	exp, err := export.New(export.Options{
		Store: s.Store, Targets: s.Targets, Cache: s.Cache, Engine: s.Engine,
		TempDir: tmpDir, Logger: log.With("component", "export"), Registerer: reg, Now: clock.Now,
	})
	if err != nil {
		return nil, err
	}
	if s.Retention, err = retention.New(retention.Options{
		Store: s.Store, Targets: s.Targets, Logger: log, Registerer: reg, EnqueueSweep: enqueueSweep, Now: clock.Now,
		ExportCovered: exp.Covered,
	}); err != nil {
		return nil, err
	}
	compactor := compaction.New(compaction.Options{
		Store: s.Store, Targets: s.Targets, Cache: s.Cache, Engine: s.Engine, TempDir: tmpDir,
		Logger: log, Registerer: reg, EnqueueSweep: enqueueSweep,
	})
	jopts := jobs.Options{
		Store:      s.Store,
		Logger:     log,
		Registerer: reg,
		Tasks:      []jobs.Task{recon.Task(), compactor.Task(), exp.Task(), s.Retention.RetentionTask(), s.Retention.SweepTask()},
		Workers:    cfg.Jobs.Workers == nil || *cfg.Jobs.Workers,
		MaxWorkers: cfg.Jobs.MaxWorkers, MaxAttempts: cfg.Jobs.MaxAttempts,
		JobTimeout: cfg.Jobs.JobTimeout, RescueAfter: cfg.Jobs.RescueAfter,
		SchedulerInterval: cfg.Jobs.SchedulerInterval, ReconcileSchedule: cfg.Jobs.ReconcileSchedule,
		NodeID: s.NodeID,
		Middleware: []rivertype.Middleware{otelriver.NewMiddleware(&otelriver.MiddlewareConfig{
			TracerProvider: s.tracer, EnableWorkSpanJobKindSuffix: true, EnableTracePropagation: true,
		})},
	}
	if opts.Jobs != nil {
		opts.Jobs(&jopts)
	}
	if s.Jobs, err = jobs.New(jopts); err != nil {
		return nil, err
	}
	if s.ui, err = riverui.NewHandler(&riverui.HandlerOpts{
		Endpoints: riverui.NewEndpoints(s.Jobs.Client(), nil),
		Logger:    log.With("component", "riverui"),
		Prefix:    "/admin/ui",
	}); err != nil {
		return nil, fmt.Errorf("jobs UI: %w", err)
	}

	adminEnabled := cfg.AdminToken != "" || cfg.ListensOnLoopback()
	if !adminEnabled {
		log.Warn("admin routes disabled: listening on a non-loopback address without TIMESTORE_ADMIN_TOKEN", "listen", cfg.Listen)
	}
	s.API = api.New(api.Options{
		Store: s.Store, Targets: s.Targets, Ingest: s.Ingest, Query: s.Query,
		Jobs: s.Jobs, AdminUI: s.ui, Retention: s.Retention,
		Logger: log, Registerer: reg, Gatherer: reg,
		Token: cfg.Token, AdminToken: cfg.AdminToken, AdminEnabled: adminEnabled,
		MaxBodyBytes: cfg.MaxBodyBytes, QueryTimeout: cfg.QueryTimeout,
	})
	return s, nil
}

// Handler is the HTTP handler with tracing around the API.
func (s *Server) Handler() http.Handler { return telemetry.HTTPMiddleware(s.tracer, s.API) }

// Start starts the background work: the lifecycle job workers and scheduler,
// and the jobs UI's background processes. Stop with Stop.
func (s *Server) Start(ctx context.Context) error {
	if err := s.Jobs.Start(ctx); err != nil {
		return fmt.Errorf("start jobs: %w", err)
	}
	if err := s.ui.Start(ctx); err != nil {
		return fmt.Errorf("start jobs UI: %w", err)
	}
	return nil
}

// Stop stops the job workers, letting running jobs finish within the soft
// stop timeout.
func (s *Server) Stop(ctx context.Context) error {
	if s.Jobs == nil {
		return nil
	}
	return s.Jobs.Stop(ctx)
}

// Serve starts the background work, answers HTTP on ln until ctx ends, then
// shuts down gracefully: HTTP first, then the job workers.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	if err := s.Start(ctx); err != nil {
		return err
	}
	hs := &http.Server{
		Handler: s.Handler(),
		// A client that dribbles its headers or body is cut off; responses
		// are bounded per route (a query by its timeout, see api).
		ReadHeaderTimeout: s.Config.ReadHeaderTimeout,
		ReadTimeout:       s.Config.ReadTimeout,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(s.Log.Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	s.Log.Info("serving", "address", ln.Addr().String(), "targets", s.Targets.Names())
	if faultpoint.Enabled() {
		s.Log.Warn("fault points are armed: this process will crash or fail on purpose; never set "+faultpoint.Env+" in production",
			"spec", os.Getenv(faultpoint.Env))
	}
	var serveErr error
	select {
	case serveErr = <-errc:
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), ShutdownTimeoutDefault)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		serveErr = errors.Join(serveErr, fmt.Errorf("shutdown: %w", err))
	}
	if err := s.Stop(sctx); err != nil {
		serveErr = errors.Join(serveErr, fmt.Errorf("stop jobs: %w", err))
	}
	if errors.Is(serveErr, http.ErrServerClosed) {
		serveErr = nil
	}
	return serveErr
}

// lockDataDir takes an exclusive lock on the data directory, held until
// the returned file is closed (or the process dies). Two processes on one
// data directory would remove each other's cache downloads in progress,
// evict each other's pinned files and hold twice the cache budget; the
// local target is one process's too. Processes share data through the
// catalog and an S3 target, each with a data directory of its own.
func lockDataDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("data dir %s is in use by another timestore process: give each process a data_dir of its own (they share data through the catalog and an S3 target)", dir)
		}
		return nil, fmt.Errorf("data dir %s: lock: %w", dir, err)
	}
	return f, nil
}

// Close releases every component, and the data directory last.
func (s *Server) Close() {
	defer func() {
		if s.dataLock != nil {
			s.dataLock.Close() // releases the lock
		}
	}()
	if s.Engine != nil {
		s.Engine.Close()
	}
	if s.Targets != nil {
		s.Targets.Close()
	}
	if s.Store != nil {
		s.Store.Close()
	}
	if s.traceShutdown != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.traceShutdown(ctx); err != nil {
			s.Log.Warn("flush traces", "error", err)
		}
	}
}

// Migrate applies the catalog migrations.
func Migrate(ctx context.Context, databaseURL string) (Migrated, error) {
	var m Migrated
	st, err := catalog.Open(ctx, databaseURL)
	if err != nil {
		return m, err
	}
	defer st.Close()
	if m.Catalog, m.CatalogVersion, err = st.MigrateUp(ctx); err != nil {
		return m, err
	}
	m.Jobs, err = jobs.MigrateUp(ctx, st.Pool())
	return m, err
}

// Migrated tells what Migrate applied.
type Migrated struct {
	// Catalog and Jobs count the migrations applied to the catalog schema
	// and to River's job tables; CatalogVersion is the catalog's version.
	Catalog, Jobs  int
	CatalogVersion int64
}

func (m Migrated) String() string {
	if m.Catalog+m.Jobs == 0 {
		return fmt.Sprintf("catalog is up to date (schema version %d)", m.CatalogVersion)
	}
	return fmt.Sprintf("applied %d catalog and %d job queue migrations; catalog schema version %d", m.Catalog, m.Jobs, m.CatalogVersion)
}

// Effective returns cfg with the defaults that the components apply to
// unset settings filled in, so that `timestore config` shows what the
// server would really use.
func Effective(cfg config.Config) config.Config {
	j := &cfg.Jobs
	if j.Workers == nil {
		on := true
		j.Workers = &on
	}
	if j.MaxWorkers == 0 {
		j.MaxWorkers = jobs.MaxWorkersDefault
	}
	if j.MaxAttempts == 0 {
		j.MaxAttempts = jobs.MaxAttemptsDefault
	}
	if j.JobTimeout == 0 {
		j.JobTimeout = jobs.JobTimeoutDefault
	}
	if j.RescueAfter == 0 {
		j.RescueAfter = jobs.RescueAfterDefault
	}
	if j.SchedulerInterval == 0 {
		j.SchedulerInterval = jobs.SchedulerIntervalDefault
	}
	if j.ReconcileSchedule == "" {
		j.ReconcileSchedule = jobs.ReconcileScheduleDefault
	}
	if j.ReconcileSafetyAge == 0 {
		j.ReconcileSafetyAge = reconcile.SafetyAgeDefault
	}
	if cfg.DuckDBThreads == 0 {
		cfg.DuckDBThreads = runtime.NumCPU()
	}
	return cfg
}

// offsetAtStart measures the clock's offset once.
func offsetAtStart(c *catalog.Clock) time.Duration {
	c.Now()
	return c.Offset()
}
