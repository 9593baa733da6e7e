//go:build onceflow_unsafe_offset_first

package txn

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// BROKEN ON PURPOSE. This file exists only so that the chaos harness
// (internal/chaos) can prove that its checker catches a protocol violation:
// built with -tags onceflow_unsafe_offset_first, Store.Commit commits the
// fenced offset update in its own transaction, waits a little (to widen the
// window a crash or a cut connection can fall into), and only then writes
// the batch's events, results and dead letters in a second transaction. A
// crash, a Postgres restart or a broken connection between the two loses the
// batch: the offset says it was handled, the state says it never was.
// Never ship a binary built with this tag.
const unsafeOffsetFirst = true

func init() {
	fmt.Fprintln(os.Stderr, "onceflow: WARNING: built with onceflow_unsafe_offset_first: exactly-once is deliberately broken (test builds only)")
}

func unsafeCommitOffsetFirst(ctx context.Context, pool *pgxpool.Pool, tx pgx.Tx) (pgx.Tx, error) {
	// On error the spent tx is returned: Commit's deferred Rollback of it
	// is then a harmless no-op.
	if err := tx.Commit(ctx); err != nil {
		return tx, fmt.Errorf("unsafe offset-first commit: %w", err)
	}
	select {
	case <-time.After(50 * time.Millisecond):
	case <-ctx.Done():
		return tx, ctx.Err()
	}
	next, err := pool.Begin(ctx)
	if err != nil {
		return tx, err
	}
	return next, nil
}
