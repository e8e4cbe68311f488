package catalog

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
)

// Export states.
const (
	// ExportWriting: an attempt is writing the version's files.
	ExportWriting = "writing"
	// ExportVerified: the version's files and _manifest.json were uploaded
	// and read back; it is the window's current version.
	ExportVerified = "verified"
	// ExportFailed: the last attempt failed; the next run retries the same
	// version in the same row.
	ExportFailed = "failed"
	// ExportSuperseded: a later version of the window was verified.
	ExportSuperseded = "superseded"
)

// ActionExportVerified is the audit action VerifyExport writes.
const ActionExportVerified = "export.verified"

// ExportFile is one data file of an export version.
type ExportFile struct {
	// Key is the object key on the export's target.
	Key string `json:"key"`
	// Rows, Bytes and Checksum ("sha256:<hex>") describe the object.
	Rows     int64  `json:"rows"`
	Bytes    int64  `json:"bytes"`
	Checksum string `json:"checksum"`
	// TimeMin and TimeMax are the range of the time column in the file.
	TimeMin time.Time `json:"time_min"`
	TimeMax time.Time `json:"time_max"`
	// Version is the export version that wrote the file; later versions of
	// the window list it again unchanged.
	Version int `json:"version"`
}

// Export is one version of the export of one window of a dataset.
type Export struct {
	ID        int64  `json:"id"`
	DatasetID int64  `json:"-"`
	Target    string `json:"target"`
	// Window is the export window kind: "day" or "month"; the window is
	// [WindowStart, WindowEnd), labelled WindowLabel in object keys.
	Window      string    `json:"window"`
	WindowStart time.Time `json:"window_start"`
	WindowEnd   time.Time `json:"window_end"`
	WindowLabel string    `json:"window_label"`
	// Version counts the window's versions from 1.
	Version int    `json:"version"`
	State   string `json:"state"`
	// ManifestVersion is the dataset's manifest version the export read.
	ManifestVersion int64 `json:"manifest_version"`
	// PartitionIDs are the partitions whose rows in the window are in the
	// export's files (cumulative over versions), sorted; Fingerprint is the
	// sha256 of that set.
	PartitionIDs []int64 `json:"partition_ids"`
	Fingerprint  string  `json:"fingerprint"`
	// Keys are the data files' keys, Files their descriptions, in order.
	Keys        []string     `json:"keys"`
	Files       []ExportFile `json:"files"`
	ManifestKey string       `json:"manifest_key"`
	TimeMin     *time.Time   `json:"time_min,omitempty"`
	TimeMax     *time.Time   `json:"time_max,omitempty"`
	RowCount    int64        `json:"row_count"`
	SizeBytes   int64        `json:"size_bytes"`
	// NewRows and NewBytes are what this version added to the previous one.
	NewRows  int64 `json:"new_rows"`
	NewBytes int64 `json:"new_bytes"`
	// Checksum is the sha256 of the uploaded _manifest.json.
	Checksum   string     `json:"checksum"`
	Attempts   int        `json:"attempts"`
	JobID      *int64     `json:"job_id,omitempty"`
	Actor      string     `json:"actor,omitempty"`
	Error      string     `json:"error,omitempty"`
	CreatedAt  time.Time  `json:"created_at"`
	UpdatedAt  time.Time  `json:"updated_at"`
	VerifiedAt *time.Time `json:"verified_at,omitempty"`
}

const exportColumns = `id, dataset_id, target, window_kind, window_start, window_end, window_label, version, state,
	manifest_version, partition_ids, fingerprint, keys, files, manifest_key, time_min, time_max, row_count,
	size_bytes, new_rows, new_bytes, checksum, attempts, job_id, actor, coalesce(error, ''), created_at,
	updated_at, verified_at`

func scanExport(row pgx.Row) (Export, error) {
	var x Export
	err := row.Scan(&x.ID, &x.DatasetID, &x.Target, &x.Window, &x.WindowStart, &x.WindowEnd, &x.WindowLabel,
		&x.Version, &x.State, &x.ManifestVersion, &x.PartitionIDs, &x.Fingerprint, &x.Keys, &x.Files,
		&x.ManifestKey, &x.TimeMin, &x.TimeMax, &x.RowCount, &x.SizeBytes, &x.NewRows, &x.NewBytes,
		&x.Checksum, &x.Attempts, &x.JobID, &x.Actor, &x.Error, &x.CreatedAt, &x.UpdatedAt, &x.VerifiedAt)
	x.WindowStart, x.WindowEnd = x.WindowStart.UTC(), x.WindowEnd.UTC()
	x.CreatedAt, x.UpdatedAt = x.CreatedAt.UTC(), x.UpdatedAt.UTC()
	x.TimeMin, x.TimeMax, x.VerifiedAt = utcPtr(x.TimeMin), utcPtr(x.TimeMax), utcPtr(x.VerifiedAt)
	if x.PartitionIDs == nil {
		x.PartitionIDs = []int64{}
	}
	if x.Keys == nil {
		x.Keys = []string{}
	}
	if x.Files == nil {
		x.Files = []ExportFile{}
	}
	for i := range x.Files {
		x.Files[i].TimeMin, x.Files[i].TimeMax = x.Files[i].TimeMin.UTC(), x.Files[i].TimeMax.UTC()
	}
	return x, err
}

// ExportSeries returns the exports of one series of a dataset — one target
// and window kind — that are not superseded: per window, its verified
// version (if any) and the attempt at the next version (writing or failed,
// if any). Ordered by window start, then version.
func (s *Store) ExportSeries(ctx context.Context, datasetID int64, target, window string) ([]Export, error) {
	rows, err := s.pool.Query(ctx, `
		SELECT `+exportColumns+` FROM timestore.exports
		WHERE dataset_id = $1 AND target = $2 AND window_kind = $3 AND state <> 'superseded'
		ORDER BY window_start, version`, datasetID, target, window)
	out, err := collect(rows, err, scanExport)
	if err != nil {
		return nil, fmt.Errorf("exports of dataset %d to %s by %s: %w", datasetID, target, window, err)
	}
	return out, nil
}

// ExportBegin describes the attempt BeginExport records.
type ExportBegin struct {
	DatasetID   int64
	Target      string
	Window      string
	WindowStart time.Time
	WindowEnd   time.Time
	WindowLabel string
	// ManifestVersion is the version of the snapshot the attempt reads.
	ManifestVersion int64
	// PartitionIDs are the partitions whose rows the version will hold
	// (cumulative: the previous version's and those of the snapshot).
	PartitionIDs []int64
	Fingerprint  string
	ManifestKey  string
	JobID        *int64
	Actor        string
}

// BeginExport records an attempt at the next version of a window, in state
// writing, and returns it with the window's current verified version (nil
// if there is none). The next version is the verified one's plus one, or 1.
// A row of that version left writing or failed by an earlier attempt is
// reused (its attempts counted up, its results cleared), so a window never
// has two rows of one version. Callers serialize the exports of a dataset
// (LockExports). Errors: ErrInvalid, ErrConflict (the version's row is
// already verified, which a concurrent export would cause).
func (s *Store) BeginExport(ctx context.Context, b ExportBegin) (Export, *Export, error) {
	switch {
	case b.DatasetID <= 0 || b.Target == "" || b.ManifestKey == "" || b.WindowLabel == "":
		return Export{}, nil, fmt.Errorf("begin export: %w", invalid(errors.New("dataset id, target, window label and manifest key are required")))
	case b.Window != WindowDay && b.Window != WindowMonth:
		return Export{}, nil, fmt.Errorf("begin export: %w", invalid(fmt.Errorf("window must be day or month, not %q", b.Window)))
	case !b.WindowStart.Before(b.WindowEnd):
		return Export{}, nil, fmt.Errorf("begin export: %w", invalid(errors.New("window start must be before its end")))
	}
	ids := slices.Clone(b.PartitionIDs)
	slices.Sort(ids)
	ids = slices.Compact(ids)
	if ids == nil {
		ids = []int64{}
	}
	var cur Export
	var prev *Export
	err := s.inTx(ctx, readCommitted, func(tx pgx.Tx) error {
		p, err := scanExport(tx.QueryRow(ctx, `
			SELECT `+exportColumns+` FROM timestore.exports
			WHERE dataset_id = $1 AND target = $2 AND window_kind = $3 AND window_start = $4 AND state = 'verified'
			FOR UPDATE`, b.DatasetID, b.Target, b.Window, b.WindowStart))
		switch {
		case err == nil:
			prev = &p
		case !errors.Is(err, pgx.ErrNoRows):
			return fmt.Errorf("read verified version: %w", err)
		}
		version := 1
		if prev != nil {
			version = prev.Version + 1
		}
		cur, err = scanExport(tx.QueryRow(ctx, `
			INSERT INTO timestore.exports AS x (dataset_id, target, window_kind, window_start, window_end, window_label,
				version, state, manifest_version, partition_ids, fingerprint, manifest_key, job_id, actor)
			VALUES ($1, $2, $3, $4, $5, $6, $7, 'writing', $8, $9, $10, $11, $12, $13)
			ON CONFLICT ON CONSTRAINT exports_version DO UPDATE SET
				state = 'writing', window_end = EXCLUDED.window_end, window_label = EXCLUDED.window_label,
				manifest_version = EXCLUDED.manifest_version, partition_ids = EXCLUDED.partition_ids,
				fingerprint = EXCLUDED.fingerprint, manifest_key = EXCLUDED.manifest_key,
				keys = '{}', files = '[]', time_min = NULL, time_max = NULL, row_count = 0, size_bytes = 0,
				new_rows = 0, new_bytes = 0, checksum = '', attempts = x.attempts + 1,
				job_id = EXCLUDED.job_id, actor = EXCLUDED.actor, error = NULL, updated_at = now()
			WHERE x.state IN ('writing', 'failed')
			RETURNING `+exportColumns,
			b.DatasetID, b.Target, b.Window, b.WindowStart, b.WindowEnd, b.WindowLabel, version,
			b.ManifestVersion, ids, b.Fingerprint, b.ManifestKey, b.JobID, b.Actor))
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("%w: version %d of window %s is already verified", ErrConflict, version, b.WindowLabel)
		}
		return err
	})
	if err != nil {
		return Export{}, nil, fmt.Errorf("begin export of dataset %d window %s to %s: %w", b.DatasetID, b.WindowLabel, b.Target, err)
	}
	return cur, prev, nil
}

// FailExport marks an attempt that is writing as failed, with its error.
// An attempt in another state is left alone, and so is the row when attempt
// (the Attempts that BeginExport returned; 0: any) is not its current one:
// a later attempt took the version over.
func (s *Store) FailExport(ctx context.Context, id int64, attempt int, msg string) error {
	if _, err := s.pool.Exec(ctx, `
		UPDATE timestore.exports SET state = 'failed', error = $2, updated_at = now()
		WHERE id = $1 AND state = 'writing' AND ($3 = 0 OR attempts = $3)`, id, msg, attempt); err != nil {
		return fmt.Errorf("mark export %d failed: %w", id, err)
	}
	return nil
}

// ExportResult is what an attempt wrote and verified.
type ExportResult struct {
	// Files are every data file of the version, in order (those carried
	// over from the previous version included).
	Files     []ExportFile
	TimeMin   *time.Time
	TimeMax   *time.Time
	RowCount  int64
	SizeBytes int64
	NewRows   int64
	NewBytes  int64
	// Checksum is the sha256 of the uploaded _manifest.json.
	Checksum string
	// Audit details added to the export.verified row.
	Details map[string]any
	// Attempt is the Attempts that BeginExport returned for this attempt:
	// if another attempt has begun the same version since (two runs that
	// overlap, e.g. after the export lock's session was lost), the row
	// describes that one's partitions, and this attempt must not verify it.
	// 0 is not checked.
	Attempt int
}

// VerifyExport records that the attempt id (writing) has been uploaded and
// read back: in one transaction it marks the window's previous verified
// version superseded, stores res and marks the attempt verified, and writes
// an "export.verified" audit row (bytes and rows of the version). Errors:
// ErrNotFound, ErrConflict (the attempt is no longer writing).
func (s *Store) VerifyExport(ctx context.Context, id int64, res ExportResult) (Export, error) {
	if err := ValidateChecksumText(res.Checksum); err != nil {
		return Export{}, fmt.Errorf("verify export %d: %w", id, invalid(err))
	}
	keys := make([]string, len(res.Files))
	for i, f := range res.Files {
		keys[i] = f.Key
	}
	files := res.Files
	if files == nil {
		files = []ExportFile{}
	}
	var x Export
	err := s.inTx(ctx, readCommitted, func(tx pgx.Tx) error {
		cur, err := scanExport(tx.QueryRow(ctx, `SELECT `+exportColumns+` FROM timestore.exports WHERE id = $1 FOR UPDATE`, id))
		if err != nil {
			return notFound(err)
		}
		if cur.State != ExportWriting {
			return fmt.Errorf("%w: export %d is %s, not writing", ErrConflict, id, cur.State)
		}
		if res.Attempt != 0 && cur.Attempts != res.Attempt {
			return fmt.Errorf("%w: export %d was begun again (attempt %d) after this attempt (%d)", ErrConflict, id, cur.Attempts, res.Attempt)
		}
		var superseded []int64
		if err := tx.QueryRow(ctx, `
			WITH s AS (
				UPDATE timestore.exports SET state = 'superseded', updated_at = now()
				WHERE dataset_id = $1 AND target = $2 AND window_kind = $3 AND window_start = $4 AND state = 'verified'
				RETURNING id
			)
			SELECT coalesce(array_agg(id), '{}') FROM s`,
			cur.DatasetID, cur.Target, cur.Window, cur.WindowStart).Scan(&superseded); err != nil {
			return fmt.Errorf("supersede the previous version: %w", err)
		}
		x, err = scanExport(tx.QueryRow(ctx, `
			UPDATE timestore.exports SET state = 'verified', keys = $2, files = $3, time_min = $4, time_max = $5,
				row_count = $6, size_bytes = $7, new_rows = $8, new_bytes = $9, checksum = $10, error = NULL,
				updated_at = now(), verified_at = now()
			WHERE id = $1
			RETURNING `+exportColumns,
			id, keys, files, res.TimeMin, res.TimeMax, res.RowCount, res.SizeBytes, res.NewRows, res.NewBytes, res.Checksum))
		if err != nil {
			return err
		}
		d, err := readDataset(ctx, tx, anyByID, x.DatasetID, "")
		if err != nil {
			return fmt.Errorf("read dataset name: %w", err)
		}
		details := map[string]any{
			"export_id": x.ID, "target": x.Target, "window": x.Window, "window_label": x.WindowLabel,
			"window_start": x.WindowStart, "window_end": x.WindowEnd, "version": x.Version,
			"manifest_version": x.ManifestVersion, "manifest_key": x.ManifestKey, "checksum": x.Checksum,
			"files": len(x.Files), "rows": x.RowCount, "new_rows": x.NewRows, "new_bytes": x.NewBytes,
			"superseded": superseded, "attempts": x.Attempts, "job_id": x.JobID,
		}
		for k, v := range res.Details {
			details[k] = v
		}
		return insertAudit(ctx, tx, AuditEntry{
			Actor:      x.Actor,
			Action:     ActionExportVerified,
			Dataset:    d.Name,
			Partitions: x.PartitionIDs,
			Bytes:      x.SizeBytes,
			Details:    details,
		})
	})
	if err != nil {
		return Export{}, fmt.Errorf("verify export %d: %w", id, err)
	}
	return x, nil
}

// ValidateChecksumText checks that a checksum looks like "sha256:" and 64
// hex digits (the form internal/storage produces).
func ValidateChecksumText(c string) error {
	const prefix = "sha256:"
	if len(c) != len(prefix)+64 || c[:len(prefix)] != prefix {
		return fmt.Errorf("checksum %q: want sha256: and 64 hex digits", c)
	}
	for _, r := range c[len(prefix):] {
		if !('0' <= r && r <= '9' || 'a' <= r && r <= 'f' || 'A' <= r && r <= 'F') {
			return fmt.Errorf("checksum %q: want sha256: and 64 hex digits", c)
		}
	}
	return nil
}

// ExportCoverage is the current (verified) version of one exported window:
// what retention's require_export gate needs.
type ExportCoverage struct {
	Target      string    `json:"target"`
	Window      string    `json:"window"`
	WindowStart time.Time `json:"window_start"`
	WindowEnd   time.Time `json:"window_end"`
	Version     int       `json:"version"`
	// ManifestVersion is the manifest version the version read.
	ManifestVersion int64 `json:"manifest_version"`
	// PartitionIDs are the partitions whose rows in the window the export
	// holds, sorted.
	PartitionIDs []int64 `json:"partition_ids"`
}

// VerifiedExportCoverage returns the verified version of every exported
// window of a dataset, over every target and window kind, ordered by target,
// window kind and window start. A dataset without exports returns an empty
// slice.
func (s *Store) VerifiedExportCoverage(ctx context.Context, datasetID int64) ([]ExportCoverage, error) {
	rows, err := s.pool.Query(ctx, `
		SELECT target, window_kind, window_start, window_end, version, manifest_version, partition_ids
		FROM timestore.exports
		WHERE dataset_id = $1 AND state = 'verified'
		ORDER BY target, window_kind, window_start`, datasetID)
	out, err := collect(rows, err, func(row pgx.Row) (ExportCoverage, error) {
		var c ExportCoverage
		err := row.Scan(&c.Target, &c.Window, &c.WindowStart, &c.WindowEnd, &c.Version, &c.ManifestVersion, &c.PartitionIDs)
		c.WindowStart, c.WindowEnd = c.WindowStart.UTC(), c.WindowEnd.UTC()
		if c.PartitionIDs == nil {
			c.PartitionIDs = []int64{}
		}
		return c, err
	})
	if err != nil {
		return nil, fmt.Errorf("export coverage of dataset %d: %w", datasetID, err)
	}
	return out, nil
}

// ListExports returns the exports of a live dataset in one state ("" for
// all), ordered by target, window kind, window start and version. Errors:
// ErrNotFound (no such live dataset), ErrInvalid (an unknown state).
func (s *Store) ListExports(ctx context.Context, dataset, state string) ([]Export, error) {
	switch state {
	case "", ExportWriting, ExportVerified, ExportFailed, ExportSuperseded:
	default:
		return nil, fmt.Errorf("list exports of dataset %q: %w", dataset,
			invalid(fmt.Errorf("state must be writing, verified, failed or superseded, not %q", state)))
	}
	out, err := listOfLiveDataset(ctx, s, dataset, scanExport, `
		SELECT `+exportColumns+` FROM timestore.exports
		WHERE dataset_id = $1 AND ($2 = '' OR state = $2)
		ORDER BY target, window_kind, window_start, version`, state)
	if err != nil {
		return nil, fmt.Errorf("list exports of dataset %q: %w", dataset, err)
	}
	return out, nil
}

// LockExports takes the export lock of a dataset: a Postgres session
// advisory lock held on a connection of its own until unlock is called, so
// that two export runs of one dataset (on any node) never interleave. ok is
// false, and nothing is held, when another session holds the lock. unlock
// is safe to call more than once; if the connection broke meanwhile, the
// lock ended with it.
func (s *Store) LockExports(ctx context.Context, datasetID int64) (unlock func(), ok bool, err error) {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return nil, false, fmt.Errorf("lock exports of dataset %d: %w", datasetID, err)
	}
	key := fmt.Sprintf("timestore.export.%d", datasetID)
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock(hashtextextended($1, 0))`, key).Scan(&ok); err != nil {
		conn.Release()
		return nil, false, fmt.Errorf("lock exports of dataset %d: %w", datasetID, err)
	}
	if !ok {
		conn.Release()
		return nil, false, nil
	}
	done := false
	return func() {
		if done {
			return
		}
		done = true
		uctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		var released bool
		if err := conn.QueryRow(uctx, `SELECT pg_advisory_unlock(hashtextextended($1, 0))`, key).Scan(&released); err != nil || !released {
			// Closing the session ends its locks.
			_ = conn.Conn().Close(uctx)
		}
		conn.Release()
	}, true, nil
}
