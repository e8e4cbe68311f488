package catalog

import (
	"context"
	"sync"
	"time"
)

// Clock tells the time by the catalog database's clock. Every timestore
// process decides by it what is old enough to remove, export or sweep, so
// that processes whose own clocks drift apart still agree, with each other
// and with the times the database records (removed_at, lease expiries). It
// measures the offset between the database's clock and the local one once
// a minute and otherwise reads the local clock; when the database cannot
// be asked, it keeps the last offset.
type Clock struct {
	store *Store
	// local is the process's clock (time.Now; replaced in tests).
	local func() time.Time
	// refresh is how long a measured offset is used.
	refresh time.Duration

	mu       sync.Mutex
	offset   time.Duration
	measured time.Time // local time of the last measurement; zero: never
}

// ClockRefresh is how long a Clock uses a measured offset.
const ClockRefresh = time.Minute

// clockQueryTimeout bounds one measurement.
const clockQueryTimeout = 2 * time.Second

// Clock returns a clock that follows the database's.
func (s *Store) Clock() *Clock {
	return &Clock{store: s, local: time.Now, refresh: ClockRefresh}
}

// Now returns the database's current time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.local()
	if c.measured.IsZero() || now.Sub(c.measured) >= c.refresh || now.Before(c.measured) {
		if off, err := c.measure(); err == nil {
			c.offset = off
			c.measured = c.local()
			now = c.measured
		}
	}
	return now.Add(c.offset)
}

// Offset returns the last measured offset of the database's clock from the
// local one (positive: the database is ahead).
func (c *Clock) Offset() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.offset
}

// measure reads the database's clock and returns its offset from the local
// one, taking the local time halfway through the round trip.
func (c *Clock) measure() (time.Duration, error) {
	ctx, cancel := context.WithTimeout(context.Background(), clockQueryTimeout)
	defer cancel()
	before := c.local()
	var db time.Time
	if err := c.store.pool.QueryRow(ctx, `SELECT clock_timestamp()`).Scan(&db); err != nil {
		return 0, err
	}
	after := c.local()
	return db.Sub(before.Add(after.Sub(before) / 2)), nil
}
