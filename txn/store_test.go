package txn_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/onceflow/onceflow/eventsource"
	"github.com/onceflow/onceflow/internal/testenv"
	"github.com/onceflow/onceflow/txn"
	"github.com/onceflow/onceflow/txn/backendtest"
)

var testKey = txn.PartitionKey{Group: "g", Topic: "cmds", Partition: 3}

func newStore(t testing.TB, opts ...txn.Option) *txn.Store {
	t.Helper()
	opts = append([]txn.Option{txn.WithLogger(slog.New(slog.DiscardHandler))}, opts...)
	return txn.NewStore(testenv.Pool(t), opts...)
}

func mustClaim(t testing.TB, s *txn.Store, key txn.PartitionKey, owner string) txn.Claim {
	t.Helper()
	c, err := s.Claim(context.Background(), key, owner)
	if err != nil {
		t.Fatalf("Claim: %v", err)
	}
	return c
}

// batchSpec describes a batch: n commands at consecutive offsets, each
// producing one event for aggregate "a<i % aggs>".
type batchSpec struct {
	commands int
	aggs     int
	idPrefix string
	versions map[string]int64 // aggregate id -> last version; updated
}

// makeBatch builds a valid batch following claim c.
func makeBatch(c txn.Claim, spec batchSpec) *txn.Batch {
	if spec.aggs == 0 {
		spec.aggs = 1
	}
	b := &txn.Batch{Claim: c, NextOffset: c.NextOffset + int64(spec.commands)}
	for i := range spec.commands {
		agg := fmt.Sprintf("a%d", i%spec.aggs)
		spec.versions[agg]++
		v := spec.versions[agg]
		seq := c.NextSeq + int64(i)
		id := fmt.Sprintf("%s-%d", spec.idPrefix, c.NextOffset+int64(i))
		b.Events = append(b.Events, eventsource.StoredEvent{
			Topic: c.Topic, Partition: c.Partition, Seq: seq, AggregateType: "stock", AggregateID: agg,
			Version: v, Type: "Added", Data: []byte(`{"n":1}`), CommandID: id,
		})
		b.Results = append(b.Results, txn.CommandResult{
			CommandID: id, Offset: c.NextOffset + int64(i), AggregateType: "stock", AggregateID: agg,
			Outcome: txn.OutcomeAccepted, FirstVersion: v, LastVersion: v, FirstSeq: seq, LastSeq: seq,
		})
	}
	return b
}

// advance returns the claim a writer holds after a successful commit.
func advance(c txn.Claim, got txn.Committed) txn.Claim {
	c.NextOffset, c.NextSeq = got.NextOffset, got.NextSeq
	return c
}

func countRows(t testing.TB, pool *pgxpool.Pool) map[string]int {
	t.Helper()
	out := map[string]int{}
	for _, tbl := range []string{"events", "snapshots", "command_results", "dead_letters"} {
		var n int
		if err := pool.QueryRow(context.Background(), "SELECT count(*) FROM onceflow."+tbl).Scan(&n); err != nil {
			t.Fatal(err)
		}
		out[tbl] = n
	}
	return out
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-deadline.C:
			t.Fatalf("timed out after %s waiting for %s", d, what)
		case <-tick.C:
		}
	}
}

func TestClaim(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	if _, err := s.ReadClaim(ctx, testKey); !errors.Is(err, txn.ErrNotFound) {
		t.Fatalf("ReadClaim before Claim: %v, want ErrNotFound", err)
	}
	c1 := mustClaim(t, s, testKey, "A")
	if c1.Epoch != 1 || c1.Owner != "A" || c1.NextOffset != 0 || c1.NextSeq != 1 || c1.PartitionKey != testKey || c1.ClaimedAt.IsZero() {
		t.Fatalf("first claim = %+v", c1)
	}
	c2 := mustClaim(t, s, testKey, "B")
	if c2.Epoch != 2 || c2.Owner != "B" {
		t.Fatalf("second claim = %+v", c2)
	}
	got, err := s.ReadClaim(ctx, testKey)
	if err != nil || got.Epoch != 2 || got.Owner != "B" {
		t.Fatalf("ReadClaim = %+v, %v", got, err)
	}

	other := txn.PartitionKey{Group: "h", Topic: "cmds", Partition: 0}
	mustClaim(t, s, other, "C")
	mustClaim(t, s, txn.PartitionKey{Group: "g", Topic: "cmds", Partition: 1}, "A")
	all, err := s.Claims(ctx, "")
	if err != nil || len(all) != 3 {
		t.Fatalf("Claims(all) = %v, %v", all, err)
	}
	g, err := s.Claims(ctx, "g")
	if err != nil || len(g) != 2 || g[0].Partition != 1 || g[1].Partition != 3 {
		t.Fatalf("Claims(g) = %+v, %v", g, err)
	}
	if _, err := s.Claim(ctx, txn.PartitionKey{Topic: "t"}, "x"); err == nil {
		t.Fatal("Claim with an empty group: no error")
	}
}

// A Claim must wait for the previous owner's in-flight batch and then see
// its next_offset: otherwise the new owner would resume from a stale offset
// and the batch would be handled twice.
func TestClaimWaitsForInFlightCommit(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	c := mustClaim(t, s, testKey, "A")
	b := makeBatch(c, batchSpec{commands: 10, idPrefix: "x", versions: map[string]int64{}})
	entered, release := make(chan struct{}), make(chan struct{})
	b.InTx = func(ctx context.Context, tx pgx.Tx) error {
		close(entered)
		<-release
		return nil
	}
	commitErr := make(chan error, 1)
	go func() { _, err := s.Commit(ctx, b); commitErr <- err }()
	<-entered

	type claimed struct {
		c   txn.Claim
		err error
	}
	claimDone := make(chan claimed, 1)
	go func() { c, err := s.Claim(ctx, testKey, "B"); claimDone <- claimed{c, err} }()

	// The Claim is blocked on the claim row's lock held by the commit.
	waitFor(t, "Claim to wait on the claim row lock", 10*time.Second, func() bool {
		var n int
		err := s.Pool().QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%partition_claims%'`).Scan(&n)
		return err == nil && n == 1
	})
	select {
	case r := <-claimDone:
		t.Fatalf("Claim returned while the commit was in flight: %+v", r)
	default:
	}

	close(release)
	if err := <-commitErr; err != nil {
		t.Fatalf("Commit: %v", err)
	}
	r := <-claimDone
	if r.err != nil {
		t.Fatalf("Claim: %v", r.err)
	}
	if r.c.Epoch != 2 || r.c.NextOffset != b.NextOffset || r.c.NextSeq != c.NextSeq+10 {
		t.Fatalf("Claim after commit = %+v, want epoch 2, next_offset %d, next_seq %d", r.c, b.NextOffset, c.NextSeq+10)
	}
}

func TestClaimLockTimeout(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t, txn.WithLockTimeout(100*time.Millisecond))
	mustClaim(t, s, testKey, "A")

	// A stuck previous owner: a transaction holding the claim row.
	holder, err := s.Pool().Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := holder.Exec(ctx, "SELECT 1 FROM onceflow.partition_claims WHERE group_id = $1 FOR UPDATE", testKey.Group); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = s.Claim(ctx, testKey, "B")
	if !errors.Is(err, txn.ErrClaimLockTimeout) {
		t.Fatalf("Claim = %v, want ErrClaimLockTimeout", err)
	}
	if !txn.IsRetryable(err) {
		t.Errorf("IsRetryable(%v) = false", err)
	}
	if !strings.Contains(err.Error(), "cmds[3]") {
		t.Errorf("error does not name the partition: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Claim took %s with a 100ms lock timeout", d)
	}
	if err := holder.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if c := mustClaim(t, s, testKey, "B"); c.Epoch != 2 {
		t.Fatalf("epoch after a timed-out claim and a good one = %d, want 2", c.Epoch)
	}
	// The lock timeout was SET LOCAL: it does not leak into pooled sessions.
	var lt string
	if err := s.Pool().QueryRow(ctx, "SHOW lock_timeout").Scan(&lt); err != nil || lt != "0" {
		t.Fatalf("session lock_timeout = %q (%v), want 0", lt, err)
	}
}

func TestCommitHappyPath(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	es := eventsource.NewEventStore(s.Pool())
	c := mustClaim(t, s, testKey, "A")
	versions := map[string]int64{}
	b := makeBatch(c, batchSpec{commands: 6, aggs: 2, idPrefix: "cmd", versions: versions})
	b.Snapshots = []eventsource.Snapshot{{AggregateType: "stock", AggregateID: "a0", Version: 3, State: []byte("s3")}}
	b.Results = append(b.Results[:5], txn.CommandResult{CommandID: "bad", Offset: 5, AggregateType: "stock", Outcome: txn.OutcomeDeadLettered, Reason: "undecodable"})
	b.Events = b.Events[:5]
	b.DeadLetters = []txn.DeadLetter{{Offset: 5, CommandID: "bad", Value: []byte{0xff}, Error: "undecodable"}}
	inTxRan := false
	b.InTx = func(ctx context.Context, tx pgx.Tx) error {
		inTxRan = true
		var n int
		err := tx.QueryRow(ctx, "SELECT count(*) FROM onceflow.events").Scan(&n)
		if n != 5 {
			return fmt.Errorf("InTx sees %d events, want 5", n)
		}
		return err
	}
	got, err := s.Commit(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	if !inTxRan {
		t.Error("InTx did not run")
	}
	if got != (txn.Committed{NextOffset: 6, NextSeq: 6, NextOutboxSeq: 1}) {
		t.Fatalf("Committed = %+v", got)
	}
	claim, _ := s.ReadClaim(ctx, testKey)
	if claim.NextOffset != 6 || claim.NextSeq != 6 || claim.Epoch != 1 {
		t.Fatalf("claim after commit = %+v", claim)
	}
	if n := countRows(t, s.Pool()); !maps.Equal(n, map[string]int{"events": 5, "snapshots": 1, "command_results": 6, "dead_letters": 1}) {
		t.Fatalf("rows = %v", n)
	}

	res, err := s.LookupResults(ctx, "stock", []string{"cmd-0", "cmd-4", "bad", "never-seen"})
	if err != nil || len(res) != 3 {
		t.Fatalf("LookupResults = %v, %v", res, err)
	}
	r := res["cmd-4"]
	if r.PartitionKey != testKey || r.Offset != 4 || r.Outcome != txn.OutcomeAccepted || r.AggregateID != "a0" || r.FirstVersion != 3 || r.FirstSeq != 5 || r.RecordedAt.IsZero() {
		t.Fatalf("result cmd-4 = %+v", r)
	}
	if r, err := s.Result(ctx, "stock", "bad"); err != nil || r.Outcome != txn.OutcomeDeadLettered || r.Reason != "undecodable" {
		t.Fatalf("Result(bad) = %+v, %v", r, err)
	}
	if _, err := s.Result(ctx, "stock", "never-seen"); !errors.Is(err, txn.ErrNotFound) {
		t.Fatalf("Result(never-seen) = %v, want ErrNotFound", err)
	}

	// Load: a0 has a snapshot at 3 and one later event; a1 only events.
	loaded, err := es.Load(ctx, "stock", []string{"a0", "a1"})
	if err != nil {
		t.Fatal(err)
	}
	if l := loaded["a0"]; l.Snapshot == nil || l.Snapshot.Version != 3 || len(l.Events) != 0 {
		t.Fatalf("a0 = %+v", l)
	}
	if l := loaded["a1"]; l.Snapshot != nil || len(l.Events) != 2 {
		t.Fatalf("a1 = %+v", l)
	}

	// The next batch continues from the committed position.
	b2 := makeBatch(advance(c, got), batchSpec{commands: 3, aggs: 2, idPrefix: "cmd", versions: versions})
	got2, err := s.Commit(ctx, b2)
	if err != nil {
		t.Fatal(err)
	}
	if got2 != (txn.Committed{NextOffset: 9, NextSeq: 9, NextOutboxSeq: 1}) {
		t.Fatalf("second Committed = %+v", got2)
	}
	evs, err := es.ReadPartition(ctx, testKey.Topic, testKey.Partition, 1, 0)
	if err != nil || len(evs) != 8 {
		t.Fatalf("ReadPartition = %d events, %v", len(evs), err)
	}
	for i, e := range evs {
		if e.Seq != int64(i+1) {
			t.Fatalf("event %d has seq %d", i, e.Seq)
		}
	}
}

func TestCommitEmptyBatchMovesOffset(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	c := mustClaim(t, s, testKey, "A")
	got, err := s.Commit(ctx, &txn.Batch{Claim: c, NextOffset: 100})
	if err != nil || got != (txn.Committed{NextOffset: 100, NextSeq: 1, NextOutboxSeq: 1}) {
		t.Fatalf("Commit = %+v, %v", got, err)
	}
}

func TestCommitFencedByNewerEpoch(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	old := mustClaim(t, s, testKey, "A")
	b := makeBatch(old, batchSpec{commands: 4, idPrefix: "c", versions: map[string]int64{}})
	b.Snapshots = []eventsource.Snapshot{{AggregateType: "stock", AggregateID: "a0", Version: 4, State: []byte("x")}}
	b.DeadLetters = []txn.DeadLetter{{Offset: 1, Error: "boom"}}
	inTx := false
	b.InTx = func(context.Context, pgx.Tx) error { inTx = true; return nil }
	mustClaim(t, s, testKey, "B")

	_, err := s.Commit(ctx, b)
	var fe *txn.FencedError
	if !errors.As(err, &fe) || !errors.Is(err, txn.ErrFenced) {
		t.Fatalf("Commit = %v, want *FencedError", err)
	}
	if fe.Key != testKey || fe.Epoch != 1 || fe.ExpectedOffset != 0 || fe.ExpectedSeq != 1 ||
		fe.Current.Epoch != 2 || fe.Current.Owner != "B" || fe.Current.NextOffset != 0 || fe.SelfFenced() {
		t.Fatalf("FencedError = %+v", fe)
	}
	if txn.IsRetryable(err) {
		t.Error("a fence is retryable")
	}
	if inTx {
		t.Error("InTx ran for a fenced batch")
	}
	if n := countRows(t, s.Pool()); !maps.Equal(n, map[string]int{"events": 0, "snapshots": 0, "command_results": 0, "dead_letters": 0}) {
		t.Fatalf("a fenced commit wrote rows: %v", n)
	}
}

func TestCommitSelfFenced(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	c := mustClaim(t, s, testKey, "A")
	b := makeBatch(c, batchSpec{commands: 5, aggs: 2, idPrefix: "c", versions: map[string]int64{}})
	if _, err := s.Commit(ctx, b); err != nil {
		t.Fatal(err)
	}
	before := countRows(t, s.Pool())

	// A replay of the same batch (its acknowledgement was lost).
	_, err := s.Commit(ctx, b)
	var fe *txn.FencedError
	if !errors.As(err, &fe) {
		t.Fatalf("replay = %v, want *FencedError", err)
	}
	if !fe.SelfFenced() || fe.Current.NextOffset != 5 || fe.Current.NextSeq != 6 {
		t.Fatalf("FencedError = %+v, want self-fenced at offset 5 seq 6", fe)
	}
	if after := countRows(t, s.Pool()); !maps.Equal(before, after) {
		t.Fatalf("replay changed rows: %v -> %v", before, after)
	}
}

func TestCommitInvalidBatch(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	c := mustClaim(t, s, testKey, "A")
	valid := func() *txn.Batch {
		return makeBatch(c, batchSpec{commands: 3, aggs: 1, idPrefix: "c", versions: map[string]int64{}})
	}
	tests := []struct {
		name   string
		mutate func(b *txn.Batch)
		want   string
	}{
		{"offset not advancing", func(b *txn.Batch) { b.NextOffset = c.NextOffset }, "NextOffset 0 must be greater"},
		{"zero epoch", func(b *txn.Batch) { b.Claim.Epoch = 0 }, "epoch 0"},
		{"no group", func(b *txn.Batch) { b.Claim.Group = "" }, "group is empty"},
		{"seq gap", func(b *txn.Batch) { b.Events[1].Seq++ }, "event 1: seq 3, want 2"},
		{"seq not from claim", func(b *txn.Batch) {
			for i := range b.Events {
				b.Events[i].Seq += 10
			}
		}, "event 0: seq 11, want 1"},
		{"wrong partition", func(b *txn.Batch) { b.Events[2].Partition = 7 }, "event 2: partition 7, want the claim's partition 3"},
		{"version gap", func(b *txn.Batch) { b.Events[2].Version = 9 }, "version 9 follows version 2"},
		{"version zero", func(b *txn.Batch) { b.Events[0].Version = 0 }, "versions start at 1"},
		{"empty aggregate id", func(b *txn.Batch) { b.Events[0].AggregateID = "" }, "aggregate id is empty"},
		{"invalid utf8 id", func(b *txn.Batch) { b.Events[0].AggregateID = "a\xff" }, "not valid UTF-8"},
		{"two snapshots", func(b *txn.Batch) {
			s := eventsource.Snapshot{AggregateType: "stock", AggregateID: "a0", Version: 1, State: []byte("x")}
			b.Snapshots = []eventsource.Snapshot{s, s}
		}, "second snapshot of stock/a0"},
		{"duplicate command id", func(b *txn.Batch) { b.Results[1].CommandID = b.Results[0].CommandID }, "appears twice"},
		{"result offset outside", func(b *txn.Batch) { b.Results[0].Offset = 3 }, "offset 3 outside the batch's offsets [0, 3)"},
		{"result other partition", func(b *txn.Batch) { b.Results[0].Partition = 9 }, "differs from the claim's"},
		{"unknown outcome", func(b *txn.Batch) { b.Results[0].Outcome = "maybe" }, `unknown outcome "maybe"`},
		{"command id with NUL", func(b *txn.Batch) { b.Results[0].CommandID = "a\x00b" }, "NUL"},
		{"dead letter without error", func(b *txn.Batch) { b.DeadLetters = []txn.DeadLetter{{Offset: 1}} }, "Error is empty"},
		{"dead letter twice", func(b *txn.Batch) {
			b.DeadLetters = []txn.DeadLetter{{Offset: 1, Error: "x"}, {Offset: 1, Error: "y"}}
		}, "second dead letter for offset 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := valid()
			tt.mutate(b)
			_, err := s.Commit(ctx, b)
			if !errors.Is(err, txn.ErrInvalidBatch) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Commit = %v\nwant ErrInvalidBatch containing %q", err, tt.want)
			}
			if txn.IsRetryable(err) {
				t.Error("an invalid batch is retryable")
			}
		})
	}
	if _, err := s.Commit(ctx, nil); !errors.Is(err, txn.ErrInvalidBatch) {
		t.Fatalf("Commit(nil) = %v", err)
	}
	if _, err := s.Commit(ctx, valid()); err != nil {
		t.Fatalf("the valid batch: %v", err)
	}
}

func TestCommitConcurrencyConflict(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	c := mustClaim(t, s, testKey, "A")
	got, err := s.Commit(ctx, makeBatch(c, batchSpec{commands: 2, idPrefix: "c", versions: map[string]int64{}}))
	if err != nil {
		t.Fatal(err)
	}
	// Versions restart at 1: a1 v1 already exists.
	c = advance(c, got)
	_, err = s.Commit(ctx, makeBatch(c, batchSpec{commands: 2, idPrefix: "d", versions: map[string]int64{}}))
	if !errors.Is(err, eventsource.ErrConcurrencyConflict) {
		t.Fatalf("Commit = %v, want ErrConcurrencyConflict", err)
	}
	if txn.IsRetryable(err) {
		t.Error("a concurrency conflict is retryable")
	}
	if cl, _ := s.ReadClaim(ctx, testKey); cl.NextOffset != 2 || cl.NextSeq != 3 {
		t.Fatalf("claim moved after a failed commit: %+v", cl)
	}
}

func TestCommitDuplicateCommand(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	c := mustClaim(t, s, testKey, "A")
	got, err := s.Commit(ctx, &txn.Batch{Claim: c, NextOffset: 1, Results: []txn.CommandResult{{CommandID: "dup", Offset: 0, Outcome: txn.OutcomeRejected, Reason: "no"}}})
	if err != nil {
		t.Fatal(err)
	}
	// The same id handled again on another partition (sent twice).
	other := mustClaim(t, s, txn.PartitionKey{Group: "g", Topic: "cmds", Partition: 4}, "A")
	for _, b := range []*txn.Batch{
		{Claim: advance(c, got), NextOffset: 2, Results: []txn.CommandResult{{CommandID: "dup", Offset: 1, Outcome: txn.OutcomeRejected}}},
		{Claim: other, NextOffset: 1, Results: []txn.CommandResult{{CommandID: "dup", Offset: 0, Outcome: txn.OutcomeRejected}}},
	} {
		_, err := s.Commit(ctx, b)
		if !errors.Is(err, txn.ErrDuplicateCommand) || errors.Is(err, eventsource.ErrConcurrencyConflict) {
			t.Fatalf("Commit = %v, want ErrDuplicateCommand", err)
		}
		if !strings.Contains(err.Error(), "dup") {
			t.Errorf("error does not name the command id: %v", err)
		}
		if cl, _ := s.ReadClaim(ctx, b.Claim.PartitionKey); cl.NextOffset != b.Claim.NextOffset {
			t.Fatalf("claim moved after a failed commit: %+v", cl)
		}
	}
}

func TestCommitInTxErrorRollsBack(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	c := mustClaim(t, s, testKey, "A")
	b := makeBatch(c, batchSpec{commands: 3, idPrefix: "c", versions: map[string]int64{}})
	boom := errors.New("read model rejected")
	b.InTx = func(context.Context, pgx.Tx) error { return boom }
	if _, err := s.Commit(ctx, b); !errors.Is(err, boom) {
		t.Fatalf("Commit = %v, want the InTx error", err)
	}
	if n := countRows(t, s.Pool()); n["events"]+n["command_results"] != 0 {
		t.Fatalf("rows after rollback: %v", n)
	}
	if cl, _ := s.ReadClaim(ctx, testKey); cl.NextOffset != 0 {
		t.Fatalf("claim moved: %+v", cl)
	}
}

func TestDeadLettersRoundTrip(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	c := mustClaim(t, s, testKey, "A")
	raw := []byte{0xff, 0xfe, 0x00, 'x', 0xc3} // invalid UTF-8 and a NUL
	b := &txn.Batch{Claim: c, NextOffset: 3, DeadLetters: []txn.DeadLetter{
		{Offset: 0, CommandID: "c0", Key: []byte("k0"), Value: raw, Headers: map[string]string{"type": "Add", "trace": "abc"}, Error: "decode: bad json"},
		{Offset: 2, Value: nil, Headers: map[string]string{"bin": "a\xffb\x00c"}, Error: "panic: \xff"},
	}}
	if _, err := s.Commit(ctx, b); err != nil {
		t.Fatal(err)
	}
	other := mustClaim(t, s, txn.PartitionKey{Group: "h", Topic: "other", Partition: 0}, "A")
	if _, err := s.Commit(ctx, &txn.Batch{Claim: other, NextOffset: 1, DeadLetters: []txn.DeadLetter{{Offset: 0, Error: "x"}}}); err != nil {
		t.Fatal(err)
	}

	dls, err := s.DeadLetters(ctx, txn.DeadLetterQuery{Group: "g"})
	if err != nil || len(dls) != 2 {
		t.Fatalf("DeadLetters(g) = %+v, %v", dls, err)
	}
	d := dls[0]
	if d.PartitionKey != testKey || d.Offset != 0 || d.CommandID != "c0" || string(d.Key) != "k0" ||
		string(d.Value) != string(raw) || !maps.Equal(d.Headers, map[string]string{"type": "Add", "trace": "abc"}) ||
		d.Error != "decode: bad json" || d.RecordedAt.IsZero() || d.ID == 0 {
		t.Fatalf("dead letter 0 = %+v", d)
	}
	if d := dls[1]; d.Value != nil || d.Headers["bin"] != "a\uFFFDb\uFFFDc" || d.Error != "panic: \uFFFD" {
		t.Fatalf("dead letter 1 = %+v (invalid text must be replaced, not fail the batch)", d)
	}

	all, _ := s.DeadLetters(ctx, txn.DeadLetterQuery{})
	if len(all) != 3 {
		t.Fatalf("DeadLetters(all) = %d", len(all))
	}
	page, _ := s.DeadLetters(ctx, txn.DeadLetterQuery{AfterID: all[0].ID, Limit: 1})
	if len(page) != 1 || page[0].ID != all[1].ID {
		t.Fatalf("page after %d = %+v", all[0].ID, page)
	}
	if byTopic, _ := s.DeadLetters(ctx, txn.DeadLetterQuery{Topic: "other"}); len(byTopic) != 1 || byTopic[0].Group != "h" {
		t.Fatalf("DeadLetters(topic other) = %+v", byTopic)
	}
}

// A new group on a topic that already has events (a renamed consumer
// group) continues the partition's seq instead of colliding with it; other
// topics and partitions keep their own sequences.
func TestClaimNewGroupContinuesSeq(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	c := mustClaim(t, s, testKey, "A")
	got, err := s.Commit(ctx, makeBatch(c, batchSpec{commands: 3, idPrefix: "old", versions: map[string]int64{}}))
	if err != nil || got.NextSeq != 4 {
		t.Fatalf("Commit = %+v, %v", got, err)
	}
	renamed := testKey
	renamed.Group = "g-renamed"
	if c2 := mustClaim(t, s, renamed, "B"); c2.NextSeq != 4 || c2.NextOffset != 0 {
		t.Fatalf("claim of the renamed group: next_seq %d next_offset %d, want 4 and 0", c2.NextSeq, c2.NextOffset)
	}
	otherTopic := testKey
	otherTopic.Topic = "other-cmds"
	if c3 := mustClaim(t, s, otherTopic, "B"); c3.NextSeq != 1 {
		t.Fatalf("claim on another topic: next_seq %d, want 1", c3.NextSeq)
	}
}

// Command ids are scoped to the aggregate type: the same id sent to an
// account and to a transfer is two commands, each with its own result and
// request digest; a lookup for one type never answers with the other's.
func TestCommandIDsAreScopedToTheAggregateType(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	acc := mustClaim(t, s, txn.PartitionKey{Group: "g", Topic: "accounts", Partition: 0}, "A")
	trf := mustClaim(t, s, txn.PartitionKey{Group: "g", Topic: "transfers", Partition: 0}, "A")
	for _, b := range []*txn.Batch{
		{Claim: acc, NextOffset: 1, Results: []txn.CommandResult{{CommandID: "42", Offset: 0, AggregateType: "account", AggregateID: "a", Outcome: txn.OutcomeRejected, Reason: "closed", RequestHash: []byte{1}}}},
		{Claim: trf, NextOffset: 1, Results: []txn.CommandResult{{CommandID: "42", Offset: 0, AggregateType: "transfer", AggregateID: "t", Outcome: txn.OutcomeAccepted, RequestHash: []byte{2}}}},
	} {
		if _, err := s.Commit(ctx, b); err != nil {
			t.Fatalf("commit of id 42 for %s: %v (the same id for another aggregate type must not be a duplicate)", b.Results[0].AggregateType, err)
		}
	}
	for typ, want := range map[string]txn.Outcome{"account": txn.OutcomeRejected, "transfer": txn.OutcomeAccepted} {
		res, err := s.LookupResults(ctx, typ, []string{"42"})
		if err != nil || res["42"].Outcome != want || res["42"].AggregateType != typ {
			t.Fatalf("LookupResults(%s) = %+v, %v; want %s", typ, res, err, want)
		}
		r, err := s.Result(ctx, typ, "42")
		if err != nil || r.Outcome != want {
			t.Fatalf("Result(%s) = %+v, %v", typ, r, err)
		}
	}
	if r, err := s.TopicResult(ctx, "transfers", "42"); err != nil || r.AggregateType != "transfer" || !bytes.Equal(r.RequestHash, []byte{2}) {
		t.Fatalf("TopicResult(transfers) = %+v, %v", r, err)
	}
	if rs, err := s.ResultsByCommandID(ctx, "42"); err != nil || len(rs) != 2 {
		t.Fatalf("ResultsByCommandID = %+v, %v", rs, err)
	}
	if _, err := s.Result(ctx, "ledger", "42"); !errors.Is(err, txn.ErrNotFound) {
		t.Fatalf("Result(ledger) = %v, want ErrNotFound", err)
	}
	// Within one aggregate type the id stays unique.
	_, err := s.Commit(ctx, &txn.Batch{Claim: advance(acc, txn.Committed{NextOffset: 1, NextSeq: 1}), NextOffset: 2,
		Results: []txn.CommandResult{{CommandID: "42", Offset: 1, AggregateType: "account", Outcome: txn.OutcomeRejected}}})
	if !errors.Is(err, txn.ErrDuplicateCommand) {
		t.Fatalf("second result for account/42: %v, want ErrDuplicateCommand", err)
	}
}

func TestHaltAndResume(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	c := mustClaim(t, s, testKey, "A")
	if err := s.Halt(ctx, testKey, c.Epoch+1, "stale"); !errors.Is(err, txn.ErrFenced) {
		t.Fatalf("Halt by a stale epoch = %v, want ErrFenced", err)
	}
	if err := s.Halt(ctx, testKey, c.Epoch, "offset 7: boom"); err != nil {
		t.Fatal(err)
	}
	cl, _ := s.ReadClaim(ctx, testKey)
	if cl.HaltedAt == nil || cl.HaltReason != "offset 7: boom" {
		t.Fatalf("claim after Halt = %+v", cl)
	}
	if was, err := s.Resume(ctx, testKey); err != nil || !was {
		t.Fatalf("Resume = %v, %v", was, err)
	}
	if cl, _ := s.ReadClaim(ctx, testKey); cl.HaltedAt != nil || cl.HaltReason != "" || cl.Epoch != c.Epoch {
		t.Fatalf("claim after Resume = %+v", cl)
	}
	if was, err := s.Resume(ctx, testKey); err != nil || was {
		t.Fatalf("second Resume = %v, %v (want not halted)", was, err)
	}
	if _, err := s.Resume(ctx, txn.PartitionKey{Group: "g", Topic: "none", Partition: 0}); !errors.Is(err, txn.ErrNotFound) {
		t.Fatalf("Resume of a missing claim = %v", err)
	}
	// A new claim clears a halt.
	_ = s.Halt(ctx, testKey, c.Epoch, "again")
	if c2 := mustClaim(t, s, testKey, "B"); c2.HaltedAt != nil || c2.HaltReason != "" {
		t.Fatalf("new claim kept the halt: %+v", c2)
	}
}

// The Postgres store meets the same Backend contract as the in-memory one.
func TestBackendContract(t *testing.T) {
	backendtest.Run(t, func(t *testing.T) (txn.Backend, eventsource.Reader) {
		s := newStore(t)
		return s, eventsource.NewEventStore(s.Pool())
	})
}

// The same contract in another schema: onceflow's tables can live in any
// schema, and two schemas in one database do not see each other.
func TestBackendContractInAnotherSchema(t *testing.T) {
	backendtest.Run(t, func(t *testing.T) (txn.Backend, eventsource.Reader) {
		pool := testenv.Pool(t)
		if _, err := txn.Migrate(context.Background(), pool, txn.InSchema("tenant_a")); err != nil {
			t.Fatal(err)
		}
		s := txn.NewStore(pool, txn.WithSchema("tenant_a"), txn.WithLogger(slog.New(slog.DiscardHandler)))
		return s, eventsource.NewEventStore(pool, eventsource.WithSchema("tenant_a"))
	})
	ctx := context.Background()
	pool := testenv.Pool(t)
	if _, err := txn.Migrate(ctx, pool, txn.InSchema("tenant_b")); err != nil {
		t.Fatal(err)
	}
	a, b := txn.NewStore(pool), txn.NewStore(pool, txn.WithSchema("tenant_b"))
	ca, _ := a.Claim(ctx, testKey, "A")
	if _, err := a.Commit(ctx, &txn.Batch{Claim: ca, NextOffset: 1, Results: []txn.CommandResult{{CommandID: "x", Offset: 0, AggregateType: "T", Outcome: txn.OutcomeRejected}}}); err != nil {
		t.Fatal(err)
	}
	if r, _ := b.LookupResults(ctx, "T", []string{"x"}); len(r) != 0 {
		t.Fatal("a result of the onceflow schema is visible in tenant_b")
	}
	if _, err := b.ReadClaim(ctx, testKey); !errors.Is(err, txn.ErrNotFound) {
		t.Fatalf("tenant_b sees the onceflow schema's claim: %v", err)
	}
	if _, err := txn.Migrate(ctx, pool, txn.InSchema("Bad-Name")); err == nil || !strings.Contains(err.Error(), "schema name") {
		t.Fatalf("Migrate in a bad schema name: %v", err)
	}
	if _, err := txn.NewStore(pool, txn.WithSchema("1x")).Claim(ctx, testKey, "A"); err == nil || !strings.Contains(err.Error(), "schema name") {
		t.Fatalf("Claim with a bad schema name: %v", err)
	}
}

// A consumer replaying its topic after an operator's reset (projection.Store
// .Reset moves next_offset back) meets the records it dead-lettered before:
// the commit keeps the one dead letter of each offset instead of failing on
// the unique key and halting the partition.
func TestDeadLetterOfAReplayedRecordIsKeptOnce(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	key := txn.PartitionKey{Group: "onceflow.projection.p.v1", Topic: "cmds.events", Partition: 0}
	c, err := s.Claim(ctx, key, "a")
	if err != nil {
		t.Fatal(err)
	}
	dl := txn.DeadLetter{Offset: 0, Error: "misrouted: an event of another partition", Value: []byte("x")}
	if _, err := s.Commit(ctx, &txn.Batch{Claim: c, NextOffset: 1, NextSeq: 1, DeadLetters: []txn.DeadLetter{dl}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Pool().Exec(ctx, `UPDATE onceflow.partition_claims SET next_offset = 0 WHERE group_id = $1`, key.Group); err != nil {
		t.Fatal(err)
	}
	c, err = s.Claim(ctx, key, "a")
	if err != nil || c.NextOffset != 0 {
		t.Fatalf("reclaim after the reset: %+v %v", c, err)
	}
	if _, err := s.Commit(ctx, &txn.Batch{Claim: c, NextOffset: 1, NextSeq: 1, DeadLetters: []txn.DeadLetter{dl}}); err != nil {
		t.Fatalf("the replayed record's dead letter: %v", err)
	}
	dls, err := s.DeadLetters(ctx, txn.DeadLetterQuery{Group: key.Group})
	if err != nil || len(dls) != 1 {
		t.Fatalf("dead letters after the replay: %d %v, want 1", len(dls), err)
	}
}

// A deadline fires once, by its partition's owner, only while due: one a
// handler moved later (or to another partition) after the owner read it as
// due is not fired by the stale read; a cancelled one is not fired at all.
func TestDeadlinesFireOnlyWhileDueAndOwned(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	a := txn.PartitionKey{Group: "onceflow.process.p.src", Topic: "src.events", Partition: 0}
	b := a
	b.Partition = 1
	now := time.Now()
	tx := func(f func(tx pgx.Tx) error) {
		t.Helper()
		if err := pgx.BeginFunc(ctx, s.Pool(), f); err != nil {
			t.Fatal(err)
		}
	}
	tx(func(tx pgx.Tx) error {
		for _, id := range []string{"d1", "d2", "d3"} {
			if err := txn.ScheduleTx(ctx, tx, "onceflow", txn.Deadline{Process: "p", ID: id, Key: a, DueAt: now.Add(-time.Second), Payload: []byte(id)}); err != nil {
				return err
			}
		}
		return nil
	})
	due, err := s.DueDeadlines(ctx, "p", a, now, 10)
	if err != nil || len(due) != 3 {
		t.Fatalf("due %+v %v", due, err)
	}
	tx(func(tx pgx.Tx) error {
		// After the owner read them: d1 moved an hour later, d2 moved to
		// partition 1, d3 cancelled.
		if err := txn.ScheduleTx(ctx, tx, "onceflow", txn.Deadline{Process: "p", ID: "d1", Key: a, DueAt: now.Add(time.Hour)}); err != nil {
			return err
		}
		if err := txn.ScheduleTx(ctx, tx, "onceflow", txn.Deadline{Process: "p", ID: "d2", Key: b, DueAt: now.Add(-time.Second)}); err != nil {
			return err
		}
		_, err := txn.CancelTx(ctx, tx, "onceflow", "p", "d3")
		return err
	})
	tx(func(tx pgx.Tx) error {
		fired, err := txn.FireTx(ctx, tx, "onceflow", "p", a, now, []string{"d1", "d2", "d3"})
		if err != nil || len(fired) != 0 {
			t.Errorf("stale fire on partition 0: %+v %v, want none", fired, err)
		}
		fired, err = txn.FireTx(ctx, tx, "onceflow", "p", b, now, []string{"d2"})
		if err != nil || len(fired) != 1 || string(fired[0].Payload) != "" {
			t.Errorf("fire of d2 by partition 1: %+v %v, want d2", fired, err)
		}
		fired, err = txn.FireTx(ctx, tx, "onceflow", "p", b, now, []string{"d2"})
		if err != nil || len(fired) != 0 {
			t.Errorf("d2 fired twice: %+v %v", fired, err)
		}
		return nil
	})
}
