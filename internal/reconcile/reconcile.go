// Package reconcile compares what the storage targets hold with what the
// catalog references, for one dataset at a time. Objects that no partition
// references and that are older than a safety age are orphans (left by a
// crash between upload and commit, or a failed cleanup); they are deleted
// unless it is a dry run, each deletion audited. Partitions whose object is
// missing are reported loudly (error log, gauge, job output) and never
// dropped from the catalog: that takes a person.
//
// It is the reconcile lifecycle job: Task (task.go) implements jobs.Task.
//
// The rules it follows (dereference before delete, audited deletion, the job's shape): docs/design.md.
package reconcile

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"timestore/internal/faultpoint"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"timestore/internal/catalog"
	"timestore/internal/storage"
)

// SafetyAgeDefault is how old an unreferenced object must be before
// reconcile deletes it. An ingest uploads its files before it commits them;
// the safety age must exceed the longest such gap. Zero is not allowed: it
// would delete the files of ingests in flight.
const SafetyAgeDefault = time.Hour

// MaxListedKeys caps each list of keys in a Report; the counts are complete.
const MaxListedKeys = 100

// ActionDeleteOrphan is the audit action of each orphan deletion.
const ActionDeleteOrphan = "reconcile.delete_orphan"

// Store is what reconcile needs of the catalog; *catalog.Store has it.
type Store interface {
	GetDataset(ctx context.Context, name string) (catalog.Dataset, error)
	ObjectRefs(ctx context.Context, name string) ([]catalog.ObjectRef, error)
	AppendAudit(ctx context.Context, e catalog.AuditEntry) error
}

var _ Store = (*catalog.Store)(nil)

// Options configures a Reconciler.
type Options struct {
	// Store is the catalog. Required.
	Store Store
	// Targets are the storage targets. Required.
	Targets *storage.Targets
	// Logger defaults to discarding.
	Logger *slog.Logger
	// Registerer receives the reconcile metrics. Defaults to none.
	Registerer prometheus.Registerer
	// SafetyAge is how old an unreferenced object must be to be deleted.
	// Defaults to SafetyAgeDefault.
	SafetyAge time.Duration
	// Now is the time objects' ages are measured at, on this process's
	// clock (tests move it forward). Defaults to time.Now.
	Now func() time.Time
	// ProcessClock is this process's clock, against which each target's
	// clock is measured (objects' modification times are the target's).
	// Defaults to time.Now.
	ProcessClock func() time.Time
}

// Reconciler reconciles datasets. It is safe for concurrent use.
type Reconciler struct {
	opts    Options
	metrics *metrics
}

type metrics struct {
	found        *prometheus.CounterVec
	deleted      *prometheus.CounterVec
	bytesDeleted *prometheus.CounterVec
	missing      *prometheus.GaugeVec
}

// New returns a Reconciler.
func New(opts Options) (*Reconciler, error) {
	switch {
	case opts.Store == nil || opts.Targets == nil:
		return nil, errors.New("reconcile: Store and Targets are required")
	case opts.SafetyAge < 0:
		return nil, fmt.Errorf("reconcile: SafetyAge must be positive, not %s", opts.SafetyAge)
	}
	if opts.SafetyAge == 0 {
		opts.SafetyAge = SafetyAgeDefault
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.ProcessClock == nil {
		opts.ProcessClock = time.Now
	}
	f := promauto.With(opts.Registerer)
	labels := []string{"dataset", "target"}
	return &Reconciler{opts: opts, metrics: &metrics{
		found: f.NewCounterVec(prometheus.CounterOpts{
			Name: "timestore_reconcile_orphans_found_total",
			Help: "Unreferenced objects older than the safety age found by reconcile runs (not dry runs), by dataset and target.",
		}, labels),
		deleted: f.NewCounterVec(prometheus.CounterOpts{
			Name: "timestore_reconcile_orphans_deleted_total",
			Help: "Orphan objects deleted by reconcile, by dataset and target.",
		}, labels),
		bytesDeleted: f.NewCounterVec(prometheus.CounterOpts{
			Name: "timestore_reconcile_orphan_bytes_deleted_total",
			Help: "Bytes of orphan objects deleted by reconcile, by dataset and target.",
		}, labels),
		missing: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "timestore_missing_objects",
			Help: "Partitions (live or removed, not purged) whose object the last reconcile did not find on its target, by dataset and target.",
		}, labels),
	}}, nil
}

// MissingReport is a reference whose object is missing.
type MissingReport struct {
	Target      string `json:"target"`
	Key         string `json:"key"`
	PartitionID int64  `json:"partition_id"`
	State       string `json:"state"`
	SizeBytes   int64  `json:"size_bytes"`
}

// Report is what a reconcile found and did. Key lists hold at most
// MaxListedKeys entries each; the counts are complete.
type Report struct {
	Dataset   string   `json:"dataset"`
	DryRun    bool     `json:"dry_run"`
	SafetyAge string   `json:"safety_age"`
	Targets   []string `json:"targets"`
	// ObjectsScanned counts the objects listed (and checked individually).
	ObjectsScanned int `json:"objects_scanned"`
	// Referenced counts the catalog's references (partitions not purged).
	Referenced int `json:"referenced"`
	// OrphansFound counts unreferenced partition objects older than the
	// safety age; OrphanBytes sums their sizes.
	OrphansFound int   `json:"orphans_found"`
	OrphanBytes  int64 `json:"orphan_bytes"`
	// OrphansDeleted and BytesReclaimed: what this run deleted (zero in a
	// dry run).
	OrphansDeleted int   `json:"orphans_deleted"`
	BytesReclaimed int64 `json:"bytes_reclaimed"`
	// OrphansYoung counts unreferenced objects kept because they are younger
	// than the safety age.
	OrphansYoung int `json:"orphans_young"`
	// Foreign counts unreferenced objects that are not shaped like partition
	// objects; they are never deleted.
	Foreign int `json:"foreign"`
	// Missing counts references whose object was not found.
	Missing        int             `json:"missing"`
	Orphans        []Object        `json:"orphans,omitempty"`
	YoungOrphans   []Object        `json:"young_orphans,omitempty"`
	ForeignObjects []Object        `json:"foreign_objects,omitempty"`
	MissingObjects []MissingReport `json:"missing_objects,omitempty"`
}

// Reconcile compares the dataset's targets with the catalog and, unless
// dryRun, deletes the orphans, auditing each deletion as actor. It returns the
// report also when it fails part way (with what was done so far).
//
// The references are read before and after the listing (see Compare), and
// each orphan is deleted only after that, so an object committed while the
// listing ran is never taken for an orphan. Errors: catalog.ErrNotFound for
// an unknown dataset; listing, deletion and audit failures.
func (rec *Reconciler) Reconcile(ctx context.Context, dataset string, dryRun bool, actor string, log *slog.Logger) (Report, error) {
	if log == nil {
		log = rec.opts.Logger
	}
	r := Report{Dataset: dataset, DryRun: dryRun, SafetyAge: rec.opts.SafetyAge.String()}
	d, err := rec.opts.Store.GetDataset(ctx, dataset)
	if err != nil {
		return r, err
	}
	before, err := rec.opts.Store.ObjectRefs(ctx, d.Name)
	if err != nil {
		return r, err
	}
	targets := []string{d.Target}
	for _, ref := range before {
		if !slices.Contains(targets, ref.Target) {
			targets = append(targets, ref.Target)
		}
	}
	slices.Sort(targets)
	r.Targets = targets

	listed, err := rec.list(ctx, d.Name, targets, before)
	if err != nil {
		return r, err
	}
	after, err := rec.opts.Store.ObjectRefs(ctx, d.Name)
	if err != nil {
		return r, err
	}
	now := rec.opts.Now()
	c := Compare(d.Name, before, after, listed, now, rec.opts.SafetyAge)
	r.ObjectsScanned, r.Referenced = c.Scanned, len(after)
	r.OrphansFound, r.OrphansYoung, r.Foreign, r.Missing = len(c.Orphans), len(c.Young), len(c.Foreign), len(c.Missing)
	r.Orphans, r.YoungOrphans, r.ForeignObjects = capped(c.Orphans), capped(c.Young), capped(c.Foreign)
	for _, o := range c.Orphans {
		r.OrphanBytes += o.Size
	}
	rec.reportMissing(d.Name, targets, c.Missing, &r, log)
	if len(c.Young) > 0 {
		log.Info("unreferenced objects younger than the safety age kept", "count", len(c.Young), "safety_age", rec.opts.SafetyAge)
	}
	if len(c.Foreign) > 0 {
		log.Warn("objects under the dataset prefix that are not partition objects; left alone", "count", len(c.Foreign))
	}
	if dryRun {
		return r, nil
	}
	for _, o := range c.Orphans {
		rec.metrics.found.WithLabelValues(d.Name, o.Target).Inc()
	}
	if len(c.Orphans) > 0 {
		if err := faultpoint.Hit(ctx, faultpoint.ReconcileBeforeDelete); err != nil {
			return r, err
		}
	}
	for _, o := range c.Orphans {
		deleted, err := rec.deleteOrphan(ctx, d.Name, o, now, actor, log)
		if deleted {
			r.OrphansDeleted++
			r.BytesReclaimed += o.Size
		}
		if err != nil {
			return r, err
		}
	}
	log.Info("reconciled", "targets", targets, "objects_scanned", r.ObjectsScanned, "orphans_deleted", r.OrphansDeleted,
		"bytes_reclaimed", r.BytesReclaimed, "young", r.OrphansYoung, "missing", r.Missing)
	return r, nil
}

// list lists the dataset's prefix on every target and checks, one by one,
// the referenced objects outside that prefix.
func (rec *Reconciler) list(ctx context.Context, dataset string, targets []string, refs []catalog.ObjectRef) ([]Object, error) {
	var listed []Object
	byName := map[string]*storage.Target{}
	offsets := map[string]time.Duration{}
	for _, name := range targets {
		tg, err := rec.opts.Targets.Get(name)
		if err != nil {
			return nil, fmt.Errorf("reconcile %s: %w", dataset, err)
		}
		byName[name] = tg
		// Ages compare the target's modification times with this
		// process's clock: measure how far apart the two clocks are, or a
		// host clock running ahead makes an upload still waiting for its
		// commit look older than the safety age.
		offset, err := tg.ClockOffset(ctx, rec.opts.ProcessClock)
		if err != nil {
			return nil, fmt.Errorf("reconcile %s: %w", dataset, err)
		}
		offsets[name] = offset
		if offset > time.Minute || offset < -time.Minute {
			rec.opts.Logger.WarnContext(ctx, "the target's clock differs from this host's; object ages are corrected for it", "target", name, "offset", offset)
		}
		err = tg.List(ctx, Prefix(dataset), func(o storage.ObjectInfo) error {
			listed = append(listed, Object{Target: name, Key: o.Key, Size: o.Size, ModTime: o.ModTime.Add(-offset)})
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("reconcile %s: list target %s: %w", dataset, name, err)
		}
	}
	for _, ref := range refs {
		if strings.HasPrefix(ref.Key, Prefix(dataset)) {
			continue
		}
		info, err := byName[ref.Target].Attributes(ctx, ref.Key)
		switch {
		case errors.Is(err, storage.ErrNotExist):
		case err != nil:
			return nil, fmt.Errorf("reconcile %s: check %s on target %s: %w", dataset, ref.Key, ref.Target, err)
		default:
			listed = append(listed, Object{Target: ref.Target, Key: ref.Key, Size: info.Size, ModTime: info.ModTime.Add(-offsets[ref.Target])})
		}
	}
	return listed, nil
}

// reportMissing logs each missing object at error level, sets the gauge per
// target and fills the report.
func (rec *Reconciler) reportMissing(dataset string, targets []string, missing []catalog.ObjectRef, r *Report, log *slog.Logger) {
	perTarget := map[string]int{}
	for i, m := range missing {
		perTarget[m.Target]++
		if i < MaxListedKeys {
			r.MissingObjects = append(r.MissingObjects, MissingReport{
				Target: m.Target, Key: m.Key, PartitionID: m.PartitionID, State: m.State, SizeBytes: m.SizeBytes,
			})
			log.Error("partition object missing from its target; the partition stays in the catalog",
				"target", m.Target, "key", m.Key, "partition_id", m.PartitionID, "state", m.State)
		}
	}
	if len(missing) > MaxListedKeys {
		log.Error("more partition objects missing", "count", len(missing)-MaxListedKeys)
	}
	for _, name := range targets {
		rec.metrics.missing.WithLabelValues(dataset, name).Set(float64(perTarget[name]))
	}
}

// deleteOrphan deletes one orphan and audits it. An object that is already
// gone is not an error (another reconcile got there first).
func (rec *Reconciler) deleteOrphan(ctx context.Context, dataset string, o Object, now time.Time, actor string, log *slog.Logger) (bool, error) {
	tg, err := rec.opts.Targets.Get(o.Target)
	if err != nil {
		return false, err
	}
	// Audit first: a process that dies between the two leaves an audited
	// orphan that the next reconcile deletes (and audits again), never a
	// deletion without a record.
	err = rec.opts.Store.AppendAudit(ctx, catalog.AuditEntry{
		Actor:   actor,
		Action:  ActionDeleteOrphan,
		Dataset: dataset,
		Bytes:   o.Size,
		Reason:  fmt.Sprintf("no partition references it and it is older than the safety age (%s)", rec.opts.SafetyAge),
		Details: map[string]any{"target": o.Target, "key": o.Key, "mod_time": o.ModTime, "age": now.Sub(o.ModTime).String()},
	})
	if err != nil {
		return false, fmt.Errorf("reconcile %s: audit deletion of orphan %s: %w", dataset, o.Key, err)
	}
	if err := faultpoint.Hit(ctx, faultpoint.ReconcileMidDelete); err != nil {
		return false, err
	}
	if err := tg.Delete(ctx, o.Key); err != nil {
		if errors.Is(err, storage.ErrNotExist) {
			return false, nil
		}
		return false, fmt.Errorf("reconcile %s: delete orphan %s: %w", dataset, o.Key, err)
	}
	rec.metrics.deleted.WithLabelValues(dataset, o.Target).Inc()
	rec.metrics.bytesDeleted.WithLabelValues(dataset, o.Target).Add(float64(o.Size))
	log.Info("orphan object deleted", "target", o.Target, "key", o.Key, "bytes", o.Size, "mod_time", o.ModTime)
	return true, nil
}

func capped(objs []Object) []Object {
	if len(objs) > MaxListedKeys {
		objs = objs[:MaxListedKeys]
	}
	return objs
}
