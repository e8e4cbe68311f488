package api

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"timestore/internal/catalog"
	"timestore/internal/client"
	"timestore/internal/testutil/pgtest"
)

// TestExportRoutes drives GET /v1/datasets/{name}/exports through the Go
// client, on a mux of its own (the server wires the route into /v1).
func TestExportRoutes(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	store := pgtest.NewStore(t)
	ds, err := store.CreateDataset(ctx, catalog.Dataset{
		Name: "cpu", Columns: []catalog.Column{{Name: "ts", Type: catalog.TypeTimestamp}},
		TimeColumn: "ts", Partition: catalog.WindowDay, Target: "local",
	}, "test")
	require.NoError(t, err)
	day := time.Date(2024, 3, 1, 0, 0, 0, 0, time.UTC)
	begin := catalog.ExportBegin{DatasetID: ds.ID, Target: "remote", Window: catalog.WindowDay, WindowStart: day,
		WindowEnd: day.AddDate(0, 0, 1), WindowLabel: "2024-03-01", ManifestVersion: 1, PartitionIDs: []int64{7, 8},
		ManifestKey: "exports/cpu/window=2024-03-01/_manifest.json", Actor: "test"}
	x, _, err := store.BeginExport(ctx, begin)
	require.NoError(t, err)
	sum := "sha256:" + "ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12"
	key := "exports/cpu/window=2024-03-01/part-0000.parquet"
	_, err = store.VerifyExport(ctx, x.ID, catalog.ExportResult{
		Files:    []catalog.ExportFile{{Key: key, Rows: 5, Bytes: 500, Checksum: sum, TimeMin: day, TimeMax: day.Add(time.Hour), Version: 1}},
		TimeMin:  &day,
		TimeMax:  &day,
		RowCount: 5, SizeBytes: 500, NewRows: 5, NewBytes: 500, Checksum: sum,
	})
	require.NoError(t, err)
	begin.WindowStart, begin.WindowEnd, begin.WindowLabel = day.AddDate(0, 0, 1), day.AddDate(0, 0, 2), "2024-03-02"
	begin.ManifestKey = "exports/cpu/window=2024-03-02/_manifest.json"
	failed, _, err := store.BeginExport(ctx, begin)
	require.NoError(t, err)
	require.NoError(t, store.FailExport(ctx, failed.ID, 0, "upload failed"))

	srv := New(Options{Store: store, Registerer: prometheus.NewRegistry(), Token: "user"})
	mux := http.NewServeMux()
	srv.exportRoutes(func(pattern string, h func(http.ResponseWriter, *http.Request) error, auth func(http.Handler) http.Handler) {
		mux.Handle(pattern, auth(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if err := h(w, r); err != nil {
				srv.writeError(w, r, err)
			}
		})))
	})
	hs := httptest.NewServer(mux)
	t.Cleanup(hs.Close)
	c := client.New(hs.URL, "user")

	xs, err := c.Exports(ctx, "cpu", "")
	require.NoError(t, err)
	require.Len(t, xs, 2)
	v := xs[0]
	require.Equal(t, x.ID, v.ID)
	require.Equal(t, "remote", v.Target)
	require.Equal(t, "2024-03-01", v.WindowLabel)
	require.Equal(t, "verified", v.State)
	require.Equal(t, []string{key}, v.Keys)
	require.EqualValues(t, 5, v.RowCount)
	require.EqualValues(t, 500, v.SizeBytes)
	require.EqualValues(t, 1, v.ManifestVersion)
	require.Equal(t, 2, v.Partitions)
	require.Equal(t, day, v.TimeMin.UTC())
	require.NotNil(t, v.VerifiedAt)
	require.Equal(t, "failed", xs[1].State)
	require.Equal(t, "upload failed", xs[1].Error)
	require.Empty(t, xs[1].Keys)

	only, err := c.Exports(ctx, "cpu", "verified")
	require.NoError(t, err)
	require.Len(t, only, 1)

	status := func(err error) int {
		t.Helper()
		var ce *client.Error
		require.ErrorAs(t, err, &ce)
		return ce.Status
	}
	_, err = c.Exports(ctx, "nope", "")
	require.Equal(t, http.StatusNotFound, status(err))
	_, err = c.Exports(ctx, "cpu", "bogus")
	require.Equal(t, http.StatusBadRequest, status(err))
	_, err = c.Exports(ctx, "Bad-Name", "")
	require.Equal(t, http.StatusBadRequest, status(err))
	_, err = client.New(hs.URL, "").Exports(ctx, "cpu", "")
	require.Equal(t, http.StatusUnauthorized, status(err))
}
