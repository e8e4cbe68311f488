package retention

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"timestore/internal/catalog"
	"timestore/internal/storage"
)

// Defaults of Options.
const (
	// SweepBatchSizeDefault is how many partitions one purge transaction
	// marks at most; the dataset row stays locked that long.
	SweepBatchSizeDefault = 1000
	// DeleteConcurrencyDefault is how many objects the sweeper deletes at once.
	DeleteConcurrencyDefault = 8
	// LeaseRecheckDefault is how soon a sweep that left partitions to query
	// leases runs again. Leases last a few minutes (query.LeaseTTLDefault)
	// and are renewed while their query runs.
	LeaseRecheckDefault = time.Minute
	// DeleteTimeoutDefault bounds the deletion of one object.
	DeleteTimeoutDefault = 30 * time.Second
)

// Store is what retention, the sweeper, restores and holds need of the
// catalog; *catalog.Store has it.
type Store interface {
	GetDataset(ctx context.Context, name string) (catalog.Dataset, error)
	GetDatasetByID(ctx context.Context, id int64) (catalog.Dataset, error)
	RetentionSnapshot(ctx context.Context, name string) (catalog.Snapshot, []catalog.Hold, error)
	Partitions(ctx context.Context, name, state string) ([]catalog.Partition, error)
	Commit(ctx context.Context, ch catalog.Change) (catalog.CommitResult, error)
	RunInTx(ctx context.Context, fn func(ctx context.Context, tx catalog.Tx) error) error
	AppendAudit(ctx context.Context, e catalog.AuditEntry) error
	AppendAuditBatchTx(ctx context.Context, tx catalog.Tx, entries []catalog.AuditEntry) error

	// Holds.
	AddHold(ctx context.Context, dataset string, from, to time.Time, reason, actor string) (catalog.Hold, error)
	ReleaseHold(ctx context.Context, id int64, actor string) (catalog.Hold, error)
	Holds(ctx context.Context, dataset string, includeReleased bool) ([]catalog.Hold, error)

	// Restores.
	RemovedPartitions(ctx context.Context, dataset string, ids []int64) (int64, []catalog.RemovedPartition, error)

	// Sweeps.
	SweepPending(ctx context.Context, datasetID int64) (bool, error)
	DatasetsToSweep(ctx context.Context, name string) ([]catalog.SweepDataset, error)
	PreviewPurge(ctx context.Context, datasetID int64, removedBefore time.Time) (catalog.PurgePreview, error)
	PurgeRemoved(ctx context.Context, datasetID int64, removedBefore time.Time, limit int, actor string) (catalog.PurgeBatch, error)
	PendingObjectDeletes(ctx context.Context, datasetID, afterID int64, limit int) ([]catalog.Partition, error)
	MarkObjectsDeleted(ctx context.Context, ids []int64) error
}

var _ Store = (*catalog.Store)(nil)

// Options configure a Service. Store and Targets are required.
type Options struct {
	// Store is the catalog.
	Store Store
	// Targets are the storage targets the sweeper deletes objects from.
	Targets *storage.Targets
	// Logger defaults to discarding.
	Logger *slog.Logger
	// Registerer receives the retention and sweep metrics; nil registers
	// nothing.
	Registerer prometheus.Registerer
	// Now is the clock policies are evaluated with and grace periods
	// measured against (removed_at is the database's clock; query leases
	// are always checked with the database's clock). Defaults to time.Now.
	Now func() time.Time
	// EnqueueSweep, when set, is called inside the transaction of every
	// retention change, so that the sweep that will delete the removed
	// partitions is enqueued atomically with their removal
	// (jobs.Service.EnqueueTx with kind "sweep"). Nil: no sweep is enqueued.
	EnqueueSweep func(ctx context.Context, tx catalog.Tx, datasetID int64, dataset string) error
	// ExportCovered, when set, returns for a dataset whether a verified
	// export covers a partition (policy retention.require_export). Nil, or
	// a nil function returned, means that no export exists yet: with
	// require_export nothing is removed.
	ExportCovered func(ctx context.Context, d catalog.Dataset) (func(catalog.Partition) bool, error)
	// SweepBatchSize defaults to SweepBatchSizeDefault.
	SweepBatchSize int
	// DeleteConcurrency defaults to DeleteConcurrencyDefault.
	DeleteConcurrency int
	// LeaseRecheck defaults to LeaseRecheckDefault.
	LeaseRecheck time.Duration
	// DeleteTimeout defaults to DeleteTimeoutDefault.
	DeleteTimeout time.Duration
}

// Service evaluates and applies retention, sweeps, restores and manages
// holds. It is safe for concurrent use.
type Service struct {
	opts    Options
	log     *slog.Logger
	metrics metrics
}

type metrics struct {
	removedParts *prometheus.CounterVec
	removedBytes *prometheus.CounterVec
	purgedParts  *prometheus.CounterVec
	purgedBytes  *prometheus.CounterVec
	deleteErrors *prometheus.CounterVec
	heldBytes    *prometheus.GaugeVec
	heldRows     *prometheus.GaugeVec
}

func newMetrics(reg prometheus.Registerer) metrics {
	f := promauto.With(reg)
	ds := []string{"dataset"}
	return metrics{
		removedParts: f.NewCounterVec(prometheus.CounterOpts{
			Name: "timestore_retention_removed_partitions_total",
			Help: "Partitions removed from the manifest by retention, by dataset.",
		}, ds),
		removedBytes: f.NewCounterVec(prometheus.CounterOpts{
			Name: "timestore_retention_removed_bytes_total",
			Help: "Bytes of the partitions removed by retention, by dataset.",
		}, ds),
		purgedParts: f.NewCounterVec(prometheus.CounterOpts{
			Name: "timestore_sweep_purged_partitions_total",
			Help: "Removed partitions purged by the sweeper (their objects deleted), by dataset.",
		}, ds),
		purgedBytes: f.NewCounterVec(prometheus.CounterOpts{
			Name: "timestore_sweep_purged_bytes_total",
			Help: "Bytes of the partitions purged by the sweeper, by dataset.",
		}, ds),
		deleteErrors: f.NewCounterVec(prometheus.CounterOpts{
			Name: "timestore_sweep_delete_errors_total",
			Help: "Failed deletions of purged partitions' objects, by target; the sweep is retried.",
		}, []string{"target"}),
		heldBytes: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "timestore_retention_held_bytes",
			Help: "Bytes of the live partitions overlapping an active retention hold, as of the last evaluation, by dataset.",
		}, ds),
		heldRows: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "timestore_retention_held_rows",
			Help: "Rows in the live partitions overlapping an active retention hold, as of the last evaluation, by dataset.",
		}, ds),
	}
}

// New returns a Service. Like promauto, it panics if the Registerer already
// holds its metrics.
func New(opts Options) (*Service, error) {
	if opts.Store == nil || opts.Targets == nil {
		return nil, errors.New("retention: Store and Targets are required")
	}
	if opts.SweepBatchSize < 0 || opts.DeleteConcurrency < 0 || opts.LeaseRecheck < 0 || opts.DeleteTimeout < 0 {
		return nil, fmt.Errorf("retention: SweepBatchSize, DeleteConcurrency, LeaseRecheck and DeleteTimeout must not be negative")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	opts.SweepBatchSize = cmp.Or(opts.SweepBatchSize, SweepBatchSizeDefault)
	opts.DeleteConcurrency = cmp.Or(opts.DeleteConcurrency, DeleteConcurrencyDefault)
	opts.LeaseRecheck = cmp.Or(opts.LeaseRecheck, LeaseRecheckDefault)
	opts.DeleteTimeout = cmp.Or(opts.DeleteTimeout, DeleteTimeoutDefault)
	return &Service{opts: opts, log: opts.Logger, metrics: newMetrics(opts.Registerer)}, nil
}
