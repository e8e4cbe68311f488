package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"timestore/internal/client"
	"timestore/internal/testutil/nodetest"
	"timestore/internal/testutil/pgtest"
	"timestore/internal/testutil/s3test"
)

// Shape of the multi-node run.
const (
	mnNodes          = 3
	mnWriters        = 3
	mnIngests        = 24 // per writer
	mnRowsPerWindow  = 10 // per ingest, in each of its three windows
	mnIngestInterval = 500 * time.Millisecond
	mnTriggerEvery   = time.Second
	// mnHeldRows is about how many rows the held query streams (some 20 MB
	// of CSV): far more than the loopback socket buffers hold, so the
	// server blocks writing it (with its lease held) until the test reads
	// on.
	mnHeldRows = 600_000
	// mnExpediteAfter: a sweep snoozed further out than this waits for the
	// lease recheck (a minute); the drain makes it run now.
	mnExpediteAfter = 3 * time.Second
)

// mnLifecycleKinds are the job kinds an operator can run.
var mnLifecycleKinds = []string{"compaction", "retention", "export", "sweep", "reconcile"}

// mnPolicy is the lifecycle policy of both datasets: compaction, retention
// (one second of grace, so sweeps purge while the test runs) and export all
// have work, and all are scheduled every few seconds besides the triggers.
func mnPolicy(every string) json.RawMessage {
	if every == "" {
		return json.RawMessage(`{
			"compaction": {"min_input_files": 2, "schedule": "@every 3s"},
			"retention":  {"max_age": "30d", "grace": "1s", "schedule": "@every 3s"},
			"export":     {"target": "exports", "after": "1d", "window": "day", "schedule": "@every 4s"}}`)
	}
	return json.RawMessage(fmt.Sprintf(`{
		"compaction": {"min_input_files": 2, "schedule": %[1]q},
		"retention":  {"max_age": "30d", "grace": "1s", "schedule": %[1]q},
		"export":     {"target": "exports", "after": "1d", "window": "day", "schedule": %[1]q}}`, every))
}

// TestMultiNode runs three `timestore serve` processes on one Postgres
// database and one versitygw: they start at the same time on an empty
// database (concurrent start-up migrations), then take bounded concurrent
// ingest (round-robin over the nodes, idempotent retries on another node),
// continuous queries on every node, lifecycle jobs triggered through every
// node (alone and in simultaneous bursts of the same kind) and scheduled by
// policy, and a query holding its lease on one node while a sweep runs on
// another. Afterwards: every triggered job completed in one attempt, no two
// jobs of a kind and dataset ever ran at once, no merge, retention removal,
// ingest or export version was committed twice, the totals on every node
// equal what was ingested less what retention removed, no query failed, every
// object the catalog references is in the bucket (and nothing else is), and
// jobs ran on more than one node.
func TestMultiNode(t *testing.T) {
	built := time.Now()
	if _, err := nodetest.Binary(); err != nil {
		t.Fatal(err)
	}
	t.Logf("build timestore (not counted below)  %6.1fs", time.Since(built).Seconds())
	began := time.Now()
	phase := began
	lap := func(what string) {
		t.Logf("%-34s %6.1fs (total %5.1fs)", what, time.Since(phase).Seconds(), time.Since(began).Seconds())
		phase = time.Now()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	dbURL := pgtest.NewEmptyDatabaseURL(t)
	s3srv := s3test.Start(t)
	dataURL, exportURL := s3srv.NewBucket(t), s3srv.NewBucket(t)
	env := []string{
		"TIMESTORE_TARGET_REMOTE=" + dataURL,
		"TIMESTORE_TARGET_EXPORTS=" + exportURL,
		"TIMESTORE_JOBS_MAX_WORKERS=2",
		"TIMESTORE_JOBS_MAX_ATTEMPTS=5",
		"TIMESTORE_JOBS_JOB_TIMEOUT=60s",
		"TIMESTORE_JOBS_RESCUE_AFTER=90s",
		"TIMESTORE_JOBS_SCHEDULER_INTERVAL=1s",
		"TIMESTORE_JOBS_RECONCILE_SCHEDULE=@every 5s",
		"TIMESTORE_DUCKDB_THREADS=1",
		"TIMESTORE_DUCKDB_MEMORY_LIMIT=512MB",
	}
	nodes := mnStartNodes(t, dbURL, env)
	lap("start 3 nodes on an empty database")

	pool, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	mnCheckMigrations(ctx, t, pool)

	now := time.Now().UTC()
	day := now.Truncate(24 * time.Hour)
	datasets := []string{"mn_cpu", "mn_mem"}
	ids := map[string]int64{}
	for i, name := range datasets {
		if _, err := nodes[i].Client.CreateDataset(ctx, client.CreateDataset{
			Name: name, TimeColumn: "ts", Partition: "day", Target: "remote", Policy: mnPolicy(""),
			Columns: []client.Column{{Name: "ts", Type: "timestamp"}, {Name: "host", Type: "varchar"}, {Name: "value", Type: "double"}},
		}); err != nil {
			t.Fatalf("create dataset %s: %v", name, err)
		}
		var id int64
		if err := pool.QueryRow(ctx, `SELECT id FROM timestore.datasets WHERE name = $1 AND deleted_at IS NULL`, name).Scan(&id); err != nil {
			t.Fatal(err)
		}
		ids[name] = id
	}
	gen := mnGen{
		old:    []time.Time{day.AddDate(0, 0, -40), day.AddDate(0, 0, -41), day.AddDate(0, 0, -42)},
		mid:    []time.Time{day.AddDate(0, 0, -10), day.AddDate(0, 0, -11), day.AddDate(0, 0, -12)},
		recent: now.Truncate(time.Second).Add(-2 * time.Hour),
	}
	s3c := s3srv.Client()
	dataBucket, exportBucket := mnBucketName(t, dataURL), mnBucketName(t, exportURL)

	// Background load: writers, readers, triggers. If the test stops
	// early, a cleanup (before the nodes are killed) stops them all.
	loadCtx, stopLoad := context.WithCancel(ctx)
	stopReaders, stopTriggers := mnStopper(), mnStopper()
	var writers, readers, triggers sync.WaitGroup
	t.Cleanup(func() {
		stopLoad()
		stopReaders.stop()
		stopTriggers.stop()
		writers.Wait()
		readers.Wait()
		triggers.Wait()
	})
	book := &mnBook{expect: map[string]*mnExpect{}, keys: map[string][]client.IngestResult{}}
	for _, name := range datasets {
		book.expect[name] = &mnExpect{windows: map[time.Time]int64{}}
	}
	for w := range mnWriters {
		writers.Add(1)
		go func() {
			defer writers.Done()
			mnWrite(loadCtx, t, nodes, datasets[w%len(datasets)], w, gen, book)
		}()
	}
	reads := &mnReads{}
	for i, n := range nodes {
		readers.Add(1)
		go func() {
			defer readers.Done()
			mnRead(loadCtx, t, i, n, datasets, stopReaders.c, reads)
		}()
	}
	trig := &mnTriggers{}
	triggers.Add(1)
	go func() {
		defer triggers.Done()
		mnTriggerLoop(loadCtx, t, nodes, datasets, stopTriggers.c, trig)
	}()
	lap("datasets created, load started")

	// Meanwhile: a query on node 0 holds its lease while a sweep runs on
	// node 2.
	held := mnHeldLease(ctx, t, pool, s3c, dataBucket, nodes, datasets[0], ids[datasets[0]], trig)
	lap("held lease vs sweep across nodes")

	writers.Wait()
	stopTriggers.stop()
	triggers.Wait()
	lap("ingest finished, triggers stopped")
	if t.Failed() {
		t.FailNow()
	}

	// Final lifecycle runs, readers still reading. Quiet the schedules
	// first so that the final runs see every ingest and nothing follows.
	for i, name := range datasets {
		if _, err := nodes[i].Client.SetPolicy(ctx, name, mnPolicy("@every 1h")); err != nil {
			t.Fatalf("set policy of %s: %v", name, err)
		}
	}
	mnWaitIdle(ctx, t, pool, nodes[0].Client, []string{"compaction", "retention", "export"}, false, 60*time.Second)
	for _, kinds := range [][]string{{"compaction", "retention", "export"}, {"retention"}, {"export"}} {
		var wg sync.WaitGroup
		for k, kind := range kinds {
			for d, name := range datasets {
				wg.Add(1)
				go func() {
					defer wg.Done()
					node := (k + d) % mnNodes
					res, err := nodes[node].Client.RunMaintenance(ctx, kind, name)
					trig.add(mnTrig{kind: kind, dataset: name, node: node, res: res, err: err})
					if err != nil {
						t.Errorf("final %s of %s through node %d: %v", kind, name, node, err)
						return
					}
					mnWaitJob(ctx, t, nodes[node].Client, res.JobID, 60*time.Second)
				}()
			}
		}
		wg.Wait()
	}
	lap("final compaction, retention, export")
	stopReaders.stop()
	readers.Wait()
	lap("readers stopped")

	// Drain: sweeps still waiting (some snoozed for the lease recheck while
	// the held query pinned its version) run now; then one last sweep and
	// reconcile per dataset, through different nodes.
	mnWaitIdle(ctx, t, pool, nodes[1].Client, []string{"compaction", "retention", "export", "sweep"}, true, 60*time.Second)
	for _, kind := range []string{"sweep", "reconcile"} {
		var wg sync.WaitGroup
		for d, name := range datasets {
			wg.Add(1)
			go func() {
				defer wg.Done()
				node := (d + 2) % mnNodes
				res, err := nodes[node].Client.RunMaintenance(ctx, kind, name)
				trig.add(mnTrig{kind: kind, dataset: name, node: node, res: res, err: err})
				if err != nil {
					t.Errorf("final %s of %s through node %d: %v", kind, name, node, err)
					return
				}
				mnWaitJob(ctx, t, nodes[node].Client, res.JobID, 60*time.Second)
			}()
		}
		wg.Wait()
	}
	mnWaitIdle(ctx, t, pool, nodes[2].Client, []string{"compaction", "retention", "export", "sweep"}, true, 30*time.Second)
	lap("drain, final sweep and reconcile")
	if t.Failed() {
		t.FailNow()
	}

	// Checks.
	mnCheckTriggered(ctx, t, pool, trig)
	mnCheckJobs(ctx, t, pool, nodes)
	for _, name := range datasets {
		e := book.expect[name]
		mnCheckManifest(ctx, t, pool, ids[name], name, e)
		mnCheckExports(ctx, t, pool, s3c, exportBucket, ids[name], name, e, gen)
		for i, n := range nodes {
			mnCheckTotals(ctx, t, n.Client, i, name, e)
		}
	}
	mnCheckIdempotency(t, book)
	mnCheckBucket(ctx, t, pool, s3c, dataBucket)
	mnCheckHeldAfter(ctx, t, pool, s3c, dataBucket, held)
	mnCheckReads(ctx, t, pool, reads, book)
	lap("checks")

	var rows, ingests int64
	for _, e := range book.expect {
		rows += e.rows
		ingests += e.ingests
	}
	t.Logf("rows ingested %d in %d committed ingests (%d requests, %d replayed); queries %d ok, %d failed; triggers %d (%d duplicates, %d distinct jobs)",
		rows, ingests, book.requests.Load(), book.replayed.Load(), reads.ok.Load(), reads.failed.Load(),
		len(trig.list), trig.duplicates(), len(trig.jobIDs()))
}

// mnStop is a channel closed once, by stop.
type mnStop struct {
	c    chan struct{}
	once sync.Once
}

func mnStopper() *mnStop { return &mnStop{c: make(chan struct{})} }

func (s *mnStop) stop() { s.once.Do(func() { close(s.c) }) }

// mnGoroutineTB lets nodetest.Start run on a goroutine of its own: a fatal
// error is recorded on the test and ends only that goroutine.
type mnGoroutineTB struct{ testing.TB }

func (g mnGoroutineTB) Fatal(args ...any) { g.TB.Error(args...); runtime.Goexit() }
func (g mnGoroutineTB) Fatalf(format string, args ...any) {
	g.TB.Errorf(format, args...)
	runtime.Goexit()
}
func (g mnGoroutineTB) FailNow() { g.TB.Fail(); runtime.Goexit() }

// mnStartNodes starts the nodes at the same time, so that their start-up
// migrations of the empty database run concurrently.
func mnStartNodes(t *testing.T, dbURL string, env []string) []*nodetest.Node {
	t.Helper()
	nodes := make([]*nodetest.Node, mnNodes)
	var wg sync.WaitGroup
	gate := make(chan struct{})
	for i := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-gate
			nodes[i] = nodetest.Start(mnGoroutineTB{t}, nodetest.Config{DatabaseURL: dbURL, Env: env})
		}()
	}
	close(gate)
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	return nodes
}

// mnCheckMigrations: each migration was applied once, by one of the nodes.
func mnCheckMigrations(ctx context.Context, t *testing.T, pool *pgxpool.Pool) {
	t.Helper()
	var dup, applied int
	if err := pool.QueryRow(ctx, `
		SELECT count(*) FILTER (WHERE n > 1), count(*) FROM (
			SELECT version_id, count(*) AS n FROM timestore.goose_db_version
			WHERE is_applied AND version_id > 0 GROUP BY version_id) v`).Scan(&dup, &applied); err != nil {
		t.Fatalf("read goose versions: %v", err)
	}
	if dup != 0 || applied == 0 {
		t.Errorf("catalog migrations: %d applied, %d applied more than once", applied, dup)
	}
	var riverDup, riverApplied int
	if err := pool.QueryRow(ctx, `
		SELECT count(*) FILTER (WHERE n > 1), count(*) FROM (
			SELECT line, version, count(*) AS n FROM river_migration GROUP BY line, version) v`).Scan(&riverDup, &riverApplied); err != nil {
		t.Fatalf("read river migrations: %v", err)
	}
	if riverDup != 0 || riverApplied == 0 {
		t.Errorf("river migrations: %d applied, %d more than once", riverApplied, riverDup)
	}
	t.Logf("migrations: %d catalog, %d river, each applied once", applied, riverApplied)
}

// --- ingest ---

// mnGen places rows: per ingest, mnRowsPerWindow rows in one old day (older
// than retention's max_age: negative values), one mid day (exported, kept)
// and the last hours (kept, not yet exported). Every row has a timestamp of
// its own.
type mnGen struct {
	old, mid []time.Time
	recent   time.Time
}

type mnBatch struct {
	body                string
	rows, oldRows, keep int64
	keepSum             float64
	windows             map[time.Time]int64
}

func (g mnGen) batch(w, i int) mnBatch {
	b := mnBatch{windows: map[time.Time]int64{}}
	var sb strings.Builder
	sb.WriteString("ts,host,value\n")
	for r := range mnRowsPerWindow {
		seq := (w*mnIngests+i)*mnRowsPerWindow + r // unique per row of a window
		mag := float64(1+seq%97) / 4
		oldDay, midDay := g.old[(w+i)%len(g.old)], g.mid[i%len(g.mid)]
		for _, p := range []struct {
			ts    time.Time
			value float64
		}{
			{oldDay.Add(time.Duration(seq) * time.Minute), -mag},
			{midDay.Add(time.Duration(seq) * time.Minute), mag},
			{g.recent.Add(time.Duration(seq) * time.Second), mag},
		} {
			fmt.Fprintf(&sb, "%s,h%d,%s\n", p.ts.Format(time.RFC3339Nano), seq%7, strconv.FormatFloat(p.value, 'g', -1, 64))
			b.rows++
			b.windows[p.ts.Truncate(24*time.Hour)]++
			if p.value < 0 {
				b.oldRows++
			} else {
				b.keep++
				b.keepSum += p.value
			}
		}
	}
	b.body = sb.String()
	return b
}

// mnExpect is what was ingested into one dataset, counted once per
// committed ingest (a replay adds nothing).
type mnExpect struct {
	ingests, rows, oldRows, keep int64
	keepSum                      float64
	windows                      map[time.Time]int64
}

type mnBook struct {
	mu                 sync.Mutex
	expect             map[string]*mnExpect
	keys               map[string][]client.IngestResult // idempotency key → every answer
	requests, replayed atomic.Int64
}

func (bk *mnBook) committed(dataset string, b mnBatch) {
	bk.mu.Lock()
	defer bk.mu.Unlock()
	e := bk.expect[dataset]
	e.ingests++
	e.rows += b.rows
	e.oldRows += b.oldRows
	e.keep += b.keep
	e.keepSum += b.keepSum
	for w, n := range b.windows {
		e.windows[w] += n
	}
}

// mnWrite is one writer: mnIngests ingests round-robin over the nodes. Every
// fifth ingest (from the third) is retried with its Idempotency-Key on the
// next node; every fifth (from the fifth) is sent with its key to two nodes
// at once.
func mnWrite(ctx context.Context, t *testing.T, nodes []*nodetest.Node, dataset string, w int, g mnGen, bk *mnBook) {
	tick := time.NewTicker(mnIngestInterval)
	defer tick.Stop()
	for i := range mnIngests {
		if i > 0 {
			select {
			case <-tick.C:
			case <-ctx.Done():
				return // the test is stopping early
			}
		}
		b := g.batch(w, i)
		a, next := nodes[(w+i)%mnNodes], nodes[(w+i+1)%mnNodes]
		ingest := func(n *nodetest.Node, key string) (client.IngestResult, error) {
			bk.requests.Add(1)
			res, err := n.Client.Ingest(ctx, dataset, "csv", strings.NewReader(b.body), key)
			if err == nil && res.Replayed {
				bk.replayed.Add(1)
			}
			if err == nil && key != "" {
				bk.mu.Lock()
				bk.keys[dataset+"/"+key] = append(bk.keys[dataset+"/"+key], res)
				bk.mu.Unlock()
			}
			return res, err
		}
		var results []client.IngestResult
		switch key := fmt.Sprintf("w%d-i%d", w, i); i % 5 {
		case 2: // retried on another node
			for _, n := range []*nodetest.Node{a, next} {
				res, err := ingest(n, key)
				if err != nil {
					t.Errorf("writer %d ingest %d (key %s) through %s: %v", w, i, key, n.Addr, err)
					return
				}
				results = append(results, res)
			}
		case 4: // the same key on two nodes at once
			var wg sync.WaitGroup
			results = make([]client.IngestResult, 2)
			errs := make([]error, 2)
			for j, n := range []*nodetest.Node{a, next} {
				wg.Add(1)
				go func() {
					defer wg.Done()
					results[j], errs[j] = ingest(n, key)
				}()
			}
			wg.Wait()
			if err := errors.Join(errs...); err != nil {
				t.Errorf("writer %d ingest %d (key %s, two nodes at once): %v", w, i, key, err)
				return
			}
		default:
			res, err := ingest(a, "")
			if err != nil {
				t.Errorf("writer %d ingest %d through %s: %v", w, i, a.Addr, err)
				return
			}
			results = append(results, res)
		}
		fresh := 0
		for _, res := range results {
			if res.RowsWritten != b.rows {
				t.Errorf("writer %d ingest %d: rows_written %d, want %d (replayed %v)", w, i, res.RowsWritten, b.rows, res.Replayed)
			}
			if !res.Replayed {
				fresh++
			}
		}
		if fresh != 1 {
			t.Errorf("writer %d ingest %d: %d of %d answers not replayed, want exactly 1", w, i, fresh, len(results))
		}
		bk.committed(dataset, b)
	}
}

// mnCheckIdempotency: every answer for one key names the same manifest
// version, and exactly one was not a replay.
func mnCheckIdempotency(t *testing.T, bk *mnBook) {
	t.Helper()
	for key, answers := range bk.keys {
		fresh := 0
		for _, a := range answers {
			if !a.Replayed {
				fresh++
			}
			if a.ManifestVersion != answers[0].ManifestVersion {
				t.Errorf("idempotency key %s: answers name manifest versions %d and %d", key, answers[0].ManifestVersion, a.ManifestVersion)
			}
		}
		if fresh != 1 || len(answers) != 2 {
			t.Errorf("idempotency key %s: %d answers, %d not replayed; want 2 and 1", key, len(answers), fresh)
		}
	}
	t.Logf("idempotency keys: %d, each committed once and replayed once on another node", len(bk.keys))
}

// --- queries ---

type mnReadResult struct {
	node       int
	dataset    string
	version    int64
	n, keep    int64
	sum        float64
	start, end time.Time
}

type mnReads struct {
	mu         sync.Mutex
	list       []mnReadResult
	ok, failed atomic.Int64
}

const mnReadSQL = `SELECT count(*), coalesce(sum(value), 0), count(*) FILTER (WHERE value > 0) FROM %s`

// mnRead queries the datasets through one node until stop is closed. Every
// failure fails the test.
func mnRead(ctx context.Context, t *testing.T, node int, n *nodetest.Node, datasets []string, stop <-chan struct{}, reads *mnReads) {
	for i := 0; ; i++ {
		select {
		case <-stop:
			return
		default:
		}
		name := datasets[i%len(datasets)]
		start := time.Now()
		version, row, err := mnQuery(ctx, n.Client, name, fmt.Sprintf(mnReadSQL, name))
		end := time.Now()
		if err != nil && ctx.Err() != nil {
			return // the test is stopping early
		}
		if err != nil {
			if reads.failed.Add(1) <= 10 {
				t.Errorf("query %s through node %d failed: %v", name, node, err)
			}
			continue
		}
		r := mnReadResult{node: node, dataset: name, version: version, start: start, end: end}
		r.n, r.sum, r.keep, err = mnAggregates(row)
		if err != nil {
			t.Errorf("query %s through node %d: %v", name, node, err)
			continue
		}
		reads.ok.Add(1)
		reads.mu.Lock()
		reads.list = append(reads.list, r)
		reads.mu.Unlock()
	}
}

// mnQuery runs a JSON query and returns the manifest version it read and its
// single row.
func mnQuery(ctx context.Context, c *client.Client, dataset, sql string) (int64, []any, error) {
	resp, err := c.Raw(ctx, http.MethodPost, "/v1/datasets/"+url.PathEscape(dataset)+"/query",
		http.Header{"Accept": {"application/json"}}, client.QueryRequest{SQL: sql})
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	version, err := strconv.ParseInt(resp.Header.Get("Timestore-Manifest-Version"), 10, 64)
	if err != nil {
		return 0, nil, fmt.Errorf("Timestore-Manifest-Version: %w", err)
	}
	var out client.QueryResult
	dec := json.NewDecoder(resp.Body)
	dec.UseNumber()
	if err := dec.Decode(&out); err != nil {
		return 0, nil, fmt.Errorf("decode query answer: %w", err)
	}
	if out.Error != nil {
		return 0, nil, out.Error
	}
	if len(out.Rows) != 1 {
		return 0, nil, fmt.Errorf("query answered %d rows, want 1", len(out.Rows))
	}
	return version, out.Rows[0], nil
}

func mnAggregates(row []any) (n int64, sum float64, keep int64, err error) {
	if len(row) != 3 {
		return 0, 0, 0, fmt.Errorf("want 3 columns, got %v", row)
	}
	var nums [3]float64
	for i, v := range row {
		num, ok := v.(json.Number)
		if !ok {
			return 0, 0, 0, fmt.Errorf("column %d: want a number, got %T %v", i, v, v)
		}
		if nums[i], err = num.Float64(); err != nil {
			return 0, 0, 0, err
		}
	}
	return int64(nums[0]), nums[1], int64(nums[2]), nil
}

// mnCheckTotals: the node answers what was ingested less what retention
// removed (every old row, and nothing else).
func mnCheckTotals(ctx context.Context, t *testing.T, c *client.Client, node int, dataset string, e *mnExpect) {
	t.Helper()
	_, row, err := mnQuery(ctx, c, dataset, fmt.Sprintf(mnReadSQL, dataset))
	if err != nil {
		t.Errorf("final query of %s through node %d: %v", dataset, node, err)
		return
	}
	n, sum, keep, err := mnAggregates(row)
	if err != nil {
		t.Errorf("final query of %s through node %d: %v", dataset, node, err)
		return
	}
	if n != e.rows-e.oldRows || keep != e.keep || math.Abs(sum-e.keepSum) > 1e-6 {
		t.Errorf("node %d, %s: count %d (kept %d), sum %v; want %d ingested - %d removed = %d rows, sum %v",
			node, dataset, n, keep, sum, e.rows, e.oldRows, e.rows-e.oldRows, e.keepSum)
	}
}

// mnCheckReads: no query failed; queries of one manifest version agree on
// every node; rows that retention keeps never decrease from one version to
// the next; sweeps deleted files while queries ran.
func mnCheckReads(ctx context.Context, t *testing.T, pool *pgxpool.Pool, reads *mnReads, bk *mnBook) {
	t.Helper()
	reads.mu.Lock()
	defer reads.mu.Unlock()
	if f := reads.failed.Load(); f > 0 {
		t.Errorf("%d queries failed", f)
	}
	if len(reads.list) < 30 {
		t.Errorf("only %d queries ran", len(reads.list))
	}
	type key struct {
		dataset string
		version int64
	}
	byVersion := map[key]mnReadResult{}
	nodesOf := map[key]map[int]bool{}
	perNode := map[int]int{}
	for _, r := range reads.list {
		perNode[r.node]++
		k := key{r.dataset, r.version}
		if first, ok := byVersion[k]; ok {
			if first.n != r.n || first.keep != r.keep || math.Abs(first.sum-r.sum) > 1e-6 {
				t.Errorf("%s version %d: node %d read %d rows (sum %v), node %d read %d rows (sum %v)",
					r.dataset, r.version, first.node, first.n, first.sum, r.node, r.n, r.sum)
			}
		} else {
			byVersion[k] = r
			nodesOf[k] = map[int]bool{}
		}
		nodesOf[k][r.node] = true
	}
	shared := 0
	for k := range byVersion {
		if len(nodesOf[k]) > 1 {
			shared++
		}
	}
	var keys []key
	for k := range byVersion {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b key) int {
		if c := strings.Compare(a.dataset, b.dataset); c != 0 {
			return c
		}
		return int(a.version - b.version)
	})
	for i := 1; i < len(keys); i++ {
		a, b := byVersion[keys[i-1]], byVersion[keys[i]]
		if a.dataset == b.dataset && b.keep < a.keep {
			t.Errorf("%s: version %d has %d kept rows, the later version %d only %d", a.dataset, a.version, a.keep, b.version, b.keep)
		}
	}
	for name, e := range bk.expect {
		for k, r := range byVersion {
			if k.dataset == name && r.keep > e.keep {
				t.Errorf("%s version %d: %d kept rows, more than the %d ingested", name, k.version, r.keep, e.keep)
			}
		}
	}

	// Purges (the sweep's point of no return; the object deletion follows)
	// that happened while a query was running.
	rows, err := pool.Query(ctx, `SELECT purged_at FROM timestore.partitions WHERE purged_at IS NOT NULL`)
	if err != nil {
		t.Fatal(err)
	}
	purges, err := pgx.CollectRows(rows, pgx.RowTo[time.Time])
	if err != nil {
		t.Fatal(err)
	}
	during := 0
	for _, p := range purges {
		for _, r := range reads.list {
			if !p.Before(r.start) && !p.After(r.end) {
				during++
				break
			}
		}
	}
	if during == 0 {
		t.Errorf("none of %d purges happened while a query ran: the test did not race sweeps against queries", len(purges))
	}
	t.Logf("queries: %d ok (per node %v), %d manifest versions read, %d of them on more than one node; %d of %d purges while a query ran",
		len(reads.list), perNode, len(byVersion), shared, during, len(purges))
}

// --- triggers ---

type mnTrig struct {
	kind, dataset string
	node          int
	burst         int // > 0: the burst this trigger was part of
	res           client.Triggered
	err           error
}

type mnTriggers struct {
	mu   sync.Mutex
	list []mnTrig
}

func (tr *mnTriggers) add(x mnTrig) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.list = append(tr.list, x)
}

func (tr *mnTriggers) duplicates() int {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	n := 0
	for _, x := range tr.list {
		if x.err == nil && x.res.Duplicate {
			n++
		}
	}
	return n
}

func (tr *mnTriggers) jobIDs() []int64 {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	var ids []int64
	for _, x := range tr.list {
		if x.err == nil && !slices.Contains(ids, x.res.JobID) {
			ids = append(ids, x.res.JobID)
		}
	}
	slices.Sort(ids)
	return ids
}

// mnTriggerLoop triggers a lifecycle job every mnTriggerEvery, cycling
// through kinds, datasets and nodes; every third time the same kind and
// dataset through all nodes at once.
func mnTriggerLoop(ctx context.Context, t *testing.T, nodes []*nodetest.Node, datasets []string, stop <-chan struct{}, tr *mnTriggers) {
	tick := time.NewTicker(mnTriggerEvery)
	defer tick.Stop()
	burst := 0
	for k := 0; ; k++ {
		select {
		case <-stop:
			return
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		kind, name := mnLifecycleKinds[k%len(mnLifecycleKinds)], datasets[(k/len(mnLifecycleKinds))%len(datasets)]
		trigger := func(node, burst int) {
			res, err := nodes[node].Client.RunMaintenance(ctx, kind, name)
			if err != nil {
				t.Errorf("trigger %s of %s through node %d: %v", kind, name, node, err)
			}
			tr.add(mnTrig{kind: kind, dataset: name, node: node, burst: burst, res: res, err: err})
		}
		if k%3 != 2 {
			trigger(k%mnNodes, 0)
			continue
		}
		burst++
		gate := make(chan struct{})
		var wg sync.WaitGroup
		for node := range nodes {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-gate
				trigger(node, burst)
			}()
		}
		close(gate)
		wg.Wait()
	}
}

// mnWaitJob polls a job until it is finished.
func mnWaitJob(ctx context.Context, t *testing.T, c *client.Client, id int64, timeout time.Duration) client.Job {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		j, err := c.Job(ctx, id)
		if err != nil {
			t.Errorf("job %d: %v", id, err)
			return j
		}
		if j.Finished() {
			return j
		}
		if time.Now().After(deadline) {
			t.Errorf("job %d (%s of %s) still %s after %s", id, j.Kind, j.Dataset, j.State, timeout)
			return j
		}
		select {
		case <-ctx.Done():
			t.Errorf("job %d: %v", id, ctx.Err())
			return j
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// mnWaitIdle polls until no job of kinds is waiting or running. With
// expedite, a sweep snoozed for longer than mnExpediteAfter (waiting for
// the lease recheck) is retried now, as an operator would.
func mnWaitIdle(ctx context.Context, t *testing.T, pool *pgxpool.Pool, c *client.Client, kinds []string, expedite bool, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var expedited []int64
	defer func() {
		if len(expedited) > 0 {
			t.Logf("sweeps %v snoozed for the lease recheck were made to run now", expedited)
		}
	}()
	for {
		var pending int
		var snoozed []int64
		if err := pool.QueryRow(ctx, `
			SELECT count(*),
				coalesce(array_agg(id) FILTER (WHERE kind = 'sweep' AND state = 'scheduled' AND scheduled_at > now() + $2 * interval '1 millisecond'), '{}')
			FROM river_job
			WHERE kind = ANY($1) AND state NOT IN ('completed', 'cancelled', 'discarded')`,
			kinds, mnExpediteAfter.Milliseconds()).Scan(&pending, &snoozed); err != nil {
			t.Fatalf("count unfinished jobs: %v", err)
		}
		if pending == 0 {
			return
		}
		if expedite {
			for _, id := range snoozed {
				if _, err := c.RetryJob(ctx, id); err != nil && !client.IsClientError(err) {
					t.Errorf("retry snoozed sweep %d: %v", id, err)
				}
				if !slices.Contains(expedited, id) {
					expedited = append(expedited, id)
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d jobs of kinds %v still unfinished after %s", pending, kinds, timeout)
		}
		select {
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// mnJob is a lifecycle job as River keeps it.
type mnJob struct {
	id                   int64
	kind, state, trigger string
	datasetID            int64
	attempt, errors      int
	snoozes              int
	attemptedAt          *time.Time
	finalizedAt          *time.Time
	attemptedBy          []string
	outcome              string
	summary              map[string]any
}

func mnJobs(ctx context.Context, t *testing.T, pool *pgxpool.Pool) map[int64]mnJob {
	t.Helper()
	rows, err := pool.Query(ctx, `
		SELECT id, kind, state::text, coalesce(args->>'trigger', ''), coalesce((args->>'dataset_id')::bigint, 0),
			attempt, coalesce(array_length(errors, 1), 0), coalesce((metadata->>'snoozes')::int, 0),
			attempted_at, finalized_at, coalesce(attempted_by, '{}'),
			coalesce(metadata->'output'->>'outcome', ''), metadata->'output'->'summary'
		FROM river_job WHERE kind = ANY($1)`, mnLifecycleKinds)
	if err != nil {
		t.Fatalf("read jobs: %v", err)
	}
	out := map[int64]mnJob{}
	for rows.Next() {
		var j mnJob
		var summary []byte
		if err := rows.Scan(&j.id, &j.kind, &j.state, &j.trigger, &j.datasetID, &j.attempt, &j.errors, &j.snoozes,
			&j.attemptedAt, &j.finalizedAt, &j.attemptedBy, &j.outcome, &summary); err != nil {
			t.Fatalf("read jobs: %v", err)
		}
		if len(summary) > 0 {
			if err := json.Unmarshal(summary, &j.summary); err != nil {
				t.Fatalf("job %d summary: %v", j.id, err)
			}
		}
		out[j.id] = j
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("read jobs: %v", err)
	}
	return out
}

// mnCheckTriggered: every trigger answered; every triggered job completed in
// one attempt; a trigger answered "duplicate" only with a job that was still
// waiting or running, and every job was inserted by at most one trigger;
// every trigger left one audit row.
func mnCheckTriggered(ctx context.Context, t *testing.T, pool *pgxpool.Pool, tr *mnTriggers) {
	t.Helper()
	jobs := mnJobs(ctx, t, pool)
	tr.mu.Lock()
	list := slices.Clone(tr.list)
	tr.mu.Unlock()
	inserted := map[int64]int{}
	bursts := map[int]map[int64]bool{}
	ok := 0
	for _, x := range list {
		if x.err != nil {
			continue // reported when it happened
		}
		ok++
		if x.res.Kind != x.kind || x.res.Dataset != x.dataset {
			t.Errorf("trigger of %s/%s answered job %d of %s/%s", x.kind, x.dataset, x.res.JobID, x.res.Kind, x.res.Dataset)
		}
		if x.res.Duplicate {
			if !slices.Contains([]string{"available", "pending", "retryable", "running", "scheduled"}, x.res.State) {
				t.Errorf("trigger of %s/%s answered duplicate of job %d in state %s, which no longer blocks a new one", x.kind, x.dataset, x.res.JobID, x.res.State)
			}
		} else {
			inserted[x.res.JobID]++
		}
		if x.burst > 0 {
			if bursts[x.burst] == nil {
				bursts[x.burst] = map[int64]bool{}
			}
			bursts[x.burst][x.res.JobID] = true
		}
	}
	for id, n := range inserted {
		if n > 1 {
			t.Errorf("job %d inserted by %d triggers", id, n)
		}
	}
	collapsed := 0
	for _, ids := range bursts {
		if len(ids) == 1 {
			collapsed++
		}
	}
	ids := tr.jobIDs()
	for _, id := range ids {
		j, found := jobs[id]
		switch {
		case !found:
			t.Errorf("triggered job %d not found", id)
		case j.state != "completed" || j.attempt != 1 || j.errors != 0:
			t.Errorf("triggered job %d (%s, %s): state %s, attempt %d, %d errors; want completed in one attempt", id, j.kind, j.trigger, j.state, j.attempt, j.errors)
		}
	}
	var audited int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM timestore.audit_log WHERE action = 'maintenance.trigger'`).Scan(&audited); err != nil {
		t.Fatal(err)
	}
	if audited != ok {
		t.Errorf("%d maintenance.trigger audit rows for %d triggers", audited, ok)
	}
	t.Logf("triggers: %d answered, %d inserted a job, %d found one waiting or running; %d distinct jobs, all completed once; %d of %d simultaneous bursts of three found one job",
		ok, len(inserted), ok-len(inserted), len(ids), collapsed, len(bursts))
}

// mnCheckJobs: every lifecycle job (triggered, scheduled, follow-up)
// completed without a failed attempt; no two jobs of one kind and dataset
// ever ran at once (River's uniqueness); reconcile never found a missing
// object; jobs ran on more than one node.
func mnCheckJobs(ctx context.Context, t *testing.T, pool *pgxpool.Pool, nodes []*nodetest.Node) {
	t.Helper()
	jobs := mnJobs(ctx, t, pool)
	type group struct {
		kind    string
		dataset int64
	}
	byGroup := map[group][]mnJob{}
	byKind := map[string]int{}
	byTrigger := map[string]int{}
	outcomes := map[string]int{}
	clients := map[string]int{}
	snoozed := 0
	for _, j := range jobs {
		byKind[j.kind]++
		byTrigger[j.trigger]++
		outcomes[j.outcome]++
		if j.snoozes > 0 {
			snoozed++
		}
		for _, c := range j.attemptedBy {
			clients[c]++
		}
		if j.state != "completed" || j.errors != 0 {
			t.Errorf("job %d (%s, %s): state %s, attempt %d, %d errors, outcome %q", j.id, j.kind, j.trigger, j.state, j.attempt, j.errors, j.outcome)
		}
		if j.kind == "reconcile" && j.summary != nil {
			if m, _ := j.summary["missing"].(float64); m != 0 {
				t.Errorf("reconcile job %d found %v missing objects: %v", j.id, m, j.summary["missing_objects"])
			}
		}
		if j.attemptedAt != nil && j.finalizedAt != nil {
			g := group{j.kind, j.datasetID}
			byGroup[g] = append(byGroup[g], j)
		}
	}
	for g, list := range byGroup {
		slices.SortFunc(list, func(a, b mnJob) int { return a.attemptedAt.Compare(*b.attemptedAt) })
		for i := 1; i < len(list); i++ {
			a, b := list[i-1], list[i]
			if b.attemptedAt.Before(*a.finalizedAt) {
				t.Errorf("%s jobs %d and %d of dataset %d ran at once: %d ran %s–%s, %d started %s",
					g.kind, a.id, b.id, g.dataset, a.id, a.attemptedAt.Format(time.StampMicro), a.finalizedAt.Format(time.StampMicro),
					b.id, b.attemptedAt.Format(time.StampMicro))
			}
		}
	}
	for _, kind := range []string{"compaction", "retention", "export", "reconcile"} {
		var scheduled int
		for _, j := range jobs {
			if j.kind == kind && j.trigger == "schedule" {
				scheduled++
			}
		}
		if scheduled == 0 {
			t.Errorf("no scheduled %s job ran", kind)
		}
	}
	if len(clients) < 2 {
		t.Errorf("River recorded jobs attempted by %d clients (%v), want more than one node", len(clients), clients)
	}
	// The nodes' own logs: "job finished" per node.
	perNode := make([]int, len(nodes))
	for i, n := range nodes {
		for _, line := range strings.Split(n.Logs(), "\n") {
			var e struct {
				Msg string `json:"msg"`
			}
			if json.Unmarshal([]byte(line), &e) == nil && strings.HasPrefix(e.Msg, "job finished") {
				perNode[i]++
			}
		}
	}
	busy := 0
	for _, n := range perNode {
		if n > 0 {
			busy++
		}
	}
	if busy < 2 {
		t.Errorf("jobs finished per node %v: want jobs on more than one node", perNode)
	}
	t.Logf("jobs: %d (by kind %v, by trigger %v, outcomes %v, %d snoozed at least once); River clients %d; finished per node %v",
		len(jobs), byKind, byTrigger, outcomes, snoozed, len(clients), perNode)
}

// --- catalog ---

// mnCheckManifest: one manifest version per committed ingest, adding the
// ingested rows; every merge and every retention removal committed once
// (each partition removed by exactly one change, audited once); retention
// removed exactly the old rows.
func mnCheckManifest(ctx context.Context, t *testing.T, pool *pgxpool.Pool, id int64, name string, e *mnExpect) {
	t.Helper()
	var ingestVersions, ingestRows int64
	if err := pool.QueryRow(ctx, `
		SELECT count(DISTINCT v.version), coalesce(sum(p.row_count), 0)
		FROM timestore.manifest_versions v LEFT JOIN timestore.partitions p
			ON p.dataset_id = v.dataset_id AND p.added_in_version = v.version
		WHERE v.dataset_id = $1 AND v.operation = 'ingest'`, id).Scan(&ingestVersions, &ingestRows); err != nil {
		t.Fatal(err)
	}
	if ingestVersions != e.ingests || ingestRows != e.rows {
		t.Errorf("%s: %d ingest versions adding %d rows; the test committed %d ingests of %d rows", name, ingestVersions, ingestRows, e.ingests, e.rows)
	}

	// Merges: the inputs a compaction version names are exactly the
	// partitions it removed, its one output has their rows, and no
	// partition is the input of two merges.
	rows, err := pool.Query(ctx, `
		SELECT v.version, v.summary->'inputs', v.job_id,
			coalesce((SELECT array_agg(id ORDER BY id) FROM timestore.partitions WHERE dataset_id = v.dataset_id AND removed_in_version = v.version), '{}'),
			coalesce((SELECT sum(row_count) FROM timestore.partitions WHERE dataset_id = v.dataset_id AND removed_in_version = v.version), 0),
			(SELECT count(*) FROM timestore.partitions WHERE dataset_id = v.dataset_id AND added_in_version = v.version),
			coalesce((SELECT sum(row_count) FROM timestore.partitions WHERE dataset_id = v.dataset_id AND added_in_version = v.version), 0)
		FROM timestore.manifest_versions v WHERE v.dataset_id = $1 AND v.operation = 'compaction' ORDER BY v.version`, id)
	if err != nil {
		t.Fatal(err)
	}
	merged := map[int64]int64{}
	merges := 0
	for rows.Next() {
		var version int64
		var inputsJSON []byte
		var jobID *int64
		var removed []int64
		var removedRows, added, addedRows int64
		if err := rows.Scan(&version, &inputsJSON, &jobID, &removed, &removedRows, &added, &addedRows); err != nil {
			t.Fatal(err)
		}
		merges++
		var inputs []int64
		if err := json.Unmarshal(inputsJSON, &inputs); err != nil {
			t.Fatalf("%s version %d: inputs %s: %v", name, version, inputsJSON, err)
		}
		slices.Sort(inputs)
		if !slices.Equal(inputs, removed) || added != 1 || addedRows != removedRows || jobID == nil {
			t.Errorf("%s compaction version %d (job %v): inputs %v, removed %v; %d outputs of %d rows for %d input rows",
				name, version, jobID, inputs, removed, added, addedRows, removedRows)
		}
		for _, p := range inputs {
			if prev, dup := merged[p]; dup {
				t.Errorf("%s: partition %d merged by versions %d and %d", name, p, prev, version)
			}
			merged[p] = version
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	var mergeAudits int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM timestore.audit_log WHERE dataset = $1 AND action = 'compaction.merge'`, name).Scan(&mergeAudits); err != nil {
		t.Fatal(err)
	}
	if mergeAudits != merges || merges == 0 {
		t.Errorf("%s: %d compaction versions, %d compaction.merge audit rows; want the same, more than zero", name, merges, mergeAudits)
	}

	// Retention: the partitions retention versions removed are those of
	// the retention.remove audit rows, each once; their rows are the old
	// rows, all of them.
	var removedIDs, auditedIDs []int64
	var removedRows int64
	if err := pool.QueryRow(ctx, `
		SELECT coalesce(array_agg(p.id ORDER BY p.id), '{}'), coalesce(sum(p.row_count), 0)
		FROM timestore.partitions p JOIN timestore.manifest_versions v
			ON v.dataset_id = p.dataset_id AND v.version = p.removed_in_version
		WHERE p.dataset_id = $1 AND v.operation = 'retention'`, id).Scan(&removedIDs, &removedRows); err != nil {
		t.Fatal(err)
	}
	if err := pool.QueryRow(ctx, `
		SELECT coalesce(array_agg(p ORDER BY p), '{}') FROM timestore.audit_log, unnest(partitions) AS p
		WHERE dataset = $1 AND action = 'retention.remove'`, name).Scan(&auditedIDs); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(removedIDs, auditedIDs) || len(removedIDs) == 0 {
		t.Errorf("%s: retention versions removed partitions %v, retention.remove audited %v", name, removedIDs, auditedIDs)
	}
	if removedRows != e.oldRows {
		t.Errorf("%s: retention removed %d rows; %d old rows were ingested", name, removedRows, e.oldRows)
	}
	var liveRows, liveOld int64
	if err := pool.QueryRow(ctx, `
		SELECT coalesce(sum(row_count), 0), count(*) FILTER (WHERE time_max < now() - interval '30 days')
		FROM timestore.partitions WHERE dataset_id = $1 AND removed_in_version IS NULL`, id).Scan(&liveRows, &liveOld); err != nil {
		t.Fatal(err)
	}
	if liveRows != e.rows-removedRows || liveOld != 0 {
		t.Errorf("%s: %d live rows (%d partitions older than max_age); want %d ingested - %d removed", name, liveRows, liveOld, e.rows, removedRows)
	}
	t.Logf("%s: %d ingests, %d rows; %d merges of %d partitions; retention removed %d partitions, %d rows; %d live rows",
		name, ingestVersions, ingestRows, merges, len(merged), len(removedIDs), removedRows, liveRows)
}

// mnCheckExports: per window, versions 1..n, the last verified and the
// others superseded, none of them over the same partitions twice, their new
// rows adding up to the verified version's rows, which for the kept (mid)
// windows are every row ingested there; each version audited once; the
// verified files are on the export bucket.
func mnCheckExports(ctx context.Context, t *testing.T, pool *pgxpool.Pool, s3c *s3.Client, bucket string, id int64, name string, e *mnExpect, g mnGen) {
	t.Helper()
	rows, err := pool.Query(ctx, `
		SELECT window_start, version, state, row_count, new_rows, fingerprint, keys, manifest_key
		FROM timestore.exports WHERE dataset_id = $1 AND target = 'exports' ORDER BY window_start, version`, id)
	if err != nil {
		t.Fatal(err)
	}
	type version struct {
		n              int
		state, finger  string
		rows, newRows  int64
		keys           []string
		manifestKey    string
		windowStartUTC time.Time
	}
	byWindow := map[time.Time][]version{}
	for rows.Next() {
		var v version
		if err := rows.Scan(&v.windowStartUTC, &v.n, &v.state, &v.rows, &v.newRows, &v.finger, &v.keys, &v.manifestKey); err != nil {
			t.Fatal(err)
		}
		w := v.windowStartUTC.UTC()
		byWindow[w] = append(byWindow[w], v)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	present, err := mnListBucket(ctx, s3c, bucket)
	if err != nil {
		t.Fatal(err)
	}
	versions := 0
	for w, list := range byWindow {
		fingerprints := map[string]int{}
		var sumNew int64
		for i, v := range list {
			versions++
			want := "superseded"
			if i == len(list)-1 {
				want = "verified"
			}
			if v.n != i+1 || v.state != want {
				t.Errorf("%s export of %s: version %d is %s at position %d; want version %d %s", name, w.Format(time.DateOnly), v.n, v.state, i, i+1, want)
			}
			if prev, dup := fingerprints[v.finger]; dup {
				t.Errorf("%s export of %s: versions %d and %d cover the same partitions", name, w.Format(time.DateOnly), prev, v.n)
			}
			fingerprints[v.finger] = v.n
			sumNew += v.newRows
		}
		last := list[len(list)-1]
		if sumNew != last.rows {
			t.Errorf("%s export of %s: versions add %d new rows, the verified version %d holds %d", name, w.Format(time.DateOnly), sumNew, last.n, last.rows)
		}
		for _, k := range append(slices.Clone(last.keys), last.manifestKey) {
			if !present[k] {
				t.Errorf("%s export of %s: %s is not in the export bucket", name, w.Format(time.DateOnly), k)
			}
		}
	}
	exportedMid := 0
	for _, m := range g.mid {
		want := e.windows[m]
		if want == 0 {
			continue
		}
		list := byWindow[m]
		if len(list) == 0 {
			t.Errorf("%s: window %s (%d rows) was never exported", name, m.Format(time.DateOnly), want)
			continue
		}
		exportedMid++
		if got := list[len(list)-1].rows; got != want {
			t.Errorf("%s export of %s: %d rows, %d were ingested", name, m.Format(time.DateOnly), got, want)
		}
	}
	var audited int
	if err := pool.QueryRow(ctx, `
		SELECT count(*) FROM timestore.audit_log WHERE dataset = $1 AND action = 'export.verified'`, name).Scan(&audited); err != nil {
		t.Fatal(err)
	}
	if audited != versions {
		t.Errorf("%s: %d export.verified audit rows for %d export versions", name, audited, versions)
	}
	t.Logf("%s: %d export versions over %d windows (%d kept windows complete)", name, versions, len(byWindow), exportedMid)
}

// mnListBucket returns the keys of a bucket.
func mnListBucket(ctx context.Context, c *s3.Client, bucket string) (map[string]bool, error) {
	keys := map[string]bool{}
	p := s3.NewListObjectsV2Paginator(c, &s3.ListObjectsV2Input{Bucket: aws.String(bucket)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("list bucket %s: %w", bucket, err)
		}
		for _, o := range page.Contents {
			keys[aws.ToString(o.Key)] = true
		}
	}
	return keys, nil
}

func mnBucketName(t *testing.T, bucketURL string) string {
	t.Helper()
	u, err := url.Parse(bucketURL)
	if err != nil {
		t.Fatal(err)
	}
	return u.Host
}

// mnCheckBucket: every partition not purged (live, or removed and still
// restorable) has its object in the bucket; no purged partition's object is
// left, and no object the catalog does not know (the bucket holds exactly
// the unpurged partitions; polled, since replayed ingests clean up after
// answering).
func mnCheckBucket(ctx context.Context, t *testing.T, pool *pgxpool.Pool, s3c *s3.Client, bucket string) {
	t.Helper()
	type part struct {
		id       int64
		key      string
		purged   bool
		objectGo bool
		live     bool
	}
	rows, err := pool.Query(ctx, `
		SELECT id, object_key, purged_at IS NOT NULL, object_deleted_at IS NOT NULL, removed_in_version IS NULL
		FROM timestore.partitions WHERE target = 'remote'`)
	if err != nil {
		t.Fatal(err)
	}
	var parts []part
	for rows.Next() {
		var p part
		if err := rows.Scan(&p.id, &p.key, &p.purged, &p.objectGo, &p.live); err != nil {
			t.Fatal(err)
		}
		parts = append(parts, p)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		present, err := mnListBucket(ctx, s3c, bucket)
		if err != nil {
			t.Fatal(err)
		}
		var problems []string
		want := map[string]bool{}
		live, restorable, purged := 0, 0, 0
		for _, p := range parts {
			switch {
			case !p.purged:
				want[p.key] = true
				if p.live {
					live++
				} else {
					restorable++
				}
				if !present[p.key] {
					problems = append(problems, fmt.Sprintf("partition %d (live %v) has no object %s", p.id, p.live, p.key))
				}
			default:
				purged++
				if !p.objectGo {
					problems = append(problems, fmt.Sprintf("purged partition %d: object deletion still pending", p.id))
				}
				if present[p.key] {
					problems = append(problems, fmt.Sprintf("purged partition %d: object %s still in the bucket", p.id, p.key))
				}
			}
		}
		extra := 0
		for k := range present {
			if !want[k] {
				extra++
				if extra <= 5 {
					problems = append(problems, "object "+k+" is referenced by no unpurged partition")
				}
			}
		}
		if len(problems) == 0 {
			t.Logf("bucket: %d objects = %d live + %d removed, restorable partitions; %d purged partitions' objects deleted",
				len(present), live, restorable, purged)
			if purged == 0 {
				t.Errorf("no partition was purged: the sweeps did nothing")
			}
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("bucket %s does not match the catalog (%d extra objects):\n%s", bucket, extra, strings.Join(problems, "\n"))
			return
		}
		select {
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// --- a lease held on one node, a sweep on another ---

// mnHeld is what the held-lease phase left to check at the end.
type mnHeld struct {
	version    int64
	candidates []int64 // live in version, removed after it: pinned
}

// mnHeldLease opens a query on node 0 whose answer is far larger than the
// socket buffers and reads only its first line: the server blocks writing,
// with the query's lease on manifest version V held. Then compaction and
// retention, triggered through node 1, remove partitions that are live in V;
// once the grace period has passed, a sweep triggered through node 2 must
// keep them (and their objects) because of the lease, and the dry run of a
// sweep reports them kept by the lease. Finally the query is read to its end
// and must return every row of V.
func mnHeldLease(ctx context.Context, t *testing.T, pool *pgxpool.Pool, s3c *s3.Client, bucket string, nodes []*nodetest.Node, name string, id int64, tr *mnTriggers) mnHeld {
	t.Helper()
	start := time.Now()
	// Wait for some data in the old days, which retention will remove.
	mnPoll(ctx, t, 30*time.Second, "old partitions to hold", func() (bool, error) {
		var n int
		err := pool.QueryRow(ctx, `
			SELECT count(*) FROM timestore.partitions
			WHERE dataset_id = $1 AND removed_in_version IS NULL AND time_max < now() - interval '30 days'`, id).Scan(&n)
		return n >= 3, err
	})
	var liveRows int64
	if err := pool.QueryRow(ctx, `
		SELECT coalesce(sum(row_count), 0) FROM timestore.partitions WHERE dataset_id = $1 AND removed_in_version IS NULL`, id).Scan(&liveRows); err != nil {
		t.Fatal(err)
	}
	mult := max(int64(1), (mnHeldRows+liveRows-1)/max(liveRows, 1))
	qctx, qcancel := context.WithCancel(ctx)
	defer qcancel()
	resp, err := nodes[0].Client.Raw(qctx, http.MethodPost, "/v1/datasets/"+name+"/query", http.Header{"Accept": {"text/csv"}},
		client.QueryRequest{SQL: fmt.Sprintf("SELECT ts, host, value FROM %s, range(%d)", name, mult)})
	if err != nil {
		t.Fatalf("held query: %v", err)
	}
	defer resp.Body.Close()
	version, err := strconv.ParseInt(resp.Header.Get("Timestore-Manifest-Version"), 10, 64)
	if err != nil {
		t.Fatalf("held query: Timestore-Manifest-Version: %v", err)
	}
	first := make([]byte, 1)
	if _, err := io.ReadFull(resp.Body, first); err != nil {
		t.Fatalf("held query: %v", err)
	}
	var want int64
	if err := pool.QueryRow(ctx, `
		SELECT coalesce(sum(row_count), 0) FROM timestore.partitions
		WHERE dataset_id = $1 AND added_in_version <= $2 AND (removed_in_version IS NULL OR removed_in_version > $2)`,
		id, version).Scan(&want); err != nil {
		t.Fatal(err)
	}
	want *= mult
	t.Logf("held query on node 0: version %d, %d rows to stream", version, want)

	// Remove partitions live in V (through node 1) until some removal is
	// older than the grace period.
	var candidates []int64
	mnPoll(ctx, t, 30*time.Second, "partitions of the held version removed and past their grace", func() (bool, error) {
		for _, kind := range []string{"retention", "compaction"} {
			res, err := nodes[1].Client.RunMaintenance(ctx, kind, name)
			tr.add(mnTrig{kind: kind, dataset: name, node: 1, res: res, err: err})
			if err != nil {
				return false, err
			}
		}
		rows, err := pool.Query(ctx, `
			SELECT id FROM timestore.partitions
			WHERE dataset_id = $1 AND added_in_version <= $2 AND removed_in_version > $2
				AND removed_at < now() - interval '1500 milliseconds' ORDER BY id`, id, version)
		if err != nil {
			return false, err
		}
		candidates, err = pgx.CollectRows(rows, pgx.RowTo[int64])
		return len(candidates) > 0, err
	})
	removedAfter := time.Since(start)
	var since time.Time
	if err := pool.QueryRow(ctx, `SELECT now()`).Scan(&since); err != nil {
		t.Fatal(err)
	}

	// A sweep through node 2 runs now (a snoozed one is made to run now).
	res, err := nodes[2].Client.RunMaintenance(ctx, "sweep", name)
	tr.add(mnTrig{kind: "sweep", dataset: name, node: 2, res: res, err: err})
	if err != nil {
		t.Fatalf("sweep through node 2: %v", err)
	}
	if res.Duplicate && res.State == "scheduled" {
		if _, err := nodes[2].Client.RetryJob(ctx, res.JobID); err != nil && !client.IsClientError(err) {
			t.Fatalf("run snoozed sweep %d now: %v", res.JobID, err)
		}
	}
	mnPoll(ctx, t, 30*time.Second, fmt.Sprintf("sweep %d to run after %s", res.JobID, since.Format(time.StampMicro)), func() (bool, error) {
		var state string
		var attempted *time.Time
		err := pool.QueryRow(ctx, `SELECT state::text, attempted_at FROM river_job WHERE id = $1`, res.JobID).Scan(&state, &attempted)
		if err != nil {
			return false, err
		}
		if state == "scheduled" && (attempted == nil || attempted.Before(since)) {
			// Snoozed before we looked: make it run now.
			if _, err := nodes[2].Client.RetryJob(ctx, res.JobID); err != nil && !client.IsClientError(err) {
				return false, err
			}
		}
		return attempted != nil && attempted.After(since) && (state == "scheduled" || state == "completed"), nil
	})

	// The lease kept them: not purged, objects in place, and the plan
	// says why.
	var leases int
	if err := pool.QueryRow(ctx, `
		SELECT count(*) FROM timestore.query_leases WHERE dataset_id = $1 AND manifest_version = $2 AND expires_at > now()`,
		id, version).Scan(&leases); err != nil {
		t.Fatal(err)
	}
	if leases == 0 {
		t.Errorf("no lease pins version %d while the held query streams", version)
	}
	var purged []int64
	if err := pool.QueryRow(ctx, `
		SELECT coalesce(array_agg(id), '{}') FROM timestore.partitions WHERE id = ANY($1) AND purged_at IS NOT NULL`,
		candidates).Scan(&purged); err != nil {
		t.Fatal(err)
	}
	if len(purged) > 0 {
		t.Errorf("the sweep purged partitions %v that the held query's version %d still reads", purged, version)
	}
	present, err := mnListBucket(ctx, s3c, bucket)
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	rows, err := pool.Query(ctx, `SELECT object_key FROM timestore.partitions WHERE id = ANY($1)`, candidates)
	if err == nil {
		keys, err = pgx.CollectRows(rows, pgx.RowTo[string])
	}
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if !present[k] {
			t.Errorf("object %s of a partition pinned by the held query is gone", k)
		}
	}
	raw, err := nodes[1].Client.DryRun(ctx, "sweep", name)
	if err != nil {
		t.Fatalf("sweep dry run through node 1: %v", err)
	}
	var plan struct {
		Datasets []struct {
			ID             int64   `json:"id"`
			KeptByLease    int     `json:"kept_by_lease"`
			PinnedVersions []int64 `json:"pinned_versions"`
		} `json:"datasets"`
	}
	if err := json.Unmarshal(raw, &plan); err != nil {
		t.Fatalf("sweep plan %s: %v", raw, err)
	}
	keptByLease := -1
	for _, d := range plan.Datasets {
		if d.ID == id {
			keptByLease = d.KeptByLease
			if d.KeptByLease < len(candidates) || !slices.Contains(d.PinnedVersions, version) {
				t.Errorf("sweep plan of %s: %d kept by lease, pinned versions %v; want at least %d kept, version %d pinned",
					name, d.KeptByLease, d.PinnedVersions, len(candidates), version)
			}
		}
	}
	if keptByLease < 0 {
		t.Errorf("sweep plan has no entry for %s: %s", name, raw)
	}

	sweptAfter := time.Since(start)
	// Read the held query to its end: every row of version V, no error.
	lines, err := mnCountLines(resp.Body)
	if err != nil {
		t.Errorf("held query: reading the rest: %v", err)
	}
	if msg := resp.Trailer.Get("Timestore-Error"); msg != "" {
		t.Errorf("held query failed while streaming: %s", msg)
	}
	if got := lines - 1; got != want {
		t.Errorf("held query of version %d: %d rows, want %d", version, got, want)
	}
	t.Logf("held lease: version %d (query on node 0), %d pinned partitions kept by sweep %d (triggered through node 2, run by node %v; plan: %d kept by lease); %d rows streamed; removed after %.1fs, swept after %.1fs, read after %.1fs",
		version, len(candidates), res.JobID, mnJobNodes(nodes, res.JobID), keptByLease, lines-1,
		removedAfter.Seconds(), sweptAfter.Seconds(), time.Since(start).Seconds())
	return mnHeld{version: version, candidates: candidates}
}

// mnJobNodes returns the nodes whose workers logged the end of an attempt
// of job id.
func mnJobNodes(nodes []*nodetest.Node, id int64) []int {
	var out []int
	for i, n := range nodes {
		for _, line := range strings.Split(n.Logs(), "\n") {
			var e struct {
				Msg   string `json:"msg"`
				JobID int64  `json:"job_id"`
			}
			if json.Unmarshal([]byte(line), &e) == nil && e.JobID == id &&
				(strings.HasPrefix(e.Msg, "job finished") || strings.HasPrefix(e.Msg, "job did its work")) {
				out = append(out, i)
				break
			}
		}
	}
	return out
}

// mnCheckHeldAfter: once the held query ended, the partitions it pinned
// were purged and their objects deleted.
func mnCheckHeldAfter(ctx context.Context, t *testing.T, pool *pgxpool.Pool, s3c *s3.Client, bucket string, h mnHeld) {
	t.Helper()
	var notPurged []int64
	if err := pool.QueryRow(ctx, `
		SELECT coalesce(array_agg(id), '{}') FROM timestore.partitions WHERE id = ANY($1) AND object_deleted_at IS NULL`,
		h.candidates).Scan(&notPurged); err != nil {
		t.Fatal(err)
	}
	if len(notPurged) > 0 {
		t.Errorf("partitions %v, pinned by the held query until it ended, were not swept afterwards", notPurged)
	}
	present, err := mnListBucket(ctx, s3c, bucket)
	if err != nil {
		t.Fatal(err)
	}
	rows, err := pool.Query(ctx, `SELECT object_key FROM timestore.partitions WHERE id = ANY($1)`, h.candidates)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if present[k] {
			t.Errorf("object %s, pinned by the held query until it ended, is still in the bucket", k)
		}
	}
}

// mnCountLines counts the newlines left in r.
func mnCountLines(r io.Reader) (int64, error) {
	buf := make([]byte, 256<<10)
	var n int64
	for {
		k, err := r.Read(buf)
		for _, b := range buf[:k] {
			if b == '\n' {
				n++
			}
		}
		if errors.Is(err, io.EOF) {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}

// mnPoll calls cond until it reports true, failing the test on an error or
// after timeout.
func mnPoll(ctx context.Context, t *testing.T, timeout time.Duration, what string, cond func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, err := cond()
		if err != nil {
			t.Fatalf("waiting for %s: %v", what, err)
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s within %s", what, timeout)
		}
		select {
		case <-ctx.Done():
			t.Fatalf("waiting for %s: %v", what, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}
