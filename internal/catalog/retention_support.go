package catalog

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// Audit actions of retention, holds and the sweeper.
const (
	// ActionRetentionRemove is written once per partition that retention
	// removes, beside the "partition.retention" row of the change.
	ActionRetentionRemove = "retention.remove"
	// ActionRetentionPurge is written once per partition the sweeper purges.
	ActionRetentionPurge = "retention.purge"
	// ActionHoldAdd and ActionHoldRelease are written by AddHold and ReleaseHold.
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
			SELECT `+holdColumns+` FROM h JOIN timestore.datasets d ON d.id = h.dataset_id`,
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
			var id int64
			if err := tx.QueryRow(ctx,
				`SELECT id FROM timestore.datasets WHERE name = $1 AND deleted_at IS NULL`, dataset).Scan(&id); err != nil {
				return notFound(err)
			}
		}
		rows, err := tx.Query(ctx, `
			SELECT `+holdColumns+` FROM timestore.retention_holds h
			JOIN timestore.datasets d ON d.id = h.dataset_id
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
			SELECT `+holdColumns+` FROM timestore.retention_holds h
			JOIN timestore.datasets d ON d.id = h.dataset_id
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
			SELECT `+holdColumns+` FROM h JOIN timestore.datasets d ON d.id = h.dataset_id`, id, actor))
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
			SELECT `+holdColumns+` FROM timestore.retention_holds h
			JOIN timestore.datasets d ON d.id = h.dataset_id
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

// AppendAuditsTx appends entries to the audit log inside tx in one round
// trip (COPY), so that they are recorded only if tx commits. Every entry
// gets the database clock of the transaction as its time; Time is ignored.
func (s *Store) AppendAuditsTx(ctx context.Context, tx Tx, entries []AuditEntry) error {
	if err := insertAudits(ctx, tx, entries); err != nil {
		return fmt.Errorf("append %d audit entries: %w", len(entries), err)
	}
	return nil
}

func insertAudits(ctx context.Context, tx pgx.Tx, entries []AuditEntry) error {
	if len(entries) == 0 {
		return nil
	}
	rows := make([][]any, len(entries))
	for i, e := range entries {
		if e.Action == "" {
			return invalid(fmt.Errorf("audit entry %d: action is required", i))
		}
		parts := e.Partitions
		if parts == nil {
			parts = []int64{}
		}
		rows[i] = []any{e.Actor, e.Action, e.Dataset, parts, e.Bytes, e.Reason, e.Details}
	}
	_, err := tx.CopyFrom(ctx, pgx.Identifier{"timestore", "audit_log"},
		[]string{"actor", "action", "dataset", "partitions", "bytes", "reason", "details"},
		pgx.CopyFromRows(rows))
	return err
}

// RemovedPartition is a partition that is removed but not purged, with the
// operation of the manifest change that removed it.
type RemovedPartition struct {
	Partition
	// RemovedBy is the operation (Op* constant) of the manifest version
	// that removed the partition, e.g. OpRetention or OpCompaction.
	RemovedBy string
}

// RemovedPartitions reads, in one consistent view, a live dataset's current
// manifest version and those of ids that are removed and not purged, with
// the operation that removed each. Ids that are live, purged or not in the
// dataset are left out. Errors: ErrNotFound (no such live dataset).
func (s *Store) RemovedPartitions(ctx context.Context, dataset string, ids []int64) (int64, []RemovedPartition, error) {
	var version int64
	var out []RemovedPartition
	err := s.inTx(ctx, consistentRead, func(tx pgx.Tx) error {
		var datasetID int64
		if err := tx.QueryRow(ctx, `
			SELECT id, manifest_version FROM timestore.datasets WHERE name = $1 AND deleted_at IS NULL`,
			dataset).Scan(&datasetID, &version); err != nil {
			return notFound(err)
		}
		rows, err := tx.Query(ctx, `
			SELECT `+qualified("p", partitionColumns)+`, coalesce(v.operation, '')
			FROM timestore.partitions p
			LEFT JOIN timestore.manifest_versions v ON v.dataset_id = p.dataset_id AND v.version = p.removed_in_version
			WHERE p.id = ANY($1) AND p.dataset_id = $2 AND p.removed_in_version IS NOT NULL AND p.purged_at IS NULL
			ORDER BY p.id`, ids, datasetID)
		out, err = collect(rows, err, func(row pgx.Row) (RemovedPartition, error) {
			var r RemovedPartition
			var p Partition
			err := row.Scan(&p.ID, &p.DatasetID, &p.WindowStart, &p.TimeMin, &p.TimeMax, &p.RowCount, &p.SizeBytes,
				&p.Target, &p.Key, &p.Checksum, &p.Stats, &p.Level, &p.NoCompact, &p.AddedInVersion, &p.RemovedInVersion,
				&p.RemovedAt, &p.PurgedAt, &p.CreatedAt, &r.RemovedBy)
			p.WindowStart, p.TimeMin, p.TimeMax, p.CreatedAt = p.WindowStart.UTC(), p.TimeMin.UTC(), p.TimeMax.UTC(), p.CreatedAt.UTC()
			p.RemovedAt = utcPtr(p.RemovedAt)
			r.Partition = p
			return r, err
		})
		return err
	})
	if err != nil {
		return 0, nil, fmt.Errorf("removed partitions of dataset %q: %w", dataset, err)
	}
	return version, out, nil
}

// qualified prefixes every column of a column list with alias.
func qualified(alias, columns string) string {
	cols := strings.Split(columns, ",")
	for i, c := range cols {
		cols[i] = alias + "." + strings.TrimSpace(c)
	}
	return strings.Join(cols, ", ")
}

// SweepDataset is a dataset (live or deleted) that has work for the sweeper.
type SweepDataset struct {
	Dataset
	// Deleted is true for a deleted dataset; its policy (grace) still applies.
	Deleted bool
}

// DatasetsToSweep returns the datasets the sweeper has work for: removed
// partitions not yet purged, or purged partitions whose object is not yet
// deleted. With a name, it returns every dataset of that name (the live one
// and deleted ones: a name can be reused after a delete); with "", only
// deleted datasets of any name. Ordered by id.
func (s *Store) DatasetsToSweep(ctx context.Context, name string) ([]SweepDataset, error) {
	rows, err := s.pool.Query(ctx, `
		SELECT `+datasetColumns+`, deleted_at IS NOT NULL FROM timestore.datasets d
		WHERE ($1 = '' AND d.deleted_at IS NOT NULL OR $1 <> '' AND d.name = $1)
		  AND (EXISTS (SELECT 1 FROM timestore.partitions p
		               WHERE p.dataset_id = d.id AND p.removed_in_version IS NOT NULL AND p.purged_at IS NULL)
		    OR EXISTS (SELECT 1 FROM timestore.partitions p
		               WHERE p.dataset_id = d.id AND p.purged_at IS NOT NULL AND p.object_deleted_at IS NULL))
		ORDER BY d.id`, name)
	ds, err := collect(rows, err, func(row pgx.Row) (SweepDataset, error) {
		var d SweepDataset
		err := row.Scan(&d.ID, &d.Name, &d.Columns, &d.TimeColumn, &d.Partition, &d.Target, &d.Policy,
			&d.ManifestVersion, &d.CreatedAt, &d.Deleted)
		d.CreatedAt = d.CreatedAt.UTC()
		return d, err
	})
	if err != nil {
		return nil, fmt.Errorf("datasets to sweep: %w", err)
	}
	return ds, nil
}

// PurgeBatch is what one PurgeRemoved transaction did.
type PurgeBatch struct {
	// Purged are the partitions marked purged; their objects are still to
	// delete (see PendingObjectDeletes, MarkObjectsDeleted).
	Purged []Partition
	// PinnedVersions are the manifest versions pinned by unexpired query
	// leases when the batch was taken.
	PinnedVersions []int64
	// KeptByGrace counts removed partitions left because they were removed
	// after the cutoff; NextGraceExpiry is the earliest removed_at among
	// them (the cutoff must pass it before they qualify).
	KeptByGrace     int
	NextGraceExpiry *time.Time
	// KeptByLease counts removed partitions past the cutoff left because
	// they are live in a pinned version.
	KeptByLease int
	// More reports that eligible partitions remain beyond the batch limit.
	More bool
}

// PurgeRemoved is the first phase of a sweep of one dataset (live or
// deleted). In one transaction it locks the dataset row FOR NO KEY UPDATE,
// reads the versions pinned by unexpired query leases (database clock),
// and marks purged (purged_at = now()) at most limit of the removed, not yet
// purged partitions that were removed at or before removedBefore and are
// not live in any pinned version (live at v: added_in_version <= v <
// removed_in_version), oldest removal first; it writes one
// ActionRetentionPurge audit row per partition, as actor.
//
// The lock is the one LeasedSnapshot reads FOR SHARE before it records its
// lease: a lease is either committed before this transaction reads the
// leases, or taken after it commits, from a manifest in which the purged
// partitions are no longer live. Delete the objects only after this
// returns, then call MarkObjectsDeleted. Errors: ErrNotFound (no dataset
// with that id), ErrInvalid (limit < 1).
func (s *Store) PurgeRemoved(ctx context.Context, datasetID int64, removedBefore time.Time, limit int, actor string) (PurgeBatch, error) {
	if limit < 1 {
		return PurgeBatch{}, fmt.Errorf("purge removed partitions of dataset %d: %w", datasetID, invalid(fmt.Errorf("limit must be positive, not %d", limit)))
	}
	var b PurgeBatch
	err := s.inTx(ctx, readCommitted, func(tx pgx.Tx) error {
		var name string
		if err := tx.QueryRow(ctx,
			`SELECT name FROM timestore.datasets WHERE id = $1 FOR NO KEY UPDATE`, datasetID).Scan(&name); err != nil {
			return notFound(err)
		}
		if err := tx.QueryRow(ctx, `
			SELECT coalesce(array_agg(DISTINCT manifest_version ORDER BY manifest_version), '{}')
			FROM timestore.query_leases
			WHERE dataset_id = $1 AND expires_at > now()`, datasetID).Scan(&b.PinnedVersions); err != nil {
			return fmt.Errorf("read query leases: %w", err)
		}
		rows, err := tx.Query(ctx, `
			WITH eligible AS (`+eligibleSQL+` FOR UPDATE)
			UPDATE timestore.partitions SET purged_at = now()
			FROM eligible WHERE id = eligible.pid
			RETURNING `+partitionColumns,
			datasetID, removedBefore, b.PinnedVersions, limit)
		if b.Purged, err = collect(rows, err, scanPartition); err != nil {
			return fmt.Errorf("mark partitions purged: %w", err)
		}
		slices.SortFunc(b.Purged, func(x, y Partition) int {
			return cmp.Or(x.RemovedAt.Compare(*y.RemovedAt), cmp.Compare(x.ID, y.ID))
		})
		var eligibleLeft int
		if err := tx.QueryRow(ctx, keptSQL, datasetID, removedBefore, b.PinnedVersions).Scan(
			&b.KeptByGrace, &b.NextGraceExpiry, &b.KeptByLease, &eligibleLeft); err != nil {
			return fmt.Errorf("count kept partitions: %w", err)
		}
		b.NextGraceExpiry = utcPtr(b.NextGraceExpiry)
		b.More = eligibleLeft > 0
		entries := make([]AuditEntry, len(b.Purged))
		for i, p := range b.Purged {
			entries[i] = AuditEntry{
				Actor:      actor,
				Action:     ActionRetentionPurge,
				Dataset:    name,
				Partitions: []int64{p.ID},
				Bytes:      p.SizeBytes,
				Details: map[string]any{
					"target": p.Target, "key": p.Key, "rows": p.RowCount,
					"added_in_version": p.AddedInVersion, "removed_in_version": p.RemovedInVersion,
					"removed_at": p.RemovedAt, "time_min": p.TimeMin, "time_max": p.TimeMax,
				},
			}
		}
		return insertAudits(ctx, tx, entries)
	})
	if err != nil {
		return PurgeBatch{}, fmt.Errorf("purge removed partitions of dataset %d: %w", datasetID, err)
	}
	return b, nil
}

// eligibleSQL selects (as pid) at most $4 removed, not purged partitions of
// dataset $1 removed at or before $2 and live in none of the versions $3,
// oldest removal first.
const eligibleSQL = `
	SELECT id AS pid FROM timestore.partitions
	WHERE dataset_id = $1 AND removed_in_version IS NOT NULL AND purged_at IS NULL
	  AND removed_at <= $2
	  AND NOT EXISTS (SELECT 1 FROM unnest($3::bigint[]) AS l(version)
	                  WHERE l.version >= added_in_version AND l.version < removed_in_version)
	ORDER BY removed_at, id
	LIMIT $4`

// keptSQL counts the removed, not purged partitions of dataset $1 that were
// removed after $2 (and the earliest such removal), those removed at or
// before $2 that are live in one of the versions $3, and those that are not.
const keptSQL = `
	WITH r AS (
		SELECT removed_at, EXISTS (SELECT 1 FROM unnest($3::bigint[]) AS l(version)
		                           WHERE l.version >= added_in_version AND l.version < removed_in_version) AS pinned
		FROM timestore.partitions
		WHERE dataset_id = $1 AND removed_in_version IS NOT NULL AND purged_at IS NULL
	)
	SELECT count(*) FILTER (WHERE removed_at > $2),
	       min(removed_at) FILTER (WHERE removed_at > $2),
	       count(*) FILTER (WHERE removed_at <= $2 AND pinned),
	       count(*) FILTER (WHERE removed_at <= $2 AND NOT pinned)
	FROM r`

// PurgePreview is what PurgeRemoved would do now, without a limit.
type PurgePreview struct {
	// Eligible are the partitions PurgeRemoved would purge, oldest removal first.
	Eligible        []Partition
	PinnedVersions  []int64
	KeptByGrace     int
	NextGraceExpiry *time.Time
	KeptByLease     int
	// PendingDeletes counts purged partitions whose object is not yet deleted.
	PendingDeletes int
}

// PreviewPurge reads, in one consistent view and without locking or
// changing anything, what PurgeRemoved would purge now (the dry run of a
// sweep). A lease taken or released meanwhile can change the outcome.
func (s *Store) PreviewPurge(ctx context.Context, datasetID int64, removedBefore time.Time) (PurgePreview, error) {
	var pv PurgePreview
	err := s.inTx(ctx, consistentRead, func(tx pgx.Tx) error {
		var one int
		if err := tx.QueryRow(ctx, `SELECT 1 FROM timestore.datasets WHERE id = $1`, datasetID).Scan(&one); err != nil {
			return notFound(err)
		}
		if err := tx.QueryRow(ctx, `
			SELECT coalesce(array_agg(DISTINCT manifest_version ORDER BY manifest_version), '{}')
			FROM timestore.query_leases
			WHERE dataset_id = $1 AND expires_at > now()`, datasetID).Scan(&pv.PinnedVersions); err != nil {
			return fmt.Errorf("read query leases: %w", err)
		}
		rows, err := tx.Query(ctx, `
			WITH eligible AS (`+eligibleSQL+`)
			SELECT `+partitionColumns+` FROM timestore.partitions JOIN eligible ON id = eligible.pid
			ORDER BY removed_at, id`, datasetID, removedBefore, pv.PinnedVersions, math.MaxInt32)
		if pv.Eligible, err = collect(rows, err, scanPartition); err != nil {
			return err
		}
		var left int
		if err := tx.QueryRow(ctx, keptSQL, datasetID, removedBefore, pv.PinnedVersions).Scan(
			&pv.KeptByGrace, &pv.NextGraceExpiry, &pv.KeptByLease, &left); err != nil {
			return err
		}
		pv.NextGraceExpiry = utcPtr(pv.NextGraceExpiry)
		return tx.QueryRow(ctx, `
			SELECT count(*) FROM timestore.partitions
			WHERE dataset_id = $1 AND purged_at IS NOT NULL AND object_deleted_at IS NULL`, datasetID).Scan(&pv.PendingDeletes)
	})
	if err != nil {
		return PurgePreview{}, fmt.Errorf("preview purge of dataset %d: %w", datasetID, err)
	}
	return pv, nil
}

// PendingObjectDeletes returns up to limit purged partitions of a dataset
// whose object the sweeper has not yet recorded as deleted, with ids above
// afterID, ordered by id (page with the last id).
func (s *Store) PendingObjectDeletes(ctx context.Context, datasetID, afterID int64, limit int) ([]Partition, error) {
	rows, err := s.pool.Query(ctx, `
		SELECT `+partitionColumns+` FROM timestore.partitions
		WHERE dataset_id = $1 AND purged_at IS NOT NULL AND object_deleted_at IS NULL AND id > $2
		ORDER BY id
		LIMIT $3`, datasetID, afterID, max(limit, 1))
	parts, err := collect(rows, err, scanPartition)
	if err != nil {
		return nil, fmt.Errorf("pending object deletes of dataset %d: %w", datasetID, err)
	}
	return parts, nil
}

// MarkObjectsDeleted records that the objects of purged partitions are gone
// from their targets. Ids that are not purged are left alone.
func (s *Store) MarkObjectsDeleted(ctx context.Context, ids []int64) error {
	if len(ids) == 0 {
		return nil
	}
	if _, err := s.pool.Exec(ctx, `
		UPDATE timestore.partitions SET object_deleted_at = now()
		WHERE id = ANY($1) AND purged_at IS NOT NULL AND object_deleted_at IS NULL`, ids); err != nil {
		return fmt.Errorf("mark %d objects deleted: %w", len(ids), err)
	}
	return nil
}

// SweepPending reports whether a dataset has removed partitions not yet
// purged, or purged ones whose object is not yet deleted.
func (s *Store) SweepPending(ctx context.Context, datasetID int64) (bool, error) {
	var pending bool
	if err := s.pool.QueryRow(ctx, `
		SELECT EXISTS (SELECT 1 FROM timestore.partitions
		               WHERE dataset_id = $1 AND removed_in_version IS NOT NULL AND purged_at IS NULL)
		    OR EXISTS (SELECT 1 FROM timestore.partitions
		               WHERE dataset_id = $1 AND purged_at IS NOT NULL AND object_deleted_at IS NULL)`,
		datasetID).Scan(&pending); err != nil {
		return false, fmt.Errorf("sweep pending in dataset %d: %w", datasetID, err)
	}
	return pending, nil
}
