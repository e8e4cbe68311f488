package catalog

import "time"

// SetClockLocal replaces a Clock's local clock (tests only).
func SetClockLocal(c *Clock, local func() time.Time) { c.local = local }
