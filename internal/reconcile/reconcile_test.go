package reconcile_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"timestore/internal/catalog"
	"timestore/internal/jobs"
	"timestore/internal/reconcile"
	"timestore/internal/storage"
	"timestore/internal/testutil/pgtest"
	"timestore/internal/testutil/s3test"
)

func TestMain(m *testing.M) {
	s3test.SetCredentialsEnv()
	code := m.Run()
	s3test.StopShared()
	os.Exit(code)
}

type bundle struct {
	ctx     context.Context
	store   *catalog.Store
	targets *storage.Targets
	target  *storage.Target
	ds      catalog.Dataset
	rec     *reconcile.Reconciler
	reg     *prometheus.Registry
	clock   *clock
	tmp     string
}

// setup makes a dataset on targetName ("local", or "remote" on a fresh
// versitygw bucket) and a Reconciler whose clock the test sets.
func setup(t *testing.T, targetName string) *bundle {
	t.Helper()
	t.Parallel()
	ctx := t.Context()
	urls := map[string]string{}
	if targetName != storage.LocalTargetName {
		urls[targetName] = s3test.StartShared().NewBucket(t)
	}
	targets, err := storage.NewTargets(ctx, t.TempDir(), urls)
	require.NoError(t, err)
	t.Cleanup(func() { _ = targets.Close() })
	b := &bundle{ctx: ctx, store: pgtest.NewStore(t), targets: targets, reg: prometheus.NewPedanticRegistry(),
		clock: &clock{now: time.Now()}, tmp: t.TempDir()}
	b.target, err = targets.Get(targetName)
	require.NoError(t, err)
	b.ds = b.createDataset(t, "metrics", targetName)
	b.rec, err = reconcile.New(reconcile.Options{Store: b.store, Targets: targets, Registerer: b.reg, Now: b.clock.Now})
	require.NoError(t, err)
	return b
}

func (b *bundle) createDataset(t *testing.T, name, target string) catalog.Dataset {
	t.Helper()
	ds, err := b.store.CreateDataset(b.ctx, catalog.Dataset{
		Name:       name,
		Columns:    []catalog.Column{{Name: "ts", Type: catalog.TypeTimestamp}, {Name: "value", Type: catalog.TypeDouble}},
		TimeColumn: "ts", Partition: catalog.WindowDay, Target: target,
	}, "test")
	require.NoError(t, err)
	return ds
}

var day = time.Date(2025, 5, 1, 0, 0, 0, 0, time.UTC)

// put uploads an object of size bytes under a fresh partition key of dataset
// and returns its key.
func (b *bundle) put(t *testing.T, dataset string, size int) (key string, n int64, checksum string) {
	t.Helper()
	key = storage.PartitionKey(dataset, storage.WindowDay, day, storage.NewObjectID())
	path := filepath.Join(b.tmp, filepath.Base(key))
	require.NoError(t, os.WriteFile(path, make([]byte, size), 0o600))
	n, checksum, err := b.target.PutFile(b.ctx, key, path)
	require.NoError(t, err)
	return key, n, checksum
}

// commit uploads and references a partition of dataset and returns it.
func (b *bundle) commit(t *testing.T, dataset string, size int) catalog.Partition {
	t.Helper()
	key, n, sum := b.put(t, dataset, size)
	res, err := b.store.Commit(b.ctx, catalog.Change{
		Dataset: dataset, Operation: catalog.OpIngest, Actor: "test",
		Add: []catalog.PartitionFile{{
			WindowStart: day, TimeMin: day.Add(time.Hour), TimeMax: day.Add(2 * time.Hour),
			RowCount: 1, SizeBytes: n, Target: b.target.Name, Key: key, Checksum: sum,
		}},
	})
	require.NoError(t, err)
	return res.Added[0]
}

func (b *bundle) exists(t *testing.T, key string) bool {
	t.Helper()
	_, err := b.target.Attributes(b.ctx, key)
	if errors.Is(err, storage.ErrNotExist) {
		return false
	}
	require.NoError(t, err)
	return true
}

func (b *bundle) metric(t *testing.T, name string) float64 {
	t.Helper()
	families, err := b.reg.Gather()
	require.NoError(t, err)
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["dataset"] == "metrics" && labels["target"] == b.target.Name {
				if m.GetCounter() != nil {
					return m.GetCounter().GetValue()
				}
				return m.GetGauge().GetValue()
			}
		}
	}
	return 0
}

func TestReconcileLocalTarget(t *testing.T) {
	testReconcile(t, storage.LocalTargetName)
}

func TestReconcileS3Target(t *testing.T) {
	testReconcile(t, "remote")
}

func testReconcile(t *testing.T, targetName string) {
	b := setup(t, targetName)
	live := b.commit(t, "metrics", 100)
	removed := b.commit(t, "metrics", 200)
	_, err := b.store.Commit(b.ctx, catalog.Change{Dataset: "metrics", Operation: catalog.OpRetention, Actor: "test", Remove: []int64{removed.ID}})
	require.NoError(t, err)
	gone := b.commit(t, "metrics", 300)
	require.NoError(t, b.target.Delete(b.ctx, gone.Key), "deleted behind timestore's back")
	orphan, orphanSize, _ := b.put(t, "metrics", 400) // an ingest that crashed before its commit
	foreign := "metrics/README.txt"
	require.NoError(t, b.target.Bucket.Upload(b.ctx, foreign, bytesReader("not a partition")))
	otherDS := b.createDataset(t, "metrics_other", targetName)
	otherOrphan, _, _ := b.put(t, otherDS.Name, 10) // another dataset's prefix: not ours to judge

	// Just uploaded, the orphan is younger than the safety age: kept.
	r, err := b.rec.Reconcile(b.ctx, "metrics", false, "job:1", nil)
	require.NoError(t, err)
	require.Equal(t, []string{targetName}, r.Targets)
	require.Equal(t, 4, r.ObjectsScanned) // live, removed, orphan, foreign
	require.Equal(t, 3, r.Referenced)
	require.Zero(t, r.OrphansFound)
	require.Equal(t, 1, r.OrphansYoung)
	require.Equal(t, orphan, r.YoungOrphans[0].Key)
	require.Equal(t, 1, r.Foreign)
	require.True(t, b.exists(t, orphan))

	// The missing object is reported, loudly, and stays in the catalog.
	require.Equal(t, 1, r.Missing)
	require.Equal(t, reconcile.MissingReport{Target: targetName, Key: gone.Key, PartitionID: gone.ID, State: catalog.StateLive, SizeBytes: gone.SizeBytes}, r.MissingObjects[0])
	require.InDelta(t, 1, b.metric(t, "timestore_missing_objects"), 0)
	parts, err := b.store.Partitions(b.ctx, "metrics", catalog.StateLive)
	require.NoError(t, err)
	require.Len(t, parts, 2, "the partition whose object is missing is still live")

	// Two hours later it is an orphan: a dry run reports it, deleting nothing.
	b.clock.set(time.Now().Add(2 * time.Hour))
	plan, err := b.rec.Task().Plan(b.ctx, "metrics")
	require.NoError(t, err)
	pr := plan.(reconcile.Report)
	require.True(t, pr.DryRun)
	require.Equal(t, 1, pr.OrphansFound)
	require.Equal(t, orphan, pr.Orphans[0].Key)
	require.Equal(t, orphanSize, pr.OrphanBytes)
	require.Zero(t, pr.OrphansDeleted)
	require.Equal(t, 1, pr.Missing)
	require.True(t, b.exists(t, orphan))
	require.Zero(t, b.metric(t, "timestore_reconcile_orphans_found_total"), "dry runs count nothing")

	// The real run deletes the orphan, and only the orphan.
	out, err := b.rec.Task().Run(b.ctx, "metrics", jobs.JobContext{ID: 7, Actor: "job:7", Logger: nilLogger()})
	require.NoError(t, err)
	summary := out.(reconcile.Report)
	require.Equal(t, 1, summary.OrphansDeleted)
	require.Equal(t, orphanSize, summary.BytesReclaimed)
	require.Equal(t, 1, summary.Missing)
	require.False(t, b.exists(t, orphan))
	for _, key := range []string{live.Key, removed.Key, foreign, otherOrphan} {
		require.True(t, b.exists(t, key), "%s must not be touched", key)
	}
	require.InDelta(t, 1, b.metric(t, "timestore_reconcile_orphans_found_total"), 0)
	require.InDelta(t, 1, b.metric(t, "timestore_reconcile_orphans_deleted_total"), 0)
	require.InDelta(t, float64(orphanSize), b.metric(t, "timestore_reconcile_orphan_bytes_deleted_total"), 0)
	require.InDelta(t, 1, b.metric(t, "timestore_missing_objects"), 0)

	entries, err := b.store.ListAudit(b.ctx, catalog.AuditFilter{Action: reconcile.ActionDeleteOrphan})
	require.NoError(t, err)
	require.Len(t, entries, 1)
	require.Equal(t, "job:7", entries[0].Actor)
	require.Equal(t, "metrics", entries[0].Dataset)
	require.Equal(t, orphanSize, entries[0].Bytes)
	require.Equal(t, orphan, entries[0].Details["key"])
	require.Equal(t, targetName, entries[0].Details["target"])

	// Nothing left to do; the missing object is still reported.
	r, err = b.rec.Reconcile(b.ctx, "metrics", false, "job:8", nil)
	require.NoError(t, err)
	require.Zero(t, r.OrphansFound)
	require.Equal(t, 1, r.Missing)
	parts, err = b.store.Partitions(b.ctx, "metrics", catalog.PartitionsStateAll)
	require.NoError(t, err)
	require.Len(t, parts, 3)
}

// The objects of a deleted dataset wait for the sweeper; a new dataset of the
// same name shares their prefix and must not take them for orphans.
func TestReconcileKeepsObjectsOfDeletedNamesake(t *testing.T) {
	b := setup(t, storage.LocalTargetName)
	old := b.commit(t, "metrics", 50)
	require.NoError(t, b.store.DeleteDataset(b.ctx, "metrics", "test"))
	b.createDataset(t, "metrics", storage.LocalTargetName)
	fresh := b.commit(t, "metrics", 60)

	b.clock.set(time.Now().Add(2 * time.Hour))
	r, err := b.rec.Reconcile(b.ctx, "metrics", false, "job:1", nil)
	require.NoError(t, err)
	require.Zero(t, r.OrphansFound)
	require.Zero(t, r.Missing)
	require.Equal(t, 2, r.Referenced)
	require.True(t, b.exists(t, old.Key))
	require.True(t, b.exists(t, fresh.Key))

	_, err = b.rec.Reconcile(b.ctx, "nope", true, "", nil)
	require.ErrorIs(t, err, catalog.ErrNotFound)
}

// A failing delete fails the run (River retries it). The deletion is audited
// before it is attempted, so a failed or interrupted attempt leaves one
// record more than deletions done, never a deletion without a record.
func TestReconcileDeleteFailureFailsTheRun(t *testing.T) {
	b := setup(t, storage.LocalTargetName)
	orphan, _, _ := b.put(t, "metrics", 10)
	faulty := storage.NewFaultyBucket(b.target.Bucket)
	require.NoError(t, b.targets.SetBucket(storage.LocalTargetName, faulty))
	remove := faulty.FailAlways(storage.OpDelete, nil)

	b.clock.set(time.Now().Add(2 * time.Hour))
	r, err := b.rec.Reconcile(b.ctx, "metrics", false, "job:1", nil)
	require.ErrorIs(t, err, storage.ErrInjected)
	require.Equal(t, 1, r.OrphansFound)
	require.Zero(t, r.OrphansDeleted)
	require.True(t, b.exists(t, orphan))
	entries, err := b.store.ListAudit(b.ctx, catalog.AuditFilter{Action: reconcile.ActionDeleteOrphan})
	require.NoError(t, err)
	require.Len(t, entries, 1)

	remove()
	r, err = b.rec.Reconcile(b.ctx, "metrics", false, "job:2", nil)
	require.NoError(t, err)
	require.Equal(t, 1, r.OrphansDeleted)
	require.False(t, b.exists(t, orphan))
	entries, err = b.store.ListAudit(b.ctx, catalog.AuditFilter{Action: reconcile.ActionDeleteOrphan})
	require.NoError(t, err)
	require.Len(t, entries, 2)
	require.Equal(t, orphan, entries[0].Details["key"])
}

// Through the job harness: trigger reconcile, the job deletes the orphan
// and records the report as its output; a dry run deletes nothing.
func TestReconcileAsJob(t *testing.T) {
	b := setup(t, storage.LocalTargetName)
	require.NoError(t, jobs.Migrate(b.ctx, b.store.Pool()))
	b.commit(t, "metrics", 10)
	orphan, _, _ := b.put(t, "metrics", 20)
	b.clock.set(time.Now().Add(2 * time.Hour))
	svc, err := jobs.New(jobs.Options{Store: b.store, Tasks: []jobs.Task{b.rec.Task()}, Workers: true, TestOnly: true})
	require.NoError(t, err)
	require.NoError(t, svc.Start(b.ctx))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		require.NoError(t, svc.Stop(ctx))
	})

	plan, err := svc.DryRun(b.ctx, jobs.KindReconcile, "metrics")
	require.NoError(t, err)
	require.Equal(t, 1, plan.(reconcile.Report).OrphansFound)
	require.True(t, b.exists(t, orphan))

	job, _, err := svc.Trigger(b.ctx, jobs.KindReconcile, "metrics", "alice")
	require.NoError(t, err)
	deadline := time.Now().Add(30 * time.Second)
	for !job.Finished() {
		require.False(t, time.Now().After(deadline), "job %d still %s", job.ID, job.State)
		select {
		case <-time.After(20 * time.Millisecond):
		case <-b.ctx.Done():
			t.Fatal(b.ctx.Err())
		}
		job, err = svc.Get(b.ctx, job.ID)
		require.NoError(t, err)
	}
	require.Equal(t, "completed", job.State)
	require.Equal(t, jobs.OutcomeSuccess, job.Outcome)
	var out struct {
		Summary reconcile.Report `json:"summary"`
	}
	require.NoError(t, json.Unmarshal(job.Output, &out))
	require.Equal(t, 1, out.Summary.OrphansDeleted)
	require.Equal(t, orphan, out.Summary.Orphans[0].Key)
	require.False(t, b.exists(t, orphan))
	entries, err := b.store.ListAudit(b.ctx, catalog.AuditFilter{Action: reconcile.ActionDeleteOrphan})
	require.NoError(t, err)
	require.Len(t, entries, 1)
	require.Equal(t, fmt.Sprintf("job:%d", job.ID), entries[0].Actor)
}

type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
}

func bytesReader(s string) io.Reader { return strings.NewReader(s) }

func nilLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// A host whose clock runs two hours ahead of the target's must not take an
// upload still waiting for its commit (just written) for an orphan older
// than the safety age: ages are measured on the target's clock.
func TestReconcileHostClockAhead(t *testing.T) {
	for _, targetName := range []string{storage.LocalTargetName, "remote"} {
		t.Run(targetName, func(t *testing.T) {
			b := setup(t, targetName)
			ahead := func() time.Time { return time.Now().Add(2 * time.Hour) }
			rec, err := reconcile.New(reconcile.Options{Store: b.store, Targets: b.targets, Now: ahead, ProcessClock: ahead})
			require.NoError(t, err)
			pending, _, _ := b.put(t, "metrics", 10) // uploaded, its commit not yet made
			r, err := rec.Reconcile(b.ctx, "metrics", false, "job:1", nil)
			require.NoError(t, err)
			require.Zero(t, r.OrphansFound)
			require.Equal(t, 1, r.OrphansYoung)
			require.True(t, b.exists(t, pending))
		})
	}
}
