// Package txn is the Postgres side of onceflow's exactly-once protocol:
// embedded schema migrations, partition claims with epochs, the fenced batch
// commit and its sinks (events, snapshots, command results scoped to the
// aggregate type, dead letters, outbox records), halts, and the published
// positions of the partition's publisher. Store implements the Backend
// interface the runtime runs on; txn/txnmem implements it in memory under
// the same contract (txn/backendtest).
//
// The protocol in one paragraph: when a consumer is assigned a partition it
// calls Store.Claim, which bumps the partition's epoch and returns the offset
// to resume from. Every batch of that partition is written by Store.Commit in
// one transaction that stores events, snapshots, command results, dead
// letters and outbox records and then moves next_offset with a
// compare-and-set on (epoch, next_offset, next_seq, next_outbox_seq). If another owner has claimed the partition since,
// the compare-and-set matches no row, the transaction rolls back and Commit
// returns an error matching ErrFenced. Postgres, not Kafka, holds the truth
// about what has been consumed.
//
// Commit runs the compare-and-set first in its transaction, taking the claim
// row lock before any data is written: a zombie writer is rejected after one
// statement, and a new owner's Claim waits for the in-flight batch and then
// sees its offset. Events, results and dead letters go in with COPY and
// snapshots with one unnest upsert, so a batch costs a fixed number of round
// trips whatever its size (see BenchmarkCommit).
//
// Errors callers branch on: ErrFenced (*FencedError, stop or reload the
// partition), ErrInvalidBatch (a caller bug), ErrDuplicateCommand (a command
// id already has a result), eventsource.ErrConcurrencyConflict (an aggregate
// version is taken), ErrClaimLockTimeout and ErrNotFound. IsRetryable decides
// whether anything else is transient.
//
// Text stored in Postgres cannot contain NUL or invalid UTF-8. Identifiers
// (command ids, aggregate types and ids, event types) with such bytes make
// Commit fail with ErrInvalidBatch; descriptive text (reasons, dead letter
// errors and headers) has them replaced with U+FFFD so a dead letter is never
// lost. Raw record keys and values are stored byte for byte.
package txn
