// Package query runs user SQL over one consistent manifest snapshot of a
// dataset: it reads the snapshot pruned to the requested time range, pins the
// manifest version with a lease (so no file it reads is swept while it runs),
// fetches remote partitions through the local cache and hands the files to the
// sandboxed engine.
package query

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"timestore/internal/catalog"
	"timestore/internal/engine"
	"timestore/internal/storage"
)

// Defaults.
const (
	// LeaseTTLDefault is how long a query lease lasts before it must be renewed.
	LeaseTTLDefault = 2 * time.Minute
	// TimeoutDefault bounds a query when Options.Timeout is zero.
	TimeoutDefault = 60 * time.Second
	// ConcurrencyDefault is how many queries run at once when
	// Options.Concurrency is zero.
	ConcurrencyDefault = 4
)

// Options configures a Service.
type Options struct {
	Store   *catalog.Store
	Targets *storage.Targets
	Cache   *storage.Cache
	Engine  *engine.Engine
	Logger  *slog.Logger
	// Registerer receives the query metrics; nil registers nothing.
	Registerer prometheus.Registerer
	// Timeout bounds each query. Defaults to TimeoutDefault.
	Timeout time.Duration
	// LeaseTTL defaults to LeaseTTLDefault; the lease is renewed at a third of it.
	LeaseTTL time.Duration
	// Holder names this process in leases (defaults to the host name and pid).
	Holder string
	// Concurrency is how many queries run at once; more wait for a slot,
	// within their timeout. Each runs in its own DuckDB instance with the
	// engine's memory limit, so this bounds the memory queries take.
	// Defaults to ConcurrencyDefault.
	Concurrency int
}

// Request is one query.
type Request struct {
	Dataset  string
	SQL      string
	From, To *time.Time
}

// Service runs queries.
type Service struct {
	opts     Options
	slots    chan struct{}
	duration *prometheus.HistogramVec
	scanned  prometheus.Counter
}

// New returns a Service.
func New(opts Options) *Service {
	if opts.Timeout <= 0 {
		opts.Timeout = TimeoutDefault
	}
	if opts.LeaseTTL <= 0 {
		opts.LeaseTTL = LeaseTTLDefault
	}
	if opts.Concurrency <= 0 {
		opts.Concurrency = ConcurrencyDefault
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Holder == "" {
		host, _ := os.Hostname()
		opts.Holder = fmt.Sprintf("%s:%d", host, os.Getpid())
	}
	f := promauto.With(opts.Registerer)
	return &Service{
		opts:  opts,
		slots: make(chan struct{}, opts.Concurrency),
		duration: f.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "timestore_query_duration_seconds",
			Help:    "Duration of queries from snapshot to last row, by outcome (ok, invalid, error).",
			Buckets: prometheus.ExponentialBuckets(0.001, 2.5, 14),
		}, []string{"outcome"}),
		scanned: f.NewCounter(prometheus.CounterOpts{
			Name: "timestore_query_partitions_scanned_total", Help: "Partitions handed to queries after time pruning.",
		}),
	}
}

// Result streams a query's rows. Close it to release the snapshot.
type Result struct {
	*engine.Rows
	// Version is the manifest version the query read.
	Version int64
	// Partitions is how many partition files the query read after pruning.
	Partitions int

	closeOnce sync.Once
	cleanup   []func()
	start     time.Time
	svc       *Service
}

// Close releases the rows, the cached files and the lease; it records the
// query's duration. It is safe to call more than once.
func (r *Result) Close() error {
	var err error
	r.closeOnce.Do(func() {
		outcome := "ok"
		if r.Rows != nil {
			err = r.Rows.Close()
			if rerr := r.Rows.Err(); rerr != nil {
				outcome = outcomeOf(rerr)
			}
		}
		r.release()
		r.svc.duration.WithLabelValues(outcome).Observe(time.Since(r.start).Seconds())
	})
	return err
}

func (r *Result) release() {
	for i := len(r.cleanup) - 1; i >= 0; i-- {
		r.cleanup[i]()
	}
	r.cleanup = nil
}

func outcomeOf(err error) string {
	var se *engine.SQLError
	if errors.As(err, &se) {
		return "invalid"
	}
	return "error"
}

// Run starts a query. The returned Result must be closed. ctx bounds the whole
// query, further limited by Options.Timeout.
func (s *Service) Run(ctx context.Context, req Request) (_ *Result, err error) {
	res := &Result{start: time.Now(), svc: s}
	defer func() {
		if err != nil {
			res.release()
			s.duration.WithLabelValues(outcomeOf(err)).Observe(time.Since(res.start).Seconds())
		}
	}()
	if req.From != nil && req.To != nil && !req.From.Before(*req.To) {
		return nil, &engine.SQLError{Message: fmt.Sprintf("empty time range: from %s is not before to %s", req.From.Format(time.RFC3339), req.To.Format(time.RFC3339))}
	}
	ctx, cancel := context.WithTimeout(ctx, s.opts.Timeout)
	res.cleanup = append(res.cleanup, cancel)
	// A slot, waited for within the query's time limit.
	select {
	case s.slots <- struct{}{}:
		res.cleanup = append(res.cleanup, func() { <-s.slots })
	case <-ctx.Done():
		return nil, fmt.Errorf("query %s: waiting for one of the %d query slots: %w", req.Dataset, s.opts.Concurrency, ctx.Err())
	}

	snap, lease, err := s.opts.Store.LeasedSnapshot(ctx, req.Dataset, req.From, req.To, s.opts.Holder, s.opts.LeaseTTL)
	if err != nil {
		return nil, err
	}
	res.Version = snap.Version
	res.Partitions = len(snap.Partitions)
	res.cleanup = append(res.cleanup, catalog.KeepLease(s.opts.Store, lease, s.opts.LeaseTTL, "query", s.opts.Logger))

	files := make([]string, 0, len(snap.Partitions))
	for _, p := range snap.Partitions {
		t, err := s.opts.Targets.Get(p.Target)
		if err != nil {
			return nil, fmt.Errorf("partition %d: %w", p.ID, err)
		}
		path, release, err := s.opts.Cache.Fetch(ctx, t, p.Key, p.SizeBytes, p.Checksum)
		if err != nil {
			return nil, fmt.Errorf("fetch partition %d (%s/%s): %w", p.ID, p.Target, p.Key, err)
		}
		res.cleanup = append(res.cleanup, release)
		files = append(files, path)
	}
	s.scanned.Add(float64(len(files)))

	rows, err := s.opts.Engine.Query(ctx, engine.QueryRequest{
		Dataset: snap.Dataset,
		Files:   files,
		From:    req.From,
		To:      req.To,
		SQL:     req.SQL,
		Timeout: s.opts.Timeout,
	})
	if err != nil {
		return nil, err
	}
	res.Rows = rows
	return res, nil
}
