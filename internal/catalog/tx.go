package catalog

import "github.com/jackc/pgx/v5"

// Tx is the transaction handed to Change.InTx. It is pgx's, so that River's
// InsertTx can enqueue jobs in it; domain packages only pass it through.
type Tx = pgx.Tx
