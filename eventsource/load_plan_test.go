package eventsource_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/onceflow/onceflow/eventsource"
	"github.com/onceflow/onceflow/internal/testenv"
)

// Load reads the rows of the aggregates it is asked for, not every event of
// the aggregate type, also on a table that grew since its last ANALYZE (a
// fresh deployment, a bulk import): with `aggregate_id = ANY($2)` Postgres
// planned a bitmap scan on the aggregate type alone there and filtered the
// whole type's events, once per batch (measured: 180 ms per Load at 300,000
// events, the many-aggregates benchmark at 58% of the few-aggregates one).
func TestLoadTouchesOnlyTheAskedAggregates(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testenv.Pool(t)
	const aggregates = 30_000
	events := make([]eventsource.StoredEvent, aggregates)
	for i := range events {
		events[i] = eventsource.StoredEvent{Topic: "t", Partition: 0, Seq: int64(i + 1), AggregateType: "stock", AggregateID: fmt.Sprintf("SKU-%06d", i),
			Version: 1, Type: "Added", Data: []byte(`{}`), CommandID: fmt.Sprint("c", i)}
	}
	if err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error { return eventsource.AppendTx(ctx, tx, events) }); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for i := range 200 { // half stored, half new: a batch of the benchmark's
		ids = append(ids, fmt.Sprintf("SKU-%06d", aggregates-100+i))
	}
	var plan []byte
	if err := pool.QueryRow(ctx, "EXPLAIN (ANALYZE, FORMAT JSON) "+eventsource.LoadSQL, "stock", ids).Scan(&plan); err != nil {
		t.Fatal(err)
	}
	var root []struct{ Plan planNode }
	if err := json.Unmarshal(plan, &root); err != nil || len(root) != 1 {
		t.Fatalf("plan %s: %v", plan, err)
	}
	if read := root[0].Plan.eventsRead(); read > 10*len(ids) {
		t.Fatalf("Load of %d aggregates read %d rows of the events table (%d events stored):\n%s", len(ids), read, aggregates, plan)
	}
	got, err := eventsource.NewEventStore(pool).Load(ctx, "stock", ids)
	if err != nil || len(got) != 100 {
		t.Fatalf("Load: %d aggregates, %v; want 100", len(got), err)
	}
}

type planNode struct {
	Relation       string     `json:"Relation Name"`
	Rows           float64    `json:"Actual Rows"`
	Loops          float64    `json:"Actual Loops"`
	RemovedFilter  float64    `json:"Rows Removed by Filter"`
	RemovedRecheck float64    `json:"Rows Removed by Index Recheck"`
	Plans          []planNode `json:"Plans"`
}

// eventsRead is the rows the plan's scans of the events table produced or
// threw away.
func (n planNode) eventsRead() int {
	var read float64
	if n.Relation == "events" {
		read += (n.Rows + n.RemovedFilter + n.RemovedRecheck) * n.Loops
	}
	for _, c := range n.Plans {
		read += float64(c.eventsRead())
	}
	return int(read)
}
