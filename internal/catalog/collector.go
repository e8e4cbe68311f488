package catalog

import (
	"context"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"timestore/internal/policy"
)

// CollectTimeoutDefault bounds the query of one scrape of the catalog
// collector.
const CollectTimeoutDefault = 2 * time.Second

// collector reports the state of the manifest at scrape time. See
// NewCollector.
type collector struct {
	store   *Store
	log     *slog.Logger
	timeout time.Duration
	now     func() time.Time

	partitions      *prometheus.Desc
	partitionBytes  *prometheus.Desc
	partitionRows   *prometheus.Desc
	manifestVersion *prometheus.Desc
	oldestLiveAge   *prometheus.Desc
	sweepLag        *prometheus.Desc
	sweepGrace      *prometheus.Desc
	up              *prometheus.Desc
}

var _ prometheus.Collector = (*collector)(nil)

// NewCollector returns a Prometheus collector that reads the catalog at
// every scrape, in one query bounded by CollectTimeoutDefault, and reports
// per dataset:
//
//   - timestore_partitions, timestore_partition_bytes and
//     timestore_partition_rows {dataset, target, state}: partitions, their
//     bytes and rows; state is "live" or "removed" (removed but not yet
//     purged, so still on the target and restorable). Both states are
//     reported for the dataset's own target and every target holding its
//     partitions, zero where there are none.
//   - timestore_manifest_version {dataset}: the current manifest version.
//   - timestore_oldest_live_data_age_seconds {dataset}: now minus the
//     earliest time_min of the live partitions; absent without live data.
//   - timestore_sweep_lag_seconds {dataset}: how long the oldest removed but
//     unpurged partition has been removed (0 if none): what the sweeper has
//     yet to delete.
//   - timestore_sweep_grace_seconds {dataset}: the grace period of the
//     dataset's policy (retention.grace, policy.GraceDefault when unset),
//     before which the sweeper must not delete; the sweep lag is healthy
//     while it stays near it.
//   - timestore_catalog_collect_success: 1 if the query succeeded, else 0.
//
// A deleted dataset is reported while the sweeper has not yet purged all its
// partitions (as removed partitions, sweep lag and grace, without a manifest
// version), merged with a live dataset that has taken its name meanwhile.
// Ages are clamped at zero. When the query fails the collector reports only
// timestore_catalog_collect_success 0 and logs the error with log: a scrape
// never fails or panics because the catalog is unreachable.
func NewCollector(s *Store, log *slog.Logger) prometheus.Collector {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	dtsLabels := []string{"dataset", "target", "state"}
	dsLabel := []string{"dataset"}
	return &collector{
		store:   s,
		log:     log,
		timeout: CollectTimeoutDefault,
		now:     time.Now,
		partitions: prometheus.NewDesc("timestore_partitions",
			"Partitions of a dataset on a target, by state: live, or removed (not yet purged).", dtsLabels, nil),
		partitionBytes: prometheus.NewDesc("timestore_partition_bytes",
			"Bytes of the partition files of a dataset on a target, by state: live, or removed (not yet purged).", dtsLabels, nil),
		partitionRows: prometheus.NewDesc("timestore_partition_rows",
			"Rows in the partitions of a dataset on a target, by state: live, or removed (not yet purged).", dtsLabels, nil),
		manifestVersion: prometheus.NewDesc("timestore_manifest_version",
			"Current manifest version of a dataset.", dsLabel, nil),
		oldestLiveAge: prometheus.NewDesc("timestore_oldest_live_data_age_seconds",
			"Age of the oldest live row of a dataset: now minus the earliest time_min of its live partitions.", dsLabel, nil),
		sweepLag: prometheus.NewDesc("timestore_sweep_lag_seconds",
			"Time since the oldest removed but unpurged partition of a dataset was removed; 0 if there is none.", dsLabel, nil),
		sweepGrace: prometheus.NewDesc("timestore_sweep_grace_seconds",
			"Grace period of a dataset's policy: removed partitions stay restorable this long before the sweeper deletes them.", dsLabel, nil),
		up: prometheus.NewDesc("timestore_catalog_collect_success",
			"1 if the last scrape read the catalog metrics, 0 if the catalog query failed.", nil, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.partitions, c.partitionBytes, c.partitionRows,
		c.manifestVersion, c.oldestLiveAge, c.sweepLag, c.sweepGrace, c.up} {
		ch <- d
	}
}

// collectSQL reads, per dataset name, the dataset (the live one, or else the
// most recently deleted one that still has unpurged partitions) and, per
// target and state (removed or not), the count, bytes, rows, earliest
// time_min and earliest removed_at of the unpurged partitions of every
// dataset of that name. A name without partitions yields one row with a NULL
// target.
const collectSQL = `
WITH ds AS (
	SELECT DISTINCT ON (d.name) d.name, d.target, d.manifest_version, d.policy, d.deleted_at IS NULL AS live
	FROM timestore.datasets d
	WHERE d.deleted_at IS NULL OR EXISTS (
		SELECT 1 FROM timestore.partitions p
		WHERE p.dataset_id = d.id AND p.removed_in_version IS NOT NULL AND p.purged_at IS NULL)
	ORDER BY d.name, d.deleted_at IS NOT NULL, d.id DESC
), parts AS (
	SELECT d.name, p.target, p.removed_in_version IS NOT NULL AS removed,
		count(*) AS n, sum(p.size_bytes)::bigint AS bytes, sum(p.row_count)::bigint AS rows,
		min(p.time_min) AS min_time, min(p.removed_at) AS min_removed
	FROM timestore.partitions p JOIN timestore.datasets d ON d.id = p.dataset_id
	WHERE p.purged_at IS NULL
	GROUP BY d.name, p.target, removed
)
SELECT ds.name, ds.target, ds.manifest_version, ds.policy, ds.live,
	parts.target, coalesce(parts.removed, false), coalesce(parts.n, 0), coalesce(parts.bytes, 0),
	coalesce(parts.rows, 0), parts.min_time, parts.min_removed
FROM ds LEFT JOIN parts ON parts.name = ds.name
ORDER BY ds.name, parts.target, parts.removed`

// partitionStats are the sums of one (dataset, target, state).
type partitionStats struct {
	count, bytes, rows int64
}

// datasetStats is what one dataset reports.
type datasetStats struct {
	name            string
	live            bool // false: only deleted datasets have this name
	manifestVersion int64
	grace           time.Duration
	// byTarget holds [live, removed] per target.
	byTarget      map[string]*[2]partitionStats
	targets       []string // in query order
	oldestLive    *time.Time
	oldestRemoved *time.Time
}

// Collect implements prometheus.Collector.
func (c *collector) Collect(ch chan<- prometheus.Metric) {
	datasets, err := c.read()
	if err != nil {
		c.log.Warn("catalog metrics: read the catalog", "error", err)
		ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 0)
		return
	}
	now := c.now()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	for _, ds := range datasets {
		if ds.live {
			gauge(c.manifestVersion, float64(ds.manifestVersion), ds.name)
		}
		gauge(c.sweepGrace, ds.grace.Seconds(), ds.name)
		for _, target := range ds.targets {
			for i, state := range []string{StateLive, StateRemoved} {
				st := ds.byTarget[target][i]
				gauge(c.partitions, float64(st.count), ds.name, target, state)
				gauge(c.partitionBytes, float64(st.bytes), ds.name, target, state)
				gauge(c.partitionRows, float64(st.rows), ds.name, target, state)
			}
		}
		if ds.oldestLive != nil {
			gauge(c.oldestLiveAge, max(now.Sub(*ds.oldestLive).Seconds(), 0), ds.name)
		}
		lag := 0.0
		if ds.oldestRemoved != nil {
			lag = max(now.Sub(*ds.oldestRemoved).Seconds(), 0)
		}
		gauge(c.sweepLag, lag, ds.name)
	}
	ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 1)
}

// read runs collectSQL and folds its rows into one datasetStats per dataset,
// in name order.
func (c *collector) read() ([]*datasetStats, error) {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	rows, err := c.store.pool.Query(ctx, collectSQL)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*datasetStats
	for rows.Next() {
		var (
			name, dsTarget      string
			version             int64
			pol                 policy.Policy
			target              *string
			live, removed       bool
			st                  partitionStats
			minTime, minRemoved *time.Time
		)
		if err := rows.Scan(&name, &dsTarget, &version, &pol, &live, &target, &removed,
			&st.count, &st.bytes, &st.rows, &minTime, &minRemoved); err != nil {
			return nil, err
		}
		if len(out) == 0 || out[len(out)-1].name != name {
			ds := &datasetStats{name: name, live: live, manifestVersion: version,
				grace: sweepGrace(pol), byTarget: map[string]*[2]partitionStats{}}
			ds.addTarget(dsTarget)
			out = append(out, ds)
		}
		ds := out[len(out)-1]
		if target == nil { // the dataset has no unpurged partitions
			continue
		}
		ds.addTarget(*target)
		if removed {
			ds.byTarget[*target][1] = st
			ds.oldestRemoved = earliest(ds.oldestRemoved, minRemoved)
		} else {
			ds.byTarget[*target][0] = st
			ds.oldestLive = earliest(ds.oldestLive, minTime)
		}
	}
	return out, rows.Err()
}

func (ds *datasetStats) addTarget(target string) {
	if _, ok := ds.byTarget[target]; !ok {
		ds.byTarget[target] = new([2]partitionStats)
		ds.targets = append(ds.targets, target)
	}
}

// sweepGrace is the grace period of p: retention.grace, or
// policy.GraceDefault when unset.
func sweepGrace(p policy.Policy) time.Duration {
	if p.Retention != nil && p.Retention.Grace != nil {
		return p.Retention.Grace.Std()
	}
	return policy.GraceDefault.Std()
}

func earliest(a, b *time.Time) *time.Time {
	if a == nil || (b != nil && b.Before(*a)) {
		return b
	}
	return a
}
