package catalog_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"timestore/internal/catalog"
)

// A process whose clock is hours off still tells the database's time.
func TestClockFollowsTheDatabase(t *testing.T) {
	b := setup(t)
	for _, skew := range []time.Duration{-3 * time.Hour, 90 * time.Minute} {
		c := b.store.Clock()
		catalog.SetClockLocal(c, func() time.Time { return time.Now().Add(skew) })
		before := time.Now()
		got := c.Now()
		after := time.Now()
		// The test database runs on this machine: its clock is the real one.
		require.WithinRange(t, got, before.Add(-time.Second), after.Add(time.Second), "skew %s", skew)
		require.InDelta(t, (-skew).Seconds(), c.Offset().Seconds(), 1, "skew %s", skew)
		// Later readings use the measured offset.
		require.WithinDuration(t, time.Now(), c.Now(), time.Second)
	}
}
