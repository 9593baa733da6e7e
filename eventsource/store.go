package eventsource

import (
	"context"
	"errors"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// EventStore reads and writes the onceflow.events and onceflow.snapshots
// tables (created by txn.Migrate).
//
// Writes normally happen inside the runtime's batch transaction through
// AppendTx and PutSnapshotsTx; the unique (aggregate_type, aggregate_id,
// version) constraint is the optimistic concurrency check.
type EventStore struct {
	pool *pgxpool.Pool
}

// NewEventStore returns an EventStore on pool.
func NewEventStore(pool *pgxpool.Pool) *EventStore { return &EventStore{pool: pool} }

// Load returns, for each id that has a snapshot or events, the latest
// snapshot and the events after it in version order. Ids with nothing stored
// are absent from the map. One round trip for all ids. ctx bounds the query.
func (s *EventStore) Load(ctx context.Context, aggregateType string, ids []string) (map[string]Loaded, error) {
	return nil, errors.New("TODO")
}

// ReadAggregate returns an aggregate's events with version >= fromVersion, in
// version order.
func (s *EventStore) ReadAggregate(ctx context.Context, aggregateType, id string, fromVersion int64) ([]StoredEvent, error) {
	return nil, errors.New("TODO")
}

// ReadPartition returns up to limit events of a partition with seq >= fromSeq,
// in seq order. Because seq is gap-free and assigned by the partition's single
// fenced writer, a reader that tails by (partition, seq) never skips an event.
func (s *EventStore) ReadPartition(ctx context.Context, partition int32, fromSeq int64, limit int) ([]StoredEvent, error) {
	return nil, errors.New("TODO")
}

// AppendTx writes events inside tx with COPY. Partition, Seq and Version must
// be set by the caller. A duplicate (aggregate_type, aggregate_id, version)
// returns an error wrapping ErrConcurrencyConflict.
func AppendTx(ctx context.Context, tx pgx.Tx, events []StoredEvent) error {
	return errors.New("TODO")
}

// PutSnapshotsTx upserts snapshots inside tx. At most one snapshot per
// aggregate may be given; an older version never overwrites a newer one.
func PutSnapshotsTx(ctx context.Context, tx pgx.Tx, snaps []Snapshot) error {
	return errors.New("TODO")
}
