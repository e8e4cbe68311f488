package catalog

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// RunInTx runs fn in one read-committed transaction, committing when fn
// returns nil. It is for work that spans the catalog and River's tables, such
// as inserting a job (River's InsertTx) together with its audit row
// (AppendAuditTx).
func (s *Store) RunInTx(ctx context.Context, fn func(ctx context.Context, tx Tx) error) error {
	return s.inTx(ctx, readCommitted, func(tx pgx.Tx) error { return fn(ctx, tx) })
}

// AppendAuditTx appends one entry to the audit log inside tx, so that it is
// recorded only if tx commits. Time defaults to the database clock.
func (s *Store) AppendAuditTx(ctx context.Context, tx Tx, e AuditEntry) error {
	if err := insertAudit(ctx, tx, e); err != nil {
		return fmt.Errorf("append audit %q: %w", e.Action, err)
	}
	return nil
}
