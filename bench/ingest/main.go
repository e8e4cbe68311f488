// Command ingest measures timestore's ingest rate against raw DuckDB on the
// same file: 1M rows (ts, series, value) as CSV and as NDJSON. timestore's
// time is the whole HTTP request (spool, parse, split, write zstd Parquet,
// upload to the local target, commit); raw DuckDB's is
// COPY (SELECT * FROM read_csv(...)) TO 'x.parquet' (FORMAT parquet, COMPRESSION zstd),
// twice: with the columns and types declared (the ratio of the target), and
// with DuckDB's own detection (read_csv('file') as typed by hand).
//
// Each run times the three, back to back and in rotating order, so that they
// see the same machine load; the table reports medians over the runs, and the
// ratio is the median of the per-run ratios. The CPU columns are the process's
// CPU time (user + system, all threads) during each measurement, which other
// load on the machine disturbs less than the wall time; the CPU ratio is raw
// DuckDB's CPU time ÷ timestore's, so that, like the rate ratio, higher is
// better.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	_ "github.com/duckdb/duckdb-go/v2"

	"timestore/bench/internal/benchenv"
	"timestore/internal/client"
)

func main() {
	rows := flag.Int("rows", 1_000_000, "rows per file")
	runs := flag.Int("runs", 3, "runs of each measurement; the medians are reported")
	flag.Parse()
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "timestore-bench-ingest-")
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

	fmt.Printf("machine: %s\nrows per file: %d, median of %d runs\n\n", benchenv.Machine(), *rows, *runs)
	fmt.Printf("| format | file MB | timestore s | timestore rows/s | raw declared s | raw declared rows/s | ratio | raw detected s | ratio (detected) | timestore CPU s | raw declared CPU s | CPU ratio |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, format := range []string{"csv", "ndjson"} {
		path := filepath.Join(dir, "input."+format)
		if err := generate(path, format, *rows); err != nil {
			log.Fatal(err)
		}
		st, _ := os.Stat(path)

		var tsTimes, rawTimes, detTimes, ratios, detRatios, tsCPUs, rawCPUs, cpuRatios []float64
		for run := 0; run < *runs; run++ {
			name := fmt.Sprintf("bench_%s_%d", format, run)
			if _, err := env.Client.CreateDataset(ctx, client.CreateDataset{
				Name: name, TimeColumn: "ts", Partition: "day",
				Columns: []client.Column{{Name: "ts", Type: "timestamp"}, {Name: "series", Type: "varchar"}, {Name: "value", Type: "double"}},
			}); err != nil {
				log.Fatal(err)
			}
			timestore := func() (time.Duration, time.Duration) {
				f, err := os.Open(path)
				if err != nil {
					log.Fatal(err)
				}
				defer f.Close()
				c0, start := cpuTime(), time.Now()
				res, err := env.Client.Ingest(ctx, name, format, f, "")
				d, c := time.Since(start), cpuTime()-c0
				if err != nil {
					log.Fatal(err)
				}
				if res.RowsWritten != int64(*rows) {
					log.Fatalf("ingested %d rows, want %d", res.RowsWritten, *rows)
				}
				return d, c
			}
			// raw copies the file into one zstd Parquet file with DuckDB,
			// the columns declared or, with detect, detected by DuckDB.
			raw := func(detect bool) (time.Duration, time.Duration) {
				fn := "read_csv"
				if format == "ndjson" {
					fn = "read_ndjson"
				}
				reader := fmt.Sprintf("%s('%s')", fn, path)
				if !detect {
					reader = fmt.Sprintf("%s('%s', columns={'ts':'TIMESTAMP','series':'VARCHAR','value':'DOUBLE'})", fn, path)
				}
				out := filepath.Join(dir, fmt.Sprintf("raw-%d.parquet", run))
				defer os.Remove(out)
				c0, start := cpuTime(), time.Now()
				if _, err := db.ExecContext(ctx, fmt.Sprintf("COPY (SELECT * FROM %s) TO '%s' (FORMAT parquet, COMPRESSION zstd)", reader, out)); err != nil {
					log.Fatal(err)
				}
				return time.Since(start), cpuTime() - c0
			}
			// The three measurements in an order that rotates over the runs.
			var dTS, dRaw, dDet, cTS, cRaw time.Duration
			steps := []func(){
				func() { dTS, cTS = timestore() },
				func() { dRaw, cRaw = raw(false) },
				func() { dDet, _ = raw(true) },
			}
			for i := range steps {
				steps[(i+run)%len(steps)]()
			}
			tsTimes = append(tsTimes, dTS.Seconds())
			rawTimes = append(rawTimes, dRaw.Seconds())
			detTimes = append(detTimes, dDet.Seconds())
			ratios = append(ratios, dRaw.Seconds()/dTS.Seconds())
			detRatios = append(detRatios, dDet.Seconds()/dTS.Seconds())
			tsCPUs = append(tsCPUs, cTS.Seconds())
			rawCPUs = append(rawCPUs, cRaw.Seconds())
			cpuRatios = append(cpuRatios, cRaw.Seconds()/cTS.Seconds())
		}
		ts, rw := median(tsTimes), median(rawTimes)
		rate := func(s float64) float64 { return float64(*rows) / s }
		fmt.Printf("| %s | %.1f | %.3f | %.0f | %.3f | %.0f | %.2f× | %.3f | %.2f× | %.3f | %.3f | %.2f× |\n", format, float64(st.Size())/1e6,
			ts, rate(ts), rw, rate(rw), median(ratios), median(detTimes), median(detRatios), median(tsCPUs), median(rawCPUs), median(cpuRatios))
	}
	fmt.Println("\nraw declared: read_csv/read_ndjson with the columns and types given; raw detected: with DuckDB's own detection")
	fmt.Println("ratio = timestore rows/s ÷ raw declared rows/s, median of the per-run ratios (target ≥ 0.70); ratio (detected): the same against raw detected")
	fmt.Println("CPU ratio = raw DuckDB CPU s ÷ timestore CPU s, median of the per-run ratios")
}

// cpuTime is the CPU time (user + system) the process has used so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// median returns the median of xs (the mean of the middle two for an even count).
func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// generate writes n rows, one second apart from 2024-01-01, 100 series, spanning ~11.6 days.
func generate(path, format string, n int) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	start := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	if format == "csv" {
		fmt.Fprintln(w, "ts,series,value")
	}
	for i := 0; i < n; i++ {
		ts := start.Add(time.Duration(i) * time.Second).Format("2006-01-02 15:04:05")
		v := float64(i%10007) * 0.25
		if format == "csv" {
			fmt.Fprintf(w, "%s,s%d,%g\n", ts, i%100, v)
		} else {
			fmt.Fprintf(w, "{\"ts\":\"%s\",\"series\":\"s%d\",\"value\":%g}\n", ts, i%100, v)
		}
	}
	if err := w.Flush(); err != nil {
		return err
	}
	return f.Close()
}
