// Package export writes Parquet snapshots of a dataset's cold windows to an
// export target, for tools such as DuckDB, Spark, Trino, Athena or pandas,
// and records them in the catalog.
//
// The work is split as elsewhere in timestore: DueWindows (plan.go) is a pure
// function of the live manifest, the export records and the policy that says
// which windows are due; the Exporter (this file) exports each due window —
// leased snapshot, DuckDB writes sorted zstd Parquet, upload, _manifest.json
// last, read back, then one catalog transaction records the version as
// verified with an audit row; CoveredFunc (coverage.go) is retention's
// require_export gate; Task (task.go) is the "export" job.
//
// Layout, per window: exports/DATASET/window=LABEL/part-NNNN.parquet and
// exports/DATASET/window=LABEL/_manifest.json. Versions of a window are
// append-only: a new version (late data) keeps every file of the previous
// one and adds files with the next part numbers; no verified file is ever
// overwritten or deleted, so the export stays a complete archive of every
// row it ever held even after retention pruned them from timestore. Only
// files of failed attempts (never verified) are replaced or deleted.
//
// The rules it follows (locks, leases, audited deletion, the job's shape): docs/design.md.
package export

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"golang.org/x/sync/errgroup"

	"timestore/internal/catalog"
	"timestore/internal/engine"
	"timestore/internal/faultpoint"
	"timestore/internal/objects"
	"timestore/internal/storage"
)

// Defaults of Options.
const (
	// MaxFileBytesDefault bounds the size of one exported file.
	MaxFileBytesDefault = engine.ExportMaxFileBytesDefault
	// LeaseTTLDefault is how long the snapshot lease of a window lasts; it
	// is renewed at a third of it while the window is exported.
	LeaseTTLDefault = 2 * time.Minute
	// ConcurrencyDefault is how many files are fetched, uploaded or
	// verified at once.
	ConcurrencyDefault = 4
	// RunBudgetDefault is how long a run keeps starting windows; the rest
	// wait for the next run (the job snoozes and continues). It stays below
	// the job harness's default timeout (4 minutes).
	RunBudgetDefault = 3 * time.Minute
	// FinishTimeoutDefault bounds the catalog writes that end a window's
	// attempt (verified or failed). They run detached from the run's
	// context, so that a cancelled run still records its outcome.
	FinishTimeoutDefault = 30 * time.Second
)

// Errors.
var (
	// ErrArchive is wrapped by errors about a verified version's files that
	// are missing or differ from their record, found when a new version
	// must read them: the export is damaged and retrying will not help.
	ErrArchive = errors.New("export archive damaged")
	// ErrVerify is engine.ErrExportVerify: the files DuckDB wrote do not
	// hold the rows it selected.
	ErrVerify = engine.ErrExportVerify
	// ErrBusy is wrapped (with catalog.ErrConflict) when another export of
	// the dataset is running.
	ErrBusy = errors.New("another export of the dataset is running")
	// ErrOccupied is wrapped by errors about a window directory that holds
	// a _manifest.json of an export this dataset did not record, e.g. of a
	// deleted dataset of the same name: it is left alone, and the export of
	// that window cannot proceed until an operator moves it away.
	ErrOccupied = errors.New("export directory holds another export")
)

// Store is what the exporter needs of the catalog; *catalog.Store has it.
type Store interface {
	GetDataset(ctx context.Context, name string) (catalog.Dataset, error)
	Snapshot(ctx context.Context, name string, from, to *time.Time) (catalog.Snapshot, error)
	LeasedSnapshot(ctx context.Context, name string, from, to *time.Time, holder string, ttl time.Duration) (catalog.Snapshot, int64, error)
	RenewLease(ctx context.Context, id int64, ttl time.Duration) error
	ReleaseLease(ctx context.Context, id int64) error
	ExportSeries(ctx context.Context, datasetID int64, target, window string) ([]catalog.Export, error)
	BeginExport(ctx context.Context, b catalog.ExportBegin) (catalog.Export, *catalog.Export, error)
	FailExport(ctx context.Context, id int64, attempt int, msg string) error
	VerifyExport(ctx context.Context, id int64, res catalog.ExportResult) (catalog.Export, error)
	VerifiedExportCoverage(ctx context.Context, datasetID int64) ([]catalog.ExportCoverage, error)
	LockExports(ctx context.Context, datasetID int64) (unlock func(), ok bool, err error)
	AppendAudit(ctx context.Context, e catalog.AuditEntry) error
}

// ActionDeleteLeftover is the audit action of deleting a file that a failed
// export attempt left under a window's prefix.
const ActionDeleteLeftover = "export.delete_leftover"

var _ Store = (*catalog.Store)(nil)

// Options configure an Exporter. Store, Targets, Cache and Engine are
// required.
type Options struct {
	// Store is the catalog.
	Store Store
	// Targets are the storage targets: partitions are read from theirs,
	// exports written to the policy's.
	Targets *storage.Targets
	// Cache provides local copies of remote partitions (and, for a version
	// that must read the previous one, of its files); local ones are read
	// in place.
	Cache *storage.Cache
	// Engine writes the Parquet files with DuckDB.
	Engine *engine.Engine
	// TempDir holds each window's files between DuckDB and the upload.
	// Defaults to os.TempDir().
	TempDir string
	// Logger defaults to discarding.
	Logger *slog.Logger
	// Registerer receives the export metrics; nil registers nothing.
	Registerer prometheus.Registerer
	// Now is the clock windows become due by. Defaults to time.Now.
	Now func() time.Time
	// MaxFileBytes bounds each exported file. Defaults to MaxFileBytesDefault.
	MaxFileBytes int64
	// LeaseTTL defaults to LeaseTTLDefault.
	LeaseTTL time.Duration
	// Concurrency defaults to ConcurrencyDefault.
	Concurrency int
	// RunBudget defaults to RunBudgetDefault.
	RunBudget time.Duration
	// FinishTimeout defaults to FinishTimeoutDefault.
	FinishTimeout time.Duration
}

// Exporter exports datasets' cold windows. It is safe for concurrent use;
// runs of one dataset are serialized by a catalog lock (a second run at the
// same time fails with ErrBusy).
type Exporter struct {
	opts    Options
	log     *slog.Logger
	metrics metrics
}

type metrics struct {
	duration *prometheus.HistogramVec
	bytes    *prometheus.CounterVec
	rows     *prometheus.CounterVec
	failures *prometheus.CounterVec
	lag      *prometheus.GaugeVec
}

func newMetrics(reg prometheus.Registerer) metrics {
	f := promauto.With(reg)
	ds := []string{"dataset"}
	return metrics{
		duration: f.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "timestore_export_duration_seconds",
			Help:    "Time to export one window, from its snapshot to its verified record (the export latency), by dataset.",
			Buckets: prometheus.ExponentialBuckets(0.1, 2, 14),
		}, ds),
		bytes: f.NewCounterVec(prometheus.CounterOpts{
			Name: "timestore_export_bytes_total",
			Help: "Bytes uploaded by verified window exports (new data files and manifests), by dataset.",
		}, ds),
		rows: f.NewCounterVec(prometheus.CounterOpts{
			Name: "timestore_export_rows_total",
			Help: "Rows written by verified window exports (rows new to the export), by dataset.",
		}, ds),
		failures: f.NewCounterVec(prometheus.CounterOpts{
			Name: "timestore_export_failures_total",
			Help: "Failed window export attempts, by dataset; the job retries them.",
		}, ds),
		lag: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "timestore_export_lag_seconds",
			Help: "How long the oldest due but unexported window of a dataset has been due, as of the last plan or run; 0 when none is.",
		}, ds),
	}
}

// New returns an Exporter. Like promauto, it panics if the Registerer
// already holds its metrics.
func New(opts Options) (*Exporter, error) {
	if opts.Store == nil || opts.Targets == nil || opts.Cache == nil || opts.Engine == nil {
		return nil, errors.New("export: Store, Targets, Cache and Engine are required")
	}
	if opts.MaxFileBytes < 0 || opts.LeaseTTL < 0 || opts.Concurrency < 0 || opts.RunBudget < 0 || opts.FinishTimeout < 0 {
		return nil, errors.New("export: MaxFileBytes, LeaseTTL, Concurrency, RunBudget and FinishTimeout must not be negative")
	}
	if opts.TempDir == "" {
		opts.TempDir = os.TempDir()
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	opts.MaxFileBytes = cmp.Or(opts.MaxFileBytes, MaxFileBytesDefault)
	opts.LeaseTTL = cmp.Or(opts.LeaseTTL, LeaseTTLDefault)
	opts.Concurrency = cmp.Or(opts.Concurrency, ConcurrencyDefault)
	opts.RunBudget = cmp.Or(opts.RunBudget, RunBudgetDefault)
	opts.FinishTimeout = cmp.Or(opts.FinishTimeout, FinishTimeoutDefault)
	return &Exporter{opts: opts, log: opts.Logger, metrics: newMetrics(opts.Registerer)}, nil
}

// Plan is what an export run would do now: the due windows.
type Plan struct {
	Dataset string `json:"dataset"`
	// Configured: the policy has an export section; Settings are its
	// values with defaults.
	Configured bool     `json:"configured"`
	Settings   Settings `json:"settings"`
	// Now and Cutoff (Now - After): windows ending at or before Cutoff
	// are old enough.
	Now             time.Time   `json:"now"`
	Cutoff          time.Time   `json:"cutoff"`
	ManifestVersion int64       `json:"manifest_version"`
	Due             []DueWindow `json:"due"`
	// Totals sum the due windows.
	Totals PlanTotals `json:"totals"`
	// LagSeconds is Lag(Due, Now).
	LagSeconds float64  `json:"lag_seconds"`
	Notes      []string `json:"notes"`
}

// PlanTotals sum the due windows of a plan.
type PlanTotals struct {
	Windows  int   `json:"windows"`
	Rows     int64 `json:"rows"`
	Bytes    int64 `json:"bytes"`
	NewRows  int64 `json:"new_rows"`
	NewBytes int64 `json:"new_bytes"`
}

// Plan returns the windows of a dataset due for export now, changing
// nothing but the lag gauge.
func (exp *Exporter) Plan(ctx context.Context, dataset string) (Plan, error) {
	plan, _, err := exp.plan(ctx, dataset)
	return plan, err
}

func (exp *Exporter) plan(ctx context.Context, dataset string) (Plan, catalog.Dataset, error) {
	snap, err := exp.opts.Store.Snapshot(ctx, dataset, nil, nil)
	if err != nil {
		return Plan{}, catalog.Dataset{}, fmt.Errorf("plan export of %s: %w", dataset, err)
	}
	ds := snap.Dataset
	now := exp.opts.Now()
	plan := Plan{Dataset: ds.Name, Now: now, ManifestVersion: snap.Version, Due: []DueWindow{}, Notes: []string{}}
	set, ok := SettingsOf(ds.Policy)
	if !ok || set.Target == "" {
		plan.Notes = append(plan.Notes, "the policy has no export section with a target: nothing is exported")
		exp.metrics.lag.WithLabelValues(ds.Name).Set(0)
		return plan, ds, nil
	}
	plan.Configured, plan.Settings, plan.Cutoff = true, set, now.Add(-set.After.Std())
	if !set.Enabled {
		plan.Notes = append(plan.Notes, "export.enabled is false: scheduled runs are off; a manual run exports what is listed")
	}
	if _, err := exp.opts.Targets.Get(set.Target); err != nil {
		return Plan{}, ds, fmt.Errorf("plan export of %s: %w", dataset, err)
	}
	exports, err := exp.opts.Store.ExportSeries(ctx, ds.ID, set.Target, set.Window)
	if err != nil {
		return Plan{}, ds, fmt.Errorf("plan export of %s: %w", dataset, err)
	}
	plan.Due = DueWindows(snap.Partitions, exports, set, now)
	for _, d := range plan.Due {
		plan.Totals.Windows++
		plan.Totals.Rows += d.Rows
		plan.Totals.Bytes += d.Bytes
		plan.Totals.NewRows += d.NewRows
		plan.Totals.NewBytes += d.NewBytes
	}
	lag := Lag(plan.Due, now)
	plan.LagSeconds = lag.Seconds()
	exp.metrics.lag.WithLabelValues(ds.Name).Set(lag.Seconds())
	return plan, ds, nil
}

// RunOptions describe who runs an export.
type RunOptions struct {
	// Actor is recorded with each version and in its audit row, e.g. "job:42".
	Actor string
	// JobID is the job that runs the export, if any.
	JobID *int64
	// Logger defaults to the Exporter's.
	Logger *slog.Logger
}

// Result is what a run did.
type Result struct {
	Dataset string `json:"dataset"`
	// Exported are the windows whose new version was verified, in order.
	Exported []WindowResult `json:"exported"`
	// Skipped counts due windows found covered or empty when their turn
	// came (the manifest changed since the plan).
	Skipped int `json:"skipped"`
	// Remaining counts due windows left for the next run because the run's
	// budget was spent.
	Remaining int `json:"remaining"`
	// Rows and Bytes are what the run wrote and uploaded.
	Rows  int64 `json:"rows"`
	Bytes int64 `json:"bytes"`
	// LagSeconds is the lag after the run.
	LagSeconds float64  `json:"lag_seconds"`
	Notes      []string `json:"notes,omitempty"`
}

// WindowResult is one exported window.
type WindowResult struct {
	Window      string  `json:"window"`
	Version     int     `json:"version"`
	Mode        string  `json:"mode"`
	ExportID    int64   `json:"export_id"`
	ManifestKey string  `json:"manifest_key"`
	Files       int     `json:"files"`
	NewFiles    int     `json:"new_files"`
	Rows        int64   `json:"rows"`
	NewRows     int64   `json:"new_rows"`
	Bytes       int64   `json:"bytes"`
	Uploaded    int64   `json:"uploaded_bytes"`
	Seconds     float64 `json:"seconds"`
}

// Run exports the due windows of a dataset, oldest first. Each window is
// verified and recorded on its own, so the work done survives a later
// failure. Two windows are in flight at most: DuckDB writes the next
// window's files while the previous window's are uploaded and read back.
// The run stops at the first window that fails (its attempt is recorded
// failed; no verified record is written for it; its previous version stays
// current) and returns its error, wrapping ErrArchive or ErrVerify when
// retrying cannot help. When the run budget is spent (checked before each
// window; the first always runs), Result.Remaining counts the windows left.
// A run while another export of the dataset runs fails with an error
// wrapping ErrBusy and catalog.ErrConflict.
func (exp *Exporter) Run(ctx context.Context, dataset string, ro RunOptions) (res Result, err error) {
	log := ro.Logger
	if log == nil {
		log = exp.log
	}
	res = Result{Dataset: dataset, Exported: []WindowResult{}}
	plan, ds, err := exp.plan(ctx, dataset)
	if err != nil {
		return res, err
	}
	res.Dataset = ds.Name
	res.Notes = plan.Notes
	res.LagSeconds = plan.LagSeconds
	if !plan.Configured || len(plan.Due) == 0 {
		return res, nil
	}
	unlock, ok, err := exp.opts.Store.LockExports(ctx, ds.ID)
	if err != nil {
		return res, fmt.Errorf("export %s: %w", ds.Name, err)
	}
	if !ok {
		return res, fmt.Errorf("export %s: %w: %w", ds.Name, catalog.ErrConflict, ErrBusy)
	}
	defer unlock()
	// The plan was made before the lock: make it again under it.
	if plan, ds, err = exp.plan(ctx, dataset); err != nil {
		return res, err
	}
	target, err := exp.opts.Targets.Get(plan.Settings.Target)
	if err != nil {
		return res, fmt.Errorf("export %s: %w", ds.Name, err)
	}

	started := time.Now()
	remaining := plan.Due // not yet verified
	defer func() {
		lag := Lag(remaining, exp.opts.Now())
		res.LagSeconds = lag.Seconds()
		exp.metrics.lag.WithLabelValues(ds.Name).Set(lag.Seconds())
	}()
	type published struct {
		wr  WindowResult
		err error
	}
	var inFlight chan published // the window being published, if any
	wait := func() error {
		if inFlight == nil {
			return nil
		}
		p := <-inFlight
		inFlight = nil
		if p.err != nil {
			return p.err
		}
		res.Exported = append(res.Exported, p.wr)
		res.Rows += p.wr.NewRows
		res.Bytes += p.wr.Uploaded
		remaining = remaining[1:]
		return nil
	}
	for i, w := range plan.Due {
		if i > 0 && time.Since(started) > exp.opts.RunBudget {
			res.Remaining = len(plan.Due) - i
			log.InfoContext(ctx, "export run budget spent; the remaining windows wait for the next run",
				"dataset", ds.Name, "remaining", res.Remaining, "budget", exp.opts.RunBudget)
			break
		}
		st, perr := exp.prepare(ctx, ds, plan.Settings, target, w, ro, log)
		if werr := wait(); werr != nil {
			if st != nil {
				exp.fail(st, fmt.Errorf("abandoned: the export of an earlier window failed: %w", werr))
				st.close()
			}
			return res, werr
		}
		if perr != nil {
			return res, perr
		}
		if st == nil { // nothing to export after all
			res.Skipped++
			remaining = remaining[1:]
			continue
		}
		inFlight = make(chan published, 1)
		go func(ch chan<- published) {
			wr, err := exp.publish(ctx, ds, target, st)
			ch <- published{wr, err}
		}(inFlight)
	}
	if err := wait(); err != nil {
		return res, err
	}
	return res, nil
}

// staged is a window whose next version's files are written locally and
// await publishing.
type staged struct {
	dataset string
	actor   string // the run's, for the audit log
	dir     string // the local work directory
	w       DueWindow
	attempt catalog.Export // the record of this attempt at the next version (writing)
	prev    *catalog.Export
	mode    string
	inputs  int
	files   []engine.ExportedFile
	start   time.Time
	log     *slog.Logger
	cleanup []func()
}

func (st *staged) close() {
	for i := len(st.cleanup) - 1; i >= 0; i-- {
		st.cleanup[i]()
	}
	st.cleanup = nil
}

// prepare takes a leased snapshot of a due window, records the attempt at
// its next version (writing) and has DuckDB write the version's new files.
// It returns nil, nil when, under the snapshot, the window has nothing to
// export. On error the attempt is recorded failed.
func (exp *Exporter) prepare(ctx context.Context, ds catalog.Dataset, set Settings, target *storage.Target, w DueWindow, ro RunOptions, log *slog.Logger) (_ *staged, err error) {
	st := &staged{dataset: ds.Name, actor: ro.Actor, w: w, start: time.Now(), log: log.With("dataset", ds.Name, "window", w.Label, "target", set.Target)}
	defer func() {
		if err != nil {
			st.close()
		}
	}()

	// The window's rows, pinned by a lease for as long as we read them.
	holder := "export"
	if ro.Actor != "" {
		holder += " " + ro.Actor
	}
	snap, lease, err := exp.opts.Store.LeasedSnapshot(ctx, ds.Name, &w.WindowStart, &w.WindowEnd, holder, exp.opts.LeaseTTL)
	if err != nil {
		return nil, fmt.Errorf("export %s window %s: %w", ds.Name, w.Label, err)
	}
	st.cleanup = append(st.cleanup, catalog.KeepLease(exp.opts.Store, lease, exp.opts.LeaseTTL, "export", st.log))
	ds = snap.Dataset

	series, err := exp.opts.Store.ExportSeries(ctx, ds.ID, set.Target, set.Window)
	if err != nil {
		return nil, fmt.Errorf("export %s window %s: %w", ds.Name, w.Label, err)
	}
	var cur *catalog.Export
	for i := range series {
		if series[i].State == catalog.ExportVerified && series[i].WindowStart.Equal(w.WindowStart) {
			cur = &series[i]
		}
	}
	var live, uncovered []catalog.Partition
	compacted := false
	for _, p := range snap.Partitions {
		if !overlaps(p, w.WindowStart, w.WindowEnd) {
			continue
		}
		live = append(live, p)
		if cur == nil || !containsID(cur.PartitionIDs, p.ID) {
			uncovered = append(uncovered, p)
			compacted = compacted || p.Level > 0
		}
	}
	if len(uncovered) == 0 {
		st.log.InfoContext(ctx, "window no longer due under the snapshot; skipped")
		st.close()
		return nil, nil
	}
	mode, inputs := ModeFull, live
	var covered []int64
	if cur != nil {
		covered = cur.PartitionIDs
		mode, inputs = ModeAppend, uncovered
		if compacted {
			mode, inputs = ModeExcept, live
		}
	}
	ids := make([]int64, len(live))
	for i, p := range live {
		ids[i] = p.ID
	}
	ids = sortedUnion(covered, ids)

	attempt, prev, err := exp.opts.Store.BeginExport(ctx, catalog.ExportBegin{
		DatasetID: ds.ID, Target: set.Target, Window: set.Window,
		WindowStart: w.WindowStart, WindowEnd: w.WindowEnd, WindowLabel: w.Label,
		ManifestVersion: snap.Version, PartitionIDs: ids, Fingerprint: Fingerprint(ids),
		ManifestKey: ManifestKey(ds.Name, set.Window, w.WindowStart), JobID: ro.JobID, Actor: ro.Actor,
	})
	if err != nil {
		return nil, fmt.Errorf("export %s window %s: %w", ds.Name, w.Label, err)
	}
	st.attempt, st.prev, st.mode, st.inputs = attempt, prev, mode, len(inputs)
	st.log = st.log.With("export_id", attempt.ID, "version", attempt.Version, "mode", mode)
	defer func() {
		if err != nil {
			err = fmt.Errorf("export %s window %s version %d: %w", ds.Name, w.Label, attempt.Version, err)
			exp.fail(st, err)
		}
	}()
	if (prev == nil) != (cur == nil) || prev != nil && prev.ID != cur.ID {
		return nil, fmt.Errorf("%w: the verified version changed during the export", catalog.ErrConflict)
	}

	dir, err := os.MkdirTemp(exp.opts.TempDir, "export-"+ds.Name+"-")
	if err != nil {
		return nil, err
	}
	st.dir = dir
	st.cleanup = append(st.cleanup, func() { _ = os.RemoveAll(dir) })
	paths, release, err := exp.fetchInputs(ctx, inputs)
	if err != nil {
		return nil, err
	}
	st.cleanup = append(st.cleanup, release)
	var except []string
	if mode == ModeExcept {
		var releaseOld func()
		if except, releaseOld, err = exp.fetchFiles(ctx, target, prev.Files); err != nil {
			return nil, err
		}
		st.cleanup = append(st.cleanup, releaseOld)
	}
	if st.files, err = exp.opts.Engine.Export(ctx, ds, engine.ExportRequest{
		Inputs: paths, Except: except, From: attempt.WindowStart, To: attempt.WindowEnd,
		Dir: filepath.Join(dir, "files"), MaxFileBytes: exp.opts.MaxFileBytes,
	}); err != nil {
		return nil, err
	}
	return st, nil
}

// fail records a failed attempt, detached from the run's context.
func (exp *Exporter) fail(st *staged, cause error) {
	exp.metrics.failures.WithLabelValues(st.dataset).Inc()
	ctx, cancel := context.WithTimeout(context.Background(), exp.opts.FinishTimeout)
	defer cancel()
	if err := exp.opts.Store.FailExport(ctx, st.attempt.ID, st.attempt.Attempts, cause.Error()); err != nil {
		st.log.Warn("could not mark the export attempt failed; the next run retries it anyway", "error", err)
	}
	st.log.Warn("export attempt failed", "error", cause)
}

// publish uploads a staged window's new files under the part numbers after
// the previous version's, then its _manifest.json, reads everything back,
// deletes what failed attempts left, and records the version verified. On
// error the attempt is recorded failed.
func (exp *Exporter) publish(ctx context.Context, ds catalog.Dataset, target *storage.Target, st *staged) (_ WindowResult, err error) {
	defer st.close()
	attempt, prev := st.attempt, st.prev
	defer func() {
		if err != nil {
			err = fmt.Errorf("export %s window %s version %d: %w", ds.Name, attempt.WindowLabel, attempt.Version, err)
			exp.fail(st, err)
		}
	}()
	if err := exp.checkOwner(ctx, target, attempt, prev); err != nil {
		return WindowResult{}, err
	}
	var carried []catalog.ExportFile
	first := 0
	if prev != nil {
		carried = prev.Files
		first = nextPart(prev.Files)
	}
	if err := faultpoint.Hit(ctx, faultpoint.ExportBeforeUpload); err != nil {
		return WindowResult{}, err
	}
	// A failed put that landed is a leftover under the window's prefix:
	// the next attempt overwrites it (the same part number) or deletes it
	// (deleteLeftovers).
	toPut := make([]objects.File, len(st.files))
	for i, f := range st.files {
		toPut[i] = objects.File{Path: f.Path, Key: PartKey(ds.Name, attempt.Window, attempt.WindowStart, first+i), Size: f.SizeBytes}
	}
	puts, err := objects.Upload(ctx, target, toPut, exp.opts.Concurrency)
	if err != nil {
		return WindowResult{}, err
	}
	added := make([]catalog.ExportFile, len(st.files))
	for i, f := range st.files {
		added[i] = catalog.ExportFile{Key: puts[i].Key, Rows: f.Rows, Bytes: puts[i].Size, Checksum: puts[i].Checksum,
			TimeMin: f.TimeMin.UTC(), TimeMax: f.TimeMax.UTC(), Version: attempt.Version}
	}
	if err := faultpoint.Hit(ctx, faultpoint.ExportAfterUpload); err != nil {
		return WindowResult{}, err
	}
	files := append(slices.Clone(carried), added...)

	// The manifest, last.
	prevVersion := 0
	if prev != nil {
		prevVersion = prev.Version
	}
	m := newManifest(ds, attempt, prevVersion, files, exp.opts.MaxFileBytes, exp.opts.Now())
	body, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return WindowResult{}, err
	}
	mpath := filepath.Join(st.dir, ManifestName)
	if err := os.WriteFile(mpath, append(body, '\n'), 0o644); err != nil {
		return WindowResult{}, err
	}
	msize, msum, err := target.PutFile(ctx, attempt.ManifestKey, mpath)
	if err != nil {
		return WindowResult{}, err
	}

	// Read everything back: the new files and the manifest byte for byte,
	// the carried files by size (they were read back when written and are
	// never rewritten).
	if err := exp.verify(ctx, target, added, carried, attempt.ManifestKey, msize, msum); err != nil {
		return WindowResult{}, err
	}
	if err := exp.deleteLeftovers(ctx, target, ds.Name, st.actor, attempt, files, st.log); err != nil {
		return WindowResult{}, err
	}

	wr := WindowResult{Window: attempt.WindowLabel, Version: attempt.Version, Mode: st.mode, ExportID: attempt.ID, ManifestKey: attempt.ManifestKey,
		Files: len(files), NewFiles: len(added), Rows: m.Rows, Bytes: m.Bytes, Uploaded: msize}
	for _, f := range added {
		wr.NewRows += f.Rows
		wr.Uploaded += f.Bytes
	}
	if err := faultpoint.Hit(ctx, faultpoint.ExportBeforeCommit); err != nil {
		return WindowResult{}, err
	}
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), exp.opts.FinishTimeout)
	defer cancel()
	if _, err := exp.opts.Store.VerifyExport(fctx, attempt.ID, catalog.ExportResult{
		Files: files, TimeMin: m.TimeMin, TimeMax: m.TimeMax, RowCount: m.Rows, SizeBytes: m.Bytes,
		NewRows: wr.NewRows, NewBytes: wr.Uploaded - msize, Checksum: msum,
		Details: map[string]any{"mode": st.mode, "new_files": len(added), "manifest_bytes": msize, "input_partitions": st.inputs},
		Attempt: attempt.Attempts,
	}); err != nil {
		return WindowResult{}, err
	}
	if err := faultpoint.Hit(ctx, faultpoint.ExportAfterCommit); err != nil {
		return WindowResult{}, err
	}
	wr.Seconds = time.Since(st.start).Seconds()
	exp.metrics.duration.WithLabelValues(ds.Name).Observe(wr.Seconds)
	exp.metrics.rows.WithLabelValues(ds.Name).Add(float64(wr.NewRows))
	exp.metrics.bytes.WithLabelValues(ds.Name).Add(float64(wr.Uploaded))
	st.log.InfoContext(ctx, "window exported", "files", wr.Files, "new_files", wr.NewFiles, "rows", wr.Rows,
		"new_rows", wr.NewRows, "bytes", wr.Bytes, "duration", time.Since(st.start))
	return wr, nil
}

// checkOwner checks that the window's _manifest.json, if there is one, is
// that of the window's current version or of an earlier attempt at the new
// one: that nothing in the directory belongs to another export (a dataset
// of the same name deleted before, another installation). Otherwise it
// returns an error wrapping ErrOccupied and nothing is written.
func (exp *Exporter) checkOwner(ctx context.Context, target *storage.Target, attempt catalog.Export, prev *catalog.Export) error {
	rc, err := target.Bucket.NewReader(ctx, attempt.ManifestKey)
	if errors.Is(err, storage.ErrNotExist) {
		return nil // the carried files are checked one by one
	}
	if err != nil {
		return fmt.Errorf("read the window's manifest: %w", err)
	}
	defer rc.Close()
	var m Manifest
	if err := json.NewDecoder(io.LimitReader(rc, 64<<20)).Decode(&m); err != nil {
		return fmt.Errorf("%w: %s is not an export manifest: %w", ErrOccupied, attempt.ManifestKey, err)
	}
	if m.ExportID == attempt.ID || prev != nil && m.ExportID == prev.ID {
		return nil
	}
	return fmt.Errorf("%w: %s belongs to export record %d (dataset %q, version %d, written %s), which this dataset does not have; move that directory away to export this window",
		ErrOccupied, attempt.ManifestKey, m.ExportID, m.Dataset, m.ExportVersion, m.CreatedAt.Format(time.RFC3339))
}

// fetchInputs returns local paths of the partitions' files (through the
// cache for remote targets), each verified against its record, pinned
// until release is called. What is exported may become the only copy
// (require_export): a damaged input must not be exported under a fresh
// checksum.
func (exp *Exporter) fetchInputs(ctx context.Context, parts []catalog.Partition) ([]string, func(), error) {
	inputs, err := objects.Partitions(exp.opts.Targets, parts)
	if err != nil {
		return nil, func() {}, err
	}
	return objects.Fetch(ctx, exp.opts.Cache, inputs, exp.opts.Concurrency)
}

// fetchFiles returns local paths of a verified version's files on target.
// A file that is missing or differs from its record is an error wrapping
// ErrArchive.
func (exp *Exporter) fetchFiles(ctx context.Context, target *storage.Target, files []catalog.ExportFile) ([]string, func(), error) {
	exported := make([]objects.Stored, len(files))
	for i, f := range files {
		exported[i] = objects.Stored{Target: target, Key: f.Key, Size: f.Bytes, Checksum: f.Checksum, Name: fmt.Sprintf("exported file of version %d", f.Version)}
	}
	paths, release, err := objects.Fetch(ctx, exp.opts.Cache, exported, exp.opts.Concurrency)
	if errors.Is(err, storage.ErrNotExist) || errors.Is(err, storage.ErrMismatch) {
		err = fmt.Errorf("%w: read the current version's files: %w", ErrArchive, err)
	}
	return paths, release, err
}

// verify reads back the new files and the manifest and checks their sizes
// and checksums, and checks the sizes of the carried files.
func (exp *Exporter) verify(ctx context.Context, target *storage.Target, added, carried []catalog.ExportFile, manifestKey string, msize int64, msum string) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(exp.opts.Concurrency)
	for _, f := range added {
		g.Go(func() error { return target.Verify(gctx, f.Key, f.Bytes, f.Checksum) })
	}
	for _, f := range carried {
		g.Go(func() error {
			info, err := target.Attributes(gctx, f.Key)
			if err != nil {
				if errors.Is(err, storage.ErrNotExist) {
					return fmt.Errorf("%w: %s of version %d: %w", ErrArchive, f.Key, f.Version, err)
				}
				return err
			}
			if info.Size != f.Bytes {
				return fmt.Errorf("%w: %s of version %d: %w: size %d, want %d", ErrArchive, f.Key, f.Version, storage.ErrMismatch, info.Size, f.Bytes)
			}
			return nil
		})
	}
	g.Go(func() error { return target.Verify(gctx, manifestKey, msize, msum) })
	return g.Wait()
}

// deleteLeftovers deletes the objects under a window's prefix that the
// version does not list: data files of failed attempts, which were never
// part of a verified version (a version carries every file of the one
// before). Readers that list the prefix would otherwise see their rows
// twice. Each deletion is audited first: a crash in between leaves an
// audited file that the next attempt deletes.
func (exp *Exporter) deleteLeftovers(ctx context.Context, target *storage.Target, dataset, actor string, attempt catalog.Export,
	files []catalog.ExportFile, log *slog.Logger) error {
	keep := map[string]bool{attempt.ManifestKey: true}
	for _, f := range files {
		keep[f.Key] = true
	}
	var stale []storage.ObjectInfo
	if err := target.List(ctx, WindowPrefix(dataset, attempt.Window, attempt.WindowStart), func(o storage.ObjectInfo) error {
		if !keep[o.Key] {
			stale = append(stale, o)
		}
		return nil
	}); err != nil {
		return fmt.Errorf("list the window's objects: %w", err)
	}
	for _, o := range stale {
		if err := exp.opts.Store.AppendAudit(ctx, catalog.AuditEntry{
			Actor:   actor,
			Action:  ActionDeleteLeftover,
			Dataset: dataset,
			Bytes:   o.Size,
			Reason:  fmt.Sprintf("left under window %s by a failed attempt; version %d does not list it", attempt.WindowLabel, attempt.Version),
			Details: map[string]any{"target": target.Name, "key": o.Key, "export_id": attempt.ID},
		}); err != nil {
			return fmt.Errorf("audit the deletion of a leftover of a failed attempt: %w", err)
		}
		if err := target.Delete(ctx, o.Key); err != nil && !errors.Is(err, storage.ErrNotExist) {
			return fmt.Errorf("delete a leftover of a failed attempt: %w", err)
		}
		log.InfoContext(ctx, "deleted a leftover of a failed export attempt", "key", o.Key)
	}
	return nil
}
