package backendtest

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/onceflow/onceflow/eventsource"
	"github.com/onceflow/onceflow/txn"
)

// Factory returns a fresh, empty backend and its event reader.
type Factory func(t *testing.T) (txn.Backend, eventsource.Reader)

var key = txn.PartitionKey{Group: "g", Topic: "cmds", Partition: 3}

func ev(c txn.Claim, i int, agg string, version int64, cmd string) eventsource.StoredEvent {
	return eventsource.StoredEvent{Topic: c.Topic, Partition: c.Partition, Seq: c.NextSeq + int64(i), AggregateType: "T", AggregateID: agg,
		Version: version, Type: "E", Data: []byte(`{"n":1}`), CommandID: cmd}
}

func res(c txn.Claim, i int, id string, o txn.Outcome) txn.CommandResult {
	return txn.CommandResult{CommandID: id, Offset: c.NextOffset + int64(i), AggregateType: "T", AggregateID: "a", Outcome: o, RequestHash: []byte{1}}
}

func advance(c txn.Claim, got txn.Committed) txn.Claim {
	c.NextOffset, c.NextSeq = got.NextOffset, got.NextSeq
	return c
}

// Run runs the contract against backends made by newBackend.
func Run(t *testing.T, newBackend Factory) {
	ctx := context.Background()

	t.Run("claims", func(t *testing.T) {
		b, _ := newBackend(t)
		if _, err := b.ReadClaim(ctx, key); !errors.Is(err, txn.ErrNotFound) {
			t.Fatalf("ReadClaim of no claim: %v, want ErrNotFound", err)
		}
		c1, err := b.Claim(ctx, key, "A")
		if err != nil || c1.Epoch != 1 || c1.NextOffset != 0 || c1.NextSeq != 1 || c1.Owner != "A" {
			t.Fatalf("first claim %+v %v", c1, err)
		}
		c2, err := b.Claim(ctx, key, "B")
		if err != nil || c2.Epoch != 2 || c2.Owner != "B" {
			t.Fatalf("second claim %+v %v", c2, err)
		}
		if c, err := b.ReadClaim(ctx, key); err != nil || c.Epoch != 2 {
			t.Fatalf("ReadClaim %+v %v", c, err)
		}
	})

	t.Run("commit, read back, fences", func(t *testing.T) {
		b, r := newBackend(t)
		c, _ := b.Claim(ctx, key, "A")
		batch := &txn.Batch{Claim: c, NextOffset: 3,
			Events:      []eventsource.StoredEvent{ev(c, 0, "a", 1, "c0"), ev(c, 1, "a", 2, "c0"), ev(c, 2, "b", 1, "c2")},
			Results:     []txn.CommandResult{res(c, 0, "c0", txn.OutcomeAccepted), res(c, 2, "c2", txn.OutcomeAccepted)},
			DeadLetters: []txn.DeadLetter{{Offset: 1, Error: "bad", Value: []byte{0xff}}},
			Snapshots:   []eventsource.Snapshot{{AggregateType: "T", AggregateID: "a", Version: 2, State: []byte("s2")}},
		}
		got, err := b.Commit(ctx, batch)
		if err != nil || got != (txn.Committed{NextOffset: 3, NextSeq: 4, NextOutboxSeq: 1}) {
			t.Fatalf("Commit = %+v, %v", got, err)
		}
		evs, err := r.ReadPartition(ctx, key.Topic, key.Partition, 2, 10)
		if err != nil || len(evs) != 2 || evs[0].Seq != 2 || evs[1].AggregateID != "b" {
			t.Fatalf("ReadPartition from 2: %+v %v", evs, err)
		}
		l, err := r.Load(ctx, "T", []string{"a", "b", "none"})
		if err != nil || l["a"].Snapshot == nil || l["a"].Snapshot.Version != 2 || len(l["a"].Events) != 0 || len(l["b"].Events) != 1 {
			t.Fatalf("Load: %+v %v", l, err)
		}
		if _, ok := l["none"]; ok {
			t.Fatal("Load returned an aggregate with nothing stored")
		}
		found, err := b.LookupResults(ctx, "T", []string{"c0", "c2", "c9"})
		if err != nil || len(found) != 2 || found["c0"].PartitionKey != key || string(found["c0"].RequestHash) != "\x01" {
			t.Fatalf("LookupResults: %+v %v", found, err)
		}
		if other, _ := b.LookupResults(ctx, "U", []string{"c0"}); len(other) != 0 {
			t.Fatal("a command id is visible to another aggregate type")
		}

		// The same batch again: our own commit already landed.
		_, err = b.Commit(ctx, batch)
		var fe *txn.FencedError
		if !errors.As(err, &fe) || !fe.SelfFenced() || fe.Current.NextOffset != 3 {
			t.Fatalf("recommit: %v, want a self-fenced *FencedError", err)
		}
		// A newer owner fences the old epoch.
		c2, _ := b.Claim(ctx, key, "B")
		_, err = b.Commit(ctx, &txn.Batch{Claim: advance(c, got), NextOffset: 4, Results: []txn.CommandResult{res(advance(c, got), 0, "c3", txn.OutcomeRejected)}})
		if !errors.As(err, &fe) || fe.SelfFenced() || fe.Current.Epoch != c2.Epoch {
			t.Fatalf("zombie commit: %v, want fenced by epoch %d", err, c2.Epoch)
		}
		if c, _ := b.ReadClaim(ctx, key); c.NextOffset != 3 || c.NextSeq != 4 {
			t.Fatalf("claim moved by a fenced commit: %+v", c)
		}
	})

	t.Run("a failed commit changes nothing", func(t *testing.T) {
		b, r := newBackend(t)
		c, _ := b.Claim(ctx, key, "A")
		got, err := b.Commit(ctx, &txn.Batch{Claim: c, NextOffset: 1, Events: []eventsource.StoredEvent{ev(c, 0, "a", 1, "c0")},
			Results: []txn.CommandResult{res(c, 0, "c0", txn.OutcomeAccepted)}})
		if err != nil {
			t.Fatal(err)
		}
		c = advance(c, got)
		// A duplicate command id (for the same aggregate type).
		_, err = b.Commit(ctx, &txn.Batch{Claim: c, NextOffset: 2, Events: []eventsource.StoredEvent{ev(c, 0, "a", 2, "c0")},
			Results: []txn.CommandResult{res(c, 0, "c0", txn.OutcomeAccepted)}})
		if !errors.Is(err, txn.ErrDuplicateCommand) {
			t.Fatalf("duplicate command id: %v", err)
		}
		// A version someone else took.
		_, err = b.Commit(ctx, &txn.Batch{Claim: c, NextOffset: 2, Events: []eventsource.StoredEvent{ev(c, 0, "a", 1, "c1")},
			Results: []txn.CommandResult{res(c, 0, "c1", txn.OutcomeAccepted)}})
		if !errors.Is(err, eventsource.ErrConcurrencyConflict) {
			t.Fatalf("taken version: %v, want ErrConcurrencyConflict", err)
		}
		// A malformed batch.
		if _, err := b.Commit(ctx, &txn.Batch{Claim: c, NextOffset: c.NextOffset}); !errors.Is(err, txn.ErrInvalidBatch) {
			t.Fatalf("batch that consumes nothing: %v, want ErrInvalidBatch", err)
		}
		if cl, _ := b.ReadClaim(ctx, key); cl.NextOffset != 1 || cl.NextSeq != 2 {
			t.Fatalf("claim after failed commits: %+v", cl)
		}
		if evs, _ := r.ReadPartition(ctx, key.Topic, key.Partition, 1, 10); len(evs) != 1 {
			t.Fatalf("%d events after failed commits, want 1", len(evs))
		}
		if w, err := r.Written(ctx, "T", map[string]int64{"a": 1, "b": 1}); err != nil || !slices.Equal(w, []string{"a"}) {
			t.Fatalf("Written = %v %v, want [a]", w, err)
		}
	})

	t.Run("a new claim row continues the partition's seq", func(t *testing.T) {
		b, _ := newBackend(t)
		c, _ := b.Claim(ctx, key, "A")
		if _, err := b.Commit(ctx, &txn.Batch{Claim: c, NextOffset: 1, Events: []eventsource.StoredEvent{ev(c, 0, "a", 1, "c0")},
			Results: []txn.CommandResult{res(c, 0, "c0", txn.OutcomeAccepted)}}); err != nil {
			t.Fatal(err)
		}
		other := key
		other.Group = "renamed"
		if c2, err := b.Claim(ctx, other, "A"); err != nil || c2.NextSeq != 2 || c2.NextOffset != 0 {
			t.Fatalf("claim of a new group: %+v %v, want next_seq 2 at offset 0", c2, err)
		}
	})

	t.Run("a consumer's position moves with NextSeq under the fence", func(t *testing.T) {
		b, _ := newBackend(t)
		ck := txn.PartitionKey{Group: "proj", Topic: "cmds.events", Partition: 3}
		c, _ := b.Claim(ctx, ck, "A")
		if c.NextSeq != 1 {
			t.Fatalf("a consumer starts at next_seq %d, want 1", c.NextSeq)
		}
		got, err := b.Commit(ctx, &txn.Batch{Claim: c, NextOffset: 5, NextSeq: 6})
		if err != nil || got.NextSeq != 6 || got.NextOffset != 5 {
			t.Fatalf("consumer commit: %+v %v, want next_seq 6 at offset 5", got, err)
		}
		if _, err := b.Commit(ctx, &txn.Batch{Claim: c, NextOffset: 5, NextSeq: 6}); !errors.Is(err, txn.ErrFenced) {
			t.Fatalf("the same position again from the old claim: %v, want ErrFenced", err)
		}
		c = advance(c, got)
		if _, err := b.Commit(ctx, &txn.Batch{Claim: c, NextOffset: 6, NextSeq: 5}); !errors.Is(err, txn.ErrInvalidBatch) {
			t.Fatalf("a position moving back: %v, want ErrInvalidBatch", err)
		}
		if _, err := b.Commit(ctx, &txn.Batch{Claim: c, NextOffset: 6, NextSeq: 7, Events: []eventsource.StoredEvent{ev(c, 0, "a", 1, "x")}}); !errors.Is(err, txn.ErrInvalidBatch) {
			t.Fatalf("NextSeq with events: %v, want ErrInvalidBatch", err)
		}
		if cur, err := b.ReadClaim(ctx, ck); err != nil || cur.NextSeq != 6 {
			t.Fatalf("claim after the refused batches: %+v %v, want next_seq 6", cur, err)
		}
		// A poison event read from the event store (no record): its dead
		// letter records minus its seq, and only the position moves.
		got, err = b.Commit(ctx, &txn.Batch{Claim: c, NextOffset: 5, NextSeq: 7,
			DeadLetters: []txn.DeadLetter{{Offset: -6, Error: "poison", Value: []byte("x")}}})
		if err != nil || got.NextSeq != 7 || got.NextOffset != 5 {
			t.Fatalf("a dead letter of an event read from the store: %+v %v", got, err)
		}
		c = advance(c, got)
		if _, err := b.Commit(ctx, &txn.Batch{Claim: c, NextOffset: 5, NextSeq: 8,
			DeadLetters: []txn.DeadLetter{{Offset: -3, Error: "poison"}}}); !errors.Is(err, txn.ErrInvalidBatch) {
			t.Fatalf("a store dead letter of a seq outside the batch: %v, want ErrInvalidBatch", err)
		}
	})

	t.Run("outbox records: gap-free seqs under the fence, read back in order", func(t *testing.T) {
		b, _ := newBackend(t)
		c, _ := b.Claim(ctx, key, "A")
		if c.NextOutboxSeq != 1 {
			t.Fatalf("first claim next_outbox_seq %d, want 1", c.NextOutboxSeq)
		}
		out := func(c txn.Claim, i int, dest string) txn.OutboxRecord {
			return txn.OutboxRecord{Seq: c.NextOutboxSeq + int64(i), Topic: dest, Key: []byte("k"), Value: []byte{byte(i)}, Headers: map[string]string{"h": "v"}}
		}
		got, err := b.Commit(ctx, &txn.Batch{Claim: c, NextOffset: 1, Results: []txn.CommandResult{res(c, 0, "c0", txn.OutcomeAccepted)},
			Outbox: []txn.OutboxRecord{out(c, 0, "x"), out(c, 1, "y")}})
		if err != nil || got.NextOutboxSeq != 3 {
			t.Fatalf("commit with outbox: %+v %v", got, err)
		}
		c = advance(c, got)
		c.NextOutboxSeq = got.NextOutboxSeq
		if _, err := b.Commit(ctx, &txn.Batch{Claim: c, NextOffset: 2, Results: []txn.CommandResult{res(c, 0, "c1", txn.OutcomeAccepted)},
			Outbox: []txn.OutboxRecord{out(c, 1, "z")}}); !errors.Is(err, txn.ErrInvalidBatch) {
			t.Fatalf("an outbox seq gap: %v, want ErrInvalidBatch", err)
		}
		stale := c
		stale.NextOutboxSeq = 1
		var fe *txn.FencedError
		if _, err := b.Commit(ctx, &txn.Batch{Claim: stale, NextOffset: 2, Results: []txn.CommandResult{res(c, 0, "c1", txn.OutcomeAccepted)},
			Outbox: []txn.OutboxRecord{out(stale, 0, "z")}}); !errors.As(err, &fe) {
			t.Fatalf("a stale next_outbox_seq: %v, want fenced", err)
		}
		recs, err := b.ReadOutbox(ctx, key, 2, 10)
		if err != nil || len(recs) != 1 || recs[0].Seq != 2 || recs[0].Topic != "y" || recs[0].Value[0] != 1 || recs[0].Headers["h"] != "v" ||
			recs[0].SourceTopic != key.Topic || recs[0].SourcePartition != key.Partition {
			t.Fatalf("ReadOutbox from 2: %+v %v", recs, err)
		}
		// Outbox sequences belong to the claim key: another group on the
		// same topic (a second consumer of a history topic) has its own.
		other := key
		other.Group = "other"
		c2, _ := b.Claim(ctx, other, "A")
		if c2.NextOutboxSeq != 1 {
			t.Fatalf("another group's next_outbox_seq %d, want 1 (its own sequence)", c2.NextOutboxSeq)
		}
		if _, err := b.Commit(ctx, &txn.Batch{Claim: c2, NextOffset: 1, Outbox: []txn.OutboxRecord{out(c2, 0, "w")}}); err != nil {
			t.Fatalf("another group's outbox seq 1 beside this group's: %v", err)
		}
		if recs, err := b.ReadOutbox(ctx, other, 1, 10); err != nil || len(recs) != 1 || recs[0].Topic != "w" {
			t.Fatalf("ReadOutbox of the other group: %+v %v", recs, err)
		}
		if c3, _ := b.Claim(ctx, key, "B"); c3.NextOutboxSeq != 3 {
			t.Fatalf("a new claim of the group continues its outbox seq: %d, want 3", c3.NextOutboxSeq)
		}
	})

	t.Run("halts and published positions are fenced", func(t *testing.T) {
		b, _ := newBackend(t)
		c, _ := b.Claim(ctx, key, "A")
		if err := b.Halt(ctx, key, c.Epoch+1, "x"); !errors.Is(err, txn.ErrFenced) {
			t.Fatalf("Halt by another epoch: %v", err)
		}
		if err := b.Halt(ctx, key, c.Epoch, "boom"); err != nil {
			t.Fatal(err)
		}
		if cl, _ := b.ReadClaim(ctx, key); cl.HaltedAt == nil || cl.HaltReason != "boom" {
			t.Fatalf("halted claim %+v", cl)
		}
		if was, err := b.Resume(ctx, key); err != nil || !was {
			t.Fatalf("Resume %v %v", was, err)
		}
		if was, _ := b.Resume(ctx, key); was {
			t.Fatal("second Resume says it was halted")
		}
		if err := b.MarkPublished(ctx, key, c.Epoch, 5, 2); err != nil {
			t.Fatal(err)
		}
		if err := b.MarkPublished(ctx, key, c.Epoch, 3, 1); err != nil {
			t.Fatal(err)
		}
		if cl, _ := b.ReadClaim(ctx, key); cl.PublishedSeq != 5 || cl.PublishedOutboxSeq != 2 {
			t.Fatalf("published_seq %d / outbox %d, want 5 / 2 (they never move back)", cl.PublishedSeq, cl.PublishedOutboxSeq)
		}
		c2, _ := b.Claim(ctx, key, "B")
		if err := b.MarkPublished(ctx, key, c.Epoch, 9, 9); !errors.Is(err, txn.ErrFenced) {
			t.Fatalf("MarkPublished by a stale epoch: %v", err)
		}
		if c2.HaltedAt != nil || c2.PublishedSeq != 5 {
			t.Fatalf("new claim %+v: want no halt and the published position kept", c2)
		}
	})
}
