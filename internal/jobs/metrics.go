package jobs

import (
	"context"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// backlogTimeout bounds the query behind timestore_job_backlog at scrape time.
const backlogTimeout = 2 * time.Second

// metrics are the job harness's metrics.
type metrics struct {
	runs        *prometheus.CounterVec
	duration    *prometheus.HistogramVec
	lastSuccess *prometheus.GaugeVec
	invariant   *prometheus.CounterVec
	enqueued    *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer, kinds []string) *metrics {
	f := promauto.With(reg)
	m := &metrics{
		runs: f.NewCounterVec(prometheus.CounterOpts{
			Name: "timestore_job_runs_total",
			Help: "Lifecycle job attempts by kind and outcome (success, conflict, error, cancelled).",
		}, []string{"kind", "outcome"}),
		duration: f.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "timestore_job_duration_seconds",
			Help:    "Duration of lifecycle job attempts by kind.",
			Buckets: []float64{0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600},
		}, []string{"kind"}),
		lastSuccess: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "timestore_job_last_success_timestamp_seconds",
			Help: "Unix time of the last successful lifecycle job run in this process, by kind and dataset.",
		}, []string{"kind", "dataset"}),
		invariant: f.NewCounterVec(prometheus.CounterOpts{
			Name: "timestore_job_invariant_violations_total",
			Help: "Lifecycle jobs halted on an invariant violation (cancelled, not retried), by kind.",
		}, []string{"kind"}),
		enqueued: f.NewCounterVec(prometheus.CounterOpts{
			Name: "timestore_scheduler_enqueued_total",
			Help: "Lifecycle jobs the scheduler enqueued because their schedule was due, by kind.",
		}, []string{"kind"}),
	}
	// Export zeros for every kind this build runs, so that rates and alerts
	// see the series before the first event.
	for _, k := range slices.Concat(kinds, []string{KindScheduler}) {
		for _, o := range []string{OutcomeSuccess, OutcomeConflict, OutcomeSnoozed, OutcomeError, OutcomeCancelled} {
			m.runs.WithLabelValues(k, o)
		}
		m.invariant.WithLabelValues(k)
		if k != KindScheduler {
			m.enqueued.WithLabelValues(k)
		}
	}
	return m
}

// backlogDesc describes timestore_job_backlog.
var backlogDesc = prometheus.NewDesc(
	"timestore_job_backlog",
	"Lifecycle jobs not finished (available, pending, retryable, running or scheduled), by kind and dataset; read from River's table at scrape time.",
	[]string{"kind", "dataset"}, nil,
)

// backlogCollector counts unfinished jobs at scrape time. A failed or slow
// query yields no samples (and a log line) rather than a failed scrape.
type backlogCollector struct {
	s *Service
}

// Describe implements prometheus.Collector.
func (c *backlogCollector) Describe(ch chan<- *prometheus.Desc) { ch <- backlogDesc }

// Collect implements prometheus.Collector.
func (c *backlogCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), backlogTimeout)
	defer cancel()
	counts, err := c.s.unfinishedJobs(ctx, Kinds(), 0)
	if err != nil {
		c.s.log.Warn("could not count the job backlog for /metrics", "error", err)
		return
	}
	for _, n := range counts {
		ch <- prometheus.MustNewConstMetric(backlogDesc, prometheus.GaugeValue, float64(n.Count), n.Kind, n.Dataset)
	}
}
