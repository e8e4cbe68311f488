package jobs

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/riverqueue/river/rivertype"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"timestore/internal/catalog"
	"timestore/internal/policy"
)

// Defaults of Options.
const (
	// MaxWorkersDefault is how many lifecycle jobs one process runs at once.
	MaxWorkersDefault = 2
	// MaxAttemptsDefault is how often a lifecycle job is tried before it is
	// discarded. With River's backoff (attempt⁴ seconds) ten attempts span
	// about four hours.
	MaxAttemptsDefault = 10
	// JobTimeoutDefault bounds one attempt of a job: its context is cancelled
	// after this long. It must stay below RescueAfterDefault.
	JobTimeoutDefault = 4 * time.Minute
	// RescueAfterDefault is how long a job may stay running before River's
	// rescuer (run by the leader) considers its process dead and makes the
	// job available again (or discards it when out of attempts). A job
	// whose process crashed resumes within this delay plus a rescuer
	// interval; meanwhile a unique insert of the same (kind, dataset) finds
	// the stuck job.
	RescueAfterDefault = 5 * time.Minute
	// SoftStopTimeoutDefault is how long Stop lets running jobs finish before
	// cancelling their contexts.
	SoftStopTimeoutDefault = 20 * time.Second
	// JobRetentionDefault is how long finished jobs (completed, cancelled,
	// discarded) are kept, for `jobs list`, the lifecycle status and the
	// River UI. It exceeds the longest default schedule (@daily) so that the
	// last run of every kind stays visible.
	JobRetentionDefault = 7 * 24 * time.Hour
	// SchedulerIntervalDefault is how often the scheduler job runs.
	SchedulerIntervalDefault = 30 * time.Second
	// ReconcileScheduleDefault is how often reconcile runs for every live
	// dataset; the policy has no reconcile section.
	ReconcileScheduleDefault = "@every 6h"
	// SweepScheduleDefault is the backstop sweep of every live dataset (a
	// sweep with nothing to purge costs a few catalog reads).
	SweepScheduleDefault = "@every 1h"
	// ReconcileScheduleOff, as Options.ReconcileSchedule, disables scheduled
	// reconciles (they can still be triggered).
	ReconcileScheduleOff = "off"
)

// Options configures a Service. Zero fields take the documented defaults.
type Options struct {
	// Store is the catalog. Required.
	Store *catalog.Store
	// Pool connects to the database where River's tables live (migrated by
	// Migrate). Defaults to Store.Pool(): the catalog database.
	Pool *pgxpool.Pool
	// Logger receives the service's and River's logs. Defaults to discarding.
	Logger *slog.Logger
	// Registerer receives the job metrics and the backlog collector.
	// Defaults to none (metrics are kept but not exported).
	Registerer prometheus.Registerer
	// Tasks are the job kinds this build can run, at most one per kind.
	// Kinds without a Task are valid but Trigger and DryRun refuse them with
	// ErrUnsupported, and the scheduler skips them.
	Tasks []Task
	// Workers makes the process work jobs and take part in leader election
	// (the leader runs the periodic scheduler and River's maintenance:
	// rescuing stuck jobs, scheduling retries, cleaning finished jobs). When
	// false the Service only inserts and inspects jobs; Start and Stop do
	// nothing.
	Workers bool
	// MaxWorkers is how many lifecycle jobs this process runs at once on the
	// maintenance queue. Defaults to MaxWorkersDefault. The scheduler queue
	// always has one worker.
	MaxWorkers int
	// MaxAttempts is how often a lifecycle job is tried before it is
	// discarded. Defaults to MaxAttemptsDefault.
	MaxAttempts int
	// JobTimeout bounds one attempt. Defaults to JobTimeoutDefault. Must be
	// shorter than RescueAfter, or River would rescue jobs that still run.
	JobTimeout time.Duration
	// RescueAfter is River's RescueStuckJobsAfter: after how long a running
	// job is considered abandoned by a dead process and retried. Defaults to
	// RescueAfterDefault.
	RescueAfter time.Duration
	// SoftStopTimeout is how long Stop waits for running jobs before it
	// cancels them. Defaults to SoftStopTimeoutDefault.
	SoftStopTimeout time.Duration
	// JobRetention is how long finished jobs are kept. Defaults to
	// JobRetentionDefault.
	JobRetention time.Duration
	// SchedulerInterval is how often the scheduler job runs. Defaults to
	// SchedulerIntervalDefault; at least one second.
	SchedulerInterval time.Duration
	// ReconcileSchedule is the schedule of reconcile for every live dataset
	// (cron or "@every …"). Defaults to ReconcileScheduleDefault;
	// ReconcileScheduleOff disables it.
	ReconcileSchedule string
	// Now is the scheduler's clock. Defaults to time.Now. Schedules are
	// evaluated in UTC.
	Now func() time.Time
	// NodeID is this node's stable identity (the server keeps it in its data
	// directory). With it, River's client id is "<NodeID>/<start time>", and
	// Start first hands back the jobs that earlier incarnations of the node
	// left running (HandBack). Empty: River's generated client id, no
	// hand-back. At most one process may run with a node id at a time.
	NodeID string
	// Middleware is passed to River (e.g. otelriver's, for a span per job).
	Middleware []rivertype.Middleware
	// TestOnly shortens River's fetch intervals (jobs start within about
	// 50 ms) and skips its start-up jitter, for tests.
	TestOnly bool
}

// withDefaults returns o with every zero field defaulted.
func (o Options) withDefaults() Options {
	if o.Pool == nil && o.Store != nil {
		o.Pool = o.Store.Pool()
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	o.MaxWorkers = cmp.Or(o.MaxWorkers, MaxWorkersDefault)
	o.MaxAttempts = cmp.Or(o.MaxAttempts, MaxAttemptsDefault)
	o.JobTimeout = cmp.Or(o.JobTimeout, JobTimeoutDefault)
	o.RescueAfter = cmp.Or(o.RescueAfter, RescueAfterDefault)
	o.SoftStopTimeout = cmp.Or(o.SoftStopTimeout, SoftStopTimeoutDefault)
	o.JobRetention = cmp.Or(o.JobRetention, JobRetentionDefault)
	o.SchedulerInterval = cmp.Or(o.SchedulerInterval, SchedulerIntervalDefault)
	if o.ReconcileSchedule == "" {
		o.ReconcileSchedule = ReconcileScheduleDefault
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

// Validate reports the first invalid option, after defaults are applied.
func (o Options) Validate() error {
	o = o.withDefaults()
	switch {
	case o.Store == nil:
		return errors.New("jobs: Store is required")
	case o.MaxWorkers < 1 || o.MaxWorkers > 10000:
		return fmt.Errorf("jobs: MaxWorkers must be between 1 and 10000, not %d", o.MaxWorkers)
	case o.MaxAttempts < 1:
		return fmt.Errorf("jobs: MaxAttempts must be at least 1, not %d", o.MaxAttempts)
	case o.JobTimeout < 0 || o.RescueAfter < 0 || o.SoftStopTimeout < 0 || o.JobRetention < 0:
		return errors.New("jobs: JobTimeout, RescueAfter, SoftStopTimeout and JobRetention must not be negative")
	case o.JobTimeout >= o.RescueAfter:
		return fmt.Errorf("jobs: JobTimeout (%s) must be shorter than RescueAfter (%s), or River would rescue jobs that are still running", o.JobTimeout, o.RescueAfter)
	case o.SchedulerInterval < time.Second:
		return fmt.Errorf("jobs: SchedulerInterval must be at least 1s, not %s", o.SchedulerInterval)
	}
	if o.NodeID != "" {
		if err := ValidateNodeID(o.NodeID); err != nil {
			return fmt.Errorf("jobs: NodeID: %w", err)
		}
	}
	if o.ReconcileSchedule != ReconcileScheduleOff {
		if _, err := policy.ParseSchedule(o.ReconcileSchedule); err != nil {
			return fmt.Errorf("jobs: ReconcileSchedule: %w", err)
		}
	}
	seen := map[string]bool{}
	for _, t := range o.Tasks {
		if t == nil {
			return errors.New("jobs: nil Task")
		}
		if err := validKind(t.Kind()); err != nil {
			return fmt.Errorf("jobs: task: %w", err)
		}
		if seen[t.Kind()] {
			return fmt.Errorf("jobs: two tasks for kind %s", t.Kind())
		}
		seen[t.Kind()] = true
	}
	return nil
}
