package ingest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"timestore/internal/catalog"
)

// GroupCommitMaxDefault is the default Options.GroupCommitMax.
const GroupCommitMaxDefault = 64

// committer groups the manifest commits of concurrent ingests into one
// dataset (group commit). A request whose uploads are done queues its change
// on its dataset's queue; if no commit of that dataset is running it leads:
// it commits at once what is queued (itself, when alone). Requests arriving
// while a commit runs wait and are committed together right after it, by
// one catalog transaction, up to max members at a time. There is no batching
// window: a group is whatever queued during the previous commit.
type committer struct {
	store   Store
	max     int
	timeout time.Duration
	size    prometheus.Histogram

	mu     sync.Mutex
	queues map[string][]*member // by dataset name; present while a commit of it runs
}

// member is one request's change waiting for, then holding, its outcome.
type member struct {
	ctx    context.Context // the request's, without its cancellation
	change catalog.Change
	done   chan struct{} // closed when res and err are set
	res    catalog.CommitResult
	err    error
}

// commit commits ch, alone or in a group, and returns its own outcome. It
// returns only once the commit that took ch has ended (or its time limit
// passed), whether or not ctx is cancelled meanwhile: the caller decides by
// the outcome what to do with its uploads.
func (c *committer) commit(ctx context.Context, ch catalog.Change) (catalog.CommitResult, error) {
	m := &member{ctx: context.WithoutCancel(ctx), change: ch, done: make(chan struct{})}
	c.mu.Lock()
	queue, running := c.queues[ch.Dataset]
	c.queues[ch.Dataset] = append(queue, m)
	c.mu.Unlock()
	if !running {
		c.run(ch.Dataset)
	}
	<-m.done
	return m.res, m.err
}

// run commits one group of dataset's queue: up to max members, taken in
// arrival order. If more queued meanwhile it hands the next group to a new
// goroutine, so the caller (the leader) answers its own request at once;
// otherwise it ends the dataset's run.
func (c *committer) run(dataset string) {
	c.mu.Lock()
	queue := c.queues[dataset]
	group := queue[:min(len(queue), c.max)]
	c.queues[dataset] = queue[len(group):]
	c.mu.Unlock()

	c.size.Observe(float64(len(group)))
	c.commitGroup(group)

	c.mu.Lock()
	more := len(c.queues[dataset]) > 0
	if !more {
		delete(c.queues, dataset)
	}
	c.mu.Unlock()
	if more {
		go c.run(dataset)
	}
}

// commitGroup commits the changes of group, in one transaction when there
// are several, and hands each member its outcome. When the group's
// transaction fails on a conflict (some member's object already referenced)
// each member is committed alone, so that only the one at fault fails.
// Every other failure of the group is every member's: in particular a COMMIT
// whose outcome is unknown is unknown for all of them.
func (c *committer) commitGroup(group []*member) {
	defer func() {
		for _, m := range group {
			close(m.done)
		}
	}()
	ctx, cancel := context.WithTimeout(group[0].ctx, c.timeout)
	defer cancel()
	if len(group) == 1 {
		group[0].res, group[0].err = c.store.Commit(ctx, group[0].change)
		return
	}
	changes := make([]catalog.Change, len(group))
	for i, m := range group {
		changes[i] = m.change
	}
	outcomes, err := c.store.CommitGroup(ctx, changes)
	if errors.Is(err, catalog.ErrConflict) {
		for _, m := range group {
			mctx, mcancel := context.WithTimeout(m.ctx, c.timeout)
			m.res, m.err = c.store.Commit(mctx, m.change)
			mcancel()
		}
		return
	}
	for i, m := range group {
		switch {
		case err != nil:
			m.err = err
		case i >= len(outcomes):
			m.err = fmt.Errorf("commit group to dataset %q: %d outcomes for %d members", m.change.Dataset, len(outcomes), len(group))
		default:
			m.res, m.err = outcomes[i].Result, outcomes[i].Err
		}
	}
}
