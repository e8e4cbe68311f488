package catalog

import (
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// Column lists and scanners of the rows that most files read: datasets and
// partitions. A query selects the list and scans with the matching
// function. The other tables keep theirs in their own file.

const datasetColumns = `id, name, columns, time_column, partition_window, target, policy,
	manifest_version, created_at`

// scanDataset scans a row of datasetColumns.
func scanDataset(row pgx.Row) (Dataset, error) { return scanDatasetPlus(row) }

// scanDatasetPlus scans datasetColumns and then, into extra, the columns a
// query selects after them.
func scanDatasetPlus(row pgx.Row, extra ...any) (Dataset, error) {
	var d Dataset
	if err := row.Scan(append([]any{&d.ID, &d.Name, &d.Columns, &d.TimeColumn, &d.Partition, &d.Target, &d.Policy,
		&d.ManifestVersion, &d.CreatedAt}, extra...)...); err != nil {
		return Dataset{}, err
	}
	d.CreatedAt = d.CreatedAt.UTC()
	return d, nil
}

const partitionColumns = `id, dataset_id, window_start, time_min, time_max, row_count, size_bytes,
	target, object_key, checksum, stats, level, no_compact, added_in_version, removed_in_version,
	removed_at, purged_at, created_at`

// scanPartition scans a row of partitionColumns.
func scanPartition(row pgx.Row) (Partition, error) { return scanPartitionPlus(row) }

// scanPartitionPlus scans partitionColumns and then, into extra, the
// columns a query selects after them.
func scanPartitionPlus(row pgx.Row, extra ...any) (Partition, error) {
	var p Partition
	if err := row.Scan(append([]any{&p.ID, &p.DatasetID, &p.WindowStart, &p.TimeMin, &p.TimeMax, &p.RowCount, &p.SizeBytes,
		&p.Target, &p.Key, &p.Checksum, &p.Stats, &p.Level, &p.NoCompact, &p.AddedInVersion, &p.RemovedInVersion,
		&p.RemovedAt, &p.PurgedAt, &p.CreatedAt}, extra...)...); err != nil {
		return Partition{}, err
	}
	p.WindowStart, p.TimeMin, p.TimeMax, p.CreatedAt = p.WindowStart.UTC(), p.TimeMin.UTC(), p.TimeMax.UTC(), p.CreatedAt.UTC()
	p.RemovedAt, p.PurgedAt = utcPtr(p.RemovedAt), utcPtr(p.PurgedAt)
	return p, nil
}

// collect scans every row of a query with scan. It returns an empty, non-nil
// slice when there are none.
func collect[T any](rows pgx.Rows, err error, scan func(pgx.Row) (T, error)) ([]T, error) {
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (T, error) { return scan(row) })
}

func utcPtr(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}

// qualified prefixes every column of a column list with alias.
func qualified(alias, columns string) string {
	cols := strings.Split(columns, ",")
	for i, c := range cols {
		cols[i] = alias + "." + strings.TrimSpace(c)
	}
	return strings.Join(cols, ", ")
}
