// Command query measures a time_bucket aggregate over one day of a dataset
// holding 10M rows in 90 daily partitions: timestore's whole HTTP query
// (snapshot, lease, pruning, sandboxed DuckDB, JSON answer) against raw DuckDB
// over the same Parquet files in the same run.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	_ "github.com/duckdb/duckdb-go/v2"

	"timestore/bench/internal/benchenv"
	"timestore/internal/client"
)

const aggregate = "SELECT time_bucket(INTERVAL '1 hour', ts) AS bucket, count(*) AS n, avg(value) AS avg, max(value) AS max FROM %s GROUP BY bucket ORDER BY bucket"

func main() {
	total := flag.Int("rows", 10_000_000, "rows in all")
	days := flag.Int("days", 90, "daily partitions")
	runs := flag.Int("runs", 20, "query runs; the median is reported")
	flag.Parse()
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "timestore-bench-query-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	env, err := benchenv.Start(ctx, filepath.Join(dir, "data"), nil)
	if err != nil {
		log.Fatal(err)
	}
	defer env.Close(ctx)

	if _, err := env.Client.CreateDataset(ctx, client.CreateDataset{
		Name: "metrics", TimeColumn: "ts", Partition: "day",
		Columns: []client.Column{{Name: "ts", Type: "timestamp"}, {Name: "series", Type: "varchar"}, {Name: "value", Type: "double"}},
	}); err != nil {
		log.Fatal(err)
	}
	start := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	perDay := *total / *days
	step := 24 * time.Hour / time.Duration(perDay)
	loadStart := time.Now()
	for d := 0; d < *days; d++ {
		path := filepath.Join(dir, "day.csv")
		if err := generate(path, start.AddDate(0, 0, d), perDay, step, d); err != nil {
			log.Fatal(err)
		}
		f, _ := os.Open(path)
		if _, err := env.Client.Ingest(ctx, "metrics", "csv", f, ""); err != nil {
			log.Fatal(err)
		}
		f.Close()
	}
	parts, err := env.Client.Partitions(ctx, "metrics", "live")
	if err != nil {
		log.Fatal(err)
	}
	var files []string
	var dayFile string
	day := start.AddDate(0, 0, 45)
	for _, p := range parts {
		path := filepath.Join(env.DataDir, "objects", p.Key)
		files = append(files, "'"+path+"'")
		if p.WindowStart.Equal(day) {
			dayFile = "'" + path + "'"
		}
	}
	fmt.Printf("machine: %s\nloaded %d rows into %d partitions in %s\n\n", benchenv.Machine(), perDay**days, len(parts), time.Since(loadStart).Round(time.Millisecond))

	from, to := day.Format(time.RFC3339), day.AddDate(0, 0, 1).Format(time.RFC3339)
	tsQuery := func() (int, error) {
		res, err := env.Client.Query(ctx, "metrics", client.QueryRequest{SQL: fmt.Sprintf(aggregate, "metrics"), From: from, To: to})
		return len(res.Rows), err
	}
	db, err := benchenv.DuckDB()
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	rawQuery := func(fileList string) func() (int, error) {
		src := fmt.Sprintf("(SELECT * FROM read_parquet([%s]) WHERE ts >= TIMESTAMP '%s' AND ts < TIMESTAMP '%s')", fileList,
			day.Format("2006-01-02 15:04:05"), day.AddDate(0, 0, 1).Format("2006-01-02 15:04:05"))
		return func() (int, error) {
			rows, err := db.QueryContext(ctx, fmt.Sprintf(aggregate, src))
			if err != nil {
				return 0, err
			}
			defer rows.Close()
			n := 0
			for rows.Next() {
				n++
			}
			return n, rows.Err()
		}
	}
	tsMed := median(*runs, tsQuery)
	rawAll := median(*runs, rawQuery(strings.Join(files, ",")))
	rawDay := median(*runs, rawQuery(dayFile))
	fmt.Printf("| measurement | median ms |\n|---|---|\n")
	fmt.Printf("| timestore HTTP query, from/to = 1 day | %.1f |\n", ms(tsMed))
	fmt.Printf("| raw DuckDB, read_parquet(all %d files) + WHERE on the day | %.1f |\n", len(files), ms(rawAll))
	fmt.Printf("| raw DuckDB, read_parquet(the day's file) + WHERE | %.1f |\n", ms(rawDay))
	fmt.Printf("\ntarget: timestore ≤ 1.3 × raw + 20 ms = %.1f ms (against the all-files baseline), %.1f ms (against the day's file)\n",
		1.3*ms(rawAll)+20, 1.3*ms(rawDay)+20)
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func median(runs int, f func() (int, error)) time.Duration {
	if _, err := f(); err != nil { // warm-up
		log.Fatal(err)
	}
	ds := make([]time.Duration, runs)
	for i := range ds {
		start := time.Now()
		n, err := f()
		ds[i] = time.Since(start)
		if err != nil {
			log.Fatal(err)
		}
		if n != 24 {
			log.Fatalf("got %d buckets, want 24", n)
		}
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	return ds[len(ds)/2]
}

func generate(path string, day time.Time, n int, step time.Duration, seed int) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	fmt.Fprintln(w, "ts,series,value")
	for i := 0; i < n; i++ {
		fmt.Fprintf(w, "%s,s%d,%g\n", day.Add(time.Duration(i)*step).Format("2006-01-02 15:04:05.000000"), (i+seed)%50, float64((i*31+seed)%9973)*0.5)
	}
	if err := w.Flush(); err != nil {
		return err
	}
	return f.Close()
}
