package catalog

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// SetClockLocal replaces a Clock's local clock (tests only).
func SetClockLocal(c *Clock, local func() time.Time) { c.local = local }

// SetCollectorClock replaces the clock of a collector made by NewCollector.
func SetCollectorClock(c prometheus.Collector, now func() time.Time) { c.(*collector).now = now }
