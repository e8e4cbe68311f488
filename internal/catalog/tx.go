package catalog

import (
	"context"

	"github.com/jackc/pgx/v5"
)

// Tx is the transaction handed to Change.InTx. It is pgx's, so that River's
// InsertTx can enqueue jobs in it; domain packages only pass it through.
type Tx = pgx.Tx

// RunInTx runs fn in one read-committed transaction, committing when fn
// returns nil. It is for work that spans the catalog and River's tables, such
// as inserting a job (River's InsertTx) together with its audit row
// (AppendAuditTx).
func (s *Store) RunInTx(ctx context.Context, fn func(ctx context.Context, tx Tx) error) error {
	return s.inTx(ctx, readCommitted, func(tx pgx.Tx) error { return fn(ctx, tx) })
}
