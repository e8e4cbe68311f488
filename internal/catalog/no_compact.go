package catalog

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/jackc/pgx/v5"
)

// ActionPartitionSetNoCompact is the audit action of SetNoCompact.
const ActionPartitionSetNoCompact = "partition.set_no_compact"

// SetNoCompact sets (on) or clears the no-compact mark of live partitions of
// a dataset: compaction leaves marked partitions alone. In one transaction it
// locks the dataset row, which orders the change with manifest changes (a
// compaction that commits after it sees the mark, see RequireCompactable),
// checks that every id is a live partition of the dataset, updates them and
// writes one audit row listing them. The manifest version does not change.
//
// Errors: ErrInvalid (no ids, or an id listed twice), ErrNotFound (no such
// live dataset, or an id that is not a partition of it), ErrConflict (a
// partition that is removed or purged). On any error nothing was changed.
func (s *Store) SetNoCompact(ctx context.Context, dataset string, ids []int64, on bool, actor string) error {
	if len(ids) == 0 {
		return fmt.Errorf("set no_compact in dataset %q: %w", dataset, invalid(errors.New("no partition ids")))
	}
	sorted := slices.Clone(ids)
	slices.Sort(sorted)
	for i := 1; i < len(sorted); i++ {
		if sorted[i] == sorted[i-1] {
			return fmt.Errorf("set no_compact in dataset %q: %w", dataset, invalid(fmt.Errorf("partition %d listed twice", sorted[i])))
		}
	}
	err := s.inTx(ctx, readCommitted, func(tx pgx.Tx) error {
		d, err := lockDataset(ctx, tx, dataset)
		if err != nil {
			return err
		}
		byID, err := lockPartitions(ctx, tx, d.ID, sorted)
		if err != nil {
			return err
		}
		var bytes int64
		changed := 0
		for _, id := range sorted {
			p, ok := byID[id]
			switch {
			case !ok:
				return fmt.Errorf("partition %d: %w", id, ErrNotFound)
			case p.State() != StateLive:
				return fmt.Errorf("%w: partition %d is %s, not live", ErrConflict, id, p.State())
			}
			bytes += p.SizeBytes
			if p.NoCompact != on {
				changed++
			}
		}
		if _, err := tx.Exec(ctx,
			`UPDATE timestore.partitions SET no_compact = $2 WHERE id = ANY($1)`, sorted, on); err != nil {
			return fmt.Errorf("update partitions: %w", err)
		}
		return insertAudit(ctx, tx, AuditEntry{
			Actor:      actor,
			Action:     ActionPartitionSetNoCompact,
			Dataset:    d.Name,
			Partitions: sorted,
			Bytes:      bytes,
			Details:    map[string]any{"no_compact": on, "changed": changed},
		})
	})
	if err != nil {
		return fmt.Errorf("set no_compact in dataset %q: %w", dataset, err)
	}
	return nil
}

// RequireCompactable checks, inside a manifest change's transaction (from
// Change.InTx), that none of the partitions ids carries the no-compact mark.
// A marked one makes it return an error wrapping ErrConflict, which rolls the
// change back. Commit has locked the dataset row and the partitions by then,
// so a concurrent SetNoCompact is either seen here or waits for the change.
func RequireCompactable(ctx context.Context, tx Tx, ids []int64) error {
	if len(ids) == 0 {
		return nil
	}
	var marked []int64
	if err := tx.QueryRow(ctx, `
		SELECT coalesce(array_agg(id ORDER BY id), '{}') FROM timestore.partitions
		WHERE id = ANY($1) AND no_compact`, ids).Scan(&marked); err != nil {
		return fmt.Errorf("check no_compact marks: %w", err)
	}
	if len(marked) > 0 {
		return fmt.Errorf("%w: partitions %v are marked no_compact", ErrConflict, marked)
	}
	return nil
}
