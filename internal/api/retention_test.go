package api

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"timestore/internal/catalog"
	"timestore/internal/client"
	"timestore/internal/retention"
	"timestore/internal/storage"
	"timestore/internal/testutil/pgtest"
)

// TestRetentionRoutes drives the hold and restore routes through the Go
// client, on a mux of their own (the server wires them into its admin routes).
func TestRetentionRoutes(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	store := pgtest.NewStore(t)
	targets, err := storage.NewTargets(ctx, t.TempDir(), nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = targets.Close() })
	svc, err := retention.New(retention.Options{Store: store, Targets: targets})
	require.NoError(t, err)
	_, err = store.CreateDataset(ctx, catalog.Dataset{
		Name: "cpu", Columns: []catalog.Column{{Name: "ts", Type: catalog.TypeTimestamp}},
		TimeColumn: "ts", Partition: catalog.WindowDay, Target: "local",
	}, "test")
	require.NoError(t, err)
	day := time.Date(2024, 3, 1, 0, 0, 0, 0, time.UTC)
	added, err := store.Commit(ctx, catalog.Change{Dataset: "cpu", Operation: catalog.OpIngest, Actor: "test", Add: []catalog.PartitionFile{
		{WindowStart: day, TimeMin: day, TimeMax: day.Add(time.Hour), RowCount: 1, SizeBytes: 10, Target: "local", Key: "cpu/a.parquet", Checksum: "sha256:00"},
		{WindowStart: day, TimeMin: day, TimeMax: day.Add(time.Hour), RowCount: 2, SizeBytes: 20, Target: "local", Key: "cpu/b.parquet", Checksum: "sha256:00"},
	}})
	require.NoError(t, err)
	a, b := added.Added[0].ID, added.Added[1].ID
	_, err = store.Commit(ctx, catalog.Change{Dataset: "cpu", Operation: catalog.OpRetention, Actor: "test", Remove: []int64{a}})
	require.NoError(t, err)
	_, err = store.Commit(ctx, catalog.Change{Dataset: "cpu", Operation: catalog.OpCompaction, Actor: "test", Remove: []int64{b}})
	require.NoError(t, err)

	srv := New(Options{Store: store, Targets: targets, Retention: svc, Registerer: prometheus.NewRegistry(), AdminEnabled: true, AdminToken: "secret"})
	mux := http.NewServeMux()
	srv.retentionRoutes(func(pattern string, h func(http.ResponseWriter, *http.Request) error, auth func(http.Handler) http.Handler) {
		mux.Handle(pattern, auth(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if err := h(w, r); err != nil {
				srv.writeError(w, r, err)
			}
		})))
	})
	hs := httptest.NewServer(mux)
	t.Cleanup(hs.Close)
	c := client.New(hs.URL, "secret")
	status := func(err error) int {
		t.Helper()
		var ce *client.Error
		require.ErrorAs(t, err, &ce)
		return ce.Status
	}

	h, err := c.AddHold(ctx, "cpu", "2024-03-01", "2024-03-02T00:00:00Z", "legal")
	require.NoError(t, err)
	require.Equal(t, "cpu", h.Dataset)
	require.Equal(t, day, h.From)
	require.Equal(t, "api:admin", h.CreatedBy)
	require.Equal(t, []int64{a}, h.RemovedPartitions)
	_, err = c.AddHold(ctx, "cpu", "2024-03-02", "2024-03-01", "legal")
	require.Equal(t, http.StatusBadRequest, status(err))
	_, err = c.AddHold(ctx, "cpu", "yesterday", "2024-03-01", "legal")
	require.Equal(t, http.StatusBadRequest, status(err))
	_, err = c.AddHold(ctx, "cpu", "2024-03-01", "2024-03-02", "")
	require.Equal(t, http.StatusBadRequest, status(err))
	_, err = c.AddHold(ctx, "nope", "2024-03-01", "2024-03-02", "x")
	require.Equal(t, http.StatusNotFound, status(err))

	holds, err := c.Holds(ctx, "cpu", false)
	require.NoError(t, err)
	require.Len(t, holds, 1)
	require.Equal(t, h.ID, holds[0].ID)
	rel, err := c.ReleaseHold(ctx, h.ID)
	require.NoError(t, err)
	require.NotNil(t, rel.ReleasedAt)
	_, err = c.ReleaseHold(ctx, h.ID)
	require.Equal(t, http.StatusConflict, status(err))
	holds, err = c.Holds(ctx, "", false)
	require.NoError(t, err)
	require.Empty(t, holds)
	holds, err = c.Holds(ctx, "", true)
	require.NoError(t, err)
	require.Len(t, holds, 1)

	res, err := c.RestorePartitions(ctx, "cpu", []int64{a})
	require.NoError(t, err)
	require.Equal(t, []int64{a}, res.Restored)
	require.Equal(t, int64(10), res.Totals.Bytes)
	_, err = c.RestorePartitions(ctx, "cpu", []int64{a})
	require.Equal(t, http.StatusConflict, status(err), "live now")
	_, err = c.RestorePartitions(ctx, "cpu", []int64{b})
	require.Equal(t, http.StatusConflict, status(err), "removed by compaction")
	_, err = c.RestorePartitions(ctx, "cpu", nil)
	require.Equal(t, http.StatusBadRequest, status(err))

	// The routes are admin routes.
	_, err = client.New(hs.URL, "").Holds(ctx, "", false)
	require.Equal(t, http.StatusUnauthorized, status(err))

	// Without a retention service they answer 503.
	bare := New(Options{Store: store, Targets: targets, Registerer: prometheus.NewRegistry()})
	rec := httptest.NewRecorder()
	req := httptest.NewRequestWithContext(context.Background(), http.MethodGet, "/admin/v1/holds", nil)
	bare.writeError(rec, req, bare.listHolds(rec, req))
	require.Equal(t, http.StatusServiceUnavailable, rec.Code)
}
