package txn_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/onceflow/onceflow/eventsource"
	"github.com/onceflow/onceflow/txn"
)

func TestIsRetryable(t *testing.T) {
	t.Parallel()
	pg := func(code string) error { return fmt.Errorf("txn: commit: %w", &pgconn.PgError{Code: code}) }
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"fenced", &txn.FencedError{Epoch: 1}, false},
		{"wrapped fenced", fmt.Errorf("x: %w", &txn.FencedError{}), false},
		{"invalid batch", fmt.Errorf("%w: seq gap", txn.ErrInvalidBatch), false},
		{"duplicate command", fmt.Errorf("%w: %w", txn.ErrDuplicateCommand, &pgconn.PgError{Code: "23505"}), false},
		{"concurrency conflict", fmt.Errorf("%w: %w", eventsource.ErrConcurrencyConflict, &pgconn.PgError{Code: "23505"}), false},
		{"claim lock timeout", fmt.Errorf("%w: %w", txn.ErrClaimLockTimeout, &pgconn.PgError{Code: "55P03"}), true},
		{"not found", txn.ErrNotFound, false},
		{"canceled", fmt.Errorf("commit: %w", context.Canceled), false},
		{"deadline", context.DeadlineExceeded, false},
		{"serialization failure", pg("40001"), true},
		{"deadlock", pg("40P01"), true},
		{"admin shutdown", pg("57P01"), true},
		{"crash shutdown", pg("57P02"), true},
		{"cannot connect now", pg("57P03"), true},
		{"statement timeout", pg("57014"), true},
		{"too many connections", pg("53300"), true},
		{"connection failure class 08", pg("08006"), true},
		{"unique violation", pg("23505"), false},
		{"check violation", pg("23514"), false},
		{"invalid utf8", pg("22021"), false},
		{"undefined table", pg("42P01"), false},
		{"unexpected EOF", fmt.Errorf("read: %w", io.ErrUnexpectedEOF), true},
		{"net op error", &net.OpError{Op: "dial", Err: errors.New("connection refused")}, true},
		{"closed conn", net.ErrClosed, true},
		{"plain error", errors.New("something"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := txn.IsRetryable(tt.err); got != tt.want {
				t.Fatalf("IsRetryable(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
}
