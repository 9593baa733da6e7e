package txn_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sync"
	"testing"

	"github.com/onceflow/onceflow/eventsource"
	"github.com/onceflow/onceflow/txn"
)

// Several owners fight over one partition: each claims it, reloads state
// from Postgres as the runtime does after an assignment, and commits batches
// until it is fenced, then claims again. Whatever the interleaving, every
// offset is handled exactly once, seqs are gap-free and versions contiguous.
func TestClaimCommitRace(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	es := eventsource.NewEventStore(s.Pool())
	aggs := []string{"a0", "a1", "a2"}
	const writers, attempts, perBatch = 4, 25, 5

	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Go(func() {
			owner := fmt.Sprintf("w%d", w)
			var c txn.Claim
			versions := map[string]int64{}
			claim := func() error {
				var err error
				if c, err = s.Claim(ctx, testKey, owner); err != nil {
					return err
				}
				loaded, err := es.Load(ctx, "stock", aggs)
				if err != nil {
					return err
				}
				clear(versions)
				for id, l := range loaded {
					versions[id] = l.Events[len(l.Events)-1].Version
				}
				return nil
			}
			if err := claim(); err != nil {
				errs <- err
				return
			}
			for range attempts {
				b := &txn.Batch{Claim: c, NextOffset: c.NextOffset + perBatch}
				next := maps.Clone(versions)
				for i := range perBatch {
					off := c.NextOffset + int64(i)
					agg := aggs[off%int64(len(aggs))]
					next[agg]++
					id := fmt.Sprintf("cmd-%d", off)
					b.Events = append(b.Events, eventsource.StoredEvent{Topic: c.Topic, Partition: c.Partition, Seq: c.NextSeq + int64(i),
						AggregateType: "stock", AggregateID: agg, Version: next[agg], Type: "Added", Data: []byte("{}"), CommandID: id})
					b.Results = append(b.Results, txn.CommandResult{CommandID: id, Offset: off, Outcome: txn.OutcomeAccepted})
				}
				got, err := s.Commit(ctx, b)
				switch {
				case err == nil:
					c = advance(c, got)
					versions = next
				case errors.Is(err, txn.ErrFenced):
					if err := claim(); err != nil {
						errs <- err
						return
					}
				default:
					errs <- fmt.Errorf("%s: %w", owner, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	final, err := s.ReadClaim(ctx, testKey)
	if err != nil {
		t.Fatal(err)
	}
	if final.NextOffset == 0 || final.NextOffset%perBatch != 0 || final.NextSeq != final.NextOffset+1 {
		t.Fatalf("final claim %+v", final)
	}
	var results, distinct, minOff, maxOff int64
	if err := s.Pool().QueryRow(ctx, `SELECT count(*), count(DISTINCT "offset"), min("offset"), max("offset") FROM onceflow.command_results`).
		Scan(&results, &distinct, &minOff, &maxOff); err != nil {
		t.Fatal(err)
	}
	if results != final.NextOffset || distinct != results || minOff != 0 || maxOff != final.NextOffset-1 {
		t.Fatalf("results: %d rows, %d distinct offsets in [%d, %d]; claim next_offset %d", results, distinct, minOff, maxOff, final.NextOffset)
	}
	evs, err := es.ReadPartition(ctx, testKey.Topic, testKey.Partition, 1, int(final.NextOffset)+10)
	if err != nil {
		t.Fatal(err)
	}
	last := map[string]int64{}
	for i, e := range evs {
		if e.Seq != int64(i+1) || e.Version != last[e.AggregateID]+1 {
			t.Fatalf("event %d: seq %d, %s version %d after %d", i, e.Seq, e.AggregateID, e.Version, last[e.AggregateID])
		}
		last[e.AggregateID] = e.Version
	}
	if int64(len(evs)) != final.NextOffset {
		t.Fatalf("%d events, want %d", len(evs), final.NextOffset)
	}
	t.Logf("%d offsets committed by %d racing writers", final.NextOffset, writers)
}
