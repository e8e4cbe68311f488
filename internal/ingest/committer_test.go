package ingest_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"timestore/internal/catalog"
	"timestore/internal/engine"
	"timestore/internal/ingest"
	"timestore/internal/query"
	"timestore/internal/testutil/stacktest"
)

// gatedStore is the catalog with two faults: the first Commit waits until
// the test releases it, so that the requests arriving meanwhile queue
// behind it and form a group; and CommitGroup may fail, before touching
// the catalog or after committing (a lost COMMIT acknowledgement).
type gatedStore struct {
	*catalog.Store
	entered chan struct{} // closed when the first Commit starts
	release chan struct{} // the first Commit goes on once closed
	once    sync.Once
	fail    groupFault

	mu     sync.Mutex
	groups []int // sizes of the CommitGroup calls
}

type groupFault int

const (
	groupOK          groupFault = iota
	groupFailsBefore            // CommitGroup fails and changes nothing
	groupFailsAfter             // CommitGroup commits, then reports a failure
	groupConflicts              // CommitGroup reports a conflict and changes nothing
)

var errCommitLost = errors.New("connection lost during COMMIT")

func newGatedStore(store *catalog.Store, fail groupFault) *gatedStore {
	return &gatedStore{Store: store, entered: make(chan struct{}), release: make(chan struct{}), fail: fail}
}

func (g *gatedStore) Commit(ctx context.Context, ch catalog.Change) (catalog.CommitResult, error) {
	g.once.Do(func() {
		close(g.entered)
		<-g.release
	})
	return g.Store.Commit(ctx, ch)
}

func (g *gatedStore) CommitGroup(ctx context.Context, changes []catalog.Change) ([]catalog.GroupOutcome, error) {
	g.mu.Lock()
	g.groups = append(g.groups, len(changes))
	g.mu.Unlock()
	switch g.fail {
	case groupFailsBefore:
		return nil, errCommitLost
	case groupFailsAfter:
		if _, err := g.Store.CommitGroup(ctx, changes); err != nil {
			return nil, err
		}
		return nil, errCommitLost
	case groupConflicts:
		return nil, fmt.Errorf("%w: add partition x: object already referenced by another partition", catalog.ErrConflict)
	}
	return g.Store.CommitGroup(ctx, changes)
}

func (g *gatedStore) groupSizes() []int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]int(nil), g.groups...)
}

// rowsBody is a CSV body of two rows with value v, one on each of two days.
func rowsBody(v int) string {
	return fmt.Sprintf("ts,v\n2024-03-01T01:00:00Z,%d\n2024-03-02T01:00:00Z,%d\n", v, v)
}

func csvRequest(body, key string) ingest.Request {
	return ingest.Request{Dataset: "cpu", Format: engine.FormatCSV, Body: strings.NewReader(body), IdempotencyKey: key, Actor: "api:user"}
}

type outcome struct {
	res ingest.Result
	err error
}

// ingestTogether runs leader and, while the leader's commit is held, the
// followers, waits until every follower queued for the commit, then lets
// the commits go and returns the outcomes, the leader's first.
func ingestTogether(t *testing.T, s *stacktest.Stack, svc *ingest.Service, gate *gatedStore, leader ingest.Request, followers ...ingest.Request) []outcome {
	t.Helper()
	return ingestTogetherCtx(t, s, svc, gate, s.Ctx, func() {}, leader, followers...)
}

// ingestTogetherCtx is ingestTogether with the followers' context, and
// queued called once they all queued, before the commits go on.
func ingestTogetherCtx(t *testing.T, s *stacktest.Stack, svc *ingest.Service, gate *gatedStore, ctx context.Context, queued func(), leader ingest.Request, followers ...ingest.Request) []outcome {
	t.Helper()
	out := make([]outcome, 1+len(followers))
	var wg sync.WaitGroup
	run := func(i int, ctx context.Context, req ingest.Request) {
		wg.Go(func() {
			res, err := svc.Ingest(ctx, req)
			out[i] = outcome{res, err}
		})
	}
	run(0, s.Ctx, leader)
	select {
	case <-gate.entered:
	case <-time.After(20 * time.Second):
		t.Fatal("the leader's commit did not start")
	}
	for i, req := range followers {
		run(i+1, ctx, req)
	}
	deadline := time.Now().Add(20 * time.Second)
	for svc.Queued("cpu") < len(followers) {
		require.True(t, time.Now().Before(deadline), "%d of %d followers queued for the commit", svc.Queued("cpu"), len(followers))
		time.Sleep(5 * time.Millisecond)
	}
	queued()
	close(gate.release)
	wg.Wait()
	return out
}

// countSum returns count(*) and sum(v) of the dataset, as a query sees it.
func countSum(t *testing.T, s *stacktest.Stack) (int64, int64) {
	t.Helper()
	res, err := s.Query.Run(s.Ctx, queryCountSum())
	require.NoError(t, err)
	defer res.Close()
	require.True(t, res.Next())
	vals := res.Values()
	return toInt(t, vals[0]), toInt(t, vals[1])
}

func toInt(t *testing.T, v any) int64 {
	t.Helper()
	var n int64
	_, err := fmt.Sscan(fmt.Sprint(v), &n)
	require.NoError(t, err, "%v (%T) is not a whole number", v, v)
	return n
}

// requireNoOrphans checks that every object on the target is referenced by
// a partition of the catalog.
func requireNoOrphans(t *testing.T, s *stacktest.Stack) {
	t.Helper()
	parts, err := s.Store.Partitions(s.Ctx, s.Dataset.Name, catalog.PartitionsStateAll)
	require.NoError(t, err)
	referenced := map[string]bool{}
	for _, p := range parts {
		referenced[p.Key] = true
	}
	for _, k := range objectKeys(t, s) {
		require.True(t, referenced[k], "object %s is referenced by no partition", k)
	}
}

// Concurrent ingests into one dataset share manifest commits: requests that
// queue during a commit are committed together right after it, at most
// GroupCommitMax at a time, each answered with its own rows and the group's
// version, and every row is stored exactly once.
func TestConcurrentIngestsShareCommits(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	gate := newGatedStore(s.Store, groupOK)
	svc := ingest.New(ingest.Options{Store: gate, Targets: s.Targets, Engine: testEngine, TempDir: t.TempDir(), GroupCommitMax: 4})
	followers := make([]ingest.Request, 6)
	for i := range followers {
		followers[i] = csvRequest(rowsBody(i+1), "")
	}
	out := ingestTogether(t, s, svc, gate, csvRequest(rowsBody(100), ""), followers...)

	versions := map[int64]int{}
	for i, o := range out {
		require.NoError(t, o.err, "request %d", i)
		require.EqualValues(t, 2, o.res.RowsWritten, "request %d counts its own rows", i)
		require.EqualValues(t, 2, o.res.PartitionsWritten, "request %d", i)
		versions[o.res.ManifestVersion]++
	}
	require.Equal(t, []int{4, 2}, gate.groupSizes(), "six followers in groups of at most four")
	require.Equal(t, map[int64]int{1: 1, 2: 4, 3: 2}, versions, "seven requests, three manifest versions")
	ds, err := s.Store.GetDataset(s.Ctx, "cpu")
	require.NoError(t, err)
	require.Equal(t, int64(3), ds.ManifestVersion)

	count, sum := countSum(t, s)
	require.EqualValues(t, 14, count, "every row once")
	require.EqualValues(t, 2*(100+1+2+3+4+5+6), sum, "every row once")
	require.EqualValues(t, 14, requireIntact(t, s))
	requireNoOrphans(t, s)
}

// Idempotency keys work inside and across groups: a key sent twice in one
// group is applied once and the second request replays it; a key reused in
// the group with another body fails that request alone; after the group a
// retry replays the group's result, and a key of an earlier commit reused
// with another body is refused before anything is written.
func TestGroupCommitIdempotency(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	gate := newGatedStore(s.Store, groupOK)
	svc := ingest.New(ingest.Options{Store: gate, Targets: s.Targets, Engine: testEngine, TempDir: t.TempDir()})
	out := ingestTogether(t, s, svc, gate, csvRequest(rowsBody(100), "lead"),
		csvRequest(rowsBody(1), "a"),
		csvRequest(rowsBody(1), "a"),
		csvRequest(rowsBody(2), "b"),
		csvRequest(rowsBody(3), "b"),
		csvRequest(rowsBody(4), ""),
	)
	require.NoError(t, out[0].err)
	require.Equal(t, []int{5}, gate.groupSizes())
	group := out[1:]
	var applied, replayed int
	for _, o := range group[:2] {
		require.NoError(t, o.err)
		require.EqualValues(t, 2, o.res.RowsWritten)
		require.Equal(t, int64(2), o.res.ManifestVersion)
		if o.res.Replayed {
			replayed++
		} else {
			applied++
		}
	}
	require.Equal(t, 1, applied, "key a applied once")
	require.Equal(t, 1, replayed, "key a replayed once")
	bWon := 2 // the value of the request with key b that committed
	switch {
	case group[2].err == nil:
		require.ErrorIs(t, group[3].err, catalog.ErrIdempotencyMismatch)
	default:
		require.ErrorIs(t, group[2].err, catalog.ErrIdempotencyMismatch)
		require.NoError(t, group[3].err)
		bWon = 3
	}
	require.NoError(t, group[4].err, "a bad member fails no other")
	require.Equal(t, int64(2), group[4].res.ManifestVersion)

	count, sum := countSum(t, s)
	require.EqualValues(t, 8, count, "lead, a, b and the keyless request, once each")
	require.EqualValues(t, 2*(100+1+bWon+4), sum)
	require.EqualValues(t, 8, requireIntact(t, s))
	requireNoOrphans(t, s) // the replayed and refused requests' uploads are gone

	res, err := svc.Ingest(s.Ctx, csvRequest(rowsBody(1), "a"))
	require.NoError(t, err)
	require.Equal(t, ingest.Result{RowsWritten: 2, PartitionsWritten: 2, ManifestVersion: 2, Replayed: true}, res, "a retry after the group replays it")
	_, err = svc.Ingest(s.Ctx, csvRequest(rowsBody(7), "lead"))
	require.ErrorIs(t, err, catalog.ErrIdempotencyMismatch)
	count, _ = countSum(t, s)
	require.EqualValues(t, 8, count)
	requireNoOrphans(t, s)
}

// A group whose commit fails fails every member. When the failure is known
// to have changed nothing, every member's uploads are discarded (and
// audited); when the COMMIT itself went through but its acknowledgement was
// lost, the discard protocol keeps every upload the manifest references:
// no partition loses its object, and no object is left unreferenced.
func TestGroupCommitFailureFailsEveryMember(t *testing.T) {
	t.Parallel()
	for name, fault := range map[string]groupFault{"nothing committed": groupFailsBefore, "outcome unknown": groupFailsAfter} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			s := newStack(t)
			gate := newGatedStore(s.Store, fault)
			svc := ingest.New(ingest.Options{Store: gate, Targets: s.Targets, Engine: testEngine, TempDir: t.TempDir()})
			out := ingestTogether(t, s, svc, gate, csvRequest(rowsBody(100), ""),
				csvRequest(rowsBody(1), "a"), csvRequest(rowsBody(2), ""), csvRequest(rowsBody(3), ""))
			require.NoError(t, out[0].err)
			require.Equal(t, []int{3}, gate.groupSizes())
			for i, o := range out[1:] {
				require.ErrorIs(t, o.err, errCommitLost, "member %d", i)
			}

			count, _ := countSum(t, s)
			wantRows := int64(2)
			if fault == groupFailsAfter {
				wantRows = 8
			}
			require.Equal(t, wantRows, count)
			require.Equal(t, wantRows, requireIntact(t, s), "no dangling reference")
			requireNoOrphans(t, s)
			discarded, err := s.Store.ListAudit(s.Ctx, catalog.AuditFilter{Action: catalog.ActionDiscardUpload})
			require.NoError(t, err)
			if fault == groupFailsBefore {
				require.Len(t, discarded, 6, "each member's two uploads deleted and audited")
				require.Len(t, objectKeys(t, s), 2, "only the leader's files are left")
			} else {
				require.Empty(t, discarded, "the manifest references every upload")
				// A retry with the key replays what the lost COMMIT did.
				res, err := svc.Ingest(s.Ctx, csvRequest(rowsBody(1), "a"))
				require.NoError(t, err)
				require.True(t, res.Replayed)
				require.Equal(t, int64(2), res.ManifestVersion)
			}
		})
	}
}

func queryCountSum() query.Request {
	return query.Request{Dataset: "cpu", SQL: "SELECT count(*), sum(v) FROM cpu"}
}

// A group whose transaction conflicts (an added object already referenced)
// is retried member by member, so that only the member at fault fails: here
// none is, and each commits alone.
func TestGroupCommitConflictRetriesAlone(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	gate := newGatedStore(s.Store, groupConflicts)
	svc := ingest.New(ingest.Options{Store: gate, Targets: s.Targets, Engine: testEngine, TempDir: t.TempDir()})
	out := ingestTogether(t, s, svc, gate, csvRequest(rowsBody(100), ""),
		csvRequest(rowsBody(1), "a"), csvRequest(rowsBody(2), ""), csvRequest(rowsBody(3), ""))
	require.Equal(t, []int{3}, gate.groupSizes())
	versions := map[int64]bool{}
	for i, o := range out {
		require.NoError(t, o.err, "request %d", i)
		versions[o.res.ManifestVersion] = true
	}
	require.Len(t, versions, 4, "each request committed alone")
	count, sum := countSum(t, s)
	require.EqualValues(t, 8, count)
	require.EqualValues(t, 2*(100+1+2+3), sum)
	requireNoOrphans(t, s)
}

// Followers whose clients went away while they waited for the commit are
// committed all the same, and what they committed has its files.
func TestGroupCommitMemberGoneIsCommitted(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	gate := newGatedStore(s.Store, groupOK)
	svc := ingest.New(ingest.Options{Store: gate, Targets: s.Targets, Engine: testEngine, TempDir: t.TempDir()})
	ctx, cancel := context.WithCancel(s.Ctx)
	defer cancel()
	out := ingestTogetherCtx(t, s, svc, gate, ctx, cancel, csvRequest(rowsBody(100), ""),
		csvRequest(rowsBody(1), "a"), csvRequest(rowsBody(2), ""))
	require.Error(t, ctx.Err(), "the followers' clients went away before the commit")
	for i, o := range out {
		require.NoError(t, o.err, "request %d", i)
	}
	require.Equal(t, []int{2}, gate.groupSizes())
	count, sum := countSum(t, s)
	require.EqualValues(t, 6, count)
	require.EqualValues(t, 2*(100+1+2), sum)
	require.EqualValues(t, 6, requireIntact(t, s))
	requireNoOrphans(t, s)
}
