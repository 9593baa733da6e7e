package txn

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/onceflow/onceflow/eventsource"
)

var (
	// ErrFenced means a batch commit's compare-and-set matched no row: the
	// partition was claimed by a newer epoch, or its offset moved. Nothing of
	// the batch was written. The writer must stop the partition and drop its
	// in-memory state. Use errors.As with *FencedError for details.
	ErrFenced = errors.New("txn: fenced")
	// ErrNotFound is returned when a claim or command result does not exist.
	ErrNotFound = errors.New("txn: not found")
	// ErrInvalidBatch is returned by Commit for a malformed batch (a bug in
	// the caller, never retried).
	ErrInvalidBatch = errors.New("txn: invalid batch")
)

// FencedError details a fenced commit.
type FencedError struct {
	Key            PartitionKey
	Epoch          int64 // the writer's epoch
	ExpectedOffset int64 // the next_offset the writer expected
	ExpectedSeq    int64 // the next_seq the writer expected
	Current        Claim // the claim row as found when the CAS missed
}

// Error describes the writer's expectation and the claim as found.
func (e *FencedError) Error() string {
	return fmt.Sprintf("txn: fenced: %s[%d] group %q: writer epoch %d expected offset %d seq %d, claim has epoch %d owner %q offset %d seq %d",
		e.Key.Topic, e.Key.Partition, e.Key.Group, e.Epoch, e.ExpectedOffset, e.ExpectedSeq, e.Current.Epoch, e.Current.Owner, e.Current.NextOffset, e.Current.NextSeq)
}

// Is makes errors.Is(err, ErrFenced) true.
func (e *FencedError) Is(target error) bool { return target == ErrFenced }

// SelfFenced reports whether the claim still has the writer's epoch, so the
// miss came from the writer's own earlier commit (for example one whose
// acknowledgement was lost) rather than from a new owner. The writer may then
// reload from Postgres and continue; otherwise it must wait to be assigned
// the partition again.
func (e *FencedError) SelfFenced() bool { return e.Current.Epoch == e.Epoch }

var (
	// ErrDuplicateCommand is returned by Commit when a result's command id
	// already has a stored result (committed by an earlier batch, for example
	// because the same id was sent to two partitions). Nothing of the batch
	// was written. The caller re-checks the stored results with
	// LookupResults, drops the duplicates from the batch and commits again.
	ErrDuplicateCommand = errors.New("txn: command id already has a result")
	// ErrClaimLockTimeout is returned by Claim when the claim row stayed
	// locked longer than the lock timeout (WithLockTimeout), normally by a
	// previous owner's batch transaction that is stuck or slow. Nothing
	// changed; the claim may be retried (IsRetryable reports true).
	ErrClaimLockTimeout = errors.New("txn: claim lock timeout")
)

// IsRetryable reports whether an error returned by a Store method is
// transient, so the same call (the same batch, the same claim) may be
// retried after a backoff. It is the one place that decides retryability.
//
// A retried Commit is safe even when the first attempt's outcome was
// ambiguous (the connection broke during COMMIT): if it had committed, the
// retry fails with a *FencedError whose SelfFenced() is true.
func IsRetryable(err error) bool {
	var (
		connectErr *pgconn.ConnectError
		pgErr      *pgconn.PgError
	)
	switch {
	case err == nil:
		return false
	case errors.As(err, &connectErr) && !errors.As(err, &pgErr) && !errors.Is(err, context.Canceled):
		// No connection could be established: refused, reset, or pgx's own
		// connect_timeout expired. The last wraps context.DeadlineExceeded
		// although the caller's context is alive, so it must be told apart
		// from the caller giving up (below). Nothing was sent. (A server
		// error during connect, such as bad credentials, has a PgError and
		// is classified by its code below.)
		return true
	case errors.Is(err, ErrFenced):
		// A newer owner holds the partition, or our own earlier commit
		// moved it: retrying the same CAS can never succeed. Stop the
		// partition (or reload it when SelfFenced).
		return false
	case errors.Is(err, ErrInvalidBatch):
		// A caller bug: the same batch fails the same way every time.
		return false
	case errors.Is(err, ErrDuplicateCommand), errors.Is(err, eventsource.ErrConcurrencyConflict):
		// The data conflicts with what is stored: the batch must be
		// rebuilt (drop duplicates, reload the aggregate), not retried.
		return false
	case errors.Is(err, ErrNotFound):
		return false
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		// The caller gave up (shutdown, revoke, its own deadline). pgx
		// wraps a cancelled in-flight query's error in the context's error.
		return false
	}

	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "40001": // serialization_failure: a concurrent transaction won; rerun.
			return true
		case "40P01": // deadlock_detected: Postgres chose us as the victim; rerun.
			return true
		case "55P03": // lock_not_available: Claim's lock_timeout; the holder may finish soon.
			return true
		case "57P01", // admin_shutdown: the server is restarting or a DBA terminated us.
			"57P02", // crash_shutdown: another backend crashed; the server restarts.
			"57P03": // cannot_connect_now: the server is starting up or in recovery.
			return true
		case "57014": // query_canceled by statement_timeout (a ctx cancel is caught above).
			return true
		case "53300": // too_many_connections: another instance may release some.
			return true
		case "25P03": // idle_in_transaction_session_timeout: the session was ended, nothing committed.
			return true
		}
		switch pgErr.Code[:2] {
		case "08": // connection_exception class: the session is gone.
			return true
		}
		// Constraint violations (class 23), data exceptions (22), syntax
		// and undefined objects (42), etc. repeat on every attempt.
		return false
	}

	// pgx knows it never sent the statement (for example the pool could not
	// acquire a connection): always safe.
	if pgconn.SafeToRetry(err) {
		return true
	}
	// The server could not be reached, or the connection broke mid-call.
	var netErr net.Error
	if errors.As(err, &connectErr) || errors.As(err, &netErr) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) {
		return true
	}
	return false
}
