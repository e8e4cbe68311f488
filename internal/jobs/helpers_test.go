package jobs_test

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"timestore/internal/testutil/logbuf"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"timestore/internal/catalog"
	"timestore/internal/jobs"
	"timestore/internal/policy"
	"timestore/internal/testutil/pgtest"
)

// waitTimeout bounds every wait for a job to reach a state.
const waitTimeout = 30 * time.Second

// bundle is what most tests need: a migrated database, a dataset, a fake
// task and a Service.
type bundle struct {
	ctx   context.Context
	store *catalog.Store
	ds    catalog.Dataset
	task  *fakeTask
	svc   *jobs.Service
	reg   *prometheus.Registry
	clock *fakeClock
	logs  *syncBuffer
}

type setupOpts struct {
	workers bool
	policy  policy.Policy
	options func(*jobs.Options)
}

func setup(t *testing.T, so setupOpts) *bundle {
	t.Helper()
	t.Parallel()
	ctx := t.Context()
	store := pgtest.NewStore(t)
	require.NoError(t, jobs.Migrate(ctx, store.Pool()))
	b := &bundle{ctx: ctx, store: store, task: newFakeTask(jobs.KindCompaction), clock: newFakeClock(), logs: &syncBuffer{}}
	b.ds = b.createDataset(t, "metrics", so.policy)
	b.svc, b.reg = b.newService(t, so.workers, so.options)
	return b
}

// newService builds (and, with workers, starts) a Service on the bundle's
// store, stopped when the test ends.
func (b *bundle) newService(t *testing.T, workers bool, configure func(*jobs.Options)) (*jobs.Service, *prometheus.Registry) {
	t.Helper()
	return newService(t, b.store, b.task, b.clock, b.logs, workers, configure)
}

func newService(t *testing.T, store *catalog.Store, task jobs.Task, clock *fakeClock, logs *syncBuffer, workers bool, configure func(*jobs.Options)) (*jobs.Service, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	opts := jobs.Options{
		Store:      store,
		Logger:     slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo})),
		Registerer: reg,
		Tasks:      []jobs.Task{task},
		Workers:    workers,
		Now:        clock.Now,
		TestOnly:   true,
	}
	if configure != nil {
		configure(&opts)
	}
	svc, err := jobs.New(opts)
	require.NoError(t, err)
	if workers {
		require.NoError(t, svc.Start(t.Context()))
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			require.NoError(t, svc.Stop(ctx))
		})
	}
	return svc, reg
}

func (b *bundle) createDataset(t *testing.T, name string, p policy.Policy) catalog.Dataset {
	t.Helper()
	ds, err := b.store.CreateDataset(b.ctx, catalog.Dataset{
		Name:       name,
		Columns:    []catalog.Column{{Name: "ts", Type: catalog.TypeTimestamp}, {Name: "value", Type: catalog.TypeDouble}},
		TimeColumn: "ts",
		Partition:  catalog.WindowDay,
		Target:     "local",
		Policy:     p,
	}, "test")
	require.NoError(t, err)
	return ds
}

// waitState polls the job until it is in one of states.
func (b *bundle) waitState(t *testing.T, id int64, states ...string) jobs.JobInfo {
	t.Helper()
	return waitState(t, b.svc, id, states...)
}

func waitState(t *testing.T, svc *jobs.Service, id int64, states ...string) jobs.JobInfo {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		info, err := svc.Get(t.Context(), id)
		require.NoError(t, err)
		if slices.Contains(states, info.State) {
			return info
		}
		if time.Now().After(deadline) {
			t.Fatalf("job %d is %s after %s, want %v: %+v", id, info.State, waitTimeout, states, info)
		}
		select {
		case <-time.After(20 * time.Millisecond):
		case <-t.Context().Done():
			t.Fatal(t.Context().Err())
		}
	}
}

// fakeTask records its runs and returns what the test sets.
type fakeTask struct {
	kind string

	mu      sync.Mutex
	err     error
	summary fakeSummary
	runs    []run
}

type run struct {
	dataset string
	job     jobs.JobContext
}

func newFakeTask(kind string) *fakeTask {
	return &fakeTask{kind: kind, summary: fakeSummary{Merged: 3}}
}

// fakeSummary is the fake task's typed result.
type fakeSummary struct {
	Merged int `json:"merged"`
}

func (f *fakeTask) Kind() string { return f.kind }

func (f *fakeTask) Plan(ctx context.Context, dataset string) (any, error) {
	return map[string]any{"dataset": dataset, "would_merge": 3}, nil
}

func (f *fakeTask) Run(ctx context.Context, dataset string, job jobs.JobContext) (any, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.runs = append(f.runs, run{dataset: dataset, job: job})
	job.Logger.InfoContext(ctx, "fake task running")
	return f.summary, f.err
}

func (f *fakeTask) setErr(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.err = err
}

func (f *fakeTask) runsOf(dataset string) []run {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []run
	for _, r := range f.runs {
		if r.dataset == dataset {
			out = append(out, r)
		}
	}
	return out
}

// fakeClock is a settable clock.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
}

func (c *fakeClock) Add(d time.Duration) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	return c.now
}

// syncBuffer collects log output written concurrently.
type syncBuffer struct{ logbuf.Buffer }

// lineWith returns the first log line containing every one of subs.
func (s *syncBuffer) lineWith(subs ...string) string {
	for line := range strings.SplitSeq(s.String(), "\n") {
		ok := true
		for _, sub := range subs {
			ok = ok && strings.Contains(line, sub)
		}
		if ok {
			return line
		}
	}
	return ""
}

func itoa(i int64) string { return fmt.Sprint(i) }

// metricValue returns the value of the counter or gauge name with the given
// label pairs, failing the test if there is no such series.
func metricValue(t *testing.T, reg *prometheus.Registry, name string, labelPairs ...string) float64 {
	t.Helper()
	families, err := reg.Gather()
	require.NoError(t, err)
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	next:
		for _, m := range f.GetMetric() {
			for i := 0; i+1 < len(labelPairs); i += 2 {
				found := false
				for _, l := range m.GetLabel() {
					if l.GetName() == labelPairs[i] && l.GetValue() == labelPairs[i+1] {
						found = true
					}
				}
				if !found {
					continue next
				}
			}
			switch {
			case m.GetCounter() != nil:
				return m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				return m.GetGauge().GetValue()
			}
		}
	}
	t.Fatalf("no series %s%v", name, labelPairs)
	return 0
}
