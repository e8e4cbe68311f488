package catalog

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// ActionDiscardUpload is the audit action of deleting an object that a
// writer (ingest, compaction) uploaded for a manifest change that did not
// take it.
const ActionDiscardUpload = "object.discard_upload"

// Upload is an object a writer uploaded for a manifest change of a dataset.
type Upload struct {
	Target string
	Key    string
	Bytes  int64
}

// DiscardUploads decides which of the objects a writer uploaded for a
// failed manifest change of the dataset datasetID it may delete, and audits
// their deletion. It is safe whatever became of the change, including a
// commit whose outcome the writer could not learn (the connection lost or
// the deadline passed while COMMIT ran, after which the server may still
// commit it):
//
//  1. It takes a share lock on the dataset's row. Every manifest change
//     holds that row locked exclusively from its first statement to its end,
//     so this waits until a change still in flight has committed or rolled
//     back (a change whose writer stopped before sending COMMIT rolls back).
//  2. Then, in the same transaction (read committed: a new snapshot), it
//     looks up which objects a partition in any state references; those
//     are kept: their change committed.
//  3. It appends one audit record (ActionDiscardUpload) per other object
//     and commits.
//
// It returns the objects the caller should now delete. A process that dies
// before deleting them leaves audited orphans, which reconcile deletes.
// When it fails (the catalog unreachable, ctx done), it returns nothing:
// the objects are left for reconcile, never deleted while possibly
// referenced.
func (s *Store) DiscardUploads(ctx context.Context, datasetID int64, dataset, actor, reason string, uploads []Upload) ([]Upload, error) {
	if len(uploads) == 0 {
		return nil, nil
	}
	var discard []Upload
	err := s.inTx(ctx, readCommitted, func(tx pgx.Tx) error {
		discard = nil
		var one int
		err := tx.QueryRow(ctx, `SELECT 1 FROM timestore.datasets WHERE id = $1 FOR SHARE`, datasetID).Scan(&one)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("wait for the dataset's manifest changes: %w", err)
		}
		targets := make([]string, len(uploads))
		keys := make([]string, len(uploads))
		for i, u := range uploads {
			targets[i], keys[i] = u.Target, u.Key
		}
		rows, err := tx.Query(ctx, `
			SELECT u.target, u.key FROM unnest($1::text[], $2::text[]) AS u(target, key)
			WHERE EXISTS (SELECT 1 FROM timestore.partitions p WHERE p.target = u.target AND p.object_key = u.key)`,
			targets, keys)
		if err != nil {
			return fmt.Errorf("look up references: %w", err)
		}
		referenced := map[Upload]bool{}
		for rows.Next() {
			var u Upload
			if err := rows.Scan(&u.Target, &u.Key); err != nil {
				rows.Close()
				return fmt.Errorf("look up references: %w", err)
			}
			referenced[u] = true
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("look up references: %w", err)
		}
		for _, u := range uploads {
			if referenced[Upload{Target: u.Target, Key: u.Key}] {
				continue
			}
			if err := insertAudit(ctx, tx, AuditEntry{
				Actor:   actor,
				Action:  ActionDiscardUpload,
				Dataset: dataset,
				Bytes:   u.Bytes,
				Reason:  reason,
				Details: map[string]any{"target": u.Target, "key": u.Key},
			}); err != nil {
				return err
			}
			discard = append(discard, u)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("discard uploads of dataset %s: %w", dataset, err)
	}
	return discard, nil
}
