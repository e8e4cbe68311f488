package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"slices"
	"testing"
	"time"
)

func TestBatchSourceSameBatchesForBothSystems(t *testing.T) {
	shape := batchShape{size: 500, spread: 10 * time.Minute, sorted: true}
	a, b := newBatchSource(3, shape), newBatchSource(3, shape)
	for range 3 {
		x, y := a.next(), b.next()
		if len(x) != shape.size {
			t.Fatalf("batch of %d rows, want %d", len(x), shape.size)
		}
		for i := range x {
			if x[i].host != y[i].host || x[i].value != y[i].value {
				t.Fatalf("row %d differs between two sources of one client: %+v, %+v", i, x[i], y[i])
			}
		}
		if !slices.IsSortedFunc(x, func(p, q row) int { return p.ts.Compare(q.ts) }) {
			t.Fatal("a sorted batch is not in time order")
		}
		if age := time.Since(x[0].ts); age < 0 || age > shape.spread+time.Second {
			t.Fatalf("oldest row is %s old, want within the %s spread", age, shape.spread)
		}
	}
	other, mine := newBatchSource(4, shape).next(), newBatchSource(3, shape).next()
	same := 0
	for i := range other {
		if other[i].host == mine[i].host && other[i].value == mine[i].value {
			same++
		}
	}
	if same == len(mine) {
		t.Fatal("two clients produce the same rows")
	}
}

func TestNDJSONRoundTrip(t *testing.T) {
	rows := newBatchSource(1, batchShape{size: 20, spread: time.Hour}).next()
	sc := bufio.NewScanner(bytes.NewReader(ndjson(rows)))
	i := 0
	for sc.Scan() {
		var got struct {
			TS    time.Time `json:"ts"`
			Host  string    `json:"host"`
			Value float64   `json:"value"`
		}
		if err := json.Unmarshal(sc.Bytes(), &got); err != nil {
			t.Fatalf("line %d %q: %v", i+1, sc.Text(), err)
		}
		if !got.TS.Equal(rows[i].ts) || got.Host != rows[i].host || got.Value != rows[i].value {
			t.Fatalf("line %d decodes to %+v, want %+v", i+1, got, rows[i])
		}
		i++
	}
	if i != len(rows) {
		t.Fatalf("%d lines, want %d", i, len(rows))
	}
}

func TestPercentileNearestRank(t *testing.T) {
	var r loadResult
	for i := 100; i >= 1; i-- {
		r.latencies = append(r.latencies, time.Duration(i)*time.Millisecond)
	}
	for p, want := range map[float64]time.Duration{50: 50 * time.Millisecond, 99: 99 * time.Millisecond, 100: 100 * time.Millisecond, 0.5: time.Millisecond} {
		if got := r.percentile(p); got != want {
			t.Errorf("p%v = %s, want %s", p, got, want)
		}
	}
}

func TestStatement(t *testing.T) {
	for q, want := range map[string]string{
		"\n\t\tSELECT id, name\n FROM timestore.datasets WHERE name = $1 FOR NO KEY UPDATE": "SELECT … FROM timestore.datasets",
		"INSERT INTO timestore.partitions (a, b) VALUES ($1, $2)":                           "INSERT INTO timestore.partitions",
		"commit": "commit",
	} {
		if got := statement(q); got != want {
			t.Errorf("statement(%q) = %q, want %q", q, got, want)
		}
	}
}
