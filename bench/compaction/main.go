// Command compaction measures timestore's compaction against raw DuckDB on
// the same files: 200 small partitions of 10k rows (ts, series, value), 2M
// rows in one day window, merged into one time-sorted zstd Parquet file.
//
// timestore's time is Compactor.Run: read the manifest, plan, merge with
// DuckDB, verify the row count, take the statistics, upload to the local
// target and commit the manifest change. Raw DuckDB's is
// COPY (SELECT * FROM read_parquet([...]) ORDER BY ts) TO 'x.parquet'
// (FORMAT parquet, COMPRESSION zstd) over the same 200 files, in the same
// run. engine.Merge alone is reported too.
//
// Two layouts of the 200 ingests are measured: "sequential", each file a
// successive slice of the day (rows arriving in time order, the usual case:
// the files do not overlap and timestore concatenates them without a sort),
// and "interleaved", every file spanning the whole day (the worst case:
// timestore must sort, like raw DuckDB).
//
// Each run ingests a fresh dataset (not timed), reads the inputs once so
// that they are in the page cache, warms both DuckDB instances up with an
// untimed merge each, then times the three in an order that alternates
// between runs. The
// machine may be shared: run it several times and compare best and median.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"log"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	_ "github.com/duckdb/duckdb-go/v2"

	"timestore/bench/internal/benchenv"
	"timestore/internal/catalog"
	"timestore/internal/client"
	"timestore/internal/compaction"
	"timestore/internal/policy"
)

var (
	files  = flag.Int("files", 200, "small partitions to merge")
	rows   = flag.Int("rows", 10_000, "rows per partition")
	runs   = flag.Int("runs", 5, "runs per layout; the best and the median are reported")
	layout = flag.String("layout", "both", "sequential, interleaved or both")
)

// result collects the timings of one layout.
type result struct {
	layout                  string
	raw, merge, timestore   []time.Duration
	phases                  []map[string]float64
	inputBytes, outputBytes int64
	rawBytes                int64
}

func main() {
	flag.Parse()
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "timestore-bench-compaction-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	env, err := benchenv.Start(ctx, filepath.Join(dir, "data"), nil)
	if err != nil {
		log.Fatal(err)
	}
	defer env.Close(ctx)
	db, err := benchenv.DuckDB()
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	srv := env.Server
	work := filepath.Join(dir, "work")
	if err := os.MkdirAll(work, 0o755); err != nil {
		log.Fatal(err)
	}
	compactor := compaction.New(compaction.Options{
		Store: srv.Store, Targets: srv.Targets, Cache: srv.Cache, Engine: srv.Engine, TempDir: work,
	})
	local, err := srv.Targets.Get("local")
	if err != nil {
		log.Fatal(err)
	}

	layouts := []string{"sequential", "interleaved"}
	if *layout != "both" {
		layouts = []string{*layout}
	}
	total := int64(*files * *rows)
	fmt.Printf("machine: %s\n", benchenv.Machine())
	fmt.Printf("input: %d partitions × %d rows = %d rows in one day window; %d runs per layout\n\n", *files, *rows, total, *runs)
	var results []result
	for _, l := range layouts {
		csvs := make([]string, *files)
		day := time.Date(2024, 3, 1, 0, 0, 0, 0, time.UTC)
		step := 24 * time.Hour / time.Duration(*files**rows)
		for i := range csvs {
			csvs[i] = filepath.Join(dir, fmt.Sprintf("%s-%03d.csv", l, i))
			if err := generate(csvs[i], l, day, step, i); err != nil {
				log.Fatal(err)
			}
		}
		res := result{layout: l}
		for run := 0; run < *runs; run++ {
			name := fmt.Sprintf("bench_%s_%d", l, run)
			if _, err := env.Client.CreateDataset(ctx, client.CreateDataset{
				Name: name, TimeColumn: "ts", Partition: "day",
				Columns: []client.Column{{Name: "ts", Type: "timestamp"}, {Name: "series", Type: "varchar"}, {Name: "value", Type: "double"}},
			}); err != nil {
				log.Fatal(err)
			}
			// One group: a target far above the 200 inputs.
			if _, err := srv.Store.UpdatePolicy(ctx, name, policy.Policy{Compaction: &policy.Compaction{TargetFileBytes: 8 << 30, MinInputFiles: 4}}, "bench"); err != nil {
				log.Fatal(err)
			}
			for _, p := range csvs {
				f, err := os.Open(p)
				if err != nil {
					log.Fatal(err)
				}
				_, err = env.Client.Ingest(ctx, name, "csv", f, "")
				f.Close()
				if err != nil {
					log.Fatal(err)
				}
			}
			parts, err := srv.Store.Partitions(ctx, name, catalog.StateLive)
			if err != nil {
				log.Fatal(err)
			}
			if len(parts) != *files {
				log.Fatalf("%d partitions, want %d", len(parts), *files)
			}
			ds, err := srv.Store.GetDataset(ctx, name)
			if err != nil {
				log.Fatal(err)
			}
			paths := make([]string, len(parts))
			quoted := make([]string, len(parts))
			res.inputBytes = 0
			for i, p := range parts {
				paths[i] = filepath.Join(local.LocalDir, filepath.FromSlash(p.Key))
				quoted[i] = "'" + paths[i] + "'"
				res.inputBytes += p.SizeBytes
			}
			// Settle: the inputs in the page cache for every contender, and
			// no garbage left over from the ingest.
			for _, p := range paths {
				if _, err := os.ReadFile(p); err != nil {
					log.Fatal(err)
				}
			}
			runtime.GC()

			raw := func() {
				out := filepath.Join(dir, "raw.parquet")
				start := time.Now()
				if _, err := db.ExecContext(ctx, fmt.Sprintf("COPY (SELECT * FROM read_parquet([%s]) ORDER BY ts) TO '%s' (FORMAT parquet, COMPRESSION zstd)",
					strings.Join(quoted, ", "), out)); err != nil {
					log.Fatal(err)
				}
				res.raw = append(res.raw, time.Since(start))
				st, _ := os.Stat(out)
				res.rawBytes = st.Size()
				os.Remove(out)
			}
			merge := func() {
				out := filepath.Join(dir, "merge.parquet")
				start := time.Now()
				pf, err := srv.Engine.Merge(ctx, ds, paths, out)
				if err != nil {
					log.Fatal(err)
				}
				res.merge = append(res.merge, time.Since(start))
				if pf.RowCount != total {
					log.Fatalf("merged %d rows, want %d", pf.RowCount, total)
				}
				os.Remove(out)
			}
			timestore := func() {
				start := time.Now()
				jobID := int64(run + 1)
				r, err := compactor.Run(ctx, name, compaction.RunOptions{JobID: &jobID, Actor: "bench"})
				if err != nil {
					log.Fatal(err)
				}
				res.timestore = append(res.timestore, time.Since(start))
				out := r.Summary()
				if out.Merges != 1 || out.Rows != total {
					log.Fatalf("compaction did %v merges of %v rows, want 1 of %d", out.Merges, out.Rows, total)
				}
				res.outputBytes = out.OutputBytes
				sec := out.Merged[0].Seconds
				res.phases = append(res.phases, map[string]float64{"fetch": sec.Fetch, "merge": sec.Merge, "upload": sec.Upload, "commit": sec.Commit})
			}
			// Untimed warm-ups of both DuckDB instances: whatever is measured
			// first after the ingest runs markedly slower on the test
			// machines (VMs).
			raw()
			res.raw = res.raw[:len(res.raw)-1]
			merge()
			res.merge = res.merge[:len(res.merge)-1]
			order := []func(){raw, merge, timestore}
			if run%2 == 1 {
				slices.Reverse(order)
			}
			for _, f := range order {
				f()
			}
			p := res.phases[run]
			fmt.Fprintf(os.Stderr, "%s run %d: timestore %.3fs (fetch %.3f, merge %.3f, upload %.3f, commit %.3f), engine.Merge %.3fs, raw %.3fs\n",
				l, run+1, res.timestore[run].Seconds(), p["fetch"], p["merge"], p["upload"], p["commit"], res.merge[run].Seconds(), res.raw[run].Seconds())
		}
		results = append(results, res)
	}

	for _, res := range results {
		mb := float64(res.inputBytes) / 1e6
		fmt.Printf("### %s: %.1f MB of input Parquet → %.1f MB (raw DuckDB's output: %.1f MB)\n\n", res.layout, mb, float64(res.outputBytes)/1e6, float64(res.rawBytes)/1e6)
		fmt.Println("| measurement | best s | median s | rows/s (best) | input MB/s (best) | ÷ raw (best) | ÷ raw (median) |")
		fmt.Println("|---|---|---|---|---|---|---|")
		rawBest, rawMed := slices.Min(res.raw), median(res.raw)
		for _, m := range []struct {
			name  string
			times []time.Duration
		}{
			{"raw DuckDB `COPY … ORDER BY ts`", res.raw},
			{"`engine.Merge`", res.merge},
			{"timestore compaction (`Compactor.Run`)", res.timestore},
		} {
			best, med := slices.Min(m.times), median(m.times)
			fmt.Printf("| %s | %.3f | %.3f | %.2fM | %.1f | %.2f× | %.2f× |\n", m.name, best.Seconds(), med.Seconds(),
				float64(total)/best.Seconds()/1e6, mb/best.Seconds(), best.Seconds()/rawBest.Seconds(), med.Seconds()/rawMed.Seconds())
		}
		ratios := make([]time.Duration, len(res.raw))
		for i := range res.raw {
			ratios[i] = time.Duration(float64(time.Second) * res.timestore[i].Seconds() / res.raw[i].Seconds())
		}
		fmt.Printf("\ntimestore ÷ raw within each run (the pairs share the machine's load): median %.2f×, best %.2f×\n",
			median(ratios).Seconds(), slices.Min(ratios).Seconds())
		fmt.Print("timestore phases (median s):")
		for _, k := range []string{"fetch", "merge", "upload", "commit"} {
			v := make([]time.Duration, len(res.phases))
			for i, p := range res.phases {
				v[i] = time.Duration(p[k] * float64(time.Second))
			}
			fmt.Printf(" %s %.3f", k, median(v).Seconds())
		}
		fmt.Print("\n\n")
	}
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

// generate writes the rows of file i: in "sequential" the i-th slice of the
// day, in "interleaved" every files-th instant of the whole day; in time
// order either way. 1000 series, readings with two decimals around 50.
func generate(path, layout string, day time.Time, step time.Duration, i int) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	rng := rand.New(rand.NewPCG(uint64(i), 2024))
	w := bufio.NewWriterSize(f, 1<<20)
	fmt.Fprintln(w, "ts,series,value")
	for j := 0; j < *rows; j++ {
		k := i**rows + j
		if layout == "interleaved" {
			k = j**files + i
		}
		ts := day.Add(time.Duration(k) * step).Format("2006-01-02 15:04:05.000000")
		fmt.Fprintf(w, "%s,host-%04d,%.2f\n", ts, rng.IntN(1000), 50+10*rng.NormFloat64())
	}
	if err := w.Flush(); err != nil {
		return err
	}
	return f.Close()
}
