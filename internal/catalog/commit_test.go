package catalog_test

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"timestore/internal/catalog"
)

func TestCommitAddsPartitions(t *testing.T) {
	b := setup(t)
	jobID := int64(42)
	files := []catalog.PartitionFile{file(0, 10, 100), file(1, 20, 200)}
	res := b.commit(t, catalog.Change{
		Add:     files,
		JobID:   &jobID,
		Reason:  "because",
		Summary: map[string]any{"source": "http"},
		Audit:   []catalog.AuditEntry{{Action: "ingest.extra", Details: map[string]any{"n": 1}}},
	})

	require.Equal(t, int64(1), res.Version)
	require.False(t, res.Replayed)
	require.Equal(t, int64(30), res.RowsWritten)
	require.Equal(t, int64(2), res.PartitionsWritten)
	require.Len(t, res.Added, 2)
	for i, p := range res.Added {
		require.NotZero(t, p.ID)
		require.Equal(t, b.ds.ID, p.DatasetID)
		require.Equal(t, int64(1), p.AddedInVersion)
		require.Equal(t, catalog.StateLive, p.State())
		require.Equal(t, files[i].Key, p.Key)
		require.True(t, files[i].TimeMin.Equal(p.TimeMin))
		require.Equal(t, files[i].Stats, p.Stats)
	}
	require.Equal(t, int64(1), b.version(t))

	snap, err := b.store.Snapshot(b.ctx, "metrics", nil, nil)
	require.NoError(t, err)
	require.Equal(t, int64(1), snap.Version)
	require.Equal(t, int64(1), snap.Dataset.ManifestVersion)
	require.Equal(t, res.Added, snap.Partitions)

	versions, err := b.store.ManifestVersions(b.ctx, b.ds.ID, 10)
	require.NoError(t, err)
	require.Len(t, versions, 2)
	require.Equal(t, int64(1), versions[0].Version)
	require.Equal(t, catalog.OpIngest, versions[0].Operation)
	require.Equal(t, &jobID, versions[0].JobID)
	require.Equal(t, map[string]any{"source": "http"}, versions[0].Summary)

	entries, err := b.store.ListAudit(b.ctx, catalog.AuditFilter{Dataset: "metrics", Limit: 2})
	require.NoError(t, err)
	require.Len(t, entries, 2)
	extra, main := entries[0], entries[1]
	require.Equal(t, "ingest.extra", extra.Action)
	require.Equal(t, "metrics", extra.Dataset, "extra entries default to the change's dataset")
	require.Equal(t, "test", extra.Actor, "extra entries default to the change's actor")
	require.Equal(t, catalog.ActionPartitionPrefix+catalog.OpIngest, main.Action)
	require.Equal(t, ids(res.Added), main.Partitions)
	require.Equal(t, int64(300), main.Bytes)
	require.Equal(t, "because", main.Reason)
	require.EqualValues(t, 1, main.Details["manifest_version"])

	totals, err := b.store.DatasetTotals(b.ctx, b.ds.ID)
	require.NoError(t, err)
	require.Equal(t, catalog.Totals{Partitions: 2, Rows: 30, Bytes: 300}, totals)

	// The next change bumps the version by exactly one again.
	res = b.commit(t, catalog.Change{Add: []catalog.PartitionFile{file(2, 1, 1)}})
	require.Equal(t, int64(2), res.Version)
	require.Equal(t, int64(2), b.version(t))
}

func TestCommitRefusesInvalidChanges(t *testing.T) {
	b := setup(t)
	res := b.commit(t, catalog.Change{Add: []catalog.PartitionFile{file(0, 10, 100)}})
	dup := file(1, 1, 1)
	backwards := file(2, 1, 1)
	backwards.TimeMax = backwards.TimeMin.Add(-1)
	for name, ch := range map[string]catalog.Change{
		"empty":             {},
		"no operation":      {Operation: "-", Add: []catalog.PartitionFile{file(1, 1, 1)}},
		"duplicate id":      {Remove: []int64{res.Added[0].ID}, Restore: []int64{res.Added[0].ID}},
		"duplicate key":     {Add: []catalog.PartitionFile{dup, dup}},
		"time_max < min":    {Add: []catalog.PartitionFile{backwards}},
		"negative rowcount": {Add: []catalog.PartitionFile{{WindowStart: day(1), TimeMin: day(1), TimeMax: day(1), Target: "local", Key: "k", RowCount: -1}}},
	} {
		t.Run(name, func(t *testing.T) {
			ch.Dataset, ch.Actor = "metrics", "test"
			if ch.Operation == "" {
				ch.Operation = catalog.OpIngest
			} else if ch.Operation == "-" {
				ch.Operation = ""
			}
			_, err := b.store.Commit(b.ctx, ch)
			require.ErrorIs(t, err, catalog.ErrInvalid)
		})
	}
	require.Equal(t, int64(1), b.version(t))

	_, err := b.store.Commit(b.ctx, catalog.Change{Dataset: "nope", Operation: catalog.OpIngest, Add: []catalog.PartitionFile{file(1, 1, 1)}})
	require.ErrorIs(t, err, catalog.ErrNotFound)

	// An object can be referenced by one partition only.
	again := file(3, 1, 1)
	again.Key = res.Added[0].Key
	_, err = b.store.Commit(b.ctx, catalog.Change{Dataset: "metrics", Operation: catalog.OpIngest, Add: []catalog.PartitionFile{file(4, 1, 1), again}})
	require.ErrorIs(t, err, catalog.ErrConflict)
	require.Equal(t, int64(1), b.version(t))
	parts, err := b.store.Partitions(b.ctx, "metrics", catalog.PartitionsStateAll)
	require.NoError(t, err)
	require.Len(t, parts, 1)
}

func TestCommitRemoveOfNonLivePartitionConflicts(t *testing.T) {
	b := setup(t)
	res := b.commit(t, catalog.Change{Add: []catalog.PartitionFile{file(0, 10, 100), file(1, 20, 200)}})
	a, c := res.Added[0], res.Added[1]
	b.commit(t, catalog.Change{Operation: catalog.OpRetention, Remove: []int64{a.ID}})

	other, err := b.store.CreateDataset(b.ctx, testDataset("other"), "test")
	require.NoError(t, err)
	foreign, err := b.store.Commit(b.ctx, catalog.Change{Dataset: other.Name, Operation: catalog.OpIngest, Add: []catalog.PartitionFile{file(5, 1, 1)}})
	require.NoError(t, err)

	versionBefore, auditBefore := b.version(t), b.auditCount(t)
	for name, remove := range map[string][]int64{
		"already removed": {c.ID, a.ID},
		"unknown id":      {c.ID, 999999},
		"other dataset's": {foreign.Added[0].ID},
		"removed alone":   {a.ID},
	} {
		t.Run(name, func(t *testing.T) {
			// The change also adds a file: that must be rolled back too.
			_, err := b.store.Commit(b.ctx, catalog.Change{
				Dataset: "metrics", Operation: catalog.OpCompaction, Actor: "test",
				Add: []catalog.PartitionFile{file(0, 30, 300)}, Remove: remove,
			})
			require.ErrorIs(t, err, catalog.ErrConflict)
		})
	}
	_, err = b.store.Commit(b.ctx, catalog.Change{Dataset: "metrics", Operation: catalog.OpCompaction, Remove: []int64{c.ID, a.ID}})
	require.ErrorContains(t, err, "remove partition")
	require.ErrorContains(t, err, "partition "+itoa(a.ID))
	require.ErrorContains(t, err, "remove partition "+itoa(a.ID)+": it is removed, not live (removed in version 2)")
	_, err = b.store.Commit(b.ctx, catalog.Change{Dataset: "metrics", Operation: catalog.OpCompaction, Remove: []int64{c.ID, 999999}})
	require.ErrorContains(t, err, "remove partition 999999: no such partition in this dataset")

	require.Equal(t, versionBefore, b.version(t))
	require.Equal(t, auditBefore, b.auditCount(t))
	live, err := b.store.Partitions(b.ctx, "metrics", catalog.StateLive)
	require.NoError(t, err)
	require.Equal(t, []int64{c.ID}, ids(live))
	all, err := b.store.Partitions(b.ctx, "metrics", catalog.PartitionsStateAll)
	require.NoError(t, err)
	require.Len(t, all, 2)
}

func TestCommitRestore(t *testing.T) {
	b := setup(t)
	res := b.commit(t, catalog.Change{Add: []catalog.PartitionFile{file(0, 10, 100), file(1, 20, 200), file(2, 30, 300)}})
	p0, p1, p2 := res.Added[0], res.Added[1], res.Added[2]
	b.commit(t, catalog.Change{Operation: catalog.OpRetention, Remove: []int64{p0.ID, p1.ID, p2.ID}})

	removed, err := b.store.Partitions(b.ctx, "metrics", catalog.StateRemoved)
	require.NoError(t, err)
	require.Equal(t, []int64{p0.ID, p1.ID, p2.ID}, ids(removed))
	require.Equal(t, int64(2), *removed[0].RemovedInVersion)
	require.NotNil(t, removed[0].RemovedAt)

	// The sweeper purged p2.
	_, err = b.store.Pool().Exec(b.ctx, `UPDATE timestore.partitions SET purged_at = now() WHERE id = $1`, p2.ID)
	require.NoError(t, err)

	restore := func(ids ...int64) error {
		_, err := b.store.Commit(b.ctx, catalog.Change{Dataset: "metrics", Operation: catalog.OpRestore, Actor: "ops", Restore: ids, Reason: "oops"})
		return err
	}
	require.ErrorIs(t, restore(p0.ID, p2.ID), catalog.ErrConflict, "purged partitions cannot be restored")
	require.ErrorContains(t, restore(p0.ID, p2.ID), "restore partition "+itoa(p2.ID)+": it is purged, not removed")
	require.NoError(t, restore(p0.ID))
	require.ErrorIs(t, restore(p0.ID), catalog.ErrConflict, "live partitions cannot be restored")
	require.ErrorContains(t, restore(p0.ID), "restore partition "+itoa(p0.ID)+": it is live, not removed")
	require.Equal(t, int64(3), b.version(t))

	live, err := b.store.Partitions(b.ctx, "metrics", "")
	require.NoError(t, err)
	require.Equal(t, []int64{p0.ID}, ids(live))
	require.Nil(t, live[0].RemovedInVersion)
	require.Nil(t, live[0].RemovedAt)
	purged, err := b.store.Partitions(b.ctx, "metrics", catalog.StatePurged)
	require.NoError(t, err)
	require.Equal(t, []int64{p2.ID}, ids(purged))
	require.Equal(t, catalog.StatePurged, purged[0].State())
	_, err = b.store.Partitions(b.ctx, "metrics", "gone")
	require.ErrorIs(t, err, catalog.ErrInvalid)

	entries, err := b.store.ListAudit(b.ctx, catalog.AuditFilter{Action: catalog.ActionPartitionPrefix + catalog.OpRestore})
	require.NoError(t, err)
	require.Len(t, entries, 1)
	require.Equal(t, []int64{p0.ID}, entries[0].Partitions)
	require.Equal(t, int64(100), entries[0].Bytes)
	require.Equal(t, "oops", entries[0].Reason)
	require.Equal(t, "ops", entries[0].Actor)
}

func TestCommitIdempotency(t *testing.T) {
	b := setup(t)
	ch := catalog.Change{Add: []catalog.PartitionFile{file(0, 10, 100), file(1, 20, 200)}, IdempotencyKey: "k1", RequestHash: "h1"}
	first := b.commit(t, ch)
	require.False(t, first.Replayed)
	auditBefore := b.auditCount(t)

	// A retry of the same request (it carries new keys: the client re-uploaded).
	ch.Add = []catalog.PartitionFile{file(0, 10, 100), file(1, 20, 200)}
	replay := b.commit(t, ch)
	require.Equal(t, catalog.CommitResult{Version: 1, Replayed: true, RowsWritten: 30, PartitionsWritten: 2}, replay)
	require.Equal(t, int64(1), b.version(t))
	require.Equal(t, auditBefore, b.auditCount(t))
	all, err := b.store.Partitions(b.ctx, "metrics", catalog.PartitionsStateAll)
	require.NoError(t, err)
	require.Len(t, all, 2)

	_, err = b.store.Commit(b.ctx, catalog.Change{Dataset: "metrics", Operation: catalog.OpIngest, Add: ch.Add, IdempotencyKey: "k1", RequestHash: "h2"})
	require.ErrorIs(t, err, catalog.ErrIdempotencyMismatch)

	rec, found, err := b.store.LookupIdempotency(b.ctx, b.ds.ID, "k1")
	require.NoError(t, err)
	require.True(t, found)
	require.Equal(t, "h1", rec.RequestHash)
	require.Equal(t, int64(1), rec.Version)
	require.Equal(t, int64(30), rec.RowsWritten)
	require.Equal(t, int64(2), rec.PartitionsWritten)
	_, found, err = b.store.LookupIdempotency(b.ctx, b.ds.ID, "k2")
	require.NoError(t, err)
	require.False(t, found)

	// Keys are per dataset.
	other, err := b.store.CreateDataset(b.ctx, testDataset("other"), "test")
	require.NoError(t, err)
	res, err := b.store.Commit(b.ctx, catalog.Change{Dataset: other.Name, Operation: catalog.OpIngest, Add: []catalog.PartitionFile{file(2, 1, 1)}, IdempotencyKey: "k1", RequestHash: "h9"})
	require.NoError(t, err)
	require.False(t, res.Replayed)
}

func TestConcurrentCommits(t *testing.T) {
	b := setup(t)
	start := b.version(t)
	const n = 8
	var wg sync.WaitGroup
	results := make([]catalog.CommitResult, n)
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			results[i], errs[i] = b.store.Commit(b.ctx, catalog.Change{
				Dataset: "metrics", Operation: catalog.OpIngest, Actor: "test",
				Add: []catalog.PartitionFile{file(i, int64(i+1), 10)},
			})
		})
	}
	wg.Wait()
	versions := map[int64]bool{}
	for i := range n {
		require.NoError(t, errs[i])
		versions[results[i].Version] = true
	}
	require.Len(t, versions, n, "every commit got a version of its own")
	require.Equal(t, start+n, b.version(t))

	snap, err := b.store.Snapshot(b.ctx, "metrics", nil, nil)
	require.NoError(t, err)
	require.Len(t, snap.Partitions, n)
	mv, err := b.store.ManifestVersions(b.ctx, b.ds.ID, 0)
	require.NoError(t, err)
	require.Len(t, mv, n+1)
	totals, err := b.store.DatasetTotals(b.ctx, b.ds.ID)
	require.NoError(t, err)
	require.Equal(t, catalog.Totals{Partitions: n, Rows: n * (n + 1) / 2, Bytes: n * 10}, totals)
}

func TestCommitInTx(t *testing.T) {
	b := setup(t)
	var gotVersion int64
	var gotAdded []catalog.Partition
	res := b.commit(t, catalog.Change{
		Add: []catalog.PartitionFile{file(0, 10, 100)},
		InTx: func(ctx context.Context, tx catalog.Tx, version int64, added []catalog.Partition) error {
			gotVersion, gotAdded = version, added
			// The transaction sees the change.
			var n int
			if err := tx.QueryRow(ctx, `SELECT count(*) FROM timestore.partitions WHERE added_in_version = $1`, version).Scan(&n); err != nil {
				return err
			}
			if n != 1 {
				return errors.New("partition not visible in the transaction")
			}
			return nil
		},
	})
	require.Equal(t, res.Version, gotVersion)
	require.Equal(t, res.Added, gotAdded)
}

func TestCommitInTxErrorRollsBackEverything(t *testing.T) {
	b := setup(t)
	keep := b.commit(t, catalog.Change{Add: []catalog.PartitionFile{file(0, 10, 100)}})
	versionBefore, auditBefore := b.version(t), b.auditCount(t)

	boom := errors.New("enqueue failed")
	_, err := b.store.Commit(b.ctx, catalog.Change{
		Dataset: "metrics", Operation: catalog.OpCompaction, Actor: "test",
		Add:            []catalog.PartitionFile{file(1, 10, 100)},
		Remove:         []int64{keep.Added[0].ID},
		IdempotencyKey: "k", RequestHash: "h",
		Audit: []catalog.AuditEntry{{Action: "extra"}},
		InTx: func(ctx context.Context, tx catalog.Tx, version int64, added []catalog.Partition) error {
			return boom
		},
	})
	require.ErrorIs(t, err, boom)

	require.Equal(t, versionBefore, b.version(t))
	require.Equal(t, auditBefore, b.auditCount(t))
	all, err := b.store.Partitions(b.ctx, "metrics", catalog.PartitionsStateAll)
	require.NoError(t, err)
	require.Equal(t, ids(keep.Added), ids(all))
	require.Equal(t, catalog.StateLive, all[0].State())
	_, found, err := b.store.LookupIdempotency(b.ctx, b.ds.ID, "k")
	require.NoError(t, err)
	require.False(t, found)
	mv, err := b.store.ManifestVersions(b.ctx, b.ds.ID, 0)
	require.NoError(t, err)
	require.Equal(t, versionBefore, mv[0].Version)
}

// ingestChange is an ingest of files into the bundle's dataset.
func ingestChange(key, hash string, files ...catalog.PartitionFile) catalog.Change {
	return catalog.Change{Dataset: "metrics", Operation: catalog.OpIngest, Actor: "test", Add: files,
		IdempotencyKey: key, RequestHash: hash, Summary: map[string]any{"key": key}}
}

// A group commits its members in one manifest version, each with its own
// result, audit row and idempotency record; members that cannot apply (a
// malformed change, a key reused with another body, before or within the
// group) fail alone, and a key used twice in the group is applied once.
func TestCommitGroupSharesOneVersion(t *testing.T) {
	b := setup(t)
	first := b.commit(t, ingestChange("used", "h-used", file(0, 1, 1)))
	require.Equal(t, int64(1), first.Version)
	before := b.auditCount(t)

	out, err := b.store.CommitGroup(b.ctx, []catalog.Change{
		ingestChange("", "", file(1, 10, 100), file(2, 20, 200)), // 0: applied
		ingestChange("used", "h-used"+"-other", file(3, 1, 1)),   // 1: key reused with another body
		ingestChange("k", "h-k", file(4, 30, 300)),               // 2: applied
		ingestChange("k", "h-k", file(5, 1, 1)),                  // 3: replays 2
		ingestChange("k", "h-k-other", file(6, 1, 1)),            // 4: reuses 2's key with another body
		ingestChange("used", "h-used", file(7, 1, 1)),            // 5: replays the first commit
		{Dataset: "metrics", Operation: catalog.OpIngest},        // 6: empty
		ingestChange("", "", file(8, 40, 400)),                   // 7: applied
	})
	require.NoError(t, err)
	require.Len(t, out, 8)
	for _, i := range []int{0, 2, 7} {
		require.NoError(t, out[i].Err, "member %d", i)
		require.Equal(t, int64(2), out[i].Result.Version, "member %d", i)
		require.False(t, out[i].Result.Replayed)
	}
	require.Equal(t, int64(30), out[0].Result.RowsWritten)
	require.Equal(t, int64(2), out[0].Result.PartitionsWritten)
	require.Len(t, out[0].Result.Added, 2)
	require.Equal(t, int64(30), out[2].Result.RowsWritten)
	require.Equal(t, int64(40), out[7].Result.RowsWritten)
	require.ErrorIs(t, out[1].Err, catalog.ErrIdempotencyMismatch)
	require.ErrorIs(t, out[4].Err, catalog.ErrIdempotencyMismatch)
	require.ErrorIs(t, out[6].Err, catalog.ErrInvalid)
	require.Equal(t, catalog.CommitResult{Version: 2, Replayed: true, RowsWritten: 30, PartitionsWritten: 1}, out[3].Result)
	require.NoError(t, out[3].Err)
	require.Equal(t, catalog.CommitResult{Version: 1, Replayed: true, RowsWritten: 1, PartitionsWritten: 1}, out[5].Result)
	require.NoError(t, out[5].Err)

	require.Equal(t, int64(2), b.version(t), "one manifest version for the group")
	totals, err := b.store.DatasetTotals(b.ctx, b.ds.ID)
	require.NoError(t, err)
	require.Equal(t, catalog.Totals{Partitions: 5, Rows: 101, Bytes: 1001}, totals)

	versions, err := b.store.ManifestVersions(b.ctx, b.ds.ID, 1)
	require.NoError(t, err)
	require.EqualValues(t, 3, versions[0].Summary["group_size"])
	require.Len(t, versions[0].Summary["members"], 3)

	entries, err := b.store.ListAudit(b.ctx, catalog.AuditFilter{Dataset: "metrics", Action: catalog.ActionPartitionPrefix + catalog.OpIngest, Limit: 3})
	require.NoError(t, err)
	require.Len(t, entries, 3)
	require.Equal(t, before+3, b.auditCount(t), "one audit row per applied member, none for the others")
	require.Equal(t, ids(out[7].Result.Added), entries[0].Partitions, "each member's audit row names its own partitions")
	require.Equal(t, ids(out[2].Result.Added), entries[1].Partitions)
	require.Equal(t, ids(out[0].Result.Added), entries[2].Partitions)
	for _, e := range entries {
		require.EqualValues(t, 2, e.Details["manifest_version"])
		require.EqualValues(t, 3, e.Details["group_size"])
	}

	rec, found, err := b.store.LookupIdempotency(b.ctx, b.ds.ID, "k")
	require.NoError(t, err)
	require.True(t, found)
	require.Equal(t, "h-k", rec.RequestHash)
	require.Equal(t, int64(2), rec.Version)
	require.Equal(t, int64(30), rec.RowsWritten)

	// Across groups, the key replays.
	out, err = b.store.CommitGroup(b.ctx, []catalog.Change{ingestChange("k", "h-k", file(9, 1, 1)), ingestChange("", "", file(10, 1, 1))})
	require.NoError(t, err)
	require.Equal(t, catalog.CommitResult{Version: 2, Replayed: true, RowsWritten: 30, PartitionsWritten: 1}, out[0].Result)
	require.Equal(t, int64(3), out[1].Result.Version)
}

// A group whose transaction cannot apply (an added object already
// referenced, the dataset gone, members of different datasets) fails as a
// whole and changes nothing.
func TestCommitGroupFailsWhole(t *testing.T) {
	b := setup(t)
	res := b.commit(t, ingestChange("", "", file(0, 1, 1)))
	again := file(1, 1, 1)
	again.Key = res.Added[0].Key
	before := b.auditCount(t)

	_, err := b.store.CommitGroup(b.ctx, []catalog.Change{ingestChange("k", "h", file(2, 1, 1)), ingestChange("", "", again)})
	require.ErrorIs(t, err, catalog.ErrConflict)
	_, err = b.store.CommitGroup(b.ctx, []catalog.Change{ingestChange("", "", file(3, 1, 1)), {Dataset: "other", Operation: catalog.OpIngest, Add: []catalog.PartitionFile{file(4, 1, 1)}}})
	require.ErrorIs(t, err, catalog.ErrInvalid)
	gone := []catalog.Change{ingestChange("", "", file(5, 1, 1)), ingestChange("", "", file(6, 1, 1))}
	gone[0].Dataset, gone[1].Dataset = "nope", "nope"
	_, err = b.store.CommitGroup(b.ctx, gone)
	require.ErrorIs(t, err, catalog.ErrNotFound)

	require.Equal(t, int64(1), b.version(t))
	require.Equal(t, before, b.auditCount(t))
	_, found, err := b.store.LookupIdempotency(b.ctx, b.ds.ID, "k")
	require.NoError(t, err)
	require.False(t, found, "the failed group recorded no idempotency key")
	parts, err := b.store.Partitions(b.ctx, "metrics", catalog.PartitionsStateAll)
	require.NoError(t, err)
	require.Len(t, parts, 1)
}

// A change's statements after the lock go to the database in one round
// trip: its audit row still names the added partitions (read by the audit
// statement itself) before the removed ones, and an extra audit row without
// an action fails the change before anything is written.
func TestCommitAddAndRemoveAuditsBoth(t *testing.T) {
	b := setup(t)
	old := b.commit(t, catalog.Change{Add: []catalog.PartitionFile{file(0, 10, 100), file(1, 20, 200)}})
	res := b.commit(t, catalog.Change{Operation: catalog.OpCompaction,
		Add:    []catalog.PartitionFile{file(3, 30, 250), file(2, 5, 40)},
		Remove: []int64{old.Added[1].ID, old.Added[0].ID}})
	require.Equal(t, int64(2), res.Version)
	require.Equal(t, int64(35), res.RowsWritten)
	entries, err := b.store.ListAudit(b.ctx, catalog.AuditFilter{Action: catalog.ActionPartitionPrefix + catalog.OpCompaction})
	require.NoError(t, err)
	require.Len(t, entries, 1)
	require.Equal(t, []int64{res.Added[0].ID, res.Added[1].ID, old.Added[1].ID, old.Added[0].ID}, entries[0].Partitions)
	require.Equal(t, int64(590), entries[0].Bytes)
	require.EqualValues(t, 290, entries[0].Details["added_bytes"])
	require.EqualValues(t, 300, entries[0].Details["removed_bytes"])

	before := b.auditCount(t)
	_, err = b.store.Commit(b.ctx, catalog.Change{Dataset: "metrics", Operation: catalog.OpIngest, Actor: "test",
		Add: []catalog.PartitionFile{file(4, 1, 1)}, IdempotencyKey: "k", RequestHash: "h",
		Audit: []catalog.AuditEntry{{Details: map[string]any{"no": "action"}}}})
	require.ErrorIs(t, err, catalog.ErrInvalid)
	require.ErrorContains(t, err, "action is required")
	require.Equal(t, int64(2), b.version(t))
	require.Equal(t, before, b.auditCount(t))
	_, found, err := b.store.LookupIdempotency(b.ctx, b.ds.ID, "k")
	require.NoError(t, err)
	require.False(t, found)
	live, err := b.store.Partitions(b.ctx, "metrics", "")
	require.NoError(t, err)
	require.Len(t, live, 2)
}
