// Package catalog keeps the manifest of every dataset in Postgres: datasets,
// partitions, manifest versions and the audit log. All SQL on timestore's own
// tables lives here, behind Store (River's tables are internal/jobs'); other
// packages see only the plain types of this file. The files are named after
// the table or concept they hold, as River files its SQL by table: dataset.go,
// partitions.go, manifest_versions.go, commit.go, snapshot.go, lease.go,
// holds.go, purge.go, exports.go, no_compact.go, audit.go and so on.
//
// Read docs/design.md before changing SQL here: the partition life cycle, the lock rules and the write/delete order.
package catalog

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"time"

	"timestore/internal/policy"
)

// Errors returned by Store. Callers test them with errors.Is.
var (
	// ErrNotFound: the dataset, partition or record does not exist.
	ErrNotFound = errors.New("not found")
	// ErrExists: a dataset of that name exists already.
	ErrExists = errors.New("already exists")
	// ErrConflict: the change no longer applies to the current manifest (e.g. an
	// input partition is no longer live). Nothing was changed.
	ErrConflict = errors.New("conflict")
	// ErrIdempotencyMismatch: an Idempotency-Key was reused with a different request.
	ErrIdempotencyMismatch = errors.New("idempotency key reused with a different request")
	// ErrInvalid: the request itself is malformed (a validation error); the
	// message names the field. Nothing was changed.
	ErrInvalid = errors.New("invalid")
)

// Column types a dataset may declare.
const (
	TypeTimestamp   = "timestamp"
	TypeTimestampTZ = "timestamptz"
	TypeBigint      = "bigint"
	TypeInteger     = "integer"
	TypeDouble      = "double"
	TypeVarchar     = "varchar"
	TypeBoolean     = "boolean"
)

// Partition windows.
const (
	WindowHour  = "hour"
	WindowDay   = "day"
	WindowMonth = "month"
)

var nameRE = regexp.MustCompile(`^[a-z][a-z0-9_]{0,62}$`)

// ValidateName checks a dataset or column name: a lowercase letter, then up to
// 62 lowercase letters, digits or underscores. Such names are safe as SQL
// identifiers and object key segments.
func ValidateName(kind, name string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("invalid %s name %q: must match ^[a-z][a-z0-9_]{0,62}$", kind, name)
	}
	return nil
}

// Column is one column of a dataset's schema.
type Column struct {
	Name string `json:"name"`
	Type string `json:"type"`
}

// Dataset is a dataset's definition and current manifest version.
type Dataset struct {
	ID              int64         `json:"-"`
	Name            string        `json:"name"`
	Columns         []Column      `json:"columns"`
	TimeColumn      string        `json:"time_column"`
	Partition       string        `json:"partition"`
	Target          string        `json:"target"`
	Policy          policy.Policy `json:"policy"`
	ManifestVersion int64         `json:"manifest_version"`
	CreatedAt       time.Time     `json:"created_at"`
}

// Validate checks names, types, the time column and the partition window.
func (d Dataset) Validate() error {
	if err := ValidateName("dataset", d.Name); err != nil {
		return err
	}
	if len(d.Columns) == 0 {
		return errors.New("columns: at least one column is required")
	}
	seen := map[string]bool{}
	timeType := ""
	for i, c := range d.Columns {
		if err := ValidateName("column", c.Name); err != nil {
			return fmt.Errorf("columns[%d]: %w", i, err)
		}
		if seen[c.Name] {
			return fmt.Errorf("columns[%d]: duplicate column %q", i, c.Name)
		}
		seen[c.Name] = true
		switch c.Type {
		case TypeTimestamp, TypeTimestampTZ, TypeBigint, TypeInteger, TypeDouble, TypeVarchar, TypeBoolean:
		default:
			return fmt.Errorf("columns[%d]: column %q has unknown type %q (want timestamp, timestamptz, bigint, integer, double, varchar or boolean)", i, c.Name, c.Type)
		}
		if c.Name == d.TimeColumn {
			timeType = c.Type
		}
	}
	if d.TimeColumn == "" {
		return errors.New("time_column: required")
	}
	if timeType == "" {
		return fmt.Errorf("time_column: %q is not one of the columns", d.TimeColumn)
	}
	if timeType != TypeTimestamp && timeType != TypeTimestampTZ {
		return fmt.Errorf("time_column: %q must be of type timestamp or timestamptz, not %s", d.TimeColumn, timeType)
	}
	switch d.Partition {
	case WindowHour, WindowDay, WindowMonth:
	default:
		return fmt.Errorf("partition: must be hour, day or month, not %q", d.Partition)
	}
	return d.Policy.Validate()
}

// Column returns the named column and whether it exists.
func (d Dataset) Column(name string) (Column, bool) {
	for _, c := range d.Columns {
		if c.Name == name {
			return c, true
		}
	}
	return Column{}, false
}

// WindowStart truncates t (in UTC) to the start of its partition window.
func WindowStart(window string, t time.Time) time.Time {
	t = t.UTC()
	switch window {
	case WindowHour:
		return t.Truncate(time.Hour)
	case WindowMonth:
		return time.Date(t.Year(), t.Month(), 1, 0, 0, 0, 0, time.UTC)
	default:
		return time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC)
	}
}

// WindowEnd returns the exclusive end of the window that starts at start.
func WindowEnd(window string, start time.Time) time.Time {
	switch window {
	case WindowHour:
		return start.Add(time.Hour)
	case WindowMonth:
		return start.AddDate(0, 1, 0)
	default:
		return start.AddDate(0, 0, 1)
	}
}

// ColumnStats are one column's statistics within one partition file.
// Min and Max are the values rendered as text (timestamps in RFC 3339, UTC);
// nil when every value is null.
type ColumnStats struct {
	Column    string  `json:"column"`
	Min       *string `json:"min,omitempty"`
	Max       *string `json:"max,omitempty"`
	NullCount int64   `json:"null_count"`
}

// PartitionFile describes a Parquet file written to a storage target that is
// about to be referenced by the manifest.
type PartitionFile struct {
	WindowStart time.Time     `json:"window_start"`
	TimeMin     time.Time     `json:"time_min"`
	TimeMax     time.Time     `json:"time_max"`
	RowCount    int64         `json:"row_count"`
	SizeBytes   int64         `json:"size_bytes"`
	Target      string        `json:"target"`
	Key         string        `json:"key"`
	Checksum    string        `json:"checksum"`
	Stats       []ColumnStats `json:"stats"`
	Level       int           `json:"level"`
}

// Partition states as reported by the API.
const (
	StateLive    = "live"
	StateRemoved = "removed"
	StatePurged  = "purged"
)

// Partition is a manifest entry: one Parquet file of a dataset.
type Partition struct {
	ID        int64 `json:"id"`
	DatasetID int64 `json:"-"`
	PartitionFile
	AddedInVersion   int64      `json:"added_in_version"`
	RemovedInVersion *int64     `json:"removed_in_version,omitempty"`
	RemovedAt        *time.Time `json:"removed_at,omitempty"`
	PurgedAt         *time.Time `json:"purged_at,omitempty"`
	NoCompact        bool       `json:"no_compact,omitempty"`
	CreatedAt        time.Time  `json:"created_at"`
}

// State reports live, removed or purged.
func (p Partition) State() string {
	switch {
	case p.PurgedAt != nil:
		return StatePurged
	case p.RemovedInVersion != nil:
		return StateRemoved
	default:
		return StateLive
	}
}

// AuditEntry is one row of the append-only audit log.
type AuditEntry struct {
	ID         int64          `json:"id"`
	Time       time.Time      `json:"time"`
	Actor      string         `json:"actor"`
	Action     string         `json:"action"`
	Dataset    string         `json:"dataset,omitempty"`
	Partitions []int64        `json:"partitions,omitempty"`
	Bytes      int64          `json:"bytes"`
	Reason     string         `json:"reason,omitempty"`
	Details    map[string]any `json:"details,omitempty"`
}

// ManifestVersion is one recorded change of a dataset's manifest.
type ManifestVersion struct {
	Version   int64          `json:"version"`
	Operation string         `json:"operation"`
	JobID     *int64         `json:"job_id,omitempty"`
	Actor     string         `json:"actor,omitempty"`
	Summary   map[string]any `json:"summary,omitempty"`
	CreatedAt time.Time      `json:"created_at"`
}

// Snapshot is a consistent view of a dataset's live manifest at one version.
type Snapshot struct {
	Dataset    Dataset
	Version    int64
	Partitions []Partition
}

// Totals sums a set of partitions.
type Totals struct {
	Partitions int64 `json:"partitions"`
	Rows       int64 `json:"rows"`
	Bytes      int64 `json:"bytes"`
}

// Manifest operations recorded in manifest_versions.operation.
const (
	OpCreate     = "create"
	OpIngest     = "ingest"
	OpCompaction = "compaction"
	OpRetention  = "retention"
	OpRestore    = "restore"
	OpDelete     = "delete"
)

// Change is one manifest change, applied atomically by Store.Commit: in one
// transaction it locks the dataset row, checks preconditions, bumps
// manifest_version, records a manifest_versions row, adds and removes
// partitions, writes the audit rows and runs InTx.
type Change struct {
	// Dataset names the dataset to change.
	Dataset string
	// Operation is one of the Op* constants.
	Operation string
	// Actor is who asked: a token name, "http", "cli" or "job:<id>".
	Actor string
	// JobID is the River job that made the change, if any.
	JobID *int64
	// Add lists files to reference; they must already exist on their target.
	Add []PartitionFile
	// Remove lists partition ids to mark removed. Every one must be live at
	// commit time, otherwise Commit returns ErrConflict and changes nothing.
	Remove []int64
	// Restore lists removed but not purged partition ids to make live again;
	// a purged or live one makes Commit return ErrConflict.
	Restore []int64
	// Reason is recorded in the audit rows (e.g. the retention rule).
	Reason string
	// Audit lists extra audit rows written in the same transaction. Commit
	// always writes one row for the change itself.
	Audit []AuditEntry
	// Summary is stored with the manifest version.
	Summary map[string]any
	// IdempotencyKey, when set, makes the change happen at most once per
	// (dataset, key). RequestHash identifies the request body; a replay with
	// another hash returns ErrIdempotencyMismatch.
	IdempotencyKey string
	RequestHash    string
	// InTx, when set, runs inside the transaction after the manifest rows are
	// written, e.g. to enqueue follow-up jobs; an error rolls everything back.
	InTx func(ctx context.Context, tx Tx, version int64, added []Partition) error
}

// CommitResult is what Store.Commit did.
type CommitResult struct {
	// Version is the new manifest version (or, on a replay, the one recorded the first time).
	Version int64
	// Added are the new partitions with their ids (empty on a replay).
	Added []Partition
	// Replayed is true when the idempotency key had been used already: nothing changed.
	Replayed bool
	// RowsWritten and PartitionsWritten are the sums over Add (recorded with the key for replays).
	RowsWritten       int64
	PartitionsWritten int64
}

// IdempotencyRecord is what the first request with an Idempotency-Key did.
type IdempotencyRecord struct {
	Key               string
	RequestHash       string
	Version           int64
	RowsWritten       int64
	PartitionsWritten int64
	CreatedAt         time.Time
}

// AuditFilter selects audit entries; zero fields match everything.
type AuditFilter struct {
	Dataset string
	Action  string
	// Limit caps the number of entries: 100 when zero, at most 1000.
	Limit int
	// BeforeID, when set, returns only entries older than that id (for paging).
	BeforeID int64
}
