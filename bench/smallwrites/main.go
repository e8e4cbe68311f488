// Command smallwrites measures small, frequent writes (issue 14): clients
// sending batches of recent rows (ts, host, value) at once, to timestore
// (NDJSON over HTTP on a loopback port, to an in-process server with its
// job workers running, as `timestore serve` runs) and to Postgres (one
// `COPY` per batch into one table with an index on ts, in a database the
// program creates on the local Postgres and drops at the end), the same
// batches to both, in one run.
//
// For each batch size and system it reports rows/s, requests/s, request
// latency p50/p99, the Parquet files the load created, and the time of
// `SELECT count(*)` and of a per-minute aggregate right after the load
// (median of the runs given by -query-runs, the first one included); for
// timestore also after compaction, triggered through the admin API and
// waited for.
//
// During each of timestore's loads it also records where a request's time
// goes, from the server's own spans (HTTP, DuckDB, storage), and how long
// requests wait for the dataset row lock of the manifest commit, from
// pg_stat_activity sampled every 5 ms; -cpuprofile writes a CPU profile of
// the process during the load with the largest batches. See
// docs/benchmarks.md, "Small, frequent writes".
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"timestore/bench/internal/benchenv"
)

var (
	duration   = flag.Duration("duration", 20*time.Second, "how long each load runs")
	clients    = flag.Int("clients", 8, "concurrent clients")
	batches    = flag.String("batches", "1000,10", "batch sizes (rows per request), comma-separated")
	spread     = flag.Duration("spread", 10*time.Minute, "rows' timestamps are uniform over this much time before now (10m: one hourly window, two in the first 10 minutes of an hour)")
	unsorted   = flag.Bool("unsorted", false, "rows of a batch in random order instead of time order")
	queryRuns  = flag.Int("query-runs", 5, "runs of each query after a load; the median is reported")
	cpuProfile = flag.String("cpuprofile", "", "write a CPU profile of the process during timestore's load with the largest batch size to this file")
)

// Queries run after each load: timestore's SQL names the dataset, Postgres's
// the table, in place of %s.
const (
	countSQL        = "SELECT count(*) FROM %s"
	tsPerMinuteSQL  = "SELECT time_bucket(INTERVAL '1 minute', ts) AS minute, count(*) AS n, avg(value) AS avg, max(value) AS max FROM %s GROUP BY minute ORDER BY minute"
	pgPerMinuteSQL  = "SELECT date_trunc('minute', ts) AS minute, count(*) AS n, avg(value) AS avg, max(value) AS max FROM %s GROUP BY minute ORDER BY minute"
	lockSampleEvery = 5 * time.Millisecond
)

// queryTimes is the median time of the two queries, and what they answered.
type queryTimes struct {
	count, perMinute time.Duration
	counted          string
	minutes          int
}

// caseResult is one batch size's measurements.
type caseResult struct {
	size                          int
	ts, pg                        loadResult
	objects                       int
	tsQueries, pgQueries, compact queryTimes
	compactTook                   time.Duration
	// tsCPU is the process's CPU time during timestore's load: the server,
	// its DuckDB threads and the in-process clients.
	tsCPU time.Duration
	// phases, phaseRequests, filesPerRequest and locks describe
	// timestore's requests during its load.
	phases               []phaseStats
	phaseRequests        int
	filesPerRequest      float64
	locks                *lockSampler
	merges, objectsAfter int
}

func main() {
	flag.Parse()
	sizes, err := parseSizes(*batches)
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "timestore-bench-smallwrites-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	phases := newPhaseRecorder()
	ts, err := startTimestore(ctx, filepath.Join(dir, "data"), phases)
	if err != nil {
		log.Fatal(err)
	}
	defer ts.stop()
	pg, err := startPostgres(ctx, *clients)
	if err != nil {
		log.Fatal(err)
	}
	defer pg.close()
	var pgVersion string
	if err := pg.pool.QueryRow(ctx, "SHOW server_version").Scan(&pgVersion); err != nil {
		log.Fatal(err)
	}

	largest := slices.Max(sizes)
	var results []caseResult
	for _, size := range sizes {
		res := caseResult{size: size}
		shape := batchShape{size: size, spread: *spread, sorted: !*unsorted}
		name := fmt.Sprintf("small_%d", size)
		if err := ts.createDataset(ctx, name); err != nil {
			log.Fatal(err)
		}
		if err := pg.createTable(ctx, name); err != nil {
			log.Fatal(err)
		}

		// timestore's load, with its phases and row-lock samples.
		before, err := ts.countObjects()
		if err != nil {
			log.Fatal(err)
		}
		res.locks = &lockSampler{}
		stopDetail := startDetail(ctx, ts, phases, res.locks, size == largest)
		cpu0 := cpuTime()
		res.ts, err = runLoad(ctx, *clients, shape, *duration, func(ctx context.Context, _ int, rows []row) error {
			return ts.ingest(ctx, name, rows)
		})
		res.tsCPU = cpuTime() - cpu0
		stopDetail()
		res.phases, res.phaseRequests = phases.summary()
		res.filesPerRequest = phases.filesPerRequest()
		if err != nil {
			log.Fatalf("timestore load of %d-row batches: %v", size, err)
		}
		after, err := ts.countObjects()
		if err != nil {
			log.Fatal(err)
		}
		res.objects = after - before
		res.tsQueries = timeQueries(func(sql string) (int, string, error) { return ts.query(ctx, name, sql) }, name, tsPerMinuteSQL)
		res.compactTook, res.merges, err = ts.compact(ctx, name)
		if err != nil {
			log.Fatal(err)
		}
		parts, err := ts.client.Partitions(ctx, name, "live")
		if err != nil {
			log.Fatal(err)
		}
		res.objectsAfter = len(parts)
		res.compact = timeQueries(func(sql string) (int, string, error) { return ts.query(ctx, name, sql) }, name, tsPerMinuteSQL)
		if res.tsQueries.counted != strconv.FormatInt(res.ts.rows, 10) || res.compact.counted != res.tsQueries.counted {
			log.Fatalf("timestore counted %s rows after the load and %s after compaction; %d were acknowledged",
				res.tsQueries.counted, res.compact.counted, res.ts.rows)
		}

		// Postgres's load: the same batches.
		res.pg, err = runLoad(ctx, *clients, shape, *duration, func(ctx context.Context, _ int, rows []row) error {
			return pg.copy(ctx, name, rows)
		})
		if err != nil {
			log.Fatalf("Postgres load of %d-row batches: %v", size, err)
		}
		res.pgQueries = timeQueries(func(sql string) (int, string, error) { return pg.query(ctx, sql) }, name, pgPerMinuteSQL)
		if res.pgQueries.counted != strconv.FormatInt(res.pg.rows, 10) {
			log.Fatalf("Postgres counted %s rows; %d were copied", res.pgQueries.counted, res.pg.rows)
		}
		fmt.Fprintf(os.Stderr, "%d-row batches: timestore %.0f rows/s, Postgres %.0f rows/s\n", size, res.ts.rowsPerSec(), res.pg.rowsPerSec())
		results = append(results, res)
	}
	report(results, pgVersion)
}

// startDetail starts what is recorded during a timestore load: the phase
// spans (from scratch), the lock sampler and, with -cpuprofile and profile
// set, the CPU profile. The returned function stops them.
func startDetail(ctx context.Context, ts *timestore, phases *phaseRecorder, locks *lockSampler, profile bool) func() {
	phases.reset()
	phases.recording.Store(true)
	sctx, cancel := context.WithCancel(ctx)
	sampled := make(chan error, 1)
	go func() { sampled <- locks.run(sctx, ts.dbURL, lockSampleEvery) }()
	var prof *os.File
	if *cpuProfile != "" && profile {
		var err error
		if prof, err = os.Create(*cpuProfile); err != nil {
			log.Fatal(err)
		}
		if err := pprof.StartCPUProfile(prof); err != nil {
			log.Fatal(err)
		}
	}
	return func() {
		if prof != nil {
			pprof.StopCPUProfile()
			if err := prof.Close(); err != nil {
				log.Fatal(err)
			}
		}
		phases.recording.Store(false)
		cancel()
		if err := <-sampled; err != nil {
			log.Fatalf("lock sampler: %v", err)
		}
	}
}

// timeQueries runs the count and the per-minute aggregate -query-runs times
// each, and returns their medians and answers.
func timeQueries(run func(sql string) (int, string, error), table, perMinute string) queryTimes {
	var q queryTimes
	timeOne := func(sql string) (time.Duration, int, string) {
		var ds []time.Duration
		var n int
		var first string
		for range max(1, *queryRuns) {
			start := time.Now()
			var err error
			n, first, err = run(sql)
			ds = append(ds, time.Since(start))
			if err != nil {
				log.Fatalf("%s: %v", sql, err)
			}
		}
		slices.Sort(ds)
		return ds[len(ds)/2], n, first
	}
	q.count, _, q.counted = timeOne(fmt.Sprintf(countSQL, table))
	q.perMinute, q.minutes, _ = timeOne(fmt.Sprintf(perMinute, table))
	return q
}

// cpuTime is the CPU time (user + system, all threads) the process has used
// so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func parseSizes(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("-batches %q: want positive row counts separated by commas, e.g. 1000,10", s)
		}
		out = append(out, n)
	}
	return out, nil
}

func ms(d time.Duration) string {
	return strconv.FormatFloat(float64(d.Microseconds())/1000, 'f', 1, 64)
}

// report prints the markdown tables.
func report(results []caseResult, pgVersion string) {
	fmt.Printf("machine: %s, Postgres %s\n", benchenv.Machine(), pgVersion)
	order := "in time order"
	if *unsorted {
		order = "in random order"
	}
	fmt.Printf("%d clients, %s per load, rows spread over the %s before the request (hourly windows), %s within a batch, %d hosts; queries: median of %d runs right after the load\n\n",
		*clients, *duration, *spread, order, hosts, *queryRuns)
	for _, r := range results {
		fmt.Printf("### %d-row batches\n\n", r.size)
		fmt.Println("| measured | timestore | Postgres `COPY` | timestore ÷ Postgres |")
		fmt.Println("|---|---|---|---|")
		fmt.Printf("| rows/s | %.0f | %.0f | %.2f× |\n", r.ts.rowsPerSec(), r.pg.rowsPerSec(), r.ts.rowsPerSec()/r.pg.rowsPerSec())
		fmt.Printf("| requests/s | %.1f | %.1f | %.2f× |\n", r.ts.reqsPerSec(), r.pg.reqsPerSec(), r.ts.reqsPerSec()/r.pg.reqsPerSec())
		fmt.Printf("| latency p50 / p99 ms | %s / %s | %s / %s | |\n", ms(r.ts.percentile(50)), ms(r.ts.percentile(99)), ms(r.pg.percentile(50)), ms(r.pg.percentile(99)))
		fmt.Printf("| requests (rows) in the load | %d (%d) | %d (%d) | |\n", r.ts.requests, r.ts.rows, r.pg.requests, r.pg.rows)
		fmt.Printf("| process CPU per request (server, DuckDB, in-process clients), ms | %s (%.2f cores busy) | – | |\n", ms(r.tsCPU/time.Duration(max(1, r.ts.requests))), r.tsCPU.Seconds()/r.ts.elapsed.Seconds())
		fmt.Printf("| Parquet files created by the load | %d | – | |\n", r.objects)
		fmt.Printf("| `SELECT count(*)` right after, ms | %s | %s | %.2f× |\n", ms(r.tsQueries.count), ms(r.pgQueries.count), r.tsQueries.count.Seconds()/r.pgQueries.count.Seconds())
		fmt.Printf("| per-minute aggregate (%d minutes) right after, ms | %s | %s | %.2f× |\n", r.tsQueries.minutes, ms(r.tsQueries.perMinute), ms(r.pgQueries.perMinute), r.tsQueries.perMinute.Seconds()/r.pgQueries.perMinute.Seconds())
		fmt.Printf("| compaction (admin API jobs, waited for): merges, live files after, time | %d, %d, %.1f s | – | |\n", r.merges, r.objectsAfter, r.compactTook.Seconds())
		fmt.Printf("| `SELECT count(*)` after compaction, ms | %s (%.1f× faster than right after) | – | |\n", ms(r.compact.count), r.tsQueries.count.Seconds()/r.compact.count.Seconds())
		fmt.Printf("| per-minute aggregate after compaction, ms | %s (%.1f× faster than right after) | – | |\n\n", ms(r.compact.perMinute), r.tsQueries.perMinute.Seconds()/r.compact.perMinute.Seconds())
	}

	for _, r := range results {
		breakdown(r)
	}
}

// breakdown prints where the time of one batch size's timestore requests went.
func breakdown(r caseResult) {
	if r.phaseRequests == 0 {
		return
	}
	fmt.Printf("### Where a %d-row ingest's time goes (%d requests, %.2f files each, %d clients)\n\n", r.size, r.phaseRequests, r.filesPerRequest, *clients)
	fmt.Println("| phase | mean ms | median ms |")
	fmt.Println("|---|---|---|")
	for _, s := range r.phases {
		fmt.Printf("| %s | %s | %s |\n", s.name, ms(s.mean), ms(s.median))
	}
	var sum time.Duration
	for _, d := range r.ts.latencies {
		sum += d
	}
	fmt.Printf("| the request as the client saw it (encoding, HTTP over loopback) | %s | %s |\n",
		ms(sum/time.Duration(max(1, len(r.ts.latencies)))), ms(r.ts.percentile(50)))
	reqRate := r.ts.reqsPerSec()
	locks := r.locks
	wait := time.Duration(locks.meanWaiting() / reqRate * float64(time.Second))
	fmt.Printf("\nThe dataset row lock (pg_stat_activity every %s, %d samples): on average %.2f requests wait for it, so by Little's law a request waits %s ms (part of its commit phase above). Backends in a write transaction, by what they are doing (mean number at a sample; the sum is the fraction of time the lock is held):\n\n",
		lockSampleEvery, locks.samples, locks.meanWaiting(), ms(wait))
	fmt.Println("| state · wait event · statement | mean backends |")
	fmt.Println("|---|---|")
	keys, means := locks.holderStates()
	var held float64
	for i, k := range keys {
		held += means[i]
		if means[i] >= 0.005 {
			fmt.Printf("| %s | %.3f |\n", k, means[i])
		}
	}
	fmt.Printf("| all: the lock is held %.0f%% of the time, %s ms per commit | %.3f |\n\n", 100*held, ms(time.Duration(held/reqRate*float64(time.Second))), held)
}
