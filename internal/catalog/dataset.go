package catalog

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"timestore/internal/policy"
)

// Audit actions written by the dataset operations.
const (
	ActionDatasetCreate    = "dataset.create"
	ActionDatasetSetPolicy = "dataset.set_policy"
	ActionDatasetDelete    = "dataset.delete"
)

// CreateDataset validates d and records it with manifest version 0 (a
// manifest_versions row with operation OpCreate) and a "dataset.create" audit
// row. ID, ManifestVersion and CreatedAt of d are ignored; the stored dataset
// is returned. A live dataset of the same name makes it return ErrExists, an
// invalid definition ErrInvalid.
func (s *Store) CreateDataset(ctx context.Context, d Dataset, actor string) (Dataset, error) {
	if err := d.Validate(); err != nil {
		return Dataset{}, fmt.Errorf("create dataset %q: %w", d.Name, invalid(err))
	}
	var out Dataset
	err := s.inTx(ctx, readCommitted, func(tx pgx.Tx) error {
		var err error
		out, err = scanDataset(tx.QueryRow(ctx, `
			INSERT INTO timestore.datasets (name, columns, time_column, partition_window, target, policy)
			VALUES ($1, $2, $3, $4, $5, $6)
			RETURNING `+datasetColumns,
			d.Name, d.Columns, d.TimeColumn, d.Partition, d.Target, d.Policy))
		if code, constraint := pgCode(err); code == codeUniqueViolation && constraint == "datasets_name_live" {
			return ErrExists
		}
		if err != nil {
			return err
		}
		if err := insertManifestVersion(ctx, tx, out.ID, 0, OpCreate, nil, actor, nil); err != nil {
			return err
		}
		return insertAudit(ctx, tx, AuditEntry{
			Actor:   actor,
			Action:  ActionDatasetCreate,
			Dataset: out.Name,
			Details: map[string]any{
				"columns":     out.Columns,
				"time_column": out.TimeColumn,
				"partition":   out.Partition,
				"target":      out.Target,
				"policy":      out.Policy,
			},
		})
	})
	if err != nil {
		return Dataset{}, fmt.Errorf("create dataset %q: %w", d.Name, err)
	}
	return out, nil
}

// GetDataset returns the live dataset of that name, or ErrNotFound.
func (s *Store) GetDataset(ctx context.Context, name string) (Dataset, error) {
	d, err := readDataset(ctx, s.pool, liveByName, name, "")
	if err != nil {
		return Dataset{}, fmt.Errorf("get dataset %q: %w", name, err)
	}
	return d, nil
}

// GetDatasetByID returns the live dataset with that id, or ErrNotFound.
// Jobs carry dataset ids; this is how they find their dataset.
func (s *Store) GetDatasetByID(ctx context.Context, id int64) (Dataset, error) {
	d, err := readDataset(ctx, s.pool, liveByID, id, "")
	if err != nil {
		return Dataset{}, fmt.Errorf("get dataset %d: %w", id, err)
	}
	return d, nil
}

// ListDatasets returns every live dataset ordered by name.
func (s *Store) ListDatasets(ctx context.Context) ([]Dataset, error) {
	rows, err := s.pool.Query(ctx,
		`SELECT `+datasetColumns+` FROM timestore.datasets WHERE deleted_at IS NULL ORDER BY name`)
	ds, err := collect(rows, err, scanDataset)
	if err != nil {
		return nil, fmt.Errorf("list datasets: %w", err)
	}
	return ds, nil
}

// UpdatePolicy replaces a dataset's lifecycle policy and writes a
// "dataset.set_policy" audit row with the old and new policy. The manifest
// version does not change. An invalid policy returns ErrInvalid.
func (s *Store) UpdatePolicy(ctx context.Context, name string, p policy.Policy, actor string) (Dataset, error) {
	if err := p.Validate(); err != nil {
		return Dataset{}, fmt.Errorf("set policy of dataset %q: %w", name, invalid(err))
	}
	var out Dataset
	err := s.inTx(ctx, readCommitted, func(tx pgx.Tx) error {
		old, err := lockDataset(ctx, tx, name)
		if err != nil {
			return err
		}
		out, err = scanDataset(tx.QueryRow(ctx,
			`UPDATE timestore.datasets SET policy = $2 WHERE id = $1 RETURNING `+datasetColumns, old.ID, p))
		if err != nil {
			return err
		}
		return insertAudit(ctx, tx, AuditEntry{
			Actor:   actor,
			Action:  ActionDatasetSetPolicy,
			Dataset: name,
			Details: map[string]any{"old": old.Policy, "new": out.Policy},
		})
	})
	if err != nil {
		return Dataset{}, fmt.Errorf("set policy of dataset %q: %w", name, err)
	}
	return out, nil
}

// DeleteDataset deletes a dataset in one transaction: every live partition is
// marked removed in a new manifest version (operation OpDelete), the dataset
// is marked deleted, and a "dataset.delete" audit row lists the partitions and
// their bytes. The objects stay until the sweeper deletes them; the name can
// be reused at once. Unknown names return ErrNotFound. A dataset with an
// active retention hold is not deleted (ErrConflict): its partitions would
// be swept, held or not, and a deleted dataset's partitions cannot be
// restored; release the holds first.
func (s *Store) DeleteDataset(ctx context.Context, name, actor string) error {
	err := s.inTx(ctx, readCommitted, func(tx pgx.Tx) error {
		d, err := lockDataset(ctx, tx, name)
		if err != nil {
			return err
		}
		// Holds are added under the same row lock: none can appear now.
		var held []int64
		if err := tx.QueryRow(ctx, `
			SELECT coalesce(array_agg(id ORDER BY id), '{}') FROM timestore.retention_holds
			WHERE dataset_id = $1 AND released_at IS NULL`, d.ID).Scan(&held); err != nil {
			return err
		}
		if len(held) > 0 {
			return fmt.Errorf("%w: the dataset has active retention holds %v; release them first (timestore holds release ID)", ErrConflict, held)
		}
		version := d.ManifestVersion + 1
		var ids []int64
		var bytes int64
		err = tx.QueryRow(ctx, `
			WITH removed AS (
				UPDATE timestore.partitions SET removed_in_version = $2, removed_at = now()
				WHERE dataset_id = $1 AND removed_in_version IS NULL
				RETURNING id, size_bytes
			)
			SELECT coalesce(array_agg(id ORDER BY id), '{}'), coalesce(sum(size_bytes), 0)::bigint FROM removed`,
			d.ID, version).Scan(&ids, &bytes)
		if err != nil {
			return err
		}
		summary := map[string]any{"removed": len(ids), "removed_bytes": bytes}
		if err := insertManifestVersion(ctx, tx, d.ID, version, OpDelete, nil, actor, summary); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx,
			`UPDATE timestore.datasets SET manifest_version = $2, deleted_at = now() WHERE id = $1`,
			d.ID, version); err != nil {
			return err
		}
		return insertAudit(ctx, tx, AuditEntry{
			Actor:      actor,
			Action:     ActionDatasetDelete,
			Dataset:    name,
			Partitions: ids,
			Bytes:      bytes,
			Details:    map[string]any{"manifest_version": version},
		})
	})
	if err != nil {
		return fmt.Errorf("delete dataset %q: %w", name, err)
	}
	return nil
}

// DatasetTx reads the dataset with id inside tx: in a manifest change's
// InTx, which runs under the dataset's row lock, it is the dataset as the
// change commits against (its policy included).
func DatasetTx(ctx context.Context, tx Tx, id int64) (Dataset, error) {
	d, err := readDataset(ctx, tx, anyByID, id, "")
	if err != nil {
		return Dataset{}, fmt.Errorf("read dataset %d: %w", id, err)
	}
	return d, nil
}

// lockDataset reads the live dataset of that name and locks its row until the
// transaction ends; every change of the dataset's manifest takes this lock
// first, which serializes them. FOR NO KEY UPDATE rather than FOR UPDATE: it
// excludes the same writers but lets rows that merely reference the dataset
// (query leases) be inserted meanwhile.
func lockDataset(ctx context.Context, tx pgx.Tx, name string) (Dataset, error) {
	return readDataset(ctx, tx, liveByName, name, forNoKeyUpdate)
}

// Conditions of readDataset: each picks one dataset row by the query's
// only argument.
const (
	liveByName = `name = $1 AND deleted_at IS NULL`
	liveByID   = `id = $1 AND deleted_at IS NULL`
	anyByID    = `id = $1` // live or deleted
)

// Row locks readDataset may take ("" for none). forShare waits for a
// manifest change in flight and blocks the next one (LeasedSnapshot,
// DiscardUploads); forNoKeyUpdate is the lock of a manifest change itself
// (lockDataset, PurgeRemoved).
const (
	forShare       = ` FOR SHARE`
	forNoKeyUpdate = ` FOR NO KEY UPDATE`
)

// readDataset reads the dataset row that where (liveByName, liveByID or
// anyByID) picks with arg, taking lock ("", forShare or forNoKeyUpdate)
// on it. No such row: ErrNotFound.
func readDataset(ctx context.Context, db querier, where string, arg any, lock string) (Dataset, error) {
	d, err := scanDataset(db.QueryRow(ctx, `SELECT `+datasetColumns+` FROM timestore.datasets WHERE `+where+lock, arg))
	return d, notFound(err)
}

// liveDatasetID returns the id of the live dataset of that name, or
// ErrNotFound.
func liveDatasetID(ctx context.Context, db querier, name string) (int64, error) {
	var id int64
	err := db.QueryRow(ctx, `SELECT id FROM timestore.datasets WHERE `+liveByName, name).Scan(&id)
	return id, notFound(err)
}

// listOfLiveDataset reads, in one consistent view, the id of the live
// dataset of that name and the rows that query returns with that id as $1
// (and args from $2 on), scanned with scan. No such dataset: ErrNotFound.
func listOfLiveDataset[T any](ctx context.Context, s *Store, name string, scan func(pgx.Row) (T, error), query string, args ...any) ([]T, error) {
	var out []T
	err := s.inTx(ctx, consistentRead, func(tx pgx.Tx) error {
		id, err := liveDatasetID(ctx, tx, name)
		if err != nil {
			return err
		}
		rows, err := tx.Query(ctx, query, append([]any{id}, args...)...)
		out, err = collect(rows, err, scan)
		return err
	})
	return out, err
}
