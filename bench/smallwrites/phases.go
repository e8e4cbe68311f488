package main

import (
	"context"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// Phases of an ingest request, from the server's spans: the HTTP server
// span, duckdb.prepare_ingest and storage.upload.
const (
	phaseSpool   = "dataset lookup, body read and spool"
	phasePrepare = "DuckDB detect + COPY + footers/stats (duckdb.prepare_ingest)"
	phaseGap     = "target lookup, fault points"
	phaseUpload  = "upload + fsync to the local target (storage.upload)"
	phaseCommit  = "manifest commit, response (after the last upload)"
	phaseTotal   = "whole request on the server (HTTP span)"
)

var phaseOrder = []string{phaseSpool, phasePrepare, phaseGap, phaseUpload, phaseCommit, phaseTotal}

// phaseRecorder is a span processor that turns the spans of each ingest
// request into phase durations. Only requests whose server span ends while
// it is recording count.
type phaseRecorder struct {
	recording atomic.Bool
	mu        sync.Mutex
	children  map[trace.TraceID][]sdktrace.ReadOnlySpan
	phases    map[string][]time.Duration
	uploads   []int
}

var _ sdktrace.SpanProcessor = (*phaseRecorder)(nil)

func newPhaseRecorder() *phaseRecorder {
	return &phaseRecorder{children: map[trace.TraceID][]sdktrace.ReadOnlySpan{}, phases: map[string][]time.Duration{}}
}

func (p *phaseRecorder) OnStart(context.Context, sdktrace.ReadWriteSpan) {}
func (p *phaseRecorder) Shutdown(context.Context) error                  { return nil }
func (p *phaseRecorder) ForceFlush(context.Context) error                { return nil }

func (p *phaseRecorder) OnEnd(s sdktrace.ReadOnlySpan) {
	id := s.SpanContext().TraceID()
	p.mu.Lock()
	defer p.mu.Unlock()
	if s.Parent().IsValid() {
		if s.Name() == "duckdb.prepare_ingest" || s.Name() == "storage.upload" {
			p.children[id] = append(p.children[id], s)
		}
		return
	}
	// A root span ends after its children.
	kids := p.children[id]
	delete(p.children, id)
	if !p.recording.Load() || s.SpanKind() != trace.SpanKindServer || s.Name() != "POST /v1/datasets/{name}/rows" {
		return
	}
	var prepare sdktrace.ReadOnlySpan
	var upStart, upEnd time.Time
	uploads := 0
	for _, k := range kids {
		switch k.Name() {
		case "duckdb.prepare_ingest":
			prepare = k
		case "storage.upload":
			if uploads == 0 || k.StartTime().Before(upStart) {
				upStart = k.StartTime()
			}
			if k.EndTime().After(upEnd) {
				upEnd = k.EndTime()
			}
			uploads++
		}
	}
	if prepare == nil || uploads == 0 {
		return // a failed request
	}
	add := func(name string, d time.Duration) { p.phases[name] = append(p.phases[name], d) }
	add(phaseSpool, prepare.StartTime().Sub(s.StartTime()))
	add(phasePrepare, prepare.EndTime().Sub(prepare.StartTime()))
	add(phaseGap, upStart.Sub(prepare.EndTime()))
	add(phaseUpload, upEnd.Sub(upStart))
	add(phaseCommit, s.EndTime().Sub(upEnd))
	add(phaseTotal, s.EndTime().Sub(s.StartTime()))
	p.uploads = append(p.uploads, uploads)
}

// reset forgets what was recorded.
func (p *phaseRecorder) reset() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.phases = map[string][]time.Duration{}
	p.uploads = nil
}

// phaseStats is the mean and median of one phase.
type phaseStats struct {
	name         string
	mean, median time.Duration
}

// summary returns each phase's mean and median, and the requests counted.
func (p *phaseRecorder) summary() ([]phaseStats, int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []phaseStats
	for _, name := range phaseOrder {
		ds := slices.Clone(p.phases[name])
		if len(ds) == 0 {
			continue
		}
		slices.Sort(ds)
		var sum time.Duration
		for _, d := range ds {
			sum += d
		}
		out = append(out, phaseStats{name: name, mean: sum / time.Duration(len(ds)), median: ds[len(ds)/2]})
	}
	return out, len(p.uploads)
}

// filesPerRequest is the mean number of files one request uploaded.
func (p *phaseRecorder) filesPerRequest() float64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, u := range p.uploads {
		n += u
	}
	return float64(n) / float64(max(1, len(p.uploads)))
}

// lockSampler samples pg_stat_activity of the catalog database: how many
// backends wait for the dataset row lock of a manifest commit (SELECT …
// FOR NO KEY UPDATE), and what the backends inside a write transaction (the
// lock's holder) are doing. By Little's law, the mean number waiting divided
// by the request rate is the mean time a request waits for the lock; the
// holders' states split the time the lock is held.
type lockSampler struct {
	samples, waiting int64
	// holding counts, per "state · wait event · statement", the backends
	// seen in a write transaction and not waiting for a lock.
	holding map[string]int64
}

// run samples every interval until ctx ends.
func (l *lockSampler) run(ctx context.Context, dbURL string, interval time.Duration) error {
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	l.holding = map[string]int64{}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		rows, err := conn.Query(ctx, `
			SELECT state, coalesce(wait_event_type, ''), coalesce(wait_event, ''), query, backend_xid IS NOT NULL
			FROM pg_stat_activity
			WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'`)
		if err == nil {
			var state, waitType, waitEvent, query string
			var hasXID bool
			_, err = pgx.ForEachRow(rows, []any{&state, &waitType, &waitEvent, &query, &hasXID}, func() error {
				switch {
				case waitType == "Lock" && strings.Contains(strings.ToUpper(query), "FOR NO KEY UPDATE"):
					l.waiting++
				case hasXID && waitType != "Lock":
					if waitEvent == "" {
						waitEvent = "no wait event"
					}
					l.holding[state+" · "+waitEvent+" · "+statement(query)]++
				}
				return nil
			})
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		l.samples++
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// statement shortens a query to its first words, e.g. "INSERT INTO
// timestore.partitions".
func statement(q string) string {
	f := strings.Fields(q)
	n := 3
	if len(f) > 0 && strings.EqualFold(f[0], "SELECT") {
		n = 1
		for i, w := range f {
			if strings.EqualFold(w, "FROM") && i+1 < len(f) {
				return "SELECT … FROM " + f[i+1]
			}
		}
	}
	return strings.Join(f[:min(n, len(f))], " ")
}

// meanWaiting is the mean number of backends waiting for the row lock.
func (l *lockSampler) meanWaiting() float64 {
	return float64(l.waiting) / float64(max(1, l.samples))
}

// holderStates returns the mean number of backends in each holding state,
// largest first.
func (l *lockSampler) holderStates() ([]string, []float64) {
	keys := make([]string, 0, len(l.holding))
	for k := range l.holding {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b string) int { return int(l.holding[b] - l.holding[a]) })
	means := make([]float64, len(keys))
	for i, k := range keys {
		means[i] = float64(l.holding[k]) / float64(max(1, l.samples))
	}
	return keys, means
}
