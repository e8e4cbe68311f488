package engine

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	duckdb "github.com/duckdb/duckdb-go/v2"
)

// Sandbox instances. Starting a DuckDB instance costs 10-30 ms of CPU on the
// benchmark machine and closing one about 10 ms, more than many queries, so
// the engine keeps started instances ready and reuses locked-down instances
// for later queries over exactly the same files.
const (
	// sandboxSpares is how many started, not yet restricted instances are kept
	// ready for queries over a new set of files.
	sandboxSpares = 1
	// sandboxIdleMax is how many restricted instances are kept for reuse.
	sandboxIdleMax = 4
	// sandboxIdleTTL is how long a restricted instance is kept unused.
	sandboxIdleTTL = time.Minute
)

// sandbox is a private DuckDB instance for user queries. Once restricted it
// can read its files and nothing else, and its configuration is locked; it
// then serves one query at a time, each on a fresh connection with its own
// temporary view of the dataset.
type sandbox struct {
	connector *duckdb.Connector
	tempDir   string
	// key identifies the allowed files once restricted.
	key      string
	lastUsed time.Time
}

// newSandbox starts an unrestricted instance.
func (e *Engine) newSandbox(ctx context.Context) (*sandbox, error) {
	sb := &sandbox{}
	dir, err := os.MkdirTemp(e.tempDir, "query-")
	if err != nil {
		return nil, fmt.Errorf("query: sandbox temp dir: %w", err)
	}
	sb.tempDir = dir
	sb.connector, err = duckdb.NewConnector(e.dsn(dir), nil)
	if err != nil {
		_ = sb.close()
		return nil, fmt.Errorf("query: open sandbox: %w", err)
	}
	if err := sb.exec(ctx, "SET GLOBAL TimeZone = 'UTC'"); err != nil {
		_ = sb.close()
		return nil, fmt.Errorf("query: sandbox setup: %w", err)
	}
	return sb, nil
}

// connect opens a connection to the instance.
func (sb *sandbox) connect(ctx context.Context) (*duckdb.Conn, error) {
	dc, err := sb.connector.Connect(ctx)
	if err != nil {
		return nil, err
	}
	return dc.(*duckdb.Conn), nil
}

// exec runs statements on a short-lived connection.
func (sb *sandbox) exec(ctx context.Context, stmts ...string) error {
	conn, err := sb.connect(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	for _, q := range stmts {
		if _, err := conn.ExecContext(ctx, q, nil); err != nil {
			return err
		}
	}
	return nil
}

// restrict allows the instance to read files and nothing else, with no
// extension loading, bounds the disk it may spill to, and locks the
// configuration.
func (sb *sandbox) restrict(ctx context.Context, files []string, spillLimit string) error {
	var setup []string
	if spillLimit != "" {
		setup = append(setup, "SET GLOBAL max_temp_directory_size = "+quoteString(spillLimit))
	}
	if len(files) > 0 {
		quoted := make([]string, len(files))
		for i, f := range files {
			quoted[i] = quoteString(f)
		}
		setup = append(setup, "SET GLOBAL allowed_paths = ["+strings.Join(quoted, ", ")+"]")
	}
	setup = append(setup,
		"SET GLOBAL enable_external_access = false",
		"SET GLOBAL allow_community_extensions = false",
		// Footers are read once per file, not for every view and query.
		"SET GLOBAL parquet_metadata_cache = true",
		"SET GLOBAL lock_configuration = true",
	)
	if err := sb.exec(ctx, setup...); err != nil {
		return fmt.Errorf("query: sandbox setup: %w", err)
	}
	sb.key = filesKey(files)
	return nil
}

func filesKey(files []string) string {
	s := slices.Clone(files)
	slices.Sort(s)
	return strings.Join(s, "\x00")
}

func (sb *sandbox) close() error {
	var errs []error
	if sb.connector != nil {
		errs = append(errs, sb.connector.Close())
	}
	if sb.tempDir != "" {
		errs = append(errs, os.RemoveAll(sb.tempDir))
	}
	return errors.Join(errs...)
}

// sandboxPool keeps spare and idle sandboxes and closes the others in the
// background.
type sandboxPool struct {
	e       *Engine
	mu      sync.Mutex
	spares  []*sandbox
	pending int
	idle    []*sandbox // restricted, least recently used first
	closed  bool
	wg      sync.WaitGroup
}

// get returns a sandbox restricted to files: an idle one with the same
// files, or a spare or new one, restricted now.
func (p *sandboxPool) get(ctx context.Context, files []string) (*sandbox, error) {
	key := filesKey(files)
	p.mu.Lock()
	p.evictLocked(time.Now())
	for i := len(p.idle) - 1; i >= 0; i-- {
		if sb := p.idle[i]; sb.key == key {
			p.idle = slices.Delete(p.idle, i, i+1)
			p.mu.Unlock()
			return sb, nil
		}
	}
	var sb *sandbox
	if n := len(p.spares); n > 0 {
		sb, p.spares = p.spares[n-1], p.spares[:n-1]
	}
	p.mu.Unlock()
	if sb == nil {
		var err error
		if sb, err = p.e.newSandbox(ctx); err != nil {
			return nil, err
		}
	}
	if err := sb.restrict(ctx, files, p.e.cfg.QuerySpillLimit); err != nil {
		p.discard(sb)
		return nil, err
	}
	return sb, nil
}

// refill starts spares in the background. It runs when a query ends, not
// when one starts, so that starting DuckDB does not compete with the query.
func (p *sandboxPool) refill() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.refillLocked()
}

func (p *sandboxPool) refillLocked() {
	for !p.closed && len(p.spares)+p.pending < sandboxSpares {
		p.pending++
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			sb, err := p.e.newSandbox(context.Background())
			p.mu.Lock()
			p.pending--
			if err == nil && !p.closed {
				p.spares = append(p.spares, sb)
				sb = nil
			}
			p.mu.Unlock()
			if sb != nil {
				_ = sb.close()
			}
		}()
	}
}

// put returns a sandbox after a query: kept for reuse if reusable, else
// closed.
func (p *sandboxPool) put(sb *sandbox, reusable bool) {
	if !reusable {
		p.discard(sb)
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		p.closeLocked(sb)
		return
	}
	sb.lastUsed = time.Now()
	p.idle = append(p.idle, sb)
	for len(p.idle) > sandboxIdleMax {
		p.closeLocked(p.idle[0])
		p.idle = p.idle[1:]
	}
	p.evictLocked(time.Now())
	p.refillLocked()
	time.AfterFunc(sandboxIdleTTL+time.Second, func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		p.evictLocked(time.Now())
	})
}

// discard closes a sandbox in the background.
func (p *sandboxPool) discard(sb *sandbox) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closeLocked(sb)
	p.refillLocked()
}

func (p *sandboxPool) closeLocked(sb *sandbox) {
	if p.closed {
		_ = sb.close()
		return
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		_ = sb.close()
	}()
}

// evictLocked closes idle sandboxes unused for sandboxIdleTTL.
func (p *sandboxPool) evictLocked(now time.Time) {
	keep := p.idle[:0]
	for _, sb := range p.idle {
		if now.Sub(sb.lastUsed) >= sandboxIdleTTL {
			p.closeLocked(sb)
		} else {
			keep = append(keep, sb)
		}
	}
	clear(p.idle[len(keep):])
	p.idle = keep
}

// close closes every kept sandbox and waits for background work.
func (p *sandboxPool) close() {
	p.mu.Lock()
	p.closed = true
	kept := append(p.spares, p.idle...)
	p.spares, p.idle = nil, nil
	p.mu.Unlock()
	for _, sb := range kept {
		_ = sb.close()
	}
	p.wg.Wait()
}
