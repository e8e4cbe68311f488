// Command export measures timestore's export of cold windows against the
// raw work it does: a dataset of 5 daily windows of 1M rows each (ingested
// first, in 4 interleaved requests per day, so every window is 4 partitions
// whose rows must be merged by time) is exported with export.Exporter.Run,
// and, in the same run, the same windows are written by raw DuckDB
//
//	COPY (SELECT * FROM read_parquet([the window's partition files]) ORDER BY ts)
//	TO 'x.parquet' (FORMAT parquet, COMPRESSION zstd)
//
// and the resulting files uploaded with storage.Target.PutFile to the same
// kind of target. timestore's export wall time includes its catalog work
// (plan, leased snapshot, records, audit), the read-back verification of
// every uploaded object and the _manifest.json. Target: at most 1.2× the
// raw sum.
package main

import (
	"bufio"
	"bytes"
	"context"
	"flag"
	"fmt"
	"log"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	_ "github.com/duckdb/duckdb-go/v2"
	"github.com/prometheus/client_golang/prometheus"

	"timestore/bench/internal/benchenv"
	"timestore/internal/catalog"
	"timestore/internal/client"
	"timestore/internal/export"
	"timestore/internal/policy"
	"timestore/internal/storage"
	"timestore/internal/testutil/s3test"
)

var day0 = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

func main() {
	days := flag.Int("days", 5, "daily windows")
	rows := flag.Int("rows", 1_000_000, "rows per day")
	chunks := flag.Int("chunks", 4, "ingest requests (partitions) per day, interleaved in time")
	runs := flag.Int("runs", 5, "runs per target; medians are reported")
	noS3 := flag.Bool("no-s3", false, "skip the S3 target")
	flag.Parse()
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "timestore-bench-export-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	// One export target per target kind and run, so that every run exports
	// every window afresh (exports are recorded per target).
	targets := map[string]string{}
	kinds := []string{"local"}
	for r := range *runs {
		d := filepath.Join(dir, fmt.Sprintf("exp-local-%d", r))
		if err := os.MkdirAll(d, 0o755); err != nil {
			log.Fatal(err)
		}
		targets[fmt.Sprintf("exp_local_%d", r)] = (&url.URL{Scheme: "file", Path: d}).String()
	}
	if !*noS3 {
		s3test.SetCredentialsEnv()
		srv := s3test.StartShared()
		defer s3test.StopShared()
		if srv.Endpoint == "" {
			log.Fatalf("start versitygw (install it with %s, or pass -no-s3)", s3test.InstallCommand)
		}
		for r := range *runs {
			bucket := fmt.Sprintf("bench-export-%d-%d", r, time.Now().UnixNano())
			if _, err := srv.Client().CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(bucket)}); err != nil {
				log.Fatal(err)
			}
			targets[fmt.Sprintf("exp_s3_%d", r)] = srv.URL(bucket)
		}
		kinds = append(kinds, "s3")
	}
	env, err := benchenv.Start(ctx, filepath.Join(dir, "data"), targets)
	if err != nil {
		log.Fatal(err)
	}
	defer env.Close(ctx)
	db, err := benchenv.DuckDB()
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()

	fmt.Printf("machine: %s\n", benchenv.Machine())
	fmt.Printf("data: %d daily windows × %d rows (ts, series, value, n), %d partitions per window; %d runs per target\n",
		*days, *rows, *chunks, *runs)
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		fmt.Printf("load average at start: %s", b)
	}

	const name = "bench"
	if _, err := env.Client.CreateDataset(ctx, client.CreateDataset{
		Name: name, TimeColumn: "ts", Partition: "day",
		Columns: []client.Column{{Name: "ts", Type: "timestamp"}, {Name: "series", Type: "varchar"},
			{Name: "value", Type: "double"}, {Name: "n", Type: "bigint"}},
	}); err != nil {
		log.Fatal(err)
	}
	start := time.Now()
	for d := range *days {
		for c := range *chunks {
			body := generate(d, c, *chunks, *rows / *chunks)
			if _, err := env.Client.Ingest(ctx, name, "csv", bytes.NewReader(body), ""); err != nil {
				log.Fatal(err)
			}
		}
	}
	fmt.Printf("ingested %d rows in %s\n\n", *days**rows, time.Since(start).Round(time.Millisecond))

	x, err := export.New(export.Options{
		Store: env.Server.Store, Targets: env.Server.Targets, Cache: env.Server.Cache, Engine: env.Server.Engine,
		TempDir: filepath.Join(dir, "tmp"), Registerer: prometheus.NewRegistry(),
		Now:       func() time.Time { return day0.AddDate(0, 0, *days+2) },
		RunBudget: time.Hour,
	})
	if err != nil {
		log.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "tmp"), 0o755); err != nil {
		log.Fatal(err)
	}
	parts, err := env.Server.Store.Partitions(ctx, name, catalog.StateLive)
	if err != nil {
		log.Fatal(err)
	}
	local, err := env.Server.Targets.Get(storage.LocalTargetName)
	if err != nil {
		log.Fatal(err)
	}
	byDay := map[int][]string{}
	for _, p := range parts {
		d := int(p.WindowStart.Sub(day0) / (24 * time.Hour))
		byDay[d] = append(byDay[d], filepath.Join(local.LocalDir, filepath.FromSlash(p.Key)))
	}

	fmt.Println("| target | run | timestore export s | per window s (min / median / max) | raw DuckDB COPY s | plain upload s | raw sum s | wall ratio | timestore CPU s | raw CPU s | CPU ratio |")
	fmt.Println("|---|---|---|---|---|---|---|---|---|---|---|")
	type result struct {
		ts, copy, upload, tsCPU, rawCPU time.Duration
	}
	for _, kind := range kinds {
		var results []result
		var windows []time.Duration
		for r := range *runs {
			tname := fmt.Sprintf("exp_%s_%d", kind, r)
			target, err := env.Server.Targets.Get(tname)
			if err != nil {
				log.Fatal(err)
			}
			var res result
			var per []time.Duration
			timestore := func() {
				if _, err := env.Server.Store.UpdatePolicy(ctx, name, policy.Policy{Export: &policy.Export{
					Target: tname, After: policy.Duration(24 * time.Hour), Window: "day",
				}}, "bench"); err != nil {
					log.Fatal(err)
				}
				c0, t0 := cpuTime(), time.Now()
				out, err := x.Run(ctx, name, export.RunOptions{Actor: "bench"})
				res.ts, res.tsCPU = time.Since(t0), cpuTime()-c0
				if err != nil {
					log.Fatal(err)
				}
				if len(out.Exported) != *days || out.Rows != int64(*days**rows) {
					log.Fatalf("exported %d windows, %d rows; want %d, %d", len(out.Exported), out.Rows, *days, *days**rows)
				}
				for _, w := range out.Exported {
					per = append(per, time.Duration(w.Seconds*float64(time.Second)))
				}
			}
			// raw DuckDB COPY of each window, then a plain upload of the files
			raw := func() {
				c0 := cpuTime()
				var outs []string
				for d := range *days {
					out := filepath.Join(dir, fmt.Sprintf("raw-%s-%d-%d.parquet", kind, r, d))
					q := make([]string, len(byDay[d]))
					for i, p := range byDay[d] {
						q[i] = "'" + p + "'"
					}
					t0 := time.Now()
					if _, err := db.ExecContext(ctx, fmt.Sprintf("COPY (SELECT * FROM read_parquet([%s]) ORDER BY ts) TO '%s' (FORMAT parquet, COMPRESSION zstd)",
						strings.Join(q, ", "), out)); err != nil {
						log.Fatal(err)
					}
					res.copy += time.Since(t0)
					outs = append(outs, out)
				}
				for d, out := range outs {
					t0 := time.Now()
					if _, _, err := target.PutFile(ctx, fmt.Sprintf("raw/%s/day-%d.parquet", name, d), out); err != nil {
						log.Fatal(err)
					}
					res.upload += time.Since(t0)
					_ = os.Remove(out)
				}
				res.rawCPU = cpuTime() - c0
			}
			// Alternate the order, so that neither side always runs on a
			// warmer (or busier) machine.
			if r%2 == 0 {
				timestore()
				raw()
			} else {
				raw()
				timestore()
			}
			results = append(results, res)
			windows = append(windows, per...)
			slices.Sort(per)
			rawSum := res.copy + res.upload
			fmt.Printf("| %s | %d | %.2f | %.2f / %.2f / %.2f | %.2f | %.2f | %.2f | %.2f× | %.2f | %.2f | %.2f× |\n", kind, r+1, res.ts.Seconds(),
				per[0].Seconds(), per[len(per)/2].Seconds(), per[len(per)-1].Seconds(),
				res.copy.Seconds(), res.upload.Seconds(), rawSum.Seconds(), res.ts.Seconds()/rawSum.Seconds(),
				res.tsCPU.Seconds(), res.rawCPU.Seconds(), res.tsCPU.Seconds()/res.rawCPU.Seconds())
		}
		med := func(f func(result) float64) float64 {
			v := make([]float64, len(results))
			for i, r := range results {
				v[i] = f(r)
			}
			slices.Sort(v)
			return v[len(v)/2]
		}
		slices.Sort(windows)
		fmt.Printf("| %s | **median** | **%.2f** | %.2f / %.2f / %.2f | **%.2f** | **%.2f** | **%.2f** | **%.2f×** | **%.2f** | **%.2f** | **%.2f×** |\n", kind,
			med(func(r result) float64 { return r.ts.Seconds() }),
			windows[0].Seconds(), windows[len(windows)/2].Seconds(), windows[len(windows)-1].Seconds(),
			med(func(r result) float64 { return r.copy.Seconds() }),
			med(func(r result) float64 { return r.upload.Seconds() }),
			med(func(r result) float64 { return (r.copy + r.upload).Seconds() }),
			med(func(r result) float64 { return r.ts.Seconds() / (r.copy + r.upload).Seconds() }),
			med(func(r result) float64 { return r.tsCPU.Seconds() }),
			med(func(r result) float64 { return r.rawCPU.Seconds() }),
			med(func(r result) float64 { return r.tsCPU.Seconds() / r.rawCPU.Seconds() }))
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		fmt.Printf("\nload average at end: %s", b)
	}
	fmt.Println("wall ratio = timestore export wall time ÷ (raw DuckDB COPY + plain upload), target ≤ 1.2; medians are per column (the ratio's is the median of the runs' ratios)")
	fmt.Println("CPU = user + system time of this process (DuckDB, Go, hashing; not versitygw's)")
}

// cpuTime returns the user and system CPU time of this process so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// generate returns chunk c of day d as CSV: n rows whose times interleave
// with the other chunks' over the whole day.
func generate(d, c, chunks, n int) []byte {
	var buf bytes.Buffer
	w := bufio.NewWriter(&buf)
	fmt.Fprintln(w, "ts,series,value,n")
	total := n * chunks
	step := 24 * time.Hour / time.Duration(total)
	base := day0.AddDate(0, 0, d)
	for j := range n {
		i := j*chunks + c
		ts := base.Add(time.Duration(i) * step).Format("2006-01-02 15:04:05.000000")
		k := d*total + i
		fmt.Fprintf(w, "%s,s%d,%g,%d\n", ts, k%100, float64(k%10007)*0.25, k)
	}
	w.Flush()
	return buf.Bytes()
}
