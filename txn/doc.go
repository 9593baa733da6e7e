// Package txn is the Postgres side of onceflow's exactly-once protocol:
// embedded schema migrations, partition claims with epochs, the fenced batch
// commit, command results (idempotency) and dead letters.
//
// The protocol in one paragraph: when a consumer is assigned a partition it
// calls Store.Claim, which bumps the partition's epoch and returns the offset
// to resume from. Every batch of that partition is written by Store.Commit in
// one transaction that stores events, snapshots, command results and dead
// letters and then moves next_offset with a compare-and-set on (epoch,
// next_offset, next_seq). If another owner has claimed the partition since,
// the compare-and-set matches no row, the transaction rolls back and Commit
// returns an error matching ErrFenced. Postgres, not Kafka, holds the truth
// about what has been consumed.
package txn
