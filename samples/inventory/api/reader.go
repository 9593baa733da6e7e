package api

import (
	"context"

	"github.com/onceflow/onceflow/eventsource"
	"github.com/onceflow/onceflow/samples/inventory/stock"
)

// StoreReader is the Reader backed by the Postgres event store: it rebuilds
// the aggregate from its latest snapshot and the events after it. It reads
// only committed state; a command answered 200 is visible to the next Load
// because the runtime replies only after its batch committed.
type StoreReader struct {
	agg   *eventsource.Aggregate[stock.State, stock.Command, stock.Event]
	store *eventsource.EventStore
}

// NewStoreReader returns a StoreReader.
func NewStoreReader(agg *eventsource.Aggregate[stock.State, stock.Command, stock.Event], store *eventsource.EventStore) *StoreReader {
	return &StoreReader{agg: agg, store: store}
}

// Load implements Reader. ctx bounds the query.
func (r *StoreReader) Load(ctx context.Context, warehouse, sku string) (stock.State, int64, error) {
	return r.agg.Load(ctx, r.store, stock.AggregateID(warehouse, sku))
}
