package txn_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/onceflow/onceflow/txn"
)

// The per-batch queries stay index-backed whatever the table's size was when
// the connection's statement cache planned them: a plan cached while
// command_results was small (a sequential scan is cheapest then) must not
// stick once it holds many rows (issue: cost per command growing with
// history).
func TestLookupResultsStaysIndexBackedAsTheTableGrows(t *testing.T) {
	ctx := context.Background()
	cfg := newStore(t).Pool().Config()
	cfg.MaxConns = 1 // one connection: one statement cache, and its statistics flushed by seqScans
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	s := txn.NewStore(pool)
	key := txn.PartitionKey{Group: "g", Topic: "t", Partition: 0}
	c, err := s.Claim(ctx, key, "a")
	if err != nil {
		t.Fatal(err)
	}
	seqScans := func() int64 {
		var n int64
		// This backend's counters reach the shared statistics when it
		// reports them: force it, then read them in a new transaction.
		if _, err := pool.Exec(ctx, "SELECT pg_stat_force_next_flush()"); err != nil {
			t.Fatal(err)
		}
		if _, err := pool.Exec(ctx, "SELECT 1"); err != nil {
			t.Fatal(err)
		}
		if err := pool.QueryRow(ctx, `SELECT coalesce(seq_scan, 0) FROM pg_stat_user_tables WHERE schemaname = 'onceflow' AND relname = 'command_results'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	id := 0
	lookup := func() {
		ids := make([]string, 50)
		for i := range ids {
			ids[i] = fmt.Sprintf("cmd-%d", (id*7+i*13)%max(id, 1))
		}
		if _, err := s.LookupResults(ctx, "T", ids); err != nil {
			t.Fatal(err)
		}
	}
	// Plan the lookup many times on a tiny table (a generic plan forms
	// after five executions), then grow the table to 50,000 results.
	for range 20 {
		lookup()
	}
	for b := range 50 {
		batch := &txn.Batch{Claim: c, NextOffset: c.NextOffset + 1000}
		for i := range 1000 {
			batch.Results = append(batch.Results, txn.CommandResult{CommandID: fmt.Sprintf("cmd-%d", id), Offset: c.NextOffset + int64(i),
				AggregateType: "T", AggregateID: "a", Outcome: txn.OutcomeRejected, Reason: "r"})
			id++
		}
		got, err := s.Commit(ctx, batch)
		if err != nil {
			t.Fatalf("batch %d: %v", b, err)
		}
		c.NextOffset, c.NextSeq = got.NextOffset, got.NextSeq
	}
	// No ANALYZE: the statistics may still say the table is tiny (autovacuum
	// runs when it runs).
	before := seqScans()
	for range 30 {
		lookup()
	}
	if after := seqScans(); after != before {
		t.Fatalf("30 lookups on 50,000 command results ran %d sequential scans of command_results (the cached plan from the small table stuck)", after-before)
	}
}
