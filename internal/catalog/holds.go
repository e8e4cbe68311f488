package catalog

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// Audit actions of AddHold and ReleaseHold.
const (
	ActionHoldAdd     = "hold.add"
	ActionHoldRelease = "hold.release"
)

// Hold keeps retention from removing any partition of a dataset that
// overlaps [From, To) while it is active (not released).
type Hold struct {
	ID         int64      `json:"id"`
	DatasetID  int64      `json:"-"`
	Dataset    string     `json:"dataset"`
	From       time.Time  `json:"from"`
	To         time.Time  `json:"to"`
	Reason     string     `json:"reason"`
	CreatedBy  string     `json:"created_by"`
	CreatedAt  time.Time  `json:"created_at"`
	ReleasedAt *time.Time `json:"released_at,omitempty"`
	ReleasedBy string     `json:"released_by,omitempty"`
}

// Active reports whether the hold has not been released.
func (h Hold) Active() bool { return h.ReleasedAt == nil }

// Overlaps reports whether p may hold rows in [h.From, h.To): time_min
// before To and time_max at or after From (time_max is inclusive).
func (h Hold) Overlaps(p Partition) bool {
	return p.TimeMin.Before(h.To) && !p.TimeMax.Before(h.From)
}

const holdColumns = `h.id, h.dataset_id, d.name, h.time_from, h.time_to, h.reason, h.created_by, h.created_at,
	h.released_at, h.released_by`

// selectHolds selects holdColumns from the holds (h) joined to their
// datasets (d); selectChangedHold from the rows a data-modifying CTE named h
// returned (the statement's own change is not visible in the table).
const (
	selectHolds       = `SELECT ` + holdColumns + ` FROM timestore.retention_holds h JOIN timestore.datasets d ON d.id = h.dataset_id`
	selectChangedHold = `SELECT ` + holdColumns + ` FROM h JOIN timestore.datasets d ON d.id = h.dataset_id`
)

func scanHold(row pgx.Row) (Hold, error) {
	var h Hold
	var releasedBy *string
	err := row.Scan(&h.ID, &h.DatasetID, &h.Dataset, &h.From, &h.To, &h.Reason, &h.CreatedBy, &h.CreatedAt,
		&h.ReleasedAt, &releasedBy)
	h.From, h.To, h.CreatedAt = h.From.UTC(), h.To.UTC(), h.CreatedAt.UTC()
	h.ReleasedAt = utcPtr(h.ReleasedAt)
	if releasedBy != nil {
		h.ReleasedBy = *releasedBy
	}
	return h, err
}

// AddHold records an active hold on [from, to) of a live dataset and a
// "hold.add" audit row, in one transaction that locks the dataset row: a
// manifest change (a retention run) either commits before the hold, or sees
// it (RequireNotHeld). Errors: ErrNotFound, ErrInvalid (from not before to,
// an empty reason).
func (s *Store) AddHold(ctx context.Context, dataset string, from, to time.Time, reason, actor string) (Hold, error) {
	switch {
	case from.IsZero() || to.IsZero():
		return Hold{}, fmt.Errorf("add hold on dataset %q: %w", dataset, invalid(errors.New("from and to are required")))
	case !from.Before(to):
		return Hold{}, fmt.Errorf("add hold on dataset %q: %w", dataset, invalid(fmt.Errorf("from %s must be before to %s",
			from.UTC().Format(time.RFC3339Nano), to.UTC().Format(time.RFC3339Nano))))
	case strings.TrimSpace(reason) == "":
		return Hold{}, fmt.Errorf("add hold on dataset %q: %w", dataset, invalid(errors.New("reason is required")))
	}
	var h Hold
	err := s.inTx(ctx, readCommitted, func(tx pgx.Tx) error {
		d, err := lockDataset(ctx, tx, dataset)
		if err != nil {
			return err
		}
		h, err = scanHold(tx.QueryRow(ctx, `
			WITH h AS (
				INSERT INTO timestore.retention_holds (dataset_id, time_from, time_to, reason, created_by)
				VALUES ($1, $2, $3, $4, $5)
				RETURNING *
			)
			`+selectChangedHold,
			d.ID, from, to, reason, actor))
		if err != nil {
			return err
		}
		return insertAudit(ctx, tx, AuditEntry{
			Actor:   actor,
			Action:  ActionHoldAdd,
			Dataset: d.Name,
			Reason:  reason,
			Details: map[string]any{"hold_id": h.ID, "from": h.From, "to": h.To},
		})
	})
	if err != nil {
		return Hold{}, fmt.Errorf("add hold on dataset %q: %w", dataset, err)
	}
	return h, nil
}

// Holds lists the holds of a live dataset, or of every live dataset when
// dataset is "", ordered by id; released ones only when includeReleased.
// An unknown dataset returns ErrNotFound.
func (s *Store) Holds(ctx context.Context, dataset string, includeReleased bool) ([]Hold, error) {
	var holds []Hold
	err := s.inTx(ctx, consistentRead, func(tx pgx.Tx) error {
		if dataset != "" {
			if _, err := liveDatasetID(ctx, tx, dataset); err != nil {
				return err
			}
		}
		rows, err := tx.Query(ctx, `
			`+selectHolds+`
			WHERE d.deleted_at IS NULL AND ($1 = '' OR d.name = $1) AND ($2 OR h.released_at IS NULL)
			ORDER BY h.id`, dataset, includeReleased)
		holds, err = collect(rows, err, scanHold)
		return err
	})
	if err != nil {
		if dataset == "" {
			return nil, fmt.Errorf("list holds: %w", err)
		}
		return nil, fmt.Errorf("list holds of dataset %q: %w", dataset, err)
	}
	return holds, nil
}

// ReleaseHold releases an active hold and writes a "hold.release" audit row.
// Errors: ErrNotFound (no such hold), ErrConflict (already released; the
// message says when and by whom).
func (s *Store) ReleaseHold(ctx context.Context, id int64, actor string) (Hold, error) {
	var h Hold
	err := s.inTx(ctx, readCommitted, func(tx pgx.Tx) error {
		cur, err := scanHold(tx.QueryRow(ctx, `
			`+selectHolds+`
			WHERE h.id = $1
			FOR UPDATE OF h`, id))
		if err != nil {
			return notFound(err)
		}
		if !cur.Active() {
			return fmt.Errorf("%w: hold %d was released at %s by %s", ErrConflict, id,
				cur.ReleasedAt.Format(time.RFC3339), cur.ReleasedBy)
		}
		h, err = scanHold(tx.QueryRow(ctx, `
			WITH h AS (
				UPDATE timestore.retention_holds SET released_at = now(), released_by = $2
				WHERE id = $1
				RETURNING *
			)
			`+selectChangedHold, id, actor))
		if err != nil {
			return err
		}
		return insertAudit(ctx, tx, AuditEntry{
			Actor:   actor,
			Action:  ActionHoldRelease,
			Dataset: h.Dataset,
			Reason:  h.Reason,
			Details: map[string]any{"hold_id": h.ID, "from": h.From, "to": h.To, "created_by": h.CreatedBy},
		})
	})
	if err != nil {
		return Hold{}, fmt.Errorf("release hold %d: %w", id, err)
	}
	return h, nil
}

// RetentionSnapshot returns a live dataset's current snapshot (as Snapshot,
// unpruned) together with its active holds, read in one consistent view.
func (s *Store) RetentionSnapshot(ctx context.Context, name string) (Snapshot, []Hold, error) {
	var snap Snapshot
	var holds []Hold
	err := s.inTx(ctx, consistentRead, func(tx pgx.Tx) error {
		var err error
		if snap, err = readSnapshot(ctx, tx, name, "", nil, nil); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, `
			`+selectHolds+`
			WHERE h.dataset_id = $1 AND h.released_at IS NULL
			ORDER BY h.id`, snap.Dataset.ID)
		holds, err = collect(rows, err, scanHold)
		return err
	})
	if err != nil {
		return Snapshot{}, nil, fmt.Errorf("retention snapshot of dataset %q: %w", name, err)
	}
	return snap, holds, nil
}

// RequireNotHeld checks, inside a manifest change's transaction (from
// Change.InTx), that none of the partitions ids overlaps an active hold of
// the dataset. One that does makes it return an error wrapping ErrConflict,
// which rolls the change back. AddHold locks the dataset row as Commit does,
// so a hold added concurrently is either seen here or added after the change.
func RequireNotHeld(ctx context.Context, tx Tx, datasetID int64, ids []int64) error {
	if len(ids) == 0 {
		return nil
	}
	var held []int64
	var holdIDs []int64
	if err := tx.QueryRow(ctx, `
		SELECT coalesce(array_agg(DISTINCT p.id ORDER BY p.id), '{}'), coalesce(array_agg(DISTINCT h.id ORDER BY h.id), '{}')
		FROM timestore.partitions p
		JOIN timestore.retention_holds h
		  ON h.dataset_id = p.dataset_id AND h.released_at IS NULL
		 AND p.time_min < h.time_to AND p.time_max >= h.time_from
		WHERE p.id = ANY($1) AND p.dataset_id = $2`, ids, datasetID).Scan(&held, &holdIDs); err != nil {
		return fmt.Errorf("check retention holds: %w", err)
	}
	if len(held) > 0 {
		return fmt.Errorf("%w: partitions %v overlap active holds %v", ErrConflict, held, holdIDs)
	}
	return nil
}
