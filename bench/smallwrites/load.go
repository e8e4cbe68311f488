package main

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"time"
)

// row is one reading, sent to both systems.
type row struct {
	ts    time.Time
	host  string
	value float64
}

// hosts is how many distinct hosts the rows name.
const hosts = 50

// batchShape says what a batch holds.
type batchShape struct {
	// size is the number of rows.
	size int
	// spread: the timestamps are uniform over the spread before the moment
	// the batch is made.
	spread time.Duration
	// sorted: the rows are in time order, as an agent sends what it
	// buffered; otherwise in random order.
	sorted bool
}

// batchSource makes the batches of one client: the same seed gives the same
// hosts and values, so both systems receive the same sequence of batches.
type batchSource struct {
	rng   *rand.Rand
	shape batchShape
}

func newBatchSource(client int, shape batchShape) *batchSource {
	return &batchSource{rng: rand.New(rand.NewPCG(uint64(client), 14)), shape: shape}
}

// next returns the next batch.
func (b *batchSource) next() []row {
	now := time.Now()
	rows := make([]row, b.shape.size)
	for i := range rows {
		rows[i] = row{
			ts:    now.Add(-time.Duration(b.rng.Int64N(int64(b.shape.spread)))).Truncate(time.Microsecond),
			host:  "host-" + strconv.Itoa(b.rng.IntN(hosts)),
			value: float64(b.rng.IntN(1_000_000)) / 100,
		}
	}
	if b.shape.sorted {
		slices.SortFunc(rows, func(x, y row) int { return x.ts.Compare(y.ts) })
	}
	return rows
}

// ndjson encodes rows as a client would send them: one object per line,
// the time in RFC 3339 with a UTC offset.
func ndjson(rows []row) []byte {
	var buf bytes.Buffer
	buf.Grow(len(rows) * 72)
	for _, r := range rows {
		buf.WriteString(`{"ts":"`)
		buf.WriteString(r.ts.UTC().Format("2006-01-02T15:04:05.000000Z07:00"))
		buf.WriteString(`","host":"`)
		buf.WriteString(r.host)
		buf.WriteString(`","value":`)
		buf.WriteString(strconv.FormatFloat(r.value, 'f', -1, 64))
		buf.WriteString("}\n")
	}
	return buf.Bytes()
}

// loadResult is what one load measured.
type loadResult struct {
	requests  int
	rows      int64
	elapsed   time.Duration
	latencies []time.Duration
}

func (r loadResult) rowsPerSec() float64 { return float64(r.rows) / r.elapsed.Seconds() }
func (r loadResult) reqsPerSec() float64 { return float64(r.requests) / r.elapsed.Seconds() }

// percentile returns the p-th percentile (0 < p ≤ 100) of the latencies,
// the nearest-rank value.
func (r loadResult) percentile(p float64) time.Duration {
	if len(r.latencies) == 0 {
		return 0
	}
	s := slices.Clone(r.latencies)
	slices.Sort(s)
	k := int(float64(len(s))*p/100+0.999999) - 1
	return s[max(0, min(k, len(s)-1))]
}

// runLoad runs clients goroutines for d, each sending batches of the shape
// through send, one request at a time, and times every request. Batches are
// made before the request's clock starts. The first error ends the load.
func runLoad(ctx context.Context, clients int, shape batchShape, d time.Duration, send func(ctx context.Context, client int, rows []row) error) (loadResult, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var (
		mu  sync.Mutex
		res loadResult
		wg  sync.WaitGroup
	)
	start := time.Now()
	deadline := start.Add(d)
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			src := newBatchSource(c, shape)
			var lat []time.Duration
			for time.Now().Before(deadline) && ctx.Err() == nil {
				rows := src.next()
				t0 := time.Now()
				if err := send(ctx, c, rows); err != nil {
					cancel(fmt.Errorf("client %d: %w", c, err))
					break
				}
				lat = append(lat, time.Since(t0))
			}
			mu.Lock()
			res.requests += len(lat)
			res.rows += int64(len(lat) * shape.size)
			res.latencies = append(res.latencies, lat...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	res.elapsed = time.Since(start)
	if err := context.Cause(ctx); err != nil && err != context.Canceled {
		return res, err
	}
	return res, nil
}
