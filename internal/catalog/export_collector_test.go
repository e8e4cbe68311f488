package catalog

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// SetCollectorClock replaces the clock of a collector made by NewCollector.
func SetCollectorClock(c prometheus.Collector, now func() time.Time) { c.(*collector).now = now }
