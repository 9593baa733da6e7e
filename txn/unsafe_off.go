//go:build !onceflow_unsafe_offset_first

package txn

import (
	"context"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// unsafeOffsetFirst is false in every normal build: Store.Commit writes the
// fenced offset update and the batch's state in one transaction.
const unsafeOffsetFirst = false

func unsafeCommitOffsetFirst(context.Context, *pgxpool.Pool, pgx.Tx) (pgx.Tx, error) {
	panic("txn: unsafe commit path reached in a normal build")
}
