package export_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/parquet-go/parquet-go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"timestore/internal/catalog"
	"timestore/internal/engine"
	"timestore/internal/export"
	"timestore/internal/ingest"
	"timestore/internal/policy"
	"timestore/internal/query"
	"timestore/internal/storage"
	"timestore/internal/testutil/enginetest"
	"timestore/internal/testutil/stacktest"
)

// testEngine is shared by the tests, which run in parallel against it.
var testEngine *engine.Engine

func TestMain(m *testing.M) { os.Exit(enginetest.Main(m, &testEngine)) }

// day0 is the first day of the test data; runNow is the exporter's clock:
// with after 1d, the days day0 to day0+2 are due, day0+3 is not.
var (
	day0   = time.Date(2024, 3, 1, 0, 0, 0, 0, time.UTC)
	runNow = day0.Add(4*24*time.Hour + 12*time.Hour)
)

func dayN(i int) time.Time { return day0.AddDate(0, 0, i) }

// bundle is a complete set of real components around one dataset "cpu":
// Postgres catalog, a local or S3 target holding both the partitions and
// the exports, read cache, DuckDB, ingest, query and the exporter.
type bundle struct {
	ctx     context.Context
	store   *catalog.Store
	targets *storage.Targets
	target  *storage.Target // the export target (and the dataset's)
	tname   string
	cache   *storage.Cache
	ingest  *ingest.Service
	query   *query.Service
	x       *export.Exporter
	reg     *prometheus.Registry
	ds      catalog.Dataset
	nextN   int64
	// ingested are the sums of the rows of each ingested partition.
	ingested map[int64]sums
}

// setup makes the bundle on the local target or on S3, with the export
// policy {target, after 1d, window day}.
func setup(t *testing.T, remote bool, opts ...func(*export.Options)) *bundle {
	t.Helper()
	name := stacktest.TargetName(remote)
	s := stacktest.New(t, testEngine, remote, catalog.Dataset{
		Name: "cpu",
		Columns: []catalog.Column{
			{Name: "ts", Type: catalog.TypeTimestamp},
			{Name: "host", Type: catalog.TypeVarchar},
			{Name: "n", Type: catalog.TypeBigint},
			{Name: "v", Type: catalog.TypeDouble},
		},
		TimeColumn: "ts",
		Partition:  catalog.WindowDay,
		Policy: policy.Policy{Export: &policy.Export{
			Target: name, After: policy.Duration(24 * time.Hour), Window: "day",
		}},
	})
	b := &bundle{
		ctx: s.Ctx, store: s.Store, targets: s.Targets, target: s.Target, tname: s.TargetName, cache: s.Cache, ds: s.Dataset,
		ingest: s.Ingest, query: s.Query, reg: prometheus.NewPedanticRegistry(),

		ingested: map[int64]sums{},
	}
	o := export.Options{
		Store: b.store, Targets: b.targets, Cache: b.cache, Engine: testEngine, TempDir: t.TempDir(),
		Registerer: b.reg, Now: func() time.Time { return runNow }, MaxFileBytes: 64 << 10,
	}
	for _, f := range opts {
		f(&o)
	}
	var err error
	b.x, err = export.New(o)
	require.NoError(t, err)
	return b
}

// rows is one ingest of rows rows into day d, between 01:00 and 23:00, and
// returns the partition it made.
func (b *bundle) rows(t *testing.T, d, rows int) catalog.Partition {
	t.Helper()
	var sb strings.Builder
	sb.WriteString("ts,host,n,v\n")
	start := dayN(d).Add(time.Hour)
	var s sums
	for j := range rows {
		b.nextN++
		s.Rows++
		s.Hosts++
		s.SumN += b.nextN
		s.SumV += float64(b.nextN) * 0.25
		ts := start.Add(time.Duration(j) * 22 * time.Hour / time.Duration(rows))
		fmt.Fprintf(&sb, "%s,h%d,%d,%g\n", ts.Format(time.RFC3339Nano), b.nextN%7, b.nextN, float64(b.nextN)*0.25)
	}
	res, err := b.ingest.Ingest(b.ctx, ingest.Request{Dataset: b.ds.Name, Format: engine.FormatCSV, Body: strings.NewReader(sb.String()), Actor: "test"})
	require.NoError(t, err)
	require.EqualValues(t, rows, res.RowsWritten)
	live, err := b.store.Partitions(b.ctx, b.ds.Name, catalog.StateLive)
	require.NoError(t, err)
	var newest catalog.Partition
	for _, p := range live {
		if p.AddedInVersion == res.ManifestVersion {
			newest = p
		}
	}
	require.NotZero(t, newest.ID)
	b.ingested[newest.ID] = s
	return newest
}

func (b *bundle) run(t *testing.T) export.Result {
	t.Helper()
	res, err := b.x.Run(b.ctx, b.ds.Name, export.RunOptions{Actor: "test"})
	require.NoError(t, err)
	return res
}

// sums are the statistics the tests compare between exports and queries.
type sums struct {
	Rows   int64
	SumN   int64
	SumV   float64
	Hosts  int64 // non-null host values
	MinTS  time.Time
	MaxTS  time.Time
	Sorted bool
}

// querySums asks timestore (a query over the window) for the sums.
func (b *bundle) querySums(t *testing.T, from, to time.Time) sums {
	t.Helper()
	res, err := b.query.Run(b.ctx, query.Request{Dataset: b.ds.Name,
		SQL:  "SELECT count(*), coalesce(sum(n), 0)::BIGINT, coalesce(sum(v), 0), count(host), min(ts), max(ts) FROM cpu",
		From: &from, To: &to})
	require.NoError(t, err)
	defer res.Close()
	require.True(t, res.Next())
	v := res.Values()
	require.NoError(t, res.Err())
	s := sums{Rows: v[0].(int64), SumN: v[1].(int64), SumV: v[2].(float64), Hosts: v[3].(int64), Sorted: true}
	if ts, ok := v[4].(time.Time); ok {
		s.MinTS, s.MaxTS = ts.UTC(), v[5].(time.Time).UTC()
	}
	return s
}

// object reads an object of the export target.
func (b *bundle) object(t *testing.T, key string) []byte {
	t.Helper()
	rc, err := b.target.Bucket.NewReader(b.ctx, key)
	require.NoError(t, err)
	defer rc.Close()
	data, err := io.ReadAll(rc)
	require.NoError(t, err)
	return data
}

// manifest reads a window's _manifest.json.
func (b *bundle) manifest(t *testing.T, d int) export.Manifest {
	t.Helper()
	var m export.Manifest
	require.NoError(t, json.Unmarshal(b.object(t, export.ManifestKey(b.ds.Name, export.WindowDay, dayN(d))), &m))
	return m
}

// exportSums reads the files a window's manifest lists with parquet-go (an
// independent Parquet reader), checks each against the manifest (size,
// sha256, rows, time range) and returns their sums. Sorted reports whether
// the files of each version follow each other in time (the files a version
// adds to the previous ones hold late rows, so they overlap those).
func (b *bundle) exportSums(t *testing.T, m export.Manifest) sums {
	t.Helper()
	s := sums{Sorted: true}
	last := map[int]int64{}
	for _, f := range m.Files {
		data := b.object(t, f.Key)
		sum := sha256.Sum256(data)
		require.Equal(t, f.SHA256, hex.EncodeToString(sum[:]), f.Key)
		require.EqualValues(t, f.Bytes, len(data), f.Key)
		fs := readParquet(t, data)
		require.Equal(t, f.Rows, fs.Rows, f.Key)
		require.Equal(t, f.TimeMin, fs.MinTS, f.Key)
		require.Equal(t, f.TimeMax, fs.MaxTS, f.Key)
		require.True(t, fs.Sorted, "%s is sorted by time", f.Key)
		if prev, ok := last[f.ExportVersion]; ok && fs.MinTS.UnixMicro() < prev {
			s.Sorted = false
		}
		last[f.ExportVersion] = fs.MaxTS.UnixMicro()
		s.Rows += fs.Rows
		s.SumN += fs.SumN
		s.SumV += fs.SumV
		s.Hosts += fs.Hosts
		if s.MinTS.IsZero() || fs.MinTS.Before(s.MinTS) {
			s.MinTS = fs.MinTS
		}
		if fs.MaxTS.After(s.MaxTS) {
			s.MaxTS = fs.MaxTS
		}
	}
	return s
}

// readParquet reads a Parquet file of the cpu dataset with parquet-go.
func readParquet(t *testing.T, data []byte) sums {
	t.Helper()
	f, err := parquet.OpenFile(bytes.NewReader(data), int64(len(data)))
	require.NoError(t, err)
	col := func(name string) int {
		leaf, ok := f.Schema().Lookup(name)
		require.True(t, ok, "column %s", name)
		return leaf.ColumnIndex
	}
	tsCol, hostCol, nCol, vCol := col("ts"), col("host"), col("n"), col("v")
	// The file's schema: the dataset's columns in order, ts a timestamp.
	var names []string
	for _, field := range f.Schema().Fields() {
		names = append(names, field.Name())
	}
	require.Equal(t, []string{"ts", "host", "n", "v"}, names)
	require.Contains(t, strings.ToUpper(f.Schema().Fields()[0].Type().LogicalType().String()), "TIMESTAMP")

	s := sums{Sorted: true}
	last := int64(-1 << 63)
	buf := make([]parquet.Row, 256)
	for _, rg := range f.RowGroups() {
		rows := rg.Rows()
		for {
			n, err := rows.ReadRows(buf)
			for _, row := range buf[:n] {
				s.Rows++
				for _, v := range row {
					switch v.Column() {
					case tsCol:
						us := v.Int64()
						if us < last {
							s.Sorted = false
						}
						last = us
						ts := time.UnixMicro(us).UTC()
						if s.MinTS.IsZero() || ts.Before(s.MinTS) {
							s.MinTS = ts
						}
						if ts.After(s.MaxTS) {
							s.MaxTS = ts
						}
					case hostCol:
						if !v.IsNull() {
							s.Hosts++
						}
					case nCol:
						s.SumN += v.Int64()
					case vCol:
						s.SumV += v.Double()
					}
				}
			}
			if err == io.EOF {
				break
			}
			require.NoError(t, err)
		}
		require.NoError(t, rows.Close())
	}
	require.Equal(t, f.NumRows(), s.Rows)
	return s
}

// objects lists the keys under exports/ on the export target.
func (b *bundle) objects(t *testing.T) []string {
	t.Helper()
	keys := []string{}
	require.NoError(t, b.target.List(b.ctx, export.KeyPrefix, func(o storage.ObjectInfo) error {
		keys = append(keys, o.Key)
		return nil
	}))
	sort.Strings(keys)
	return keys
}

func (b *bundle) exports(t *testing.T, state string) []catalog.Export {
	t.Helper()
	out, err := b.store.ListExports(b.ctx, b.ds.Name, state)
	require.NoError(t, err)
	return out
}

func (b *bundle) audit(t *testing.T, action string) []catalog.AuditEntry {
	t.Helper()
	entries, err := b.store.ListAudit(b.ctx, catalog.AuditFilter{Action: action, Limit: catalog.ListLimitMax})
	require.NoError(t, err)
	return entries
}

// metric sums the values of a metric family in the bundle's registry:
// counters and gauges, and the sample counts of histograms.
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
			sum += m.GetCounter().GetValue() + m.GetGauge().GetValue() + float64(m.GetHistogram().GetSampleCount())
		}
	}
	return sum
}

// bothTargets runs fn as a subtest on the local target and on S3.
func bothTargets(t *testing.T, fn func(t *testing.T, remote bool)) {
	t.Helper()
	stacktest.BothTargets(t, fn)
}
