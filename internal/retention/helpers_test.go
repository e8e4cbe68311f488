package retention_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"timestore/internal/catalog"
	"timestore/internal/engine"
	"timestore/internal/ingest"
	"timestore/internal/policy"
	"timestore/internal/query"
	"timestore/internal/retention"
	"timestore/internal/storage"
	"timestore/internal/testutil/enginetest"
	"timestore/internal/testutil/stacktest"
)

// testEngine is shared by the tests, which run in parallel against it.
var testEngine *engine.Engine

func TestMain(m *testing.M) { os.Exit(enginetest.Main(m, &testEngine)) }

// day0 is the first day of the test data; evalTime is when retention is
// evaluated: with max_age 7d12h its cutoff is day0 + 2d (2024-03-03 00:00),
// which removes the partitions of day0 and day0+1 and nothing else.
var (
	day0     = time.Date(2024, 3, 1, 0, 0, 0, 0, time.UTC)
	evalTime = time.Date(2024, 3, 10, 12, 0, 0, 0, time.UTC)
	maxAge   = policy.Duration(7*24*time.Hour + 12*time.Hour)
)

// clock is the controllable clock of the retention service. Policies are
// evaluated at evalTime (the data is from March 2024); grace periods are
// measured against removed_at, which is the database's clock, so sweeps set
// the clock relative to the real time. onNow, when set, runs at every
// reading (a hook between a plan's snapshot and its commit).
type clock struct {
	mu    sync.Mutex
	t     time.Time
	onNow func()
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	t, hook := c.t, c.onNow
	c.mu.Unlock()
	if hook != nil {
		hook()
	}
	return t
}

func (c *clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

func (c *clock) hook(fn func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.onNow = fn
}

// bundle is a complete set of real components around one dataset "cpu":
// Postgres catalog, local or S3 target, read cache, DuckDB, ingest, query
// and the retention service under test.
type bundle struct {
	ctx     context.Context
	store   *catalog.Store
	targets *storage.Targets
	target  *storage.Target
	ingest  *ingest.Service
	query   *query.Service
	svc     *retention.Service
	reg     *prometheus.Registry
	clock   *clock
	ds      catalog.Dataset
	// days[i] is the partition of day0+i.
	days  []catalog.Partition
	nextN int64
	// rowsOf[i] are the n values of day i.
	rowsOf map[int][]int64

	mu sync.Mutex
	// sweepVersions are the manifest versions EnqueueSweep saw inside its
	// transaction.
	sweepVersions []int64
}

// setup makes the bundle with a dataset "cpu" on the local or S3 target,
// with a retention policy max_age 7d12h and the given grace.
func setup(t *testing.T, remote bool, grace time.Duration) *bundle {
	t.Helper()
	g := policy.Duration(grace)
	s := stacktest.New(t, testEngine, remote, catalog.Dataset{
		Name: "cpu",
		Columns: []catalog.Column{
			{Name: "ts", Type: catalog.TypeTimestamp},
			{Name: "host", Type: catalog.TypeVarchar},
			{Name: "n", Type: catalog.TypeBigint},
		},
		TimeColumn: "ts",
		Partition:  catalog.WindowDay,
		Policy:     policy.Policy{Retention: &policy.Retention{MaxAge: maxAge, Grace: &g}},
	})
	b := &bundle{
		ctx: s.Ctx, store: s.Store, targets: s.Targets, target: s.Target, ds: s.Dataset,
		ingest: s.Ingest, query: s.Query,
		reg:    prometheus.NewPedanticRegistry(),
		clock:  &clock{t: evalTime},
		rowsOf: map[int][]int64{},
	}
	var err error
	b.svc, err = retention.New(retention.Options{
		Store: b.store, Targets: b.targets, Registerer: b.reg, Now: b.clock.Now,
		EnqueueSweep: func(ctx context.Context, tx catalog.Tx, datasetID int64, dataset string) error {
			if datasetID != b.ds.ID || dataset != b.ds.Name {
				return fmt.Errorf("enqueue sweep for dataset %d %q, want %d %q", datasetID, dataset, b.ds.ID, b.ds.Name)
			}
			var v int64
			if err := tx.QueryRow(ctx, `SELECT manifest_version FROM timestore.datasets WHERE id = $1`, datasetID).Scan(&v); err != nil {
				return err
			}
			b.mu.Lock()
			defer b.mu.Unlock()
			b.sweepVersions = append(b.sweepVersions, v)
			return nil
		},
	})
	require.NoError(t, err)
	return b
}

// ingestDays ingests rows days of data, one request (one manifest version)
// per day, each day's rows between 01:00 and 22:00, and records the
// partitions in b.days.
func (b *bundle) ingestDays(t *testing.T, days, rowsPerDay int) {
	t.Helper()
	for i := range days {
		var sb strings.Builder
		sb.WriteString("ts,host,n\n")
		start := day0.AddDate(0, 0, i).Add(time.Hour)
		for j := range rowsPerDay {
			b.nextN++
			ts := start.Add(time.Duration(j) * 21 * time.Hour / time.Duration(rowsPerDay))
			fmt.Fprintf(&sb, "%s,h%d,%d\n", ts.Format(time.RFC3339Nano), j%3, b.nextN)
			b.rowsOf[i] = append(b.rowsOf[i], b.nextN)
		}
		_, err := b.ingest.Ingest(b.ctx, ingest.Request{Dataset: b.ds.Name, Format: engine.FormatCSV, Body: strings.NewReader(sb.String()), Actor: "test"})
		require.NoError(t, err)
	}
	live, err := b.store.Partitions(b.ctx, b.ds.Name, catalog.StateLive)
	require.NoError(t, err)
	require.Len(t, live, days)
	b.days = live
}

// setRetention replaces the dataset's retention policy.
func (b *bundle) setRetention(t *testing.T, r policy.Retention) {
	t.Helper()
	ds, err := b.store.UpdatePolicy(b.ctx, b.ds.Name, policy.Policy{Retention: &r}, "test")
	require.NoError(t, err)
	b.ds = ds
}

// sweepClock sets the clock to the real time plus d, for sweeps.
func (b *bundle) sweepClock(d time.Duration) { b.clock.Set(time.Now().Add(d)) }

func (b *bundle) apply(t *testing.T, actor string) retention.ApplyResult {
	t.Helper()
	b.clock.Set(evalTime)
	res, err := b.svc.Apply(b.ctx, b.ds.Name, retention.RunOptions{Actor: actor})
	require.NoError(t, err)
	return res
}

func (b *bundle) sweep(t *testing.T, actor string) retention.SweepResult {
	t.Helper()
	res, err := b.svc.Sweep(b.ctx, b.ds.Name, retention.RunOptions{Actor: actor})
	require.NoError(t, err)
	return res
}

// exists reports whether the object of p is on its target.
func (b *bundle) exists(t *testing.T, p catalog.Partition) bool {
	t.Helper()
	_, err := b.target.Attributes(b.ctx, p.Key)
	if errors.Is(err, storage.ErrNotExist) {
		return false
	}
	require.NoError(t, err)
	return true
}

// objects lists the keys on the dataset's target.
func (b *bundle) objects(t *testing.T) []string {
	t.Helper()
	keys := []string{}
	require.NoError(t, b.target.List(b.ctx, "", func(o storage.ObjectInfo) error {
		keys = append(keys, o.Key)
		return nil
	}))
	return keys
}

// ns returns the n values a query over the whole dataset returns, in order.
func (b *bundle) ns(t *testing.T) []int64 {
	t.Helper()
	res, err := b.query.Run(b.ctx, query.Request{Dataset: b.ds.Name, SQL: "SELECT n FROM cpu ORDER BY n"})
	require.NoError(t, err)
	defer res.Close()
	out := []int64{}
	for res.Next() {
		out = append(out, res.Values()[0].(int64))
	}
	require.NoError(t, res.Err())
	return out
}

// want returns the n values of the given days, in order.
func (b *bundle) want(days ...int) []int64 {
	out := []int64{}
	for _, d := range days {
		out = append(out, b.rowsOf[d]...)
	}
	return out
}

func (b *bundle) audit(t *testing.T, action string) []catalog.AuditEntry {
	t.Helper()
	entries, err := b.store.ListAudit(b.ctx, catalog.AuditFilter{Action: action, Limit: catalog.ListLimitMax})
	require.NoError(t, err)
	return entries
}

func (b *bundle) auditCount(t *testing.T) int {
	t.Helper()
	return len(b.audit(t, ""))
}

func (b *bundle) version(t *testing.T) int64 {
	t.Helper()
	d, err := b.store.GetDataset(b.ctx, b.ds.Name)
	require.NoError(t, err)
	return d.ManifestVersion
}

func (b *bundle) partition(t *testing.T, id int64) catalog.Partition {
	t.Helper()
	all, err := b.store.Partitions(b.ctx, b.ds.Name, catalog.PartitionsStateAll)
	require.NoError(t, err)
	for _, p := range all {
		if p.ID == id {
			return p
		}
	}
	t.Fatalf("no partition %d", id)
	return catalog.Partition{}
}

// bothTargets runs fn as a subtest on the local target and on S3.
func bothTargets(t *testing.T, fn func(t *testing.T, remote bool)) {
	t.Helper()
	stacktest.BothTargets(t, fn)
}

// metric sums the values of the metric family name in the bundle's registry
// (counters and gauges; 0 when absent).
func (b *bundle) metric(t *testing.T, name string) float64 {
	t.Helper()
	mfs, err := b.reg.Gather()
	require.NoError(t, err)
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return sum
}
