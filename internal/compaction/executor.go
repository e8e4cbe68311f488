package compaction

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"timestore/internal/catalog"
	"timestore/internal/engine"
	"timestore/internal/faultpoint"
	"timestore/internal/objects"
	"timestore/internal/storage"
)

// ActionMerge is the action of the audit row written with every merge.
const ActionMerge = "compaction.merge"

// ErrVerify is wrapped by run errors about a merged file that does not match
// what the manifest lists for its inputs (row count, time range) or what
// their footers declare: an invariant violation, to halt on rather than
// retry. Nothing was uploaded or committed for that group. It is
// engine.ErrMergeVerify.
var ErrVerify = engine.ErrMergeVerify

// Defaults of Options.
const (
	// FetchConcurrencyDefault is how many inputs of a merge are downloaded
	// from a remote target at once.
	FetchConcurrencyDefault = 4
	// CommitTimeoutDefault bounds the manifest commit of one merge and the
	// clean-up after a failed one. They run detached from the job's context:
	// once a merge is uploaded, finishing its commit is cheaper than
	// orphaning it.
	CommitTimeoutDefault = 30 * time.Second
)

// Store is what compaction needs of the catalog; *catalog.Store has it.
type Store interface {
	Snapshot(ctx context.Context, name string, from, to *time.Time) (catalog.Snapshot, error)
	Commit(ctx context.Context, ch catalog.Change) (catalog.CommitResult, error)
	objects.Discarder
}

var _ Store = (*catalog.Store)(nil)

// Options configure a Compactor. Store, Targets, Cache and Engine are required.
type Options struct {
	// Store is the catalog.
	Store Store
	// Targets are the storage targets; outputs go to the dataset's target.
	Targets *storage.Targets
	// Cache provides local copies of inputs on remote targets; inputs on
	// local targets are read in place.
	Cache *storage.Cache
	// Engine merges with DuckDB, within its memory limit and spilling to its
	// temp directory.
	Engine *engine.Engine
	// TempDir holds each merged file between the merge and its upload.
	// Defaults to os.TempDir().
	TempDir string
	// Logger defaults to a logger that discards everything.
	Logger *slog.Logger
	// Registerer receives the compaction metrics; nil registers nothing.
	Registerer prometheus.Registerer
	// EnqueueSweep, when set, is called inside the transaction of every
	// merge's manifest change, so that the sweep that will delete the
	// inputs is enqueued atomically with their removal. Nil: no sweep is
	// enqueued (the periodic sweep finds the inputs anyway).
	EnqueueSweep func(ctx context.Context, tx catalog.Tx, datasetID int64, dataset string) error
	// Limits bound merges and runs; zero fields take their defaults.
	Limits Limits
	// Planner picks the groups. Defaults to AdjacentPlanner{Limits}.
	Planner Planner
	// Now is the clock. Defaults to time.Now.
	Now func() time.Time
	// FetchConcurrency defaults to FetchConcurrencyDefault.
	FetchConcurrency int
	// CommitTimeout defaults to CommitTimeoutDefault.
	CommitTimeout time.Duration
	// BeforeCommit, when set, runs after a group's output is uploaded and
	// before its commit; an error aborts that group as a failed commit
	// would. A fault-injection point for tests.
	BeforeCommit func(ctx context.Context, g Group) error
}

// Compactor merges small partitions. It is safe for concurrent use; two runs
// on one dataset are safe too (the later commit of a group whose inputs the
// other run took conflicts), though the job harness avoids them.
type Compactor struct {
	opts    Options
	metrics metrics
}

type metrics struct {
	merges       *prometheus.CounterVec
	inputParts   prometheus.Counter
	outputParts  prometheus.Counter
	inputBytes   prometheus.Counter
	outputBytes  prometheus.Counter
	duration     *prometheus.HistogramVec
	conflicts    *prometheus.CounterVec
	smallBacklog *prometheus.GaugeVec
}

func newMetrics(reg prometheus.Registerer) metrics {
	f := promauto.With(reg)
	return metrics{
		merges: f.NewCounterVec(prometheus.CounterOpts{
			Name: "timestore_compaction_merges_total", Help: "Merges committed by compaction, by dataset.",
		}, []string{"dataset"}),
		inputParts: f.NewCounter(prometheus.CounterOpts{
			Name: "timestore_compaction_input_partitions_total", Help: "Partitions replaced by committed merges.",
		}),
		outputParts: f.NewCounter(prometheus.CounterOpts{
			Name: "timestore_compaction_output_partitions_total", Help: "Partitions written by committed merges.",
		}),
		inputBytes: f.NewCounter(prometheus.CounterOpts{
			Name: "timestore_compaction_input_bytes_total", Help: "Bytes of the partitions replaced by committed merges.",
		}),
		outputBytes: f.NewCounter(prometheus.CounterOpts{
			Name: "timestore_compaction_output_bytes_total", Help: "Bytes of the partitions written by committed merges.",
		}),
		duration: f.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "timestore_compaction_duration_seconds",
			Help:    "Duration of one merge from fetching its inputs to its commit, by outcome (ok, conflict, error).",
			Buckets: prometheus.ExponentialBuckets(0.05, 2, 14),
		}, []string{"outcome"}),
		conflicts: f.NewCounterVec(prometheus.CounterOpts{
			Name: "timestore_compaction_conflicts_total",
			Help: "Merges abandoned at commit because an input was no longer live (or was marked no_compact), by dataset.",
		}, []string{"dataset"}),
		smallBacklog: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "timestore_compaction_small_partitions",
			Help: "Live partitions below the target size and not marked no_compact, as of the last plan, by dataset.",
		}, []string{"dataset"}),
	}
}

// New returns a Compactor. It panics if Store, Targets, Cache or Engine is
// missing, or, like promauto, if the Registerer already holds its metrics.
func New(opts Options) *Compactor {
	if opts.Store == nil || opts.Targets == nil || opts.Cache == nil || opts.Engine == nil {
		panic("compaction: Store, Targets, Cache and Engine are required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Planner == nil {
		opts.Planner = AdjacentPlanner{Limits: opts.Limits}
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.FetchConcurrency <= 0 {
		opts.FetchConcurrency = FetchConcurrencyDefault
	}
	if opts.CommitTimeout <= 0 {
		opts.CommitTimeout = CommitTimeoutDefault
	}
	return &Compactor{opts: opts, metrics: newMetrics(opts.Registerer)}
}

// PlanResult is a dry run: what a run would merge now.
type PlanResult struct {
	Dataset string `json:"dataset"`
	// ManifestVersion is the version the plan was made from.
	ManifestVersion int64 `json:"manifest_version"`
	// TargetFileBytes and MinInputFiles are the settings used.
	TargetFileBytes int64 `json:"target_file_bytes"`
	MinInputFiles   int   `json:"min_input_files"`
	// LivePartitions counts the live partitions; SmallPartitions those
	// eligible for compaction (the backlog).
	LivePartitions  int `json:"live_partitions"`
	SmallPartitions int `json:"small_partitions"`
	// Groups are the planned merges, each replacing its inputs by one file.
	Groups []Group `json:"groups"`
	// InputPartitions, InputBytes and ExpectedOutputBytes sum the groups.
	InputPartitions     int   `json:"input_partitions"`
	InputBytes          int64 `json:"input_bytes"`
	ExpectedOutputBytes int64 `json:"expected_output_bytes"`
	// PartitionsAfter is how many live partitions remain if every group merges.
	PartitionsAfter int `json:"partitions_after"`

	snapshot catalog.Snapshot
}

// Plan is the dry run: it reads the dataset's live manifest and returns the
// plan, changing nothing (it only updates the backlog gauge).
func (c *Compactor) Plan(ctx context.Context, dataset string) (PlanResult, error) {
	snap, err := c.opts.Store.Snapshot(ctx, dataset, nil, nil)
	if err != nil {
		return PlanResult{}, fmt.Errorf("plan compaction of %s: %w", dataset, err)
	}
	ds := snap.Dataset
	pol := Settings(ds.Policy.Compaction)
	groups := c.opts.Planner.Plan(snap.Partitions, pol, ds.Partition)
	res := PlanResult{
		Dataset:         ds.Name,
		ManifestVersion: snap.Version,
		TargetFileBytes: pol.TargetFileBytes,
		MinInputFiles:   pol.MinInputFiles,
		LivePartitions:  len(snap.Partitions),
		SmallPartitions: Backlog(snap.Partitions, pol, ds.Partition),
		Groups:          groups,
		snapshot:        snap,
	}
	if res.Groups == nil {
		res.Groups = []Group{}
	}
	for _, g := range groups {
		res.InputPartitions += len(g.Inputs)
		res.InputBytes += g.InputBytes
		res.ExpectedOutputBytes += g.ExpectedOutputBytes
	}
	res.PartitionsAfter = res.LivePartitions - res.InputPartitions + len(groups)
	c.metrics.smallBacklog.WithLabelValues(ds.Name).Set(float64(res.SmallPartitions))
	return res, nil
}

// Merged describes one committed merge.
type Merged struct {
	// Partition is the id of the new partition.
	Partition int64 `json:"partition"`
	// Inputs are the ids of the partitions it replaced.
	Inputs []int64 `json:"inputs"`
	// Version is the manifest version of the change.
	Version     int64 `json:"manifest_version"`
	Rows        int64 `json:"rows"`
	InputBytes  int64 `json:"input_bytes"`
	OutputBytes int64 `json:"output_bytes"`
	Level       int   `json:"level"`
	// Timings break the merge's wall time down.
	Timings Timings `json:"timings"`
}

// Timings are the phases of one merge.
type Timings struct {
	// Fetch: making the inputs readable locally (downloads for remote targets).
	Fetch time.Duration `json:"fetch"`
	// Merge: the DuckDB merge, its verification and the output's statistics.
	Merge time.Duration `json:"merge"`
	// Upload: writing the output to the target.
	Upload time.Duration `json:"upload"`
	// Commit: the manifest change.
	Commit time.Duration `json:"commit"`
}

// Result is what a run did.
type Result struct {
	Dataset string `json:"dataset"`
	// PlannedVersion is the manifest version the run planned from.
	PlannedVersion int64 `json:"planned_version"`
	Planned        int   `json:"planned_groups"`
	// Merged lists the committed merges; Conflicts counts the groups
	// abandoned because an input was no longer live.
	Merged    []Merged `json:"merged"`
	Conflicts int      `json:"conflicts"`
	// Sums over Merged.
	InputPartitions  int   `json:"input_partitions"`
	OutputPartitions int   `json:"output_partitions"`
	Rows             int64 `json:"rows"`
	InputBytes       int64 `json:"input_bytes"`
	OutputBytes      int64 `json:"output_bytes"`
	// SmallPartitionsBefore is the backlog the plan saw; SmallPartitionsAfter
	// what is left of it after the merges.
	SmallPartitionsBefore int `json:"small_partitions_before"`
	SmallPartitionsAfter  int `json:"small_partitions_after"`
	// Duration is the wall time of the run.
	Duration time.Duration `json:"duration"`
}

// RunOptions identify who runs a compaction.
type RunOptions struct {
	// JobID is recorded with each manifest change; nil when not run as a job.
	JobID *int64
	// Actor is recorded in the manifest versions and audit rows.
	Actor string
	// Logger defaults to the Compactor's.
	Logger *slog.Logger
}

// Run plans from the current live manifest and merges every group in plan
// order. For each group it fetches the inputs (remote ones through the
// cache), merges them sorted by time, checks that the output holds the rows
// the manifest lists for the inputs, uploads it under a fresh key of the
// dataset's target, and commits one manifest change that removes the inputs
// and adds the output (with its level) only if every input is still live and
// not marked no_compact; the change also writes an audit row and runs
// EnqueueSweep. A commit that conflicts, or fails for certain, deletes the
// uploaded object; one whose outcome is unknown leaves it unless the catalog
// shows it unreferenced (reconcile reclaims orphans).
//
// A conflicting group is counted and skipped; the run goes on with the other
// groups and then returns an error wrapping catalog.ErrConflict. Any other
// error stops the run at once; groups already committed stay committed, and
// a retry plans again from the manifest as it is then, so runs are
// idempotent. The Result is valid in every case.
func (c *Compactor) Run(ctx context.Context, dataset string, ro RunOptions) (res Result, err error) {
	log := ro.Logger
	if log == nil {
		log = c.opts.Logger.With("dataset", dataset)
	}
	start := c.opts.Now()
	res = Result{Dataset: dataset, Merged: []Merged{}}
	defer func() { res.Duration = c.opts.Now().Sub(start) }()

	plan, err := c.Plan(ctx, dataset)
	if err != nil {
		return res, err
	}
	res.PlannedVersion = plan.ManifestVersion
	res.Planned = len(plan.Groups)
	res.SmallPartitionsBefore = plan.SmallPartitions
	res.SmallPartitionsAfter = plan.SmallPartitions
	if len(plan.Groups) == 0 {
		log.DebugContext(ctx, "nothing to compact", "small_partitions", plan.SmallPartitions, "live_partitions", plan.LivePartitions)
		return res, nil
	}
	ds := plan.snapshot.Dataset
	target, err := c.opts.Targets.Get(ds.Target)
	if err != nil {
		return res, fmt.Errorf("compact %s: %w", ds.Name, err)
	}
	var conflictErrs []error
	for i, g := range plan.Groups {
		if err := ctx.Err(); err != nil {
			return res, fmt.Errorf("compact %s: %w", ds.Name, err)
		}
		gstart := time.Now()
		m, err := c.merge(ctx, ds, target, g, ro, log)
		outcome := "ok"
		switch {
		case errors.Is(err, catalog.ErrConflict):
			outcome = "conflict"
			res.Conflicts++
			c.metrics.conflicts.WithLabelValues(ds.Name).Inc()
			conflictErrs = append(conflictErrs, err)
			log.WarnContext(ctx, "compaction merge abandoned: the manifest changed", "group", i, "inputs", g.Inputs, "error", err)
		case err != nil:
			c.metrics.duration.WithLabelValues("error").Observe(time.Since(gstart).Seconds())
			return res, fmt.Errorf("compact %s: group %d of %d (partitions %v): %w", ds.Name, i+1, len(plan.Groups), g.Inputs, err)
		default:
			res.Merged = append(res.Merged, m)
			res.InputPartitions += len(m.Inputs)
			res.OutputPartitions++
			res.Rows += m.Rows
			res.InputBytes += m.InputBytes
			res.OutputBytes += m.OutputBytes
			res.SmallPartitionsAfter -= len(m.Inputs)
			if m.OutputBytes < plan.TargetFileBytes {
				res.SmallPartitionsAfter++
			}
			c.metrics.merges.WithLabelValues(ds.Name).Inc()
			c.metrics.inputParts.Add(float64(len(m.Inputs)))
			c.metrics.outputParts.Inc()
			c.metrics.inputBytes.Add(float64(m.InputBytes))
			c.metrics.outputBytes.Add(float64(m.OutputBytes))
			c.metrics.smallBacklog.WithLabelValues(ds.Name).Set(float64(res.SmallPartitionsAfter))
			log.InfoContext(ctx, "compacted", "partition", m.Partition, "inputs", len(m.Inputs), "rows", m.Rows,
				"input_bytes", m.InputBytes, "output_bytes", m.OutputBytes, "level", m.Level,
				"manifest_version", m.Version, "duration", time.Since(gstart), "fetch", m.Timings.Fetch,
				"merge", m.Timings.Merge, "upload", m.Timings.Upload, "commit", m.Timings.Commit)
		}
		c.metrics.duration.WithLabelValues(outcome).Observe(time.Since(gstart).Seconds())
	}
	if len(conflictErrs) > 0 {
		return res, fmt.Errorf("compact %s: %d of %d merges conflicted with other manifest changes: %w",
			ds.Name, len(conflictErrs), len(plan.Groups), errors.Join(conflictErrs...))
	}
	return res, nil
}

// merge does one group: fetch, merge, verify, upload, commit.
func (c *Compactor) merge(ctx context.Context, ds catalog.Dataset, target *storage.Target, g Group, ro RunOptions, log *slog.Logger) (Merged, error) {
	work, err := os.MkdirTemp(c.opts.TempDir, "compaction-")
	if err != nil {
		return Merged{}, fmt.Errorf("temp dir: %w", err)
	}
	defer os.RemoveAll(work)

	var tm Timings
	phase := time.Now()
	lap := func(d *time.Duration) {
		now := time.Now()
		*d, phase = now.Sub(phase), now
	}
	paths, release, err := c.fetch(ctx, g)
	defer release()
	if err != nil {
		return Merged{}, err
	}
	lap(&tm.Fetch)
	out := filepath.Join(work, "merged.parquet")
	pf, err := c.opts.Engine.Merge(ctx, ds, paths, out)
	if err != nil {
		return Merged{}, err
	}
	release() // the inputs are no longer needed locally
	lap(&tm.Merge)
	if pf.RowCount != g.InputRows {
		return Merged{}, fmt.Errorf("%w: merged file has %d rows, the manifest lists %d for the inputs", ErrVerify, pf.RowCount, g.InputRows)
	}
	if !pf.WindowStart.Equal(g.WindowStart) || !pf.TimeMin.Equal(g.TimeMin) || !pf.TimeMax.Equal(g.TimeMax) {
		return Merged{}, fmt.Errorf("%w: merged file spans %s..%s in window %s, the manifest lists %s..%s in window %s for the inputs",
			ErrVerify, pf.TimeMin, pf.TimeMax, pf.WindowStart, g.TimeMin, g.TimeMax, g.WindowStart)
	}
	pf.Level = g.Level
	pf.Target = target.Name
	pf.Key = storage.PartitionKey(ds.Name, ds.Partition, g.WindowStart, storage.NewObjectID())
	if err := faultpoint.Hit(ctx, faultpoint.CompactionBeforeUpload); err != nil {
		return Merged{}, err
	}
	uploads := &objects.Uploads{Store: c.opts.Store, Dataset: ds, Target: target, Actor: ro.Actor,
		DiscardTimeout: c.opts.CommitTimeout, Logger: log}
	puts, err := uploads.Upload(ctx, []objects.File{{Path: out, Key: pf.Key}})
	if err != nil {
		// The upload may have landed: do not leave it behind.
		uploads.Discard(ctx, "compaction output whose upload failed")
		return Merged{}, err
	}
	pf.SizeBytes, pf.Checksum = puts[0].Size, puts[0].Checksum
	lap(&tm.Upload)

	if err := faultpoint.Hit(ctx, faultpoint.CompactionAfterUpload); err != nil {
		uploads.Discard(ctx, "compaction stopped before its commit")
		return Merged{}, err
	}
	if c.opts.BeforeCommit != nil {
		if err := c.opts.BeforeCommit(ctx, g); err != nil {
			uploads.Discard(ctx, "compaction stopped before its commit")
			return Merged{}, err
		}
		phase = time.Now()
	}

	details := map[string]any{
		"inputs":       g.Inputs,
		"input_rows":   g.InputRows,
		"input_bytes":  g.InputBytes,
		"output_key":   pf.Key,
		"output_bytes": pf.SizeBytes,
		"level":        pf.Level,
		"window_start": g.WindowStart,
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.opts.CommitTimeout)
	defer cancel()
	cr, err := c.opts.Store.Commit(cctx, catalog.Change{
		Dataset:   ds.Name,
		Operation: catalog.OpCompaction,
		Actor:     ro.Actor,
		JobID:     ro.JobID,
		Add:       []catalog.PartitionFile{pf},
		Remove:    g.Inputs,
		Reason:    fmt.Sprintf("merge %d small partitions of window %s", len(g.Inputs), storage.WindowLabel(ds.Partition, g.WindowStart)),
		Summary:   details,
		Audit: []catalog.AuditEntry{{
			Action:     ActionMerge,
			Partitions: g.Inputs,
			Bytes:      g.InputBytes,
			Details:    details,
		}},
		InTx: func(ctx context.Context, tx catalog.Tx, _ int64, _ []catalog.Partition) error {
			if err := catalog.RequireCompactable(ctx, tx, g.Inputs); err != nil {
				return err
			}
			if c.opts.EnqueueSweep != nil {
				if err := c.opts.EnqueueSweep(ctx, tx, ds.ID, ds.Name); err != nil {
					return fmt.Errorf("enqueue sweep: %w", err)
				}
			}
			return nil
		},
	})
	if err != nil {
		uploads.Discard(ctx, "compaction whose manifest change did not take its output")
		return Merged{}, err
	}
	if len(cr.Added) != 1 {
		return Merged{}, fmt.Errorf("commit added %d partitions, want 1", len(cr.Added))
	}
	lap(&tm.Commit)
	if err := faultpoint.Hit(ctx, faultpoint.CompactionAfterCommit); err != nil {
		return Merged{}, err
	}
	return Merged{
		Partition:   cr.Added[0].ID,
		Inputs:      g.Inputs,
		Version:     cr.Version,
		Rows:        pf.RowCount,
		InputBytes:  g.InputBytes,
		OutputBytes: pf.SizeBytes,
		Level:       pf.Level,
		Timings:     tm,
	}, nil
}

// fetch makes every input of g readable locally and returns the paths and a
// function releasing them (safe to call more than once, also on error).
func (c *Compactor) fetch(ctx context.Context, g Group) ([]string, func(), error) {
	inputs, err := objects.Partitions(c.opts.Targets, g.Partitions)
	if err != nil {
		return nil, func() {}, err
	}
	// The merge rewrites these bytes under a new checksum and the inputs
	// are then swept: a damaged input (on the local target's disk, or in
	// the read cache after its download was checked) must stop the merge
	// here, or the damage becomes the only copy.
	paths, release, err := objects.Fetch(ctx, c.opts.Cache, inputs, c.opts.FetchConcurrency)
	if errors.Is(err, storage.ErrMismatch) {
		err = fmt.Errorf("%w: %w", ErrVerify, err)
	}
	return paths, release, err
}
