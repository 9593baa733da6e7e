// Package txnmem is an in-memory txn.Backend and eventsource.Reader: the
// partition claims with epochs, the fenced batch commit and its sinks
// (events, snapshots, command results, dead letters), halts and publish
// positions, with the same rules as the Postgres store — the same
// compare-and-set fence (epoch, next offset, next seq), the same uniqueness
// (command id per aggregate type; aggregate version; partition seq), the
// same errors (*txn.FencedError, txn.ErrDuplicateCommand,
// eventsource.ErrConcurrencyConflict, txn.ErrNotFound). A failed commit
// changes nothing.
//
// It is for fast tests of the pipeline and of handlers, without Postgres
// (the model is hashicorp/raft's inmem store). It keeps everything in memory
// and forever. A Batch with InTx (a handler's own SQL) is refused: that
// needs Postgres.
package txnmem
