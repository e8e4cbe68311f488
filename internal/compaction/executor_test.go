package compaction

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"

	"timestore/internal/catalog"
	"timestore/internal/engine"
	"timestore/internal/ingest"
	"timestore/internal/jobs"
	"timestore/internal/policy"
	"timestore/internal/query"
	"timestore/internal/storage"
	"timestore/internal/testutil/enginetest"
	"timestore/internal/testutil/pgtest"
	"timestore/internal/testutil/stacktest"
)

// testEngine is shared by the tests, which run in parallel against it.
var testEngine *engine.Engine

func TestMain(m *testing.M) { os.Exit(enginetest.Main(m, &testEngine)) }

// row is one row of the test dataset; n is unique.
type row struct {
	ts    time.Time
	host  string
	value float64 // a multiple of 1/8, so that sums are exact in any order
	n     int64
}

// bundle is a complete set of real components around one dataset "cpu":
// Postgres catalog, local or S3 target, read cache, DuckDB, ingest and query.
type bundle struct {
	ctx     context.Context
	store   *catalog.Store
	targets *storage.Targets
	target  *storage.Target
	cache   *storage.Cache
	ingest  *ingest.Service
	query   *query.Service
	ds      catalog.Dataset
	rng     *rand.Rand
	nextN   int64
	rows    []row // every row ingested, the model
	sweeps  atomic.Int64

	mu sync.Mutex
	// sweepVersions are the manifest versions EnqueueSweep saw inside
	// its transaction.
	sweepVersions []int64
}

func setup(t *testing.T, remote bool) *bundle {
	t.Helper()
	s := stacktest.New(t, testEngine, remote, catalog.Dataset{
		Name: "cpu",
		Columns: []catalog.Column{
			{Name: "ts", Type: catalog.TypeTimestamp},
			{Name: "host", Type: catalog.TypeVarchar},
			{Name: "value", Type: catalog.TypeDouble},
			{Name: "n", Type: catalog.TypeBigint},
		},
		TimeColumn: "ts",
		Partition:  catalog.WindowDay,
	})
	return &bundle{
		ctx: s.Ctx, store: s.Store, targets: s.Targets, target: s.Target, cache: s.Cache, ds: s.Dataset,
		ingest: s.Ingest, query: s.Query,
		rng: rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1)),
	}
}

// compactor returns a Compactor over the bundle with a pedantic registry of
// its own; configure may change the options.
func (b *bundle) compactor(t *testing.T, configure func(*Options)) (*Compactor, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	o := Options{
		Store: b.store, Targets: b.targets, Cache: b.cache, Engine: testEngine,
		TempDir: t.TempDir(), Registerer: reg,
		EnqueueSweep: func(ctx context.Context, tx catalog.Tx, datasetID int64, dataset string) error {
			if datasetID != b.ds.ID || dataset != b.ds.Name {
				return fmt.Errorf("enqueue sweep for dataset %d %q, want %d %q", datasetID, dataset, b.ds.ID, b.ds.Name)
			}
			// Inside the change's transaction, the bumped version is visible.
			var v int64
			if err := tx.QueryRow(ctx, `SELECT manifest_version FROM timestore.datasets WHERE id = $1`, datasetID).Scan(&v); err != nil {
				return err
			}
			b.mu.Lock()
			b.sweepVersions = append(b.sweepVersions, v)
			b.mu.Unlock()
			b.sweeps.Add(1)
			return nil
		},
	}
	if configure != nil {
		configure(&o)
	}
	return New(o), reg
}

// ingestRows ingests n random rows with times in [from, to) in one request.
func (b *bundle) ingestRows(t *testing.T, from, to time.Time, n int) {
	t.Helper()
	var sb strings.Builder
	sb.WriteString("ts,host,value,n\n")
	for range n {
		b.nextN++
		r := row{
			ts:    from.Add(time.Duration(b.rng.Int64N(int64(to.Sub(from)))).Truncate(time.Microsecond)),
			host:  fmt.Sprintf("h%02d", b.rng.IntN(20)),
			value: float64(b.rng.IntN(16000)-8000) / 8,
			n:     b.nextN,
		}
		b.rows = append(b.rows, r)
		fmt.Fprintf(&sb, "%s,%s,%g,%d\n", r.ts.Format(time.RFC3339Nano), r.host, r.value, r.n)
	}
	_, err := b.ingest.Ingest(b.ctx, ingest.Request{Dataset: b.ds.Name, Format: engine.FormatCSV, Body: strings.NewReader(sb.String()), Actor: "test"})
	require.NoError(t, err)
}

// setPolicy sets the dataset's compaction policy.
func (b *bundle) setPolicy(t *testing.T, c policy.Compaction) {
	t.Helper()
	ds, err := b.store.UpdatePolicy(b.ctx, b.ds.Name, policy.Policy{Compaction: &c}, "test")
	require.NoError(t, err)
	b.ds = ds
}

// queryRows runs SQL over the dataset, restricted to [from, to) when set.
func (b *bundle) queryRows(ctx context.Context, sqlText string, from, to *time.Time) ([][]any, error) {
	res, err := b.query.Run(ctx, query.Request{Dataset: b.ds.Name, SQL: sqlText, From: from, To: to})
	if err != nil {
		return nil, err
	}
	defer res.Close()
	var out [][]any
	for res.Next() {
		out = append(out, res.Values())
	}
	if err := res.Err(); err != nil {
		return nil, err
	}
	return out, nil
}

const aggregateSQL = `SELECT count(*), count(DISTINCT n), sum(value), min(value), max(value), sum(n), min(n), max(n),
	min(host), max(host), min(ts), max(ts) FROM cpu`

// modelAggregates computes aggregateSQL's row from the model.
func (b *bundle) modelAggregates() []any {
	rs := b.rows
	var sum float64
	var sumN int64
	mn, mx := rs[0], rs[0]
	minV, maxV := rs[0].value, rs[0].value
	minH, maxH := rs[0].host, rs[0].host
	for _, r := range rs {
		sum += r.value
		sumN += r.n
		minV, maxV = min(minV, r.value), max(maxV, r.value)
		minH, maxH = min(minH, r.host), max(maxH, r.host)
		if r.ts.Before(mn.ts) {
			mn = r
		}
		if r.ts.After(mx.ts) {
			mx = r
		}
	}
	return []any{int64(len(rs)), int64(len(rs)), sum, minV, maxV, sumN, int64(1), b.nextN, minH, maxH, mn.ts.UTC(), mx.ts.UTC()}
}

// live returns the live partitions.
func (b *bundle) live(t *testing.T) []catalog.Partition {
	t.Helper()
	parts, err := b.store.Partitions(b.ctx, b.ds.Name, catalog.StateLive)
	require.NoError(t, err)
	return parts
}

// objects lists the keys on the dataset's target.
func (b *bundle) objects(t *testing.T) []string {
	t.Helper()
	var keys []string
	require.NoError(t, b.target.List(b.ctx, "", func(o storage.ObjectInfo) error {
		keys = append(keys, o.Key)
		return nil
	}))
	return keys
}

// unreferenced lists the objects on the target that no partition (live or
// removed) references.
func (b *bundle) unreferenced(t *testing.T) []string {
	t.Helper()
	var out []string
	for _, key := range b.objects(t) {
		ok, err := b.store.ObjectReferenced(b.ctx, b.target.Name, key)
		require.NoError(t, err)
		if !ok {
			out = append(out, key)
		}
	}
	return out
}

// requireNoLeakedObject checks that every object on the target is
// referenced by a partition.
func (b *bundle) requireNoLeakedObject(t *testing.T) {
	t.Helper()
	require.Empty(t, b.unreferenced(t), "objects no partition references")
}

// at returns the given hour of the given day after day0.
func at(day int, hour int) time.Time {
	return day0.AddDate(0, 0, day).Add(time.Duration(hour) * time.Hour)
}

// populate ingests the standard manifest and sets a policy whose target is
// the size of the one big partition:
//
//	day 0: 8 small partitions at overlapping times            → one group of 8
//	day 1: 3 small (00-06h), 1 big (08-12h), 4 small (14-22h) → groups of 3 and 4
//	day 2: 2 small                                            → too few, left alone
//	day 3, day 4: one small partition each (one ingest spans them)
//
// It returns the big partition.
func (b *bundle) populate(t *testing.T) catalog.Partition {
	t.Helper()
	for range 8 {
		b.ingestRows(t, at(0, 0), at(1, 0), 300)
	}
	for range 3 {
		b.ingestRows(t, at(1, 0), at(1, 6), 300)
	}
	b.ingestRows(t, at(1, 8), at(1, 12), 30000)
	for i := range 4 {
		b.ingestRows(t, at(1, 14+2*i), at(1, 16+2*i), 300)
	}
	for range 2 {
		b.ingestRows(t, at(2, 0), at(2, 10), 300)
	}
	b.ingestRows(t, at(3, 20), at(4, 4), 300)
	var big catalog.Partition
	for _, p := range b.live(t) {
		if p.RowCount > big.RowCount {
			big = p
		}
	}
	require.EqualValues(t, 30000, big.RowCount)
	b.setPolicy(t, policy.Compaction{TargetFileBytes: big.SizeBytes, MinInputFiles: 3})
	return big
}

// idsWhere returns the ids of the partitions in [from, to) of time_min, in plan order.
func idsWhere(parts []catalog.Partition, from, to time.Time) []int64 {
	var out []int64
	for _, p := range planOrder(parts) {
		if !p.TimeMin.Before(from) && p.TimeMin.Before(to) {
			out = append(out, p.ID)
		}
	}
	return out
}

// localPath returns a local copy of a partition's file; release it.
func (b *bundle) localPath(t *testing.T, p catalog.Partition) string {
	t.Helper()
	target, err := b.targets.Get(p.Target)
	require.NoError(t, err)
	path, release, err := b.cache.Fetch(b.ctx, target, p.Key, p.SizeBytes, p.Checksum)
	require.NoError(t, err)
	t.Cleanup(release)
	return path
}

// requireSortedByTime checks that a Parquet file's rows are in time order.
func requireSortedByTime(t *testing.T, path string) {
	t.Helper()
	db, err := sql.Open("duckdb", "")
	require.NoError(t, err)
	defer db.Close()
	var unsorted, rows int64
	require.NoError(t, db.QueryRow(`SELECT count(*) FILTER (WHERE ts < prev), count(*) FROM (
		SELECT ts, lag(ts) OVER (ORDER BY file_row_number) AS prev FROM read_parquet(?, file_row_number = true))`, path).
		Scan(&unsorted, &rows))
	require.Zero(t, unsorted, "rows out of time order in %s", path)
	require.NotZero(t, rows)
}

func TestCompaction(t *testing.T) {
	t.Parallel()
	for _, target := range []string{"local", "remote"} {
		t.Run(target, func(t *testing.T) {
			t.Parallel()
			testCompaction(t, target == "remote")
		})
	}
}

func testCompaction(t *testing.T, remote bool) {
	b := setup(t, remote)
	big := b.populate(t)
	before := b.live(t)
	require.Len(t, before, 8+8+2+2)
	objectsBefore := b.objects(t)
	wantAggregates := b.modelAggregates()
	aggBefore, err := b.queryRows(b.ctx, aggregateSQL, nil, nil)
	require.NoError(t, err)
	require.Equal(t, [][]any{wantAggregates}, aggBefore)

	// Random time ranges, answered before compaction.
	type rangeQuery struct {
		from, to time.Time
		rows     [][]any
	}
	ranges := make([]rangeQuery, 20)
	for i := range ranges {
		a := day0.Add(time.Duration(b.rng.IntN(5*24*60)) * time.Minute)
		z := a.Add(time.Duration(1+b.rng.IntN(3*24*60)) * time.Minute)
		rows, err := b.queryRows(b.ctx, "SELECT ts, host, value, n FROM cpu ORDER BY n", &a, &z)
		require.NoError(t, err)
		want := 0
		for _, r := range b.rows {
			if !r.ts.Before(a) && r.ts.Before(z) {
				want++
			}
		}
		require.Len(t, rows, want)
		ranges[i] = rangeQuery{a, z, rows}
	}

	c, reg := b.compactor(t, nil)

	// The dry run plans and changes nothing.
	plan, err := c.Plan(b.ctx, b.ds.Name)
	require.NoError(t, err)
	wantGroups := [][]int64{
		idsWhere(before, at(0, 0), at(1, 0)),
		idsWhere(before, at(1, 0), at(1, 7)),
		idsWhere(before, at(1, 13), at(2, 0)),
	}
	require.Len(t, wantGroups[0], 8)
	require.Len(t, wantGroups[1], 3)
	require.Len(t, wantGroups[2], 4)
	var gotGroups [][]int64
	for _, g := range plan.Groups {
		gotGroups = append(gotGroups, g.Inputs)
		require.Equal(t, 1, g.Level)
	}
	require.Equal(t, wantGroups, gotGroups)
	require.Equal(t, Plan(before, *b.ds.Policy.Compaction, catalog.WindowDay, Limits{}), plan.Groups)
	require.Equal(t, len(before), plan.LivePartitions)
	require.Equal(t, len(before)-1, plan.SmallPartitions, "all but the big one")
	require.Equal(t, 15, plan.InputPartitions)
	require.Equal(t, len(before)-15+3, plan.PartitionsAfter)
	require.Equal(t, b.ds.ManifestVersion, plan.ManifestVersion)
	require.Equal(t, before, b.live(t))
	require.Equal(t, objectsBefore, b.objects(t))

	// The run.
	out, err := runJob(b.ctx, c, b.ds.Name, 77)
	require.NoError(t, err)
	require.EqualValues(t, 3, out.Merges)
	require.EqualValues(t, 0, out.Conflicts)
	require.EqualValues(t, 15, out.InputPartitions)
	require.EqualValues(t, 3, out.OutputPartitions)
	require.EqualValues(t, 8*300+7*300, out.Rows)

	// The manifest: inputs removed (not deleted), one level-1 output per
	// group, everything else untouched; the count dropped as planned.
	after := b.live(t)
	require.Len(t, after, plan.PartitionsAfter)
	afterByID := map[int64]catalog.Partition{}
	for _, p := range after {
		afterByID[p.ID] = p
	}
	require.Equal(t, big, afterByID[big.ID], "the big partition is untouched")
	removed, err := b.store.Partitions(b.ctx, b.ds.Name, catalog.StateRemoved)
	require.NoError(t, err)
	require.Len(t, removed, 15)
	for _, p := range removed {
		require.NoError(t, b.target.Verify(b.ctx, p.Key, p.SizeBytes, p.Checksum), "inputs are never deleted by compaction")
	}
	beforeIDs := map[int64]bool{}
	for _, p := range before {
		beforeIDs[p.ID] = true
	}
	var outputs []catalog.Partition
	for _, p := range after {
		if !beforeIDs[p.ID] {
			outputs = append(outputs, p)
		}
	}
	require.Len(t, outputs, 3)
	for i, p := range planOrder(outputs) {
		g := plan.Groups[i]
		require.Equal(t, 1, p.Level)
		require.Equal(t, g.InputRows, p.RowCount)
		require.Equal(t, g.WindowStart, p.WindowStart)
		require.Equal(t, g.TimeMin, p.TimeMin)
		require.Equal(t, g.TimeMax, p.TimeMax)
		require.Equal(t, b.target.Name, p.Target)
		require.True(t, strings.HasPrefix(p.Key, "cpu/"+storage.WindowLabel(catalog.WindowDay, g.WindowStart)+"/"), p.Key)
		require.NoError(t, b.target.Verify(b.ctx, p.Key, p.SizeBytes, p.Checksum))
		path := b.localPath(t, p)
		requireSortedByTime(t, path)
		stats, err := testEngine.FileStats(b.ctx, b.ds, path)
		require.NoError(t, err)
		stats.Target, stats.Key, stats.Checksum, stats.Level = p.Target, p.Key, p.Checksum, p.Level
		require.Equal(t, stats, p.PartitionFile, "catalog stats are the recomputed ones")
	}
	require.ElementsMatch(t, append(objectsBefore, keysOf(outputs)...), b.objects(t))

	// History: one manifest version per merge, by the job, with an audit row.
	versions, err := b.store.ManifestVersions(b.ctx, b.ds.ID, 3)
	require.NoError(t, err)
	for _, v := range versions {
		require.Equal(t, catalog.OpCompaction, v.Operation)
		require.Equal(t, int64(77), *v.JobID)
		require.Equal(t, "job:77", v.Actor)
	}
	audit, err := b.store.ListAudit(b.ctx, catalog.AuditFilter{Dataset: b.ds.Name, Action: ActionMerge})
	require.NoError(t, err)
	require.Len(t, audit, 3)
	require.Equal(t, "job:77", audit[0].Actor)
	require.EqualValues(t, 3, b.sweeps.Load(), "one sweep enqueued per merge")
	var compactionVersions []int64
	for _, v := range versions {
		compactionVersions = append(compactionVersions, v.Version)
	}
	require.ElementsMatch(t, compactionVersions, b.sweepVersions, "each sweep enqueued in its merge's transaction")

	// The data: the same aggregates, the same rows for every range.
	aggAfter, err := b.queryRows(b.ctx, aggregateSQL, nil, nil)
	require.NoError(t, err)
	require.Equal(t, aggBefore, aggAfter)
	for _, r := range ranges {
		rows, err := b.queryRows(b.ctx, "SELECT ts, host, value, n FROM cpu ORDER BY n", &r.from, &r.to)
		require.NoError(t, err)
		require.Equal(t, r.rows, rows, "range %s..%s", r.from, r.to)
	}

	// Metrics.
	require.EqualValues(t, 3, promtest.ToFloat64(c.metrics.merges.WithLabelValues("cpu")))
	require.EqualValues(t, 15, promtest.ToFloat64(c.metrics.inputParts))
	require.EqualValues(t, 3, promtest.ToFloat64(c.metrics.outputParts))
	require.EqualValues(t, plan.InputBytes, promtest.ToFloat64(c.metrics.inputBytes))
	require.EqualValues(t, sumBytes(outputs), promtest.ToFloat64(c.metrics.outputBytes))
	require.EqualValues(t, 0, promtest.ToFloat64(c.metrics.conflicts.WithLabelValues("cpu")))
	wantBacklog := Backlog(after, *b.ds.Policy.Compaction, catalog.WindowDay)
	require.EqualValues(t, wantBacklog, out.SmallPartitionsAfter)
	require.EqualValues(t, wantBacklog, promtest.ToFloat64(c.metrics.smallBacklog.WithLabelValues("cpu")))
	require.EqualValues(t, 3, observations(t, c.metrics.duration, "ok"))
	problems, err := promtest.GatherAndLint(reg)
	require.NoError(t, err)
	require.Empty(t, problems)

	// A second run finds nothing to do and changes nothing.
	version := versions[0].Version
	out, err = runJob(b.ctx, c, b.ds.Name, 78)
	require.NoError(t, err)
	require.EqualValues(t, 0, out.Merges)
	d, err := b.store.GetDataset(b.ctx, b.ds.Name)
	require.NoError(t, err)
	require.Equal(t, version, d.ManifestVersion)
}

// observations returns how many values a histogram vector's child holds.
func observations(t *testing.T, h *prometheus.HistogramVec, labels ...string) uint64 {
	t.Helper()
	var m dto.Metric
	require.NoError(t, h.WithLabelValues(labels...).(prometheus.Histogram).Write(&m))
	return m.GetHistogram().GetSampleCount()
}

func keysOf(parts []catalog.Partition) []string {
	out := make([]string, len(parts))
	for i, p := range parts {
		out[i] = p.Key
	}
	return out
}

func sumBytes(parts []catalog.Partition) int64 {
	var n int64
	for _, p := range parts {
		n += p.SizeBytes
	}
	return n
}

// TestCompactionLevels compacts, adds small files beside the output and
// compacts again: the second output is level 2 and holds everything.
func TestCompactionLevels(t *testing.T) {
	t.Parallel()
	b := setup(t, false)
	b.setPolicy(t, policy.Compaction{TargetFileBytes: 1 << 30, MinInputFiles: 3})
	for range 3 {
		b.ingestRows(t, at(0, 0), at(0, 12), 200)
	}
	c, _ := b.compactor(t, nil)
	_, err := runJob(b.ctx, c, b.ds.Name, 1)
	require.NoError(t, err)
	for range 2 {
		b.ingestRows(t, at(0, 12), at(1, 0), 200)
	}
	_, err = runJob(b.ctx, c, b.ds.Name, 2)
	require.NoError(t, err)
	live := b.live(t)
	require.Len(t, live, 1)
	require.Equal(t, 2, live[0].Level)
	require.EqualValues(t, 1000, live[0].RowCount)
	agg, err := b.queryRows(b.ctx, aggregateSQL, nil, nil)
	require.NoError(t, err)
	require.Equal(t, [][]any{b.modelAggregates()}, agg)
}

// TestCompactionWhileQuerying runs queries in a loop while compaction runs:
// every query succeeds and sees every row exactly once.
func TestCompactionWhileQuerying(t *testing.T) {
	t.Parallel()
	for _, target := range []string{"local", "remote"} {
		t.Run(target, func(t *testing.T) {
			t.Parallel()
			b := setup(t, target == "remote")
			b.populate(t)
			want := b.modelAggregates()

			var done atomic.Int64
			progress := make(chan struct{}, 1)
			stop := make(chan struct{})
			errc := make(chan error, 1)
			qctx, cancel := context.WithCancel(b.ctx)
			defer cancel()
			go func() {
				defer close(errc)
				for {
					select {
					case <-stop:
						return
					default:
					}
					rows, err := b.queryRows(qctx, aggregateSQL, nil, nil)
					if err == nil && !slices.EqualFunc(rows, [][]any{want}, func(a, b []any) bool { return fmt.Sprint(a) == fmt.Sprint(b) }) {
						err = fmt.Errorf("query %d saw %v, want %v", done.Load()+1, rows, want)
					}
					if err != nil {
						errc <- err
						return
					}
					done.Add(1)
					select {
					case progress <- struct{}{}:
					default:
					}
				}
			}()
			// waitQueries waits until n more queries have completed.
			waitQueries := func(n int64) {
				target := done.Load() + n
				for done.Load() < target {
					select {
					case <-progress:
					case err := <-errc:
						require.NoError(t, err)
						t.Fatal("query loop ended")
					}
				}
			}

			c, _ := b.compactor(t, func(o *Options) {
				// Queries run between each merge's upload and its commit,
				// and (below) after the last commit.
				o.BeforeCommit = func(ctx context.Context, g Group) error {
					waitQueries(2)
					return nil
				}
			})
			waitQueries(1)
			out, err := runJob(b.ctx, c, b.ds.Name, 5)
			require.NoError(t, err)
			require.EqualValues(t, 3, out.Merges)
			waitQueries(2)
			close(stop)
			require.NoError(t, <-errc)
			require.GreaterOrEqual(t, done.Load(), int64(9))
		})
	}
}

// TestCompactionConflict removes an input, as retention would, between a
// merge and its commit: that merge is abandoned without a trace, the other
// group still merges, and the run reports a conflict.
func TestCompactionConflict(t *testing.T) {
	t.Parallel()
	for _, target := range []string{"local", "remote"} {
		t.Run(target, func(t *testing.T) {
			t.Parallel()
			b := setup(t, target == "remote")
			b.populate(t)
			before := b.live(t)
			day0Inputs := idsWhere(before, at(0, 0), at(1, 0))
			pending := -1
			c, _ := b.compactor(t, func(o *Options) {
				o.BeforeCommit = func(ctx context.Context, g Group) error {
					if g.WindowStart.Equal(at(0, 0)) && pending < 0 {
						pending = len(b.unreferenced(t))
						_, err := b.store.Commit(ctx, catalog.Change{
							Dataset: b.ds.Name, Operation: catalog.OpRetention, Actor: "retention",
							Remove: g.Inputs[:1], Reason: "max_age",
						})
						return err
					}
					return nil
				}
			})
			sweepsBefore := b.sweeps.Load()
			out, err := runJob(b.ctx, c, b.ds.Name, 9)
			require.ErrorIs(t, err, catalog.ErrConflict)
			require.EqualValues(t, 1, out.Conflicts)
			require.EqualValues(t, 2, out.Merges, "the groups of day 1 merged")
			require.EqualValues(t, 1, promtest.ToFloat64(c.metrics.conflicts.WithLabelValues("cpu")))
			require.EqualValues(t, 2, promtest.ToFloat64(c.metrics.merges.WithLabelValues("cpu")))
			require.EqualValues(t, 1, observations(t, c.metrics.duration, "conflict"))
			require.EqualValues(t, 2, b.sweeps.Load()-sweepsBefore, "no sweep for the abandoned merge")

			// Day 0: only the retention change happened: no new reference,
			// and no object left behind.
			var day0Live []int64
			for _, p := range b.live(t) {
				if p.WindowStart.Equal(at(0, 0)) {
					day0Live = append(day0Live, p.ID)
				}
			}
			require.ElementsMatch(t, day0Inputs[1:], day0Live)
			require.Equal(t, 1, pending, "the merged file was uploaded before the conflict")
			b.requireNoLeakedObject(t)

			// A retry re-plans from the manifest as it is: the 7 left merge.
			out, err = runJob(b.ctx, c, b.ds.Name, 9)
			require.NoError(t, err)
			require.EqualValues(t, 1, out.Merges)
			require.EqualValues(t, 7, out.InputPartitions)
			b.requireNoLeakedObject(t)
		})
	}
}

// TestCompactionNoCompact: a marked partition is never an input and breaks
// adjacency; marking an input between plan and commit makes the commit
// conflict.
func TestCompactionNoCompact(t *testing.T) {
	t.Parallel()
	b := setup(t, false)
	b.setPolicy(t, policy.Compaction{TargetFileBytes: 1 << 30, MinInputFiles: 3})
	for i := range 7 {
		b.ingestRows(t, at(0, 2*i), at(0, 2*i+1), 100)
	}
	parts := planOrder(b.live(t))
	require.NoError(t, b.store.SetNoCompact(b.ctx, b.ds.Name, []int64{parts[3].ID}, true, "alice"))

	var once sync.Once
	c, _ := b.compactor(t, func(o *Options) {
		o.BeforeCommit = func(ctx context.Context, g Group) error {
			var err error
			once.Do(func() { err = b.store.SetNoCompact(ctx, b.ds.Name, g.Inputs[1:2], true, "bob") })
			return err
		}
	})
	plan, err := c.Plan(b.ctx, b.ds.Name)
	require.NoError(t, err)
	require.Len(t, plan.Groups, 2)
	require.Equal(t, []int64{parts[0].ID, parts[1].ID, parts[2].ID}, plan.Groups[0].Inputs)
	require.Equal(t, []int64{parts[4].ID, parts[5].ID, parts[6].ID}, plan.Groups[1].Inputs)

	out, err := runJob(b.ctx, c, b.ds.Name, 3)
	require.ErrorIs(t, err, catalog.ErrConflict)
	require.EqualValues(t, 1, out.Conflicts)
	require.EqualValues(t, 1, out.Merges)
	b.requireNoLeakedObject(t)
	var ids []int64
	levels := 0
	for _, p := range b.live(t) {
		ids = append(ids, p.ID)
		levels += p.Level
	}
	require.Len(t, ids, 5, "the first group and the marked partition untouched, the second group merged")
	require.Subset(t, ids, []int64{parts[0].ID, parts[1].ID, parts[2].ID, parts[3].ID})
	require.Equal(t, 1, levels)
}

// TestCompactionAbortCleansUp: failures before or inside the commit leave no
// object and no manifest change, and are not reported as conflicts.
func TestCompactionAbortCleansUp(t *testing.T) {
	t.Parallel()
	errBoom := errors.New("boom")
	for name, configure := range map[string]func(o *Options, fb *storage.FaultyBucket){
		"before commit": func(o *Options, _ *storage.FaultyBucket) {
			o.BeforeCommit = func(context.Context, Group) error { return errBoom }
		},
		"enqueue sweep": func(o *Options, _ *storage.FaultyBucket) {
			o.EnqueueSweep = func(context.Context, catalog.Tx, int64, string) error { return errBoom }
		},
		"upload acknowledgement lost": func(_ *Options, fb *storage.FaultyBucket) {
			fb.Inject(storage.Fault{Op: storage.OpUpload, Late: true, Err: errBoom})
		},
		"upload broken off": func(_ *Options, fb *storage.FaultyBucket) {
			fb.Inject(storage.Fault{Op: storage.OpUpload, Stream: true, AfterBytes: 100, Err: errBoom})
		},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, false)
			b.setPolicy(t, policy.Compaction{TargetFileBytes: 1 << 30, MinInputFiles: 2})
			for range 3 {
				b.ingestRows(t, at(0, 0), at(1, 0), 100)
			}
			before := b.live(t)
			objects := b.objects(t)
			fb := storage.NewFaultyBucket(b.target.Bucket)
			require.NoError(t, b.targets.SetBucket(b.target.Name, fb))
			c, _ := b.compactor(t, func(o *Options) { configure(o, fb) })
			out, err := runJob(b.ctx, c, b.ds.Name, 4)
			require.ErrorIs(t, err, errBoom)
			require.NotErrorIs(t, err, catalog.ErrConflict)
			require.EqualValues(t, 0, out.Merges)
			require.Equal(t, before, b.live(t))
			fb.Reset()
			require.ElementsMatch(t, objects, b.objects(t))
			require.EqualValues(t, 1, observations(t, c.metrics.duration, "error"))
		})
	}
}

// TestCompactionCommitOutcomeUnknown: when the commit fails in a way that
// may have committed, the uploaded object is deleted only if the catalog
// shows it unreferenced.
func TestCompactionCommitOutcomeUnknown(t *testing.T) {
	t.Parallel()
	b := setup(t, false)
	b.setPolicy(t, policy.Compaction{TargetFileBytes: 1 << 30, MinInputFiles: 2})
	for range 2 {
		b.ingestRows(t, at(0, 0), at(1, 0), 100)
	}
	errLost := errors.New("connection lost")
	for _, committed := range []bool{false, true} {
		st := &lossyStore{Store: b.store, commitAnyway: committed, err: errLost}
		c, _ := b.compactor(t, func(o *Options) { o.Store = st })
		_, err := runJob(b.ctx, c, b.ds.Name, 1)
		require.ErrorIs(t, err, errLost)
		b.requireNoLeakedObject(t)
		live := b.live(t)
		if committed {
			require.Len(t, live, 1)
			require.NoError(t, b.target.Verify(b.ctx, live[0].Key, live[0].SizeBytes, live[0].Checksum), "the committed output must stay")
		} else {
			require.Len(t, live, 2)
		}
	}
}

// lossyStore reports every commit as failed with err, after committing it
// when commitAnyway is set: a lost acknowledgement.
type lossyStore struct {
	*catalog.Store
	commitAnyway bool
	err          error
}

func (s *lossyStore) Commit(ctx context.Context, ch catalog.Change) (catalog.CommitResult, error) {
	if s.commitAnyway {
		if _, err := s.Store.Commit(ctx, ch); err != nil {
			return catalog.CommitResult{}, err
		}
	}
	return catalog.CommitResult{}, s.err
}

// TestCompactionVerifyFails: a merged file that does not hold the rows the
// manifest lists is an invariant violation: nothing is uploaded or
// committed, the error says ErrVerify and the job halts (no retry).
func TestCompactionVerifyFails(t *testing.T) {
	t.Parallel()
	b := setup(t, false)
	b.setPolicy(t, policy.Compaction{TargetFileBytes: 1 << 30, MinInputFiles: 2})
	for range 3 {
		b.ingestRows(t, at(0, 0), at(1, 0), 100)
	}
	before, objects := b.live(t), b.objects(t)
	c, _ := b.compactor(t, func(o *Options) { o.Store = &miscountingStore{Store: b.store} })
	out, err := runJob(b.ctx, c, b.ds.Name, 1)
	require.ErrorIs(t, err, ErrVerify)
	require.True(t, jobs.IsHalt(err), "a merge that fails its verification halts the job: %v", err)
	require.NotErrorIs(t, err, catalog.ErrConflict)
	require.EqualValues(t, 0, out.Merges)
	require.Equal(t, before, b.live(t))
	require.ElementsMatch(t, objects, b.objects(t))
}

// miscountingStore lists one row too many for the first partition.
type miscountingStore struct{ *catalog.Store }

func (s *miscountingStore) Snapshot(ctx context.Context, name string, from, to *time.Time) (catalog.Snapshot, error) {
	snap, err := s.Store.Snapshot(ctx, name, from, to)
	if err == nil && len(snap.Partitions) > 0 {
		snap.Partitions[0].RowCount++
	}
	return snap, err
}

func TestSummaryListsAtMostSummaryMergesMax(t *testing.T) {
	t.Parallel()
	r := Result{Merged: make([]Merged, SummaryMergesMax+7)}
	s := r.Summary()
	require.Len(t, s.Merged, SummaryMergesMax)
	require.Equal(t, 7, s.MergedNotListed)
	require.Equal(t, SummaryMergesMax+7, s.Merges)
}

// TestCommitOutcomeUnknownKeepsOutput: the merge's commit runs past the
// compactor's time limit while the server is still committing it, so the
// compactor cannot learn its outcome. It must not delete the output (it
// waits out the commit, or leaves the output for reconcile); the commit then
// lands, and every partition has its object and every row reads.
func TestCommitOutcomeUnknownKeepsOutput(t *testing.T) {
	t.Parallel()
	b := setup(t, false)
	b.setPolicy(t, policy.Compaction{TargetFileBytes: 1 << 30, MinInputFiles: 2})
	for range 4 {
		b.ingestRows(t, at(0, 0), at(1, 0), 50)
	}
	pgtest.SlowCommits(t, b.store.Pool(), 1500*time.Millisecond)
	c, _ := b.compactor(t, func(o *Options) { o.CommitTimeout = 300 * time.Millisecond })
	_, err := runJob(b.ctx, c, b.ds.Name, 4)
	require.Error(t, err)

	// The server's commit lands: the four inputs become one partition.
	deadline := time.Now().Add(20 * time.Second)
	for len(b.live(t)) != 1 {
		require.True(t, time.Now().Before(deadline), "the merge's commit did not land: %d live partitions", len(b.live(t)))
		time.Sleep(10 * time.Millisecond)
	}
	parts, err := b.store.Partitions(b.ctx, b.ds.Name, catalog.PartitionsStateAll)
	require.NoError(t, err)
	objects := b.objects(t)
	for _, p := range parts {
		require.Contains(t, objects, p.Key, "partition %d (level %d) references a deleted object", p.ID, p.Level)
	}
	rows, err := b.queryRows(b.ctx, aggregateSQL, nil, nil)
	require.NoError(t, err)
	require.Equal(t, b.modelAggregates(), rows[0])
}

// TestDamagedInputStopsMerge: an input whose bytes no longer match its
// recorded checksum (damaged on the local target's disk, or in the read
// cache after its download was checked) stops the merge: merging it would
// give the damage a fresh checksum and, once the inputs are swept, make it
// the only copy. Both on the local target (read in place) and on S3 (read
// from the cache).
func TestDamagedInputStopsMerge(t *testing.T) {
	t.Parallel()
	for _, remote := range []bool{false, true} {
		t.Run(stacktest.TargetName(remote), func(t *testing.T) {
			t.Parallel()
			b := setup(t, remote)
			for range 3 {
				b.ingestRows(t, at(0, 0), at(1, 0), 50)
			}
			b.setPolicy(t, policy.Compaction{TargetFileBytes: 1 << 30, MinInputFiles: 2})
			before := b.live(t)
			p := b.localPath(t, before[1])
			data, err := os.ReadFile(p)
			require.NoError(t, err)
			data[len(data)/2] ^= 0xff // same size, different bytes
			require.NoError(t, os.WriteFile(p, data, 0o644))

			c, _ := b.compactor(t, nil)
			_, err = runJob(b.ctx, c, b.ds.Name, 1)
			require.ErrorIs(t, err, ErrVerify)
			require.ErrorContains(t, err, fmt.Sprintf("partition %d", before[1].ID))
			require.Equal(t, before, b.live(t), "nothing merged")
			b.requireNoLeakedObject(t)
		})
	}
}

// runJob runs c as the job harness does, as job jobID, and returns the
// job's summary.
func runJob(ctx context.Context, c *Compactor, dataset string, jobID int64) (Summary, error) {
	out, err := c.Task().Run(ctx, dataset, jobs.JobContext{ID: jobID, Attempt: 1, Actor: "job:" + strconv.FormatInt(jobID, 10)})
	return out.(Summary), err
}
