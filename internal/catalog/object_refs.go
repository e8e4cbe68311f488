package catalog

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// ObjectRef is a reference from the manifest to a stored object: one
// partition that is not purged.
type ObjectRef struct {
	PartitionID int64
	DatasetID   int64
	Target      string
	Key         string
	// State is StateLive or StateRemoved (removed, not yet purged).
	State     string
	SizeBytes int64
}

// ObjectRefs returns the objects referenced by the partitions that are not
// purged (live, or removed and awaiting the sweeper) of every dataset named
// name: the live one and any deleted ones. Object keys start with the dataset
// name, and a deleted dataset's partitions keep their objects until the
// sweeper purges them, also after the name has been reused; reconcile must
// count those as referenced. The refs are ordered by target and key.
func (s *Store) ObjectRefs(ctx context.Context, name string) ([]ObjectRef, error) {
	rows, err := s.pool.Query(ctx, `
		SELECT p.id, p.dataset_id, p.target, p.object_key, p.size_bytes, p.removed_in_version IS NOT NULL
		FROM timestore.partitions p
		JOIN timestore.datasets d ON d.id = p.dataset_id
		WHERE d.name = $1 AND p.purged_at IS NULL
		ORDER BY p.target, p.object_key`, name)
	refs, err := collect(rows, err, func(row pgx.Row) (ObjectRef, error) {
		var r ObjectRef
		var removed bool
		err := row.Scan(&r.PartitionID, &r.DatasetID, &r.Target, &r.Key, &r.SizeBytes, &removed)
		r.State = StateLive
		if removed {
			r.State = StateRemoved
		}
		return r, err
	})
	if err != nil {
		return nil, fmt.Errorf("object refs of dataset %q: %w", name, err)
	}
	return refs, nil
}

// ObjectReferenced reports whether a partition in any state references the
// object key on target. A writer whose commit failed in a way that leaves
// its outcome unknown (a lost connection) asks this before deleting the
// object it uploaded: deleting a referenced object would lose data, while
// leaving an unreferenced one only leaves an orphan for reconcile.
func (s *Store) ObjectReferenced(ctx context.Context, target, key string) (bool, error) {
	var found bool
	if err := s.pool.QueryRow(ctx, `
		SELECT EXISTS (SELECT 1 FROM timestore.partitions WHERE target = $1 AND object_key = $2)`,
		target, key).Scan(&found); err != nil {
		return false, fmt.Errorf("look up object %s on target %s: %w", key, target, err)
	}
	return found, nil
}
