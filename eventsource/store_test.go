package eventsource_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/onceflow/onceflow/eventsource"
	"github.com/onceflow/onceflow/internal/testenv"
)

// inTx runs fn in a transaction and commits it.
func inTx(t *testing.T, pool *pgxpool.Pool, fn func(tx pgx.Tx) error) error {
	t.Helper()
	return pgx.BeginFunc(context.Background(), pool, fn)
}

func ev(partition int32, seq int64, agg string, version int64) eventsource.StoredEvent {
	return eventsource.StoredEvent{
		Topic: "t", Partition: partition, Seq: seq, AggregateType: "stock", AggregateID: agg, Version: version,
		Type: "Added", Data: fmt.Appendf(nil, `{"v":%d}`, version), Metadata: []byte("m"), CommandID: fmt.Sprintf("c%d-%d", partition, seq),
	}
}

func TestLoadSnapshotAndLaterEvents(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testenv.Pool(t)
	es := eventsource.NewEventStore(pool)

	// a: events 1..5, snapshot at 3. b: events 1..2, no snapshot.
	// c: snapshot only (events before it archived). other type: same id "a".
	events := []eventsource.StoredEvent{ev(0, 1, "a", 1), ev(0, 2, "a", 2), ev(0, 3, "b", 1), ev(0, 4, "a", 3), ev(0, 5, "a", 4), ev(0, 6, "b", 2), ev(0, 7, "a", 5)}
	other := ev(1, 1, "a", 1)
	other.AggregateType = "order"
	err := inTx(t, pool, func(tx pgx.Tx) error {
		if err := eventsource.AppendTx(ctx, tx, append(events, other)); err != nil {
			return err
		}
		return eventsource.PutSnapshotsTx(ctx, tx, []eventsource.Snapshot{
			{AggregateType: "stock", AggregateID: "a", Version: 3, State: []byte("state@3")},
			{AggregateType: "stock", AggregateID: "c", Version: 7, State: []byte("state@7")},
		})
	})
	if err != nil {
		t.Fatal(err)
	}

	got, err := es.Load(ctx, "stock", []string{"a", "b", "c", "missing"})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 {
		t.Fatalf("Load returned %d aggregates, want 3 (missing ids absent): %v", len(got), got)
	}
	a := got["a"]
	if a.Snapshot == nil || a.Snapshot.Version != 3 || string(a.Snapshot.State) != "state@3" || a.Snapshot.AggregateID != "a" {
		t.Fatalf("a.Snapshot = %+v", a.Snapshot)
	}
	if len(a.Events) != 2 || a.Events[0].Version != 4 || a.Events[1].Version != 5 {
		t.Fatalf("a.Events = %+v, want versions 4, 5", a.Events)
	}
	e := a.Events[0]
	if e.Partition != 0 || e.Seq != 5 || e.Type != "Added" || string(e.Data) != `{"v":4}` || string(e.Metadata) != "m" || e.CommandID != "c0-5" || e.RecordedAt.IsZero() || e.AggregateType != "stock" {
		t.Fatalf("a.Events[0] = %+v", e)
	}
	if b := got["b"]; b.Snapshot != nil || len(b.Events) != 2 || b.Events[0].Version != 1 || b.Events[1].Version != 2 {
		t.Fatalf("b = %+v", b)
	}
	if c := got["c"]; c.Snapshot == nil || c.Snapshot.Version != 7 || len(c.Events) != 0 {
		t.Fatalf("c = %+v", c)
	}

	// Rebuild-level check: aggregate type scopes ids.
	o, err := es.Load(ctx, "order", []string{"a"})
	if err != nil || len(o["a"].Events) != 1 {
		t.Fatalf("Load(order) = %+v, %v", o, err)
	}
	if empty, err := es.Load(ctx, "stock", nil); err != nil || len(empty) != 0 {
		t.Fatalf("Load(no ids) = %v, %v", empty, err)
	}

	from3, err := es.ReadAggregate(ctx, "stock", "a", 3)
	if err != nil || len(from3) != 3 || from3[0].Version != 3 || from3[2].Version != 5 {
		t.Fatalf("ReadAggregate(a, 3) = %+v, %v", from3, err)
	}
}

func TestReadPartitionOrdering(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testenv.Pool(t)
	es := eventsource.NewEventStore(pool)

	// Write two partitions' events in shuffled order: reads come back in
	// seq order regardless of insertion order.
	var events []eventsource.StoredEvent
	versions := map[string]int64{}
	for p := range int32(2) {
		for seq := int64(1); seq <= 50; seq++ {
			agg := fmt.Sprintf("p%d-a%d", p, seq%7)
			versions[agg]++
			events = append(events, ev(p, seq, agg, versions[agg]))
		}
	}
	rand.Shuffle(len(events), func(i, j int) { events[i], events[j] = events[j], events[i] })
	if err := inTx(t, pool, func(tx pgx.Tx) error { return eventsource.AppendTx(ctx, tx, events) }); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		partition int32
		from      int64
		limit     int
		wantFirst int64
		wantN     int
	}{
		{0, 1, 0, 1, 50},
		{1, 1, 10, 1, 10},
		{1, 45, 100, 45, 6},
		{1, 51, 10, 0, 0},
		{5, 1, 10, 0, 0},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("p%d_from%d_limit%d", tt.partition, tt.from, tt.limit), func(t *testing.T) {
			got, err := es.ReadPartition(ctx, "t", tt.partition, tt.from, tt.limit)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != tt.wantN {
				t.Fatalf("got %d events, want %d", len(got), tt.wantN)
			}
			for i, e := range got {
				if e.Partition != tt.partition || e.Seq != tt.wantFirst+int64(i) {
					t.Fatalf("event %d = partition %d seq %d, want partition %d seq %d", i, e.Partition, e.Seq, tt.partition, tt.wantFirst+int64(i))
				}
			}
		})
	}
}

func TestAppendConflicts(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testenv.Pool(t)
	if err := inTx(t, pool, func(tx pgx.Tx) error {
		return eventsource.AppendTx(ctx, tx, []eventsource.StoredEvent{ev(0, 1, "a", 1)})
	}); err != nil {
		t.Fatal(err)
	}
	// Same aggregate version, new seq: an optimistic concurrency conflict.
	err := inTx(t, pool, func(tx pgx.Tx) error {
		return eventsource.AppendTx(ctx, tx, []eventsource.StoredEvent{ev(0, 2, "a", 1)})
	})
	if !errors.Is(err, eventsource.ErrConcurrencyConflict) {
		t.Fatalf("duplicate version: %v, want ErrConcurrencyConflict", err)
	}
	// Same seq, new version: not a concurrency conflict but a broken seq.
	err = inTx(t, pool, func(tx pgx.Tx) error {
		return eventsource.AppendTx(ctx, tx, []eventsource.StoredEvent{ev(0, 1, "a", 2)})
	})
	if err == nil || errors.Is(err, eventsource.ErrConcurrencyConflict) {
		t.Fatalf("duplicate seq: %v, want a non-conflict error", err)
	}
}

func TestPutSnapshotsNeverGoesBack(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testenv.Pool(t)
	es := eventsource.NewEventStore(pool)
	put := func(version int64) error {
		return inTx(t, pool, func(tx pgx.Tx) error {
			return eventsource.PutSnapshotsTx(ctx, tx, []eventsource.Snapshot{
				{AggregateType: "stock", AggregateID: "a", Version: version, State: fmt.Appendf(nil, "s%d", version)},
			})
		})
	}
	for _, step := range []struct {
		put, want int64
	}{{5, 5}, {3, 5}, {5, 5}, {7, 7}} {
		if err := put(step.put); err != nil {
			t.Fatal(err)
		}
		got, err := es.Load(ctx, "stock", []string{"a"})
		if err != nil {
			t.Fatal(err)
		}
		if s := got["a"].Snapshot; s == nil || s.Version != step.want || string(s.State) != fmt.Sprintf("s%d", step.want) {
			t.Fatalf("after putting version %d: snapshot %+v, want version %d", step.put, s, step.want)
		}
	}
	err := inTx(t, pool, func(tx pgx.Tx) error {
		s := eventsource.Snapshot{AggregateType: "stock", AggregateID: "b", Version: 1, State: []byte("x")}
		return eventsource.PutSnapshotsTx(ctx, tx, []eventsource.Snapshot{s, s})
	})
	if err == nil {
		t.Fatal("two snapshots of one aggregate in one call: no error")
	}
}
