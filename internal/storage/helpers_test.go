package storage_test

import "time"

// testDay is a fixed window start for keys in tests.
var testDay = time.Date(2024, 5, 1, 0, 0, 0, 0, time.UTC)
