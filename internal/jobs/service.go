package jobs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivertype"

	"timestore/internal/catalog"
)

// Fetch intervals of River's producers. River's defaults (100 ms cooldown,
// 1 s poll) are kept in production: inserts are noticed at once through
// LISTEN/NOTIFY, and lifecycle jobs are not latency sensitive.
const (
	testFetchCooldown     = 20 * time.Millisecond
	testFetchPollInterval = 50 * time.Millisecond
)

// Service runs and administers lifecycle jobs. It is safe for concurrent use.
type Service struct {
	opts    Options
	store   *catalog.Store
	client  *river.Client[pgx.Tx]
	tasks   map[string]Task
	log     *slog.Logger
	metrics *metrics
}

// New builds a Service and its River client. River's tables must exist
// (Migrate). Nothing runs until Start.
func New(opts Options) (*Service, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	opts = opts.withDefaults()
	s := &Service{
		opts:  opts,
		store: opts.Store,
		tasks: make(map[string]Task, len(opts.Tasks)),
		log:   opts.Logger,
	}
	for _, t := range opts.Tasks {
		s.tasks[t.Kind()] = t
	}
	s.metrics = newMetrics(opts.Registerer, s.taskKinds())
	if opts.Registerer != nil {
		if err := opts.Registerer.Register(&backlogCollector{s: s}); err != nil {
			return nil, fmt.Errorf("jobs: register backlog collector: %w", err)
		}
	}

	cfg := &river.Config{
		Logger:                      slog.New(riverLogHandler{opts.Logger.Handler()}).With("component", "river"),
		MaxAttempts:                 opts.MaxAttempts,
		JobTimeout:                  opts.JobTimeout,
		RescueStuckJobsAfter:        opts.RescueAfter,
		SoftStopTimeout:             opts.SoftStopTimeout,
		CompletedJobRetentionPeriod: opts.JobRetention,
		CancelledJobRetentionPeriod: opts.JobRetention,
		DiscardedJobRetentionPeriod: opts.JobRetention,
		TestOnly:                    opts.TestOnly,
		Middleware:                  opts.Middleware,
	}
	if opts.NodeID != "" {
		cfg.ID = clientIDFor(opts.NodeID, time.Now())
	}
	if opts.TestOnly {
		cfg.FetchCooldown = testFetchCooldown
		cfg.FetchPollInterval = testFetchPollInterval
	}
	if opts.Workers {
		workers := river.NewWorkers()
		for _, kind := range s.taskKinds() {
			if err := addWorker(workers, kind, s); err != nil {
				return nil, fmt.Errorf("jobs: %w", err)
			}
		}
		if err := river.AddWorkerSafely(workers, &schedulerWorker{s: s}); err != nil {
			return nil, fmt.Errorf("jobs: %w", err)
		}
		cfg.Workers = workers
		cfg.Queues = map[string]river.QueueConfig{
			QueueMaintenance: {MaxWorkers: opts.MaxWorkers},
			QueueScheduler:   {MaxWorkers: 1},
		}
		cfg.PeriodicJobs = []*river.PeriodicJob{
			river.NewPeriodicJob(
				river.PeriodicInterval(opts.SchedulerInterval),
				func() (river.JobArgs, *river.InsertOpts) { return SchedulerArgs{}, schedulerInsertOpts() },
				&river.PeriodicJobOpts{RunOnStart: true},
			),
		}
	}
	client, err := river.NewClient(riverpgxv5.New(opts.Pool), cfg)
	if err != nil {
		return nil, fmt.Errorf("jobs: river client: %w", err)
	}
	s.client = client
	return s, nil
}

// Start hands back the jobs earlier incarnations of this node left running
// (HandBack; with Options.NodeID), then starts working jobs (when
// Options.Workers is set): the lifecycle queue, the scheduler queue and, on
// the elected leader, the periodic scheduler and River's maintenance.
// Cancelling ctx stops the client like Stop does.
func (s *Service) Start(ctx context.Context) error {
	if _, err := s.HandBack(ctx); err != nil {
		return fmt.Errorf("jobs: start: %w", err)
	}
	if !s.opts.Workers {
		return nil
	}
	if err := s.client.Start(ctx); err != nil {
		return fmt.Errorf("jobs: start: %w", err)
	}
	return nil
}

// Stop stops fetching jobs and waits for running ones: up to
// Options.SoftStopTimeout, after which their contexts are cancelled, and in
// any case no longer than ctx allows.
func (s *Service) Stop(ctx context.Context) error {
	if !s.opts.Workers {
		return nil
	}
	if err := s.client.Stop(ctx); err != nil {
		return fmt.Errorf("jobs: stop: %w", err)
	}
	return nil
}

// Client returns the River client, e.g. for the River UI.
func (s *Service) Client() *river.Client[pgx.Tx] { return s.client }

// taskKinds returns the kinds with a registered Task, in Kinds() order.
func (s *Service) taskKinds() []string {
	var kinds []string
	for _, k := range Kinds() {
		if _, ok := s.tasks[k]; ok {
			kinds = append(kinds, k)
		}
	}
	return kinds
}

// task returns the Task of a lifecycle kind, or ErrUnknownKind/ErrUnsupported.
func (s *Service) task(kind string) (Task, error) {
	if err := validKind(kind); err != nil {
		return nil, err
	}
	t, ok := s.tasks[kind]
	if !ok {
		return nil, unsupportedError{kind}
	}
	return t, nil
}

// insertOpts are the options every lifecycle job is inserted with.
func (s *Service) insertOpts() *river.InsertOpts {
	return &river.InsertOpts{
		Queue:       QueueMaintenance,
		MaxAttempts: s.opts.MaxAttempts,
		UniqueOpts:  river.UniqueOpts{ByArgs: true, ByState: uniqueStates},
	}
}

// schedulerInsertOpts: one attempt (the next period retries anyway) and at
// most one scheduler job waiting or running.
func schedulerInsertOpts() *river.InsertOpts {
	return &river.InsertOpts{
		Queue:       QueueScheduler,
		MaxAttempts: 1,
		UniqueOpts:  river.UniqueOpts{ByState: uniqueStates},
	}
}

// insertTx inserts a lifecycle job in tx. The result says whether an existing
// job of the same kind and dataset was found instead.
func (s *Service) insertTx(ctx context.Context, tx catalog.Tx, kind string, a DatasetArgs) (*rivertype.JobInsertResult, error) {
	if _, err := s.task(kind); err != nil {
		return nil, err
	}
	args, err := newArgs(kind, a)
	if err != nil {
		return nil, err
	}
	res, err := s.client.InsertTx(ctx, tx, args, s.insertOpts())
	if err != nil {
		return nil, fmt.Errorf("enqueue %s of dataset %q: %w", kind, a.Dataset, err)
	}
	return res, nil
}

// EnqueueTx enqueues a job of kind for a dataset inside tx, typically the
// manifest transaction of a change the job follows (catalog.Change.InTx):
// e.g. compaction enqueuing a sweep. The job exists only if tx commits. An
// existing pending or running job of the same kind and dataset makes it a
// no-op. trigger is one of the Trigger* constants (usually TriggerFollowup).
func (s *Service) EnqueueTx(ctx context.Context, tx catalog.Tx, kind, dataset string, datasetID int64, trigger string) error {
	if datasetID <= 0 {
		return fmt.Errorf("enqueue %s of dataset %q: %w", kind, dataset, errors.New("dataset id is required"))
	}
	_, err := s.insertTx(ctx, tx, kind, DatasetArgs{Dataset: dataset, DatasetID: datasetID, Trigger: trigger})
	return err
}
