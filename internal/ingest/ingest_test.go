package ingest_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"timestore/internal/catalog"
	"timestore/internal/engine"
	"timestore/internal/ingest"
	"timestore/internal/query"
	"timestore/internal/storage"
	"timestore/internal/testutil/enginetest"
	"timestore/internal/testutil/pgtest"
	"timestore/internal/testutil/stacktest"
)

var testEngine *engine.Engine

func TestMain(m *testing.M) { os.Exit(enginetest.Main(m, &testEngine)) }

func newStack(t *testing.T) *stacktest.Stack {
	return stacktest.New(t, testEngine, false, catalog.Dataset{
		Name:       "cpu",
		Columns:    []catalog.Column{{Name: "ts", Type: catalog.TypeTimestamp}, {Name: "v", Type: catalog.TypeBigint}},
		TimeColumn: "ts",
		Partition:  catalog.WindowDay,
	})
}

// body is three rows over two days.
const body = "ts,v\n2024-03-01T01:00:00Z,1\n2024-03-01T02:00:00Z,2\n2024-03-02T01:00:00Z,3\n"

// requireIntact checks that every partition the catalog holds (in any state
// but purged) has its object, and returns the live rows.
func requireIntact(t *testing.T, s *stacktest.Stack) int64 {
	t.Helper()
	parts, err := s.Store.Partitions(s.Ctx, s.Dataset.Name, catalog.PartitionsStateAll)
	require.NoError(t, err)
	var rows int64
	for _, p := range parts {
		if p.PurgedAt != nil {
			continue
		}
		_, err := s.Target.Attributes(s.Ctx, p.Key)
		require.False(t, errors.Is(err, storage.ErrNotExist), "partition %d references %s, which is gone", p.ID, p.Key)
		require.NoError(t, err)
		if p.State() == catalog.StateLive {
			rows += p.RowCount
		}
	}
	return rows
}

// waitRows waits until the dataset's live manifest holds rows rows.
func waitRows(t *testing.T, s *stacktest.Stack, rows int64) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		tot, err := s.Store.DatasetTotals(s.Ctx, s.Dataset.ID)
		require.NoError(t, err)
		if tot.Rows == rows {
			return
		}
		require.True(t, time.Now().Before(deadline), "the manifest holds %d rows, want %d", tot.Rows, rows)
		time.Sleep(10 * time.Millisecond)
	}
}

// A client that goes away while the manifest commit runs does not cut it
// short: the ingest completes, and what it committed has its files.
func TestClientGoneDuringCommit(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	pgtest.SlowCommits(t, s.Store.Pool(), 500*time.Millisecond)
	ctx, cancel := context.WithCancel(s.Ctx)
	defer cancel()
	svc := ingest.New(ingest.Options{Store: s.Store, Targets: s.Targets, Engine: testEngine, TempDir: t.TempDir(),
		AfterUpload: func(context.Context, []catalog.PartitionFile) error {
			go func() {
				pgtest.WaitCommitInFlight(t, s.Store.Pool(), 20*time.Second)
				cancel() // the client goes away while COMMIT runs
			}()
			return nil
		}})
	res, err := svc.Ingest(ctx, ingest.Request{Dataset: "cpu", Format: engine.FormatCSV, Body: strings.NewReader(body), IdempotencyKey: "k1"})
	require.NoError(t, err)
	require.EqualValues(t, 3, res.RowsWritten)
	require.Error(t, ctx.Err(), "the request was cancelled during the commit")
	require.EqualValues(t, 3, requireIntact(t, s))

	// A retry is a replay and writes nothing.
	res, err = s.Ingest.Ingest(s.Ctx, ingest.Request{Dataset: "cpu", Format: engine.FormatCSV, Body: strings.NewReader(body), IdempotencyKey: "k1"})
	require.NoError(t, err)
	require.True(t, res.Replayed)
	require.EqualValues(t, 3, requireIntact(t, s))
}

// A commit whose outcome ingest cannot learn (its time limit passes while
// the server is still committing) must not make ingest delete files the
// manifest ends up referencing. The server's commit lands after ingest has
// failed; every partition then still has its object, and the data reads.
func TestCommitOutcomeUnknownKeepsReferencedFiles(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	pgtest.SlowCommits(t, s.Store.Pool(), 1500*time.Millisecond)
	svc := ingest.New(ingest.Options{Store: s.Store, Targets: s.Targets, Engine: testEngine, TempDir: t.TempDir(),
		CommitTimeout: 300 * time.Millisecond})
	_, err := svc.Ingest(s.Ctx, ingest.Request{Dataset: "cpu", Format: engine.FormatCSV, Body: strings.NewReader(body)})
	require.Error(t, err)

	waitRows(t, s, 3) // the server's commit lands
	require.EqualValues(t, 3, requireIntact(t, s))
	res, err := s.Query.Run(s.Ctx, queryCount())
	require.NoError(t, err)
	defer res.Close()
	require.True(t, res.Next())
	require.EqualValues(t, int64(3), res.Values()[0])
}

// A commit that certainly failed (here: the dataset was deleted meanwhile)
// leaves nothing behind, and each deleted upload is audited.
func TestFailedCommitDiscardsAndAuditsUploads(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	svc := ingest.New(ingest.Options{Store: s.Store, Targets: s.Targets, Engine: testEngine, TempDir: t.TempDir(),
		AfterUpload: func(ctx context.Context, files []catalog.PartitionFile) error {
			return s.Store.DeleteDataset(ctx, "cpu", "test")
		}})
	_, err := svc.Ingest(s.Ctx, ingest.Request{Dataset: "cpu", Format: engine.FormatCSV, Body: strings.NewReader(body), Actor: "api:user"})
	require.Error(t, err)
	require.Empty(t, objectKeys(t, s), "uploads left behind")
	entries, err := s.Store.ListAudit(s.Ctx, catalog.AuditFilter{Action: catalog.ActionDiscardUpload})
	require.NoError(t, err)
	require.Len(t, entries, 2, "one audit record per discarded upload (two windows)")
	for _, e := range entries {
		require.Equal(t, "api:user", e.Actor)
		require.Equal(t, "cpu", e.Dataset)
		require.Positive(t, e.Bytes)
		require.Contains(t, e.Details["key"], "cpu/")
	}
}

// An upload whose acknowledgement is lost (the object landed, the put
// failed) is discarded like the others: the failed ingest leaves no object,
// and each discarded upload is audited.
func TestFailedUploadThatLandedIsDiscarded(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	errLost := errors.New("acknowledgement lost")
	faulty := storage.NewFaultyBucket(s.Target.Bucket)
	require.NoError(t, s.Targets.SetBucket(s.Target.Name, faulty))
	faulty.Inject(storage.Fault{Op: storage.OpUpload, Nth: 2, Late: true, Err: errLost})
	_, err := s.Ingest.Ingest(s.Ctx, ingest.Request{Dataset: "cpu", Format: engine.FormatCSV, Body: strings.NewReader(body), Actor: "api:user"})
	require.ErrorIs(t, err, errLost)
	require.Equal(t, 2, faulty.Calls(storage.OpUpload), "both windows' files were put")
	require.Empty(t, objectKeys(t, s), "uploads left behind")
	entries, err := s.Store.ListAudit(s.Ctx, catalog.AuditFilter{Action: catalog.ActionDiscardUpload})
	require.NoError(t, err)
	require.Len(t, entries, 2, "one audit record per discarded upload, the failed one included")
	tot, err := s.Store.DatasetTotals(s.Ctx, s.Dataset.ID)
	require.NoError(t, err)
	require.Zero(t, tot.Rows)
}

// objectKeys lists the keys of every object on the dataset's target.
func objectKeys(t *testing.T, s *stacktest.Stack) []string {
	t.Helper()
	var keys []string
	require.NoError(t, s.Target.List(s.Ctx, "", func(o storage.ObjectInfo) error {
		keys = append(keys, o.Key)
		return nil
	}))
	return keys
}

func queryCount() query.Request {
	return query.Request{Dataset: "cpu", SQL: "SELECT count(*) FROM cpu"}
}
