package reconcile

import (
	"strings"
	"time"

	"timestore/internal/catalog"
)

// Object is an object found on a target.
type Object struct {
	Target string `json:"target"`
	Key    string `json:"key"`
	Size   int64  `json:"size_bytes"`
	// ModTime is the object's modification time on this process's clock:
	// the target's, corrected by the measured offset between the two.
	ModTime time.Time `json:"mod_time"`
}

// Comparison is what Compare found.
type Comparison struct {
	// Scanned counts the objects listed.
	Scanned int
	// Orphans are partition objects of the dataset that no partition
	// references and that are older than the safety age: safe to delete.
	Orphans []Object
	// Young are unreferenced partition objects younger than the safety age
	// (or of unknown age): an ingest or compaction may be between its upload
	// and its commit. They are kept.
	Young []Object
	// Foreign are unreferenced objects under the dataset's prefix whose key
	// is not shaped like a partition key (DATASET/WINDOW/ID.parquet).
	// Reconcile did not write them and never deletes them.
	Foreign []Object
	// Missing are references whose object is not on its target.
	Missing []catalog.ObjectRef
}

// Compare matches the objects listed under a dataset's prefix against the
// catalog's references, read once before the listing started (before) and
// once after it ended (after). It is pure.
//
//   - An object referenced in either read is in use. Reading after the
//     listing catches objects committed while it ran.
//   - An unreferenced object shaped like a partition key of the dataset is an
//     orphan when its ModTime is at least safetyAge before now; otherwise it
//     is young (a zero ModTime counts as young: never delete what cannot be
//     dated).
//   - A reference present in both reads whose object was not listed is
//     missing. A reference only in after may have been uploaded after the
//     listing passed its key; one only in before was purged meanwhile.
//
// listed must hold every object under the dataset's prefix on every target
// of a reference, plus the objects of references outside that prefix.
func Compare(dataset string, before, after []catalog.ObjectRef, listed []Object, now time.Time, safetyAge time.Duration) Comparison {
	type loc struct{ target, key string }
	referenced := make(map[loc]bool, len(before)+len(after))
	inAfter := make(map[loc]bool, len(after))
	for _, r := range after {
		referenced[loc{r.Target, r.Key}] = true
		inAfter[loc{r.Target, r.Key}] = true
	}
	for _, r := range before {
		referenced[loc{r.Target, r.Key}] = true
	}
	present := make(map[loc]bool, len(listed))
	c := Comparison{Scanned: len(listed)}
	for _, o := range listed {
		l := loc{o.Target, o.Key}
		present[l] = true
		switch {
		case referenced[l]:
		case !IsPartitionKey(dataset, o.Key):
			c.Foreign = append(c.Foreign, o)
		case o.ModTime.IsZero() || now.Sub(o.ModTime) < safetyAge:
			c.Young = append(c.Young, o)
		default:
			c.Orphans = append(c.Orphans, o)
		}
	}
	for _, r := range before {
		l := loc{r.Target, r.Key}
		if inAfter[l] && !present[l] {
			c.Missing = append(c.Missing, r)
		}
	}
	return c
}

// Prefix is the key prefix of a dataset's objects.
func Prefix(dataset string) string { return dataset + "/" }

// IsPartitionKey reports whether key has the shape of a partition object key
// of dataset, DATASET/WINDOW/ID.parquet (see storage.PartitionKey).
func IsPartitionKey(dataset, key string) bool {
	rest, ok := strings.CutPrefix(key, Prefix(dataset))
	if !ok {
		return false
	}
	window, name, ok := strings.Cut(rest, "/")
	return ok && window != "" && !strings.Contains(name, "/") &&
		strings.HasSuffix(name, ".parquet") && len(name) > len(".parquet")
}
