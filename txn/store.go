package txn

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// Store runs the protocol's statements on a pgx pool. It is safe for
// concurrent use.
type Store struct {
	pool        *pgxpool.Pool
	lockTimeout time.Duration
	log         *slog.Logger
}

// Option configures a Store.
type Option func(*Store)

// WithLockTimeout bounds how long Claim waits for the previous owner's
// in-flight transaction to release the claim row (SET LOCAL lock_timeout).
// Default 5s. Claim runs inside the Kafka rebalance callback, so this bounds
// how long a rebalance can be held up.
func WithLockTimeout(d time.Duration) Option { return func(s *Store) { s.lockTimeout = d } }

// WithLogger sets the logger (default slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(s *Store) { s.log = l } }

// NewStore returns a Store on pool. Call Migrate first.
func NewStore(pool *pgxpool.Pool, opts ...Option) *Store {
	s := &Store{pool: pool, lockTimeout: 5 * time.Second, log: slog.Default()}
	for _, o := range opts {
		o(s)
	}
	return s
}

// Pool returns the underlying pool.
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// Claim takes ownership of a partition for owner: it inserts the claim row if
// missing, increments its epoch and returns the new claim. The row lock waits
// (at most the lock timeout) for a previous owner's in-flight batch
// transaction, so the returned NextOffset includes everything that committed.
func (s *Store) Claim(ctx context.Context, key PartitionKey, owner string) (Claim, error) {
	return Claim{}, errors.New("TODO")
}

// ReadClaim returns a partition's claim row, or ErrNotFound.
func (s *Store) ReadClaim(ctx context.Context, key PartitionKey) (Claim, error) {
	return Claim{}, errors.New("TODO")
}

// Claims lists the claim rows of a group ("" for all), ordered by topic and partition.
func (s *Store) Claims(ctx context.Context, group string) ([]Claim, error) {
	return nil, errors.New("TODO")
}

// Commit writes a batch in one transaction and moves the claim's next_offset
// to b.NextOffset and next_seq past the batch's events, fenced on the claim's
// epoch, next_offset and next_seq. On a fence it rolls back and returns a
// *FencedError (errors.Is(err, ErrFenced)). Any other error also means nothing
// was written, unless the error is ambiguous (the connection broke during
// COMMIT): a retry of the same batch then fails as fenced with SelfFenced()
// true, which is the signal to reload from Postgres.
func (s *Store) Commit(ctx context.Context, b *Batch) (Committed, error) {
	return Committed{}, errors.New("TODO")
}

// LookupResults returns the stored results of those ids that have one.
func (s *Store) LookupResults(ctx context.Context, ids []string) (map[string]CommandResult, error) {
	return nil, errors.New("TODO")
}

// Result returns one command's stored result, or ErrNotFound.
func (s *Store) Result(ctx context.Context, commandID string) (CommandResult, error) {
	return CommandResult{}, errors.New("TODO")
}

// DeadLetters lists dead letters in id order.
func (s *Store) DeadLetters(ctx context.Context, q DeadLetterQuery) ([]DeadLetter, error) {
	return nil, errors.New("TODO")
}
