package engine

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"timestore/internal/catalog"
)

// smallBatch is a batch like the small-writes benchmark's (bench/smallwrites):
// rows of (ts, series, value) over the 10 minutes before 2024-03-01 10:00,
// in time order, 50 series.
func smallBatch(format Format, rows int) string {
	r := rand.New(rand.NewPCG(uint64(rows), 1))
	end := time.Date(2024, 3, 1, 10, 0, 0, 0, time.UTC)
	var b strings.Builder
	if format == FormatCSV {
		b.WriteString("ts,series,value\n")
	}
	for i := range rows {
		ts := end.Add(-10 * time.Minute).Add(time.Duration(i) * 10 * time.Minute / time.Duration(rows)).Format(time.RFC3339Nano)
		series := fmt.Sprintf("host-%02d", r.IntN(50))
		v := r.Float64() * 100
		if format == FormatCSV {
			fmt.Fprintf(&b, "%s,%s,%v\n", ts, series, v)
		} else {
			fmt.Fprintf(&b, `{"ts":%q,"series":%q,"value":%v}`+"\n", ts, series, v)
		}
	}
	return b.String()
}

// cpuTime is the process's user and system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkPrepareIngestSmall compares, in one run, PrepareIngest of small
// batches through the native path and through DuckDB, in wall and CPU time
// per ingest:
//
//	go test ./internal/engine -run XXX -bench PrepareIngestSmall -benchtime 200x
func BenchmarkPrepareIngestSmall(b *testing.B) {
	native, err := New(Config{Threads: 2, MemoryLimit: "2GB", NativeInputMaxBytes: NativeInputMaxBytesDefault})
	require.NoError(b, err)
	b.Cleanup(func() { _ = native.Close() })
	ds := metrics("small", catalog.WindowHour)
	for _, format := range []Format{FormatNDJSON, FormatCSV} {
		for _, rows := range []int{10, 1000, 10000} {
			in := writeFile(b, b.TempDir(), "in", smallBatch(format, rows))
			for _, path := range []struct {
				name string
				e    *Engine
			}{{"native", native}, {"duckdb", testEngine}} {
				b.Run(fmt.Sprintf("%s/%d/%s", format, rows, path.name), func(b *testing.B) {
					out := b.TempDir()
					before := nativeReads.Load()
					cpu := cpuTime()
					b.ResetTimer()
					for b.Loop() {
						files, err := path.e.PrepareIngest(context.Background(), ds, format, in, out)
						require.NoError(b, err)
						b.StopTimer()
						for _, f := range files {
							require.NoError(b, os.Remove(f.Path))
						}
						b.StartTimer()
					}
					b.ReportMetric(float64((cpuTime()-cpu).Microseconds())/1000/float64(b.N), "cpu-ms/op")
					if path.e == native {
						require.Equal(b, int64(b.N), nativeReads.Load()-before, "every ingest took the native path")
					}
				})
			}
		}
	}
}
