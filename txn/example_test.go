package txn_test

import (
	"context"
	"errors"
	"log"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/onceflow/onceflow/eventsource"
	"github.com/onceflow/onceflow/txn"
)

// The protocol as the runtime drives it: claim on assignment, then one
// fenced Commit per batch. (Not run: it needs a database.)
func Example() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, "postgres://localhost/app")
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	if _, err := txn.Migrate(ctx, pool); err != nil {
		log.Fatal(err)
	}
	store := txn.NewStore(pool)

	// In the Kafka rebalance callback: bump the epoch, resume from
	// claim.NextOffset (never from Kafka's committed offset).
	key := txn.PartitionKey{Group: "inventory", Topic: "inventory.commands", Partition: 0}
	claim, err := store.Claim(ctx, key, "instance-1")
	if err != nil {
		log.Fatal(err) // errors.Is(err, txn.ErrClaimLockTimeout): retry the claim
	}

	// For each batch of records at offsets claim.NextOffset..NextOffset-1:
	batch := &txn.Batch{
		Claim:      claim,
		NextOffset: claim.NextOffset + 1,
		Events: []eventsource.StoredEvent{{
			Topic: key.Topic, Partition: key.Partition, Seq: claim.NextSeq,
			AggregateType: "stock", AggregateID: "sku-1", Version: 1,
			Type: "StockAdded", Data: []byte(`{"qty":5}`), CommandID: "cmd-1",
		}},
		Results: []txn.CommandResult{{
			CommandID: "cmd-1", Offset: claim.NextOffset, AggregateType: "stock", AggregateID: "sku-1",
			Outcome: txn.OutcomeAccepted, FirstVersion: 1, LastVersion: 1, FirstSeq: claim.NextSeq, LastSeq: claim.NextSeq,
		}},
	}
	committed, err := store.Commit(ctx, batch)
	var fenced *txn.FencedError
	switch {
	case err == nil:
		// Only now: send replies; the next batch starts at committed.
		claim.NextOffset, claim.NextSeq = committed.NextOffset, committed.NextSeq
	case errors.As(err, &fenced) && fenced.SelfFenced():
		// Our own earlier attempt committed (its reply was lost): reload
		// state from Postgres and continue from fenced.Current.
	case errors.As(err, &fenced):
		// A newer owner has the partition: stop it, drop in-memory state.
	case txn.IsRetryable(err):
		// Transient: retry the same batch after a backoff.
	default:
		log.Fatal(err) // invalid batch, duplicate command, conflict: rebuild the batch
	}
}
