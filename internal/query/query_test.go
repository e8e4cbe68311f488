package query_test

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"timestore/internal/catalog"
	"timestore/internal/engine"
	"timestore/internal/ingest"
	"timestore/internal/query"
	"timestore/internal/testutil/enginetest"
	"timestore/internal/testutil/stacktest"
)

var testEngine *engine.Engine

func TestMain(m *testing.M) { os.Exit(enginetest.Main(m, &testEngine)) }

// Queries beyond Concurrency wait for a slot within their own time limit:
// each runs in a DuckDB instance of its own with the engine's memory limit,
// so the slots bound the memory queries take.
func TestConcurrencyLimit(t *testing.T) {
	t.Parallel()
	s := stacktest.New(t, testEngine, false, catalog.Dataset{
		Name: "cpu", Columns: []catalog.Column{{Name: "ts", Type: catalog.TypeTimestamp}, {Name: "v", Type: catalog.TypeBigint}},
		TimeColumn: "ts", Partition: catalog.WindowDay,
	})
	_, err := s.Ingest.Ingest(s.Ctx, ingest.Request{Dataset: "cpu", Format: engine.FormatCSV,
		Body: strings.NewReader("ts,v\n2024-03-01T01:00:00Z,1\n2024-03-02T01:00:00Z,2\n")})
	require.NoError(t, err)
	svc := query.New(query.Options{Store: s.Store, Targets: s.Targets, Cache: s.Cache, Engine: testEngine,
		Concurrency: 1, Timeout: 300 * time.Millisecond})
	req := query.Request{Dataset: "cpu", SQL: "SELECT sum(v) FROM cpu"}

	held, err := svc.Run(s.Ctx, req) // holds the only slot until closed
	require.NoError(t, err)
	_, err = svc.Run(s.Ctx, req)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.ErrorContains(t, err, "waiting for one of the 1 query slots")

	require.True(t, held.Next())
	require.EqualValues(t, 3, held.Values()[0])
	require.NoError(t, held.Close())

	// A query waiting for the slot gets it when the holder closes.
	patient := query.New(query.Options{Store: s.Store, Targets: s.Targets, Cache: s.Cache, Engine: testEngine,
		Concurrency: 1, Timeout: time.Minute})
	held, err = patient.Run(s.Ctx, req)
	require.NoError(t, err)
	waiting := make(chan error, 1)
	go func() {
		res, err := patient.Run(s.Ctx, req)
		if err == nil {
			err = res.Close()
		}
		waiting <- err
	}()
	require.Never(t, func() bool { return len(waiting) > 0 }, 200*time.Millisecond, 10*time.Millisecond,
		"a second query ran while the only slot was held")
	require.NoError(t, held.Close())
	require.NoError(t, <-waiting)
}
