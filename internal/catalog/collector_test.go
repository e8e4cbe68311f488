package catalog_test

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"

	"timestore/internal/catalog"
	"timestore/internal/policy"
	"timestore/internal/testutil/pgtest"
)

// gauge returns the value of the gauge name with exactly labels, failing
// the test if it is absent.
func gauge(t *testing.T, g prometheus.Gatherer, name string, labels map[string]string) float64 {
	t.Helper()
	v, ok := findGauge(t, g, name, labels)
	require.True(t, ok, "%s%v not reported", name, labels)
	return v
}

func findGauge(t *testing.T, g prometheus.Gatherer, name string, labels map[string]string) (float64, bool) {
	t.Helper()
	mfs, err := g.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		require.Equal(t, dto.MetricType_GAUGE, mf.GetType())
		for _, m := range mf.GetMetric() {
			got := map[string]string{}
			for _, lp := range m.GetLabel() {
				got[lp.GetName()] = lp.GetValue()
			}
			if len(got) == len(labels) {
				match := true
				for k, v := range labels {
					match = match && got[k] == v
				}
				if match {
					return m.GetGauge().GetValue(), true
				}
			}
		}
	}
	return 0, false
}

func TestCollector(t *testing.T) {
	b := setup(t) // dataset "metrics" on target "local", default grace
	grace := policy.Duration(2 * time.Hour)
	empty := testDataset("empty")
	empty.Policy = policy.Policy{Retention: &policy.Retention{Grace: &grace}}
	_, err := b.store.CreateDataset(b.ctx, empty, "test")
	require.NoError(t, err)

	// metrics: v1 two local files, v2 one file on target s3, v3 removes the
	// first; a fourth file is removed and purged, so no longer counted.
	res := b.commit(t, catalog.Change{Add: []catalog.PartitionFile{file(0, 10, 100), file(1, 20, 200)}})
	first := res.Added[0].ID
	onS3 := file(2, 5, 50)
	onS3.Target = "s3"
	b.commit(t, catalog.Change{Add: []catalog.PartitionFile{onS3}})
	b.commit(t, catalog.Change{Operation: catalog.OpRetention, Remove: []int64{first}})
	purged := b.commit(t, catalog.Change{Add: []catalog.PartitionFile{file(3, 1000, 1000)}}).Added[0].ID
	b.commit(t, catalog.Change{Operation: catalog.OpRetention, Remove: []int64{purged}})
	_, err = b.store.Pool().Exec(b.ctx, `UPDATE timestore.partitions SET purged_at = now() WHERE id = $1`, purged)
	require.NoError(t, err)

	// gone: deleted with one partition the sweeper has not purged yet.
	_, err = b.store.CreateDataset(b.ctx, testDataset("gone"), "test")
	require.NoError(t, err)
	_, err = b.store.Commit(b.ctx, catalog.Change{Dataset: "gone", Operation: catalog.OpIngest, Actor: "test",
		Add: []catalog.PartitionFile{file(4, 7, 70)}})
	require.NoError(t, err)
	require.NoError(t, b.store.DeleteDataset(b.ctx, "gone", "test"))
	// vanished: deleted and fully purged, so not reported at all.
	_, err = b.store.CreateDataset(b.ctx, testDataset("vanished"), "test")
	require.NoError(t, err)
	require.NoError(t, b.store.DeleteDataset(b.ctx, "vanished", "test"))

	removed, err := b.store.Partitions(b.ctx, "metrics", catalog.StateRemoved)
	require.NoError(t, err)
	require.Len(t, removed, 1)
	now := removed[0].RemovedAt.Add(90 * time.Minute)

	c := catalog.NewCollector(b.store, nil)
	catalog.SetCollectorClock(c, func() time.Time { return now })
	reg := prometheus.NewPedanticRegistry()
	require.NoError(t, reg.Register(c))

	const want = `
# HELP timestore_partitions Partitions of a dataset on a target, by state: live, or removed (not yet purged).
# TYPE timestore_partitions gauge
timestore_partitions{dataset="empty",state="live",target="local"} 0
timestore_partitions{dataset="empty",state="removed",target="local"} 0
timestore_partitions{dataset="gone",state="live",target="local"} 0
timestore_partitions{dataset="gone",state="removed",target="local"} 1
timestore_partitions{dataset="metrics",state="live",target="local"} 1
timestore_partitions{dataset="metrics",state="removed",target="local"} 1
timestore_partitions{dataset="metrics",state="live",target="s3"} 1
timestore_partitions{dataset="metrics",state="removed",target="s3"} 0
# HELP timestore_partition_bytes Bytes of the partition files of a dataset on a target, by state: live, or removed (not yet purged).
# TYPE timestore_partition_bytes gauge
timestore_partition_bytes{dataset="empty",state="live",target="local"} 0
timestore_partition_bytes{dataset="empty",state="removed",target="local"} 0
timestore_partition_bytes{dataset="gone",state="live",target="local"} 0
timestore_partition_bytes{dataset="gone",state="removed",target="local"} 70
timestore_partition_bytes{dataset="metrics",state="live",target="local"} 200
timestore_partition_bytes{dataset="metrics",state="removed",target="local"} 100
timestore_partition_bytes{dataset="metrics",state="live",target="s3"} 50
timestore_partition_bytes{dataset="metrics",state="removed",target="s3"} 0
# HELP timestore_partition_rows Rows in the partitions of a dataset on a target, by state: live, or removed (not yet purged).
# TYPE timestore_partition_rows gauge
timestore_partition_rows{dataset="empty",state="live",target="local"} 0
timestore_partition_rows{dataset="empty",state="removed",target="local"} 0
timestore_partition_rows{dataset="gone",state="live",target="local"} 0
timestore_partition_rows{dataset="gone",state="removed",target="local"} 7
timestore_partition_rows{dataset="metrics",state="live",target="local"} 20
timestore_partition_rows{dataset="metrics",state="removed",target="local"} 10
timestore_partition_rows{dataset="metrics",state="live",target="s3"} 5
timestore_partition_rows{dataset="metrics",state="removed",target="s3"} 0
# HELP timestore_manifest_version Current manifest version of a dataset.
# TYPE timestore_manifest_version gauge
timestore_manifest_version{dataset="empty"} 0
timestore_manifest_version{dataset="metrics"} 5
# HELP timestore_sweep_grace_seconds Grace period of a dataset's policy: removed partitions stay restorable this long before the sweeper deletes them.
# TYPE timestore_sweep_grace_seconds gauge
timestore_sweep_grace_seconds{dataset="empty"} 7200
timestore_sweep_grace_seconds{dataset="gone"} 3600
timestore_sweep_grace_seconds{dataset="metrics"} 3600
# HELP timestore_catalog_collect_success 1 if the last scrape read the catalog metrics, 0 if the catalog query failed.
# TYPE timestore_catalog_collect_success gauge
timestore_catalog_collect_success 1
`
	require.NoError(t, testutil.GatherAndCompare(reg, strings.NewReader(want),
		"timestore_partitions", "timestore_partition_bytes", "timestore_partition_rows",
		"timestore_manifest_version", "timestore_sweep_grace_seconds", "timestore_catalog_collect_success"))

	// Ages against the fixed clock: the oldest live row of metrics is at
	// day 1, 01:00; its removed partition was removed 90 minutes ago.
	require.Equal(t, now.Sub(day(1).Add(time.Hour)).Seconds(),
		gauge(t, reg, "timestore_oldest_live_data_age_seconds", map[string]string{"dataset": "metrics"}))
	_, ok := findGauge(t, reg, "timestore_oldest_live_data_age_seconds", map[string]string{"dataset": "empty"})
	require.False(t, ok, "no live data, no age")
	require.Equal(t, 5400.0, gauge(t, reg, "timestore_sweep_lag_seconds", map[string]string{"dataset": "metrics"}))
	require.Equal(t, 0.0, gauge(t, reg, "timestore_sweep_lag_seconds", map[string]string{"dataset": "empty"}))
	require.Positive(t, gauge(t, reg, "timestore_sweep_lag_seconds", map[string]string{"dataset": "gone"}))
	require.Equal(t, 3, testutil.CollectAndCount(c, "timestore_sweep_lag_seconds"), "empty, gone and metrics")

	// A clock behind the catalog's (skew) never yields negative ages.
	catalog.SetCollectorClock(c, func() time.Time { return day(0) })
	require.Equal(t, 0.0, gauge(t, reg, "timestore_sweep_lag_seconds", map[string]string{"dataset": "metrics"}))
	require.Equal(t, 0.0, gauge(t, reg, "timestore_oldest_live_data_age_seconds", map[string]string{"dataset": "metrics"}))

	// A live dataset that takes the name of the deleted one is merged with it.
	_, err = b.store.CreateDataset(b.ctx, testDataset("gone"), "test")
	require.NoError(t, err)
	require.Equal(t, 1.0, gauge(t, reg, "timestore_partitions", map[string]string{"dataset": "gone", "target": "local", "state": "removed"}))
	require.Equal(t, 0.0, gauge(t, reg, "timestore_manifest_version", map[string]string{"dataset": "gone"}))
}

func TestCollectorCatalogDown(t *testing.T) {
	t.Parallel()
	store := pgtest.NewStore(t)
	var logs bytes.Buffer
	c := catalog.NewCollector(store, slog.New(slog.NewTextHandler(&logs, nil)))
	reg := prometheus.NewPedanticRegistry()
	require.NoError(t, reg.Register(c))
	require.Equal(t, 1, testutil.CollectAndCount(c), "an empty catalog reports success only")

	store.Close()
	require.NoError(t, testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP timestore_catalog_collect_success 1 if the last scrape read the catalog metrics, 0 if the catalog query failed.
# TYPE timestore_catalog_collect_success gauge
timestore_catalog_collect_success 0
`)), "no catalog samples, and the scrape still succeeds")
	require.Contains(t, logs.String(), "catalog metrics")
	require.Contains(t, logs.String(), "closed")
}
