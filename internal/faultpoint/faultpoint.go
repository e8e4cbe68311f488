// Package faultpoint places named crash and error points at every step of
// timestore's data-changing protocols (ingest, compaction, retention apply,
// sweep, export, reconcile), so that tests can prove a process dying or a
// step failing at any of them loses nothing.
//
// Points are off unless the TIMESTORE_FAULTPOINTS environment variable is set
// when the process starts (or a test arms one with Arm). Disarmed, Hit costs
// one atomic load. Production never sets the variable; `timestore serve` logs
// a warning when it is set.
//
// The variable is a comma-separated list of NAME=ACTION[@N]:
//
//	TIMESTORE_FAULTPOINTS=compaction.after_upload=kill
//	TIMESTORE_FAULTPOINTS=sweep.mid_delete=kill@2,export.before_commit=error
//
// ACTION is "kill" (the process sends itself SIGKILL: no deferred function,
// no cleanup, exactly like the OOM killer or a node loss) or "error" (Hit
// returns an error wrapping ErrInjected). @N fires on the Nth hit of the point
// in this process (default 1) and on no other; "kill" also prints
// "timestore: fault point NAME: kill" to stderr first, so a harness can tell
// where the process died.
package faultpoint

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
)

// Env is the environment variable that arms fault points at start-up.
const Env = "TIMESTORE_FAULTPOINTS"

// ErrInjected is wrapped by the error an "error" action returns.
var ErrInjected = errors.New("injected fault")

// The fault points. Each names the step of a protocol just reached; the
// comment says what is durable at that moment.
const (
	// IngestBeforeUpload: the request's Parquet files are written locally; nothing uploaded.
	IngestBeforeUpload = "ingest.before_upload"
	// IngestAfterUpload: every file is uploaded; the catalog does not reference them.
	IngestAfterUpload = "ingest.after_upload"
	// IngestAfterCommit: the partitions are committed; the client has no response yet.
	IngestAfterCommit = "ingest.after_commit"

	// CompactionBeforeUpload: the merged file is written locally; nothing uploaded.
	CompactionBeforeUpload = "compaction.before_upload"
	// CompactionAfterUpload: the merged file is uploaded and verified; not referenced.
	CompactionAfterUpload = "compaction.after_upload"
	// CompactionAfterCommit: the swap is committed (inputs marked removed); the job has not finished.
	CompactionAfterCommit = "compaction.after_commit"

	// RetentionBeforeCommit: the plan is computed; nothing changed.
	RetentionBeforeCommit = "retention.before_commit"
	// RetentionAfterCommit: partitions are marked removed and the sweep enqueued (same transaction); the job has not finished.
	RetentionAfterCommit = "retention.after_commit"

	// SweepBeforeDelete: purgeable partitions are chosen; no object deleted.
	SweepBeforeDelete = "sweep.before_delete"
	// SweepMidDelete: hit after each object deletion, before it is recorded as purged.
	SweepMidDelete = "sweep.mid_delete"
	// SweepBeforeCommit: the objects are deleted; the catalog does not record it yet.
	SweepBeforeCommit = "sweep.before_commit"

	// ExportBeforeUpload: the window's export files are written locally; nothing uploaded.
	ExportBeforeUpload = "export.before_upload"
	// ExportAfterUpload: data files are uploaded; no _manifest.json.
	ExportAfterUpload = "export.after_upload"
	// ExportBeforeCommit: data files and _manifest.json are uploaded and read back, earlier attempts' leftovers deleted; the catalog does not record the export verified.
	ExportBeforeCommit = "export.before_commit"
	// ExportAfterCommit: the export version is recorded verified; the job has not finished.
	ExportAfterCommit = "export.after_commit"

	// ReconcileBeforeDelete: orphans are found; none deleted.
	ReconcileBeforeDelete = "reconcile.before_delete"
	// ReconcileMidDelete: hit after each orphan's deletion is audited, before the object is deleted.
	ReconcileMidDelete = "reconcile.mid_delete"
)

var all = []string{
	IngestBeforeUpload, IngestAfterUpload, IngestAfterCommit,
	CompactionBeforeUpload, CompactionAfterUpload, CompactionAfterCommit,
	RetentionBeforeCommit, RetentionAfterCommit,
	SweepBeforeDelete, SweepMidDelete, SweepBeforeCommit,
	ExportBeforeUpload, ExportAfterUpload, ExportBeforeCommit, ExportAfterCommit,
	ReconcileBeforeDelete, ReconcileMidDelete,
}

// All returns every fault point name, in protocol order.
func All() []string { return slices.Clone(all) }

// Known reports whether name is a fault point.
func Known(name string) bool { return slices.Contains(all, name) }

// Action is what an armed point does when it fires.
type Action string

const (
	// Kill sends SIGKILL to the process.
	Kill Action = "kill"
	// Error makes Hit return an error wrapping ErrInjected.
	Error Action = "error"
)

// Func is a test hook run when an armed point fires; its error is returned
// by Hit. It runs on the goroutine that hit the point, so it can block it
// (for example until a test has stopped a storage server).
type Func func(ctx context.Context) error

type arm struct {
	action Action
	fn     Func
	nth    int64 // fire on this hit (1-based); 0: every hit (hooks only)
	hits   atomic.Int64
}

var (
	armed atomic.Bool
	mu    sync.RWMutex
	arms  = map[string]*arm{}
)

func init() {
	if spec := os.Getenv(Env); spec != "" {
		if err := Configure(spec); err != nil {
			// A mistyped spec must not silently test nothing.
			fmt.Fprintf(os.Stderr, "timestore: %s: %v\n", Env, err)
			os.Exit(2)
		}
	}
}

// Configure arms the points of a TIMESTORE_FAULTPOINTS spec, replacing any
// armed before.
func Configure(spec string) error {
	next := map[string]*arm{}
	for _, item := range strings.Split(spec, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		name, rest, ok := strings.Cut(item, "=")
		if !ok {
			return fmt.Errorf("%q: want NAME=ACTION[@N]", item)
		}
		if !Known(name) {
			return fmt.Errorf("unknown fault point %q (known: %s)", name, strings.Join(all, ", "))
		}
		act, nth := rest, int64(1)
		if a, n, ok := strings.Cut(rest, "@"); ok {
			v, err := strconv.ParseInt(n, 10, 64)
			if err != nil || v < 1 {
				return fmt.Errorf("%q: @N must be a positive integer", item)
			}
			act, nth = a, v
		}
		switch Action(act) {
		case Kill, Error:
		default:
			return fmt.Errorf("%q: unknown action %q (want kill or error)", item, act)
		}
		next[name] = &arm{action: Action(act), nth: nth}
	}
	mu.Lock()
	arms = next
	armed.Store(len(next) > 0)
	mu.Unlock()
	return nil
}

// Enabled reports whether any point is armed.
func Enabled() bool { return armed.Load() }

// Arm runs fn every time the named point is hit, until the returned function
// disarms it. For in-process tests; they must not arm the same point
// concurrently.
func Arm(name string, fn Func) (disarm func()) {
	if !Known(name) {
		panic("faultpoint: unknown point " + name)
	}
	a := &arm{fn: fn}
	mu.Lock()
	arms[name] = a
	armed.Store(true)
	mu.Unlock()
	return func() {
		mu.Lock()
		if arms[name] == a {
			delete(arms, name)
		}
		armed.Store(len(arms) > 0)
		mu.Unlock()
	}
}

// Hit marks that the named step is reached. It returns nil unless the point
// is armed and fires.
func Hit(ctx context.Context, name string) error {
	if !armed.Load() {
		return nil
	}
	mu.RLock()
	a := arms[name]
	mu.RUnlock()
	if a == nil {
		return nil
	}
	n := a.hits.Add(1)
	if a.nth != 0 && n != a.nth {
		return nil
	}
	if a.fn != nil {
		return a.fn(ctx)
	}
	switch a.action {
	case Kill:
		fmt.Fprintf(os.Stderr, "timestore: fault point %s: kill\n", name)
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // SIGKILL is not deliverable late; never return
	default:
		return fmt.Errorf("fault point %s: %w", name, ErrInjected)
	}
}
