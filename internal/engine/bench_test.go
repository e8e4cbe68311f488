package engine

// Benchmarks (2-core machine; numbers vary with load, so compare within one run):
//
//	go test ./internal/engine -run XXX -bench 'IngestVsRaw' -benchtime 8x
//	go test ./internal/engine -run XXX -bench 'PrepareIngest|RawDuckDBCopy' -benchtime 5x
//	go test ./internal/engine -run XXX -bench 'Query' -benchtime 30x

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"timestore/internal/catalog"
)

// benchRows is the size of the generated benchmark inputs.
const benchRows = 1_000_000

var (
	benchOnce sync.Once
	benchDir  string
	benchErr  error
)

// benchData writes the 1M-row inputs once per test binary run: rows of
// (ts timestamp, series varchar, value double), ts advancing 86 ms per row
// (about one day in total), 100 series.
func benchData(b *testing.B) (csvPath, ndjsonPath string) {
	b.Helper()
	benchFiles(b)
	return filepath.Join(benchDir, "rows.csv"), filepath.Join(benchDir, "rows.ndjson")
}

// benchDataSpread is like benchData, with ts one second apart as
// "2006-01-02 15:04:05" (about 11.6 days: 12 daily windows), the shape of
// the end-to-end benchmark in bench/ingest.
func benchDataSpread(b *testing.B) (csvPath, ndjsonPath string) {
	b.Helper()
	benchFiles(b)
	return filepath.Join(benchDir, "spread.csv"), filepath.Join(benchDir, "spread.ndjson")
}

func benchFiles(b *testing.B) {
	b.Helper()
	benchOnce.Do(func() {
		benchDir, benchErr = os.MkdirTemp("", "timestore-engine-bench-")
		if benchErr != nil {
			return
		}
		benchErr = writeBenchFiles(benchDir, "rows", 86*time.Millisecond, "2006-01-02T15:04:05.000")
		if benchErr == nil {
			benchErr = writeBenchFiles(benchDir, "spread", time.Second, "2006-01-02 15:04:05")
		}
	})
	require.NoError(b, benchErr)
}

func writeBenchFiles(dir, name string, step time.Duration, layout string) error {
	fc, err := os.Create(filepath.Join(dir, name+".csv"))
	if err != nil {
		return err
	}
	defer fc.Close()
	fj, err := os.Create(filepath.Join(dir, name+".ndjson"))
	if err != nil {
		return err
	}
	defer fj.Close()
	wc, wj := bufio.NewWriterSize(fc, 1<<20), bufio.NewWriterSize(fj, 1<<20)
	fmt.Fprintln(wc, "ts,series,value")
	rng := rand.New(rand.NewPCG(7, 7))
	base := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := 0; i < benchRows; i++ {
		ts := base.Add(time.Duration(i) * step).Format(layout)
		v := rng.Float64() * 100
		fmt.Fprintf(wc, "%s,series_%d,%.6f\n", ts, i%100, v)
		fmt.Fprintf(wj, "{\"ts\":\"%s\",\"series\":\"series_%d\",\"value\":%.6f}\n", ts, i%100, v)
	}
	if err := wc.Flush(); err != nil {
		return err
	}
	return wj.Flush()
}

func benchPrepareIngest(b *testing.B, format Format, partition string) {
	csvPath, ndjsonPath := benchData(b)
	in := csvPath
	if format == FormatNDJSON {
		in = ndjsonPath
	}
	ds := metrics("bench", partition)
	ctx := context.Background()
	out := b.TempDir()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		files, err := testEngine.PrepareIngest(ctx, ds, format, in, out)
		require.NoError(b, err)
		b.StopTimer()
		for _, f := range files {
			require.NoError(b, os.Remove(f.Path))
		}
		b.StartTimer()
	}
	b.ReportMetric(float64(benchRows)*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
}

func BenchmarkPrepareIngestCSV(b *testing.B) {
	b.Run("day", func(b *testing.B) { benchPrepareIngest(b, FormatCSV, catalog.WindowDay) })
	b.Run("hour", func(b *testing.B) { benchPrepareIngest(b, FormatCSV, catalog.WindowHour) })
}

func BenchmarkPrepareIngestNDJSON(b *testing.B) {
	b.Run("day", func(b *testing.B) { benchPrepareIngest(b, FormatNDJSON, catalog.WindowDay) })
	b.Run("hour", func(b *testing.B) { benchPrepareIngest(b, FormatNDJSON, catalog.WindowHour) })
}

// benchRawCopy is the reference: DuckDB reading the file with its default
// detection and writing one zstd Parquet file, on the same instance.
func benchRawCopy(b *testing.B, reader string) {
	out := filepath.Join(b.TempDir(), "raw.parquet")
	q := fmt.Sprintf("COPY (SELECT * FROM %s) TO %s (FORMAT parquet, COMPRESSION zstd)", reader, quoteString(out))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		_, err := testEngine.db.Exec(q)
		require.NoError(b, err)
	}
	b.ReportMetric(float64(benchRows)*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
}

func BenchmarkRawDuckDBCopyCSV(b *testing.B) {
	csvPath, _ := benchData(b)
	benchRawCopy(b, "read_csv("+quoteString(csvPath)+")")
}

func BenchmarkRawDuckDBCopyNDJSON(b *testing.B) {
	_, ndjsonPath := benchData(b)
	benchRawCopy(b, "read_ndjson("+quoteString(ndjsonPath)+")")
}

const benchAggregate = "SELECT time_bucket(INTERVAL '1 hour', ts) AS b, count(*), avg(value) FROM %s GROUP BY b ORDER BY b"

var (
	benchQueryOnce  sync.Once
	benchQueryFiles []string
)

// benchQueryData ingests the CSV input into hourly files once.
func benchQueryData(b *testing.B) (catalog.Dataset, []string) {
	csvPath, _ := benchData(b)
	ds := metrics("bench", catalog.WindowHour)
	benchQueryOnce.Do(func() {
		out := filepath.Join(benchDir, "parquet")
		require.NoError(b, os.MkdirAll(out, 0o755))
		files, err := testEngine.PrepareIngest(context.Background(), ds, FormatCSV, csvPath, out)
		require.NoError(b, err)
		for _, f := range files {
			benchQueryFiles = append(benchQueryFiles, f.Path)
		}
	})
	return ds, benchQueryFiles
}

func drain(b *testing.B, r *Rows) int {
	n := 0
	for r.Next() {
		n++
	}
	require.NoError(b, r.Err())
	require.NoError(b, r.Close())
	return n
}

// BenchmarkQuery runs the aggregate through the sandbox.
func BenchmarkQuery(b *testing.B) {
	ds, files := benchQueryData(b)
	req := QueryRequest{Dataset: ds, Files: files, SQL: fmt.Sprintf(benchAggregate, "bench")}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		r, err := testEngine.Query(context.Background(), req)
		require.NoError(b, err)
		require.Equal(b, 24, drain(b, r))
	}
}

// BenchmarkRawDuckDBQuery runs the same aggregate directly on the trusted,
// long-lived instance.
func BenchmarkRawDuckDBQuery(b *testing.B) {
	_, files := benchQueryData(b)
	quoted := make([]string, len(files))
	for i, f := range files {
		quoted[i] = quoteString(f)
	}
	q := fmt.Sprintf(benchAggregate, "read_parquet(["+strings.Join(quoted, ", ")+"])")
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		rows, err := testEngine.db.Query(q)
		require.NoError(b, err)
		n := 0
		for rows.Next() {
			n++
		}
		require.NoError(b, rows.Err())
		require.NoError(b, rows.Close())
		require.Equal(b, 24, n)
	}
}

// BenchmarkQuerySandboxOverhead measures the per-query cost of the sandbox:
// a fresh instance, its lock-down and the view over 24 files, for a query
// that does no work.
func BenchmarkQuerySandboxOverhead(b *testing.B) {
	ds, files := benchQueryData(b)
	req := QueryRequest{Dataset: ds, Files: files, SQL: "SELECT 1"}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		r, err := testEngine.Query(context.Background(), req)
		require.NoError(b, err)
		require.Equal(b, 1, drain(b, r))
	}
}

// BenchmarkQueryNewFiles runs the aggregate as the first query over a set of
// files, as after every ingest: no restricted instance can be reused. With
// "spare", a started instance is ready (the steady state of a server between
// queries); with "cold", DuckDB starts on the query's path (a burst of
// queries over new files).
func BenchmarkQueryNewFiles(b *testing.B) {
	ds, files := benchQueryData(b)
	req := QueryRequest{Dataset: ds, Files: files, SQL: fmt.Sprintf(benchAggregate, "bench")}
	for _, spare := range []bool{true, false} {
		name := "cold"
		if spare {
			name = "spare"
		}
		b.Run(name, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				p := testEngine.sandboxes
				waitPending := func() {
					for {
						p.mu.Lock()
						n := p.pending
						p.mu.Unlock()
						if n == 0 {
							return
						}
						time.Sleep(time.Millisecond)
					}
				}
				waitPending()
				p.mu.Lock()
				drop := append(p.idle, p.spares...)
				p.idle, p.spares = nil, nil
				if spare {
					p.refillLocked()
				}
				p.mu.Unlock()
				for _, sb := range drop {
					require.NoError(b, sb.close())
				}
				waitPending()
				time.Sleep(20 * time.Millisecond)
				b.StartTimer()
				r, err := testEngine.Query(context.Background(), req)
				require.NoError(b, err)
				require.Equal(b, 24, drain(b, r))
			}
		})
	}
}

// BenchmarkIngestVsRaw alternates the raw COPY and PrepareIngest on the same
// input in every iteration, so that both see the same machine load, and
// reports both rates and their ratio (timestore rows/s ÷ raw rows/s). The
// "spread" inputs span 12 daily windows, like bench/ingest's.
func BenchmarkIngestVsRaw(b *testing.B) {
	csvPath, ndjsonPath := benchData(b)
	csvSpread, ndjsonSpread := benchDataSpread(b)
	for _, tc := range []struct {
		name      string
		format    Format
		in        string
		reader    string
		partition string
	}{
		{"csv/day", FormatCSV, csvPath, "read_csv", catalog.WindowDay},
		{"csv/hour", FormatCSV, csvPath, "read_csv", catalog.WindowHour},
		{"csv/spread/day", FormatCSV, csvSpread, "read_csv", catalog.WindowDay},
		{"ndjson/day", FormatNDJSON, ndjsonPath, "read_ndjson", catalog.WindowDay},
		{"ndjson/hour", FormatNDJSON, ndjsonPath, "read_ndjson", catalog.WindowHour},
		{"ndjson/spread/day", FormatNDJSON, ndjsonSpread, "read_ndjson", catalog.WindowDay},
	} {
		b.Run(tc.name, func(b *testing.B) {
			ds := metrics("bench", tc.partition)
			out := b.TempDir()
			raw := fmt.Sprintf("COPY (SELECT * FROM %s(%s)) TO %s (FORMAT parquet, COMPRESSION zstd)",
				tc.reader, quoteString(tc.in), quoteString(filepath.Join(out, "raw.parquet")))
			var rawTime, ourTime time.Duration
			for i := 0; i < b.N; i++ {
				t0 := time.Now()
				_, err := testEngine.db.Exec(raw)
				require.NoError(b, err)
				t1 := time.Now()
				files, err := testEngine.PrepareIngest(context.Background(), ds, tc.format, tc.in, out)
				require.NoError(b, err)
				ourTime += time.Since(t1)
				rawTime += t1.Sub(t0)
				for _, f := range files {
					require.NoError(b, os.Remove(f.Path))
				}
			}
			n := float64(benchRows) * float64(b.N)
			b.ReportMetric(n/ourTime.Seconds(), "rows/s")
			b.ReportMetric(n/rawTime.Seconds(), "raw_rows/s")
			b.ReportMetric(rawTime.Seconds()/ourTime.Seconds(), "ratio")
		})
	}
}
