package catalog

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// Limits of ListAudit and ManifestVersions.
const (
	// ListLimitDefault is the number of entries returned when no limit is given.
	ListLimitDefault = 100
	// ListLimitMax is the most entries returned at once.
	ListLimitMax = 1000
)

// AppendAudit appends one entry to the audit log. Time defaults to the
// database clock; ID is assigned.
func (s *Store) AppendAudit(ctx context.Context, e AuditEntry) error {
	if err := insertAudit(ctx, s.pool, e); err != nil {
		return fmt.Errorf("append audit %q: %w", e.Action, err)
	}
	return nil
}

// AppendAuditTx appends one entry to the audit log inside tx, so that it is
// recorded only if tx commits. Time defaults to the database clock. For
// many entries at once, see AppendAuditBatchTx.
func (s *Store) AppendAuditTx(ctx context.Context, tx Tx, e AuditEntry) error {
	if err := insertAudit(ctx, tx, e); err != nil {
		return fmt.Errorf("append audit %q: %w", e.Action, err)
	}
	return nil
}

// insertAuditSQL writes one audit entry; a NULL time is now().
const insertAuditSQL = `
	INSERT INTO timestore.audit_log (time, actor, action, dataset, partitions, bytes, reason, details)
	VALUES (coalesce($1::timestamptz, now()), $2, $3, $4, coalesce($5::bigint[], '{}'), $6, $7, $8)`

// insertAudit writes one entry with db, inside the caller's transaction when db is one.
func insertAudit(ctx context.Context, db querier, e AuditEntry) error {
	if e.Action == "" {
		return invalid(errors.New("audit entry: action is required"))
	}
	_, err := db.Exec(ctx, insertAuditSQL, auditTime(e), e.Actor, e.Action, e.Dataset, e.Partitions, e.Bytes, e.Reason, e.Details)
	if err != nil {
		return fmt.Errorf("write audit %q: %w", e.Action, err)
	}
	return nil
}

// queueAudit queues, in a manifest change's pipeline, the statement writing
// one entry, as insertAudit does.
func queueAudit(p *commitPipeline, e AuditEntry) error {
	if e.Action == "" {
		return invalid(errors.New("audit entry: action is required"))
	}
	p.exec(fmt.Sprintf("write audit %q", e.Action), insertAuditSQL,
		auditTime(e), e.Actor, e.Action, e.Dataset, e.Partitions, e.Bytes, e.Reason, e.Details)
	return nil
}

// queueChangeAudit queues, in a manifest change's pipeline, the statement
// writing the audit row of a change that adds files: its partitions are
// the ids of the partitions of files (each looked up by target and key in
// the unique index partitions_object, so the statement must follow those
// adding them; a join let the planner scan every partition), in the order
// given, then e.Partitions.
func queueChangeAudit(p *commitPipeline, e AuditEntry, files []PartitionFile) {
	targets := make([]string, len(files))
	keys := make([]string, len(files))
	for i, f := range files {
		targets[i], keys[i] = f.Target, f.Key
	}
	parts := e.Partitions
	if parts == nil {
		parts = []int64{}
	}
	p.exec(fmt.Sprintf("write audit %q", e.Action), `
		INSERT INTO timestore.audit_log (time, actor, action, dataset, partitions, bytes, reason, details)
		VALUES (coalesce($1::timestamptz, now()), $2, $3, $4,
			ARRAY(SELECT (SELECT p.id FROM timestore.partitions p
					WHERE p.target = f.target AND p.object_key = f.object_key)
				FROM unnest($5::text[], $6::text[]) WITH ORDINALITY AS f (target, object_key, n)
				ORDER BY f.n) || $7::bigint[],
			$8, $9, $10)`,
		auditTime(e), e.Actor, e.Action, e.Dataset, targets, keys, parts, e.Bytes, e.Reason, e.Details)
}

// auditTime is the time argument of an entry's insert: NULL (now()) when
// e.Time is zero.
func auditTime(e AuditEntry) any {
	if e.Time.IsZero() {
		return nil
	}
	return e.Time
}

// AppendAuditBatchTx appends a batch of entries to the audit log inside tx
// in one round trip (COPY), so that they are recorded only if tx commits.
// Every entry gets the database clock of the transaction as its time; Time
// is ignored (AppendAuditTx honours it).
func (s *Store) AppendAuditBatchTx(ctx context.Context, tx Tx, entries []AuditEntry) error {
	if err := insertAuditBatch(ctx, tx, entries); err != nil {
		return fmt.Errorf("append %d audit entries: %w", len(entries), err)
	}
	return nil
}

// insertAuditBatch writes entries inside tx with one COPY.
func insertAuditBatch(ctx context.Context, tx pgx.Tx, entries []AuditEntry) error {
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

// ListAudit returns audit entries matching f, newest first.
func (s *Store) ListAudit(ctx context.Context, f AuditFilter) ([]AuditEntry, error) {
	limit := f.Limit
	if limit <= 0 {
		limit = ListLimitDefault
	}
	limit = min(limit, ListLimitMax)
	// The filter is spelled out rather than written as ($1 = '' OR dataset = $1)
	// so that each shape gets a plan that uses its index.
	where, args := "TRUE", []any{}
	for _, c := range []struct {
		cond string
		arg  any
		set  bool
	}{
		{"dataset = $%d", f.Dataset, f.Dataset != ""},
		{"action = $%d", f.Action, f.Action != ""},
		{"id < $%d", f.BeforeID, f.BeforeID > 0},
	} {
		if c.set {
			args = append(args, c.arg)
			where += " AND " + fmt.Sprintf(c.cond, len(args))
		}
	}
	args = append(args, limit)
	rows, err := s.pool.Query(ctx, fmt.Sprintf(
		`SELECT `+auditColumns+` FROM timestore.audit_log WHERE %s ORDER BY id DESC LIMIT $%d`,
		where, len(args)), args...)
	entries, err := collect(rows, err, scanAudit)
	if err != nil {
		return nil, fmt.Errorf("list audit: %w", err)
	}
	return entries, nil
}

const auditColumns = `id, time, actor, action, dataset, partitions, bytes, reason, details`

func scanAudit(row pgx.Row) (AuditEntry, error) {
	var e AuditEntry
	err := row.Scan(&e.ID, &e.Time, &e.Actor, &e.Action, &e.Dataset, &e.Partitions, &e.Bytes, &e.Reason, &e.Details)
	e.Time = e.Time.UTC()
	return e, err
}
