package eventsource

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/onceflow/onceflow/internal/pgschema"
)

// Constraint names from txn/migrations; violations are mapped to errors.
const (
	constraintEventVersion = "events_aggregate_version_key"
	constraintEventSeq     = "events_topic_partition_seq_pkey"
)

// defaultReadLimit is ReadPartition's limit when none is given.
const defaultReadLimit = 1000

// EventStore reads and writes the onceflow.events and onceflow.snapshots
// tables (created by txn.Migrate).
//
// Writes normally happen inside the runtime's batch transaction through
// AppendTx and PutSnapshotsTx; the unique (aggregate_type, aggregate_id,
// version) constraint is the optimistic concurrency check.
//
// Reads run at READ COMMITTED, each in one statement, so each sees one
// consistent snapshot of the database: a batch's events are seen all or none.
type EventStore struct {
	db interface {
		Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	}
	schema string
}

// StoreOption configures an EventStore.
type StoreOption func(*EventStore)

// WithSchema sets the Postgres schema of the tables (default "onceflow";
// migrate it with txn.Migrate(ctx, pool, txn.InSchema(name))): 1-63
// characters of [a-z0-9_], not starting with a digit; another name makes
// every call fail with an error naming it.
func WithSchema(name string) StoreOption { return func(s *EventStore) { s.schema = name } }

// NewEventStore returns an EventStore on pool.
func NewEventStore(pool *pgxpool.Pool, opts ...StoreOption) *EventStore {
	s := &EventStore{db: pool, schema: pgschema.Default}
	for _, o := range opts {
		o(s)
	}
	return s
}

func (s *EventStore) query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	q, err := s.q(sql)
	if err != nil {
		return nil, err
	}
	return s.db.Query(ctx, q, args...)
}

// q points sql at the store's schema.
func (s *EventStore) q(sql string) (string, error) {
	if err := pgschema.Check(s.schema); err != nil {
		return "", fmt.Errorf("eventsource: %w", err)
	}
	return pgschema.Rewrite(s.schema, sql), nil
}

// loadSQL reads the snapshots and the events after them of many aggregates
// in one statement (one round trip, one consistent database snapshot).
// kind 0 rows are snapshots, kind 1 rows events; the ORDER BY puts each
// aggregate's events in version order. Each id is looked up on its own
// (LATERAL, kept from being flattened by OFFSET 0): one index range scan per
// aggregate whatever the table's statistics. With `aggregate_id = ANY($2)`
// Postgres planned a bitmap scan on the aggregate type alone for a table
// that grew since its last ANALYZE and filtered every event of the type, on
// every batch (TestLoadTouchesOnlyTheAskedAggregates).
const loadSQL = `
WITH ids AS (
	SELECT DISTINCT id FROM unnest($2::text[]) AS u(id)
), snap AS (
	SELECT ids.id AS aggregate_id, s.version, s.state
	FROM ids
	CROSS JOIN LATERAL (
		SELECT version, state FROM onceflow.snapshots
		WHERE aggregate_type = $1 AND aggregate_id = ids.id
		OFFSET 0
	) s
)
SELECT 0 AS kind, s.aggregate_id, s.version, s.state,
       ''::text, 0::integer, 0::bigint, ''::text, NULL::bytea, ''::text, NULL::timestamptz
FROM snap s
UNION ALL
SELECT 1, ids.id, e.version, e.data,
       e.topic, e.partition, e.seq, e.type, e.metadata, e.command_id, e.recorded_at
FROM ids
LEFT JOIN snap s ON s.aggregate_id = ids.id
CROSS JOIN LATERAL (
	SELECT version, data, topic, partition, seq, type, metadata, command_id, recorded_at
	FROM onceflow.events
	WHERE aggregate_type = $1 AND aggregate_id = ids.id AND version > coalesce(s.version, 0)
	OFFSET 0
) e
ORDER BY kind, aggregate_id, version`

// Load returns, for each id that has a snapshot or events, the latest
// snapshot and the events after it in version order. Ids with nothing stored
// are absent from the map. One round trip for all ids. ctx bounds the query.
func (s *EventStore) Load(ctx context.Context, aggregateType string, ids []string) (map[string]Loaded, error) {
	out := make(map[string]Loaded, len(ids))
	if len(ids) == 0 {
		return out, nil
	}
	// Planned at each execution (see txn.Store.LookupResults): a per-batch
	// query must stay index-backed as the tables grow.
	rows, err := s.query(ctx, loadSQL, pgx.QueryExecModeCacheDescribe, aggregateType, ids)
	if err != nil {
		return nil, fmt.Errorf("eventsource: load %s: %w", aggregateType, err)
	}
	var (
		kind      int
		id        string
		version   int64
		data      []byte
		topic     string
		partition int32
		seq       int64
		typ       string
		meta      []byte
		cmdID     string
		at        *time.Time
	)
	_, err = pgx.ForEachRow(rows, []any{&kind, &id, &version, &data, &topic, &partition, &seq, &typ, &meta, &cmdID, &at}, func() error {
		l := out[id]
		if kind == 0 {
			l.Snapshot = &Snapshot{AggregateType: aggregateType, AggregateID: id, Version: version, State: data}
		} else {
			ev := StoredEvent{
				Topic: topic, Partition: partition, Seq: seq, AggregateType: aggregateType, AggregateID: id,
				Version: version, Type: typ, Data: data, Metadata: meta, CommandID: cmdID,
			}
			if at != nil {
				ev.RecordedAt = *at
			}
			l.Events = append(l.Events, ev)
		}
		out[id] = l
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("eventsource: load %s: %w", aggregateType, err)
	}
	return out, nil
}

const eventColumns = `topic, partition, seq, aggregate_type, aggregate_id, version, type, data, metadata, command_id, recorded_at`

// ReadAggregate returns an aggregate's events with version >= fromVersion, in
// version order.
func (s *EventStore) ReadAggregate(ctx context.Context, aggregateType, id string, fromVersion int64) ([]StoredEvent, error) {
	rows, err := s.query(ctx, `SELECT `+eventColumns+` FROM onceflow.events
		WHERE aggregate_type = $1 AND aggregate_id = $2 AND version >= $3
		ORDER BY version`, aggregateType, id, fromVersion)
	if err != nil {
		return nil, fmt.Errorf("eventsource: read %s/%s: %w", aggregateType, id, err)
	}
	evs, err := collectEvents(rows)
	if err != nil {
		return nil, fmt.Errorf("eventsource: read %s/%s: %w", aggregateType, id, err)
	}
	return evs, nil
}

// ReadPartition returns up to limit events of a command topic's partition
// with seq >= fromSeq, in seq order. Because seq is gap-free and assigned by
// the partition's single fenced writer, a reader that tails by (topic,
// partition, seq) never skips an event.
// limit <= 0 means 1000.
func (s *EventStore) ReadPartition(ctx context.Context, topic string, partition int32, fromSeq int64, limit int) ([]StoredEvent, error) {
	if limit <= 0 {
		limit = defaultReadLimit
	}
	rows, err := s.query(ctx, `SELECT `+eventColumns+` FROM onceflow.events
		WHERE topic = $1 AND partition = $2 AND seq >= $3
		ORDER BY seq LIMIT $4`, topic, partition, fromSeq, limit)
	if err != nil {
		return nil, fmt.Errorf("eventsource: read %s[%d]: %w", topic, partition, err)
	}
	evs, err := collectEvents(rows)
	if err != nil {
		return nil, fmt.Errorf("eventsource: read %s[%d]: %w", topic, partition, err)
	}
	return evs, nil
}

func collectEvents(rows pgx.Rows) ([]StoredEvent, error) {
	var evs []StoredEvent
	var e StoredEvent
	_, err := pgx.ForEachRow(rows, []any{&e.Topic, &e.Partition, &e.Seq, &e.AggregateType, &e.AggregateID, &e.Version, &e.Type, &e.Data, &e.Metadata, &e.CommandID, &e.RecordedAt}, func() error {
		evs = append(evs, e)
		e = StoredEvent{} // the scanned byte slices must not be shared
		return nil
	})
	return evs, err
}

// AppendTx writes events inside tx with COPY. Topic, Partition, Seq and Version must
// be set by the caller. A duplicate (aggregate_type, aggregate_id, version)
// returns an error wrapping ErrConcurrencyConflict. RecordedAt is ignored:
// the store records the transaction's start time.
//
// A failed COPY aborts tx: the caller must roll it back.
func AppendTx(ctx context.Context, tx pgx.Tx, events []StoredEvent) error {
	return AppendTxIn(ctx, tx, pgschema.Default, events)
}

// AppendTxIn is AppendTx for the tables in schema.
func AppendTxIn(ctx context.Context, tx pgx.Tx, schema string, events []StoredEvent) error {
	if err := pgschema.Check(schema); err != nil {
		return fmt.Errorf("eventsource: append: %w", err)
	}
	if len(events) == 0 {
		return nil
	}
	now := time.Now()
	src := pgx.CopyFromSlice(len(events), func(i int) ([]any, error) {
		e := &events[i]
		data := e.Data
		if data == nil {
			data = []byte{} // data is NOT NULL; an empty payload is valid
		}
		at := e.RecordedAt
		if at.IsZero() {
			at = now
		}
		return []any{e.Topic, e.Partition, e.Seq, e.AggregateType, e.AggregateID, e.Version, e.Type, data, e.Metadata, e.CommandID, at}, nil
	})
	_, err := tx.CopyFrom(ctx, pgx.Identifier{schema, "events"},
		[]string{"topic", "partition", "seq", "aggregate_type", "aggregate_id", "version", "type", "data", "metadata", "command_id", "recorded_at"}, src)
	if err != nil {
		return mapAppendError(err)
	}
	return nil
}

func mapAppendError(err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "23505" {
		switch pgErr.ConstraintName {
		case constraintEventVersion:
			return fmt.Errorf("%w: an event with that aggregate version already exists (%s): %w", ErrConcurrencyConflict, pgErr.Detail, err)
		case constraintEventSeq:
			return fmt.Errorf("eventsource: append: event seq already taken (%s): the partition's seq was assigned by someone other than its fenced writer: %w", pgErr.Detail, err)
		}
	}
	return fmt.Errorf("eventsource: append: %w", err)
}

// PutSnapshotsTx upserts snapshots inside tx. At most one snapshot per
// aggregate may be given; an older version never overwrites a newer one.
// It is one statement whatever the number of snapshots.
func PutSnapshotsTx(ctx context.Context, tx pgx.Tx, snaps []Snapshot) error {
	return PutSnapshotsTxIn(ctx, tx, pgschema.Default, snaps)
}

// PutSnapshotsTxIn is PutSnapshotsTx for the tables in schema.
func PutSnapshotsTxIn(ctx context.Context, tx pgx.Tx, schema string, snaps []Snapshot) error {
	if err := pgschema.Check(schema); err != nil {
		return fmt.Errorf("eventsource: put snapshots: %w", err)
	}
	if len(snaps) == 0 {
		return nil
	}
	types := make([]string, len(snaps))
	ids := make([]string, len(snaps))
	versions := make([]int64, len(snaps))
	states := make([][]byte, len(snaps))
	seen := make(map[[2]string]struct{}, len(snaps))
	for i, s := range snaps {
		k := [2]string{s.AggregateType, s.AggregateID}
		if _, dup := seen[k]; dup {
			// ON CONFLICT DO UPDATE cannot touch one row twice in a
			// statement; the caller must keep the latest per aggregate.
			return fmt.Errorf("eventsource: put snapshots: %s/%s appears twice (keep only the latest)", s.AggregateType, s.AggregateID)
		}
		seen[k] = struct{}{}
		types[i], ids[i], versions[i], states[i] = s.AggregateType, s.AggregateID, s.Version, s.State
		if states[i] == nil {
			states[i] = []byte{}
		}
	}
	_, err := tx.Exec(ctx, pgschema.Rewrite(schema, `
		INSERT INTO onceflow.snapshots AS s (aggregate_type, aggregate_id, version, state)
		SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bytea[])
		ON CONFLICT (aggregate_type, aggregate_id) DO UPDATE
		SET version = EXCLUDED.version, state = EXCLUDED.state, updated_at = now()
		WHERE s.version < EXCLUDED.version`), types, ids, versions, states)
	if err != nil {
		return fmt.Errorf("eventsource: put snapshots: %w", err)
	}
	return nil
}

// Written returns the aggregates among fromVersion's keys that have a stored
// event at or beyond the given version: versions a writer meant to write
// that someone else already wrote. One index-backed query.
func (s *EventStore) Written(ctx context.Context, aggregateType string, fromVersion map[string]int64) ([]string, error) {
	if len(fromVersion) == 0 {
		return nil, nil
	}
	ids := make([]string, 0, len(fromVersion))
	vs := make([]int64, 0, len(fromVersion))
	for id, v := range fromVersion {
		ids = append(ids, id)
		vs = append(vs, v)
	}
	rows, err := s.query(ctx, `
		SELECT b.id FROM unnest($2::text[], $3::bigint[]) AS b(id, v)
		WHERE EXISTS (SELECT 1 FROM onceflow.events e
		              WHERE e.aggregate_type = $1 AND e.aggregate_id = b.id AND e.version >= b.v)`,
		aggregateType, ids, vs)
	if err != nil {
		return nil, fmt.Errorf("eventsource: written %s: %w", aggregateType, err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("eventsource: written %s: %w", aggregateType, err)
	}
	return out, nil
}

// Reader is what the runtime reads from an event store: aggregates to
// rebuild, a partition's events by seq, and which aggregates were written
// by someone else. *EventStore implements it on Postgres; txn/txnmem in
// memory.
type Reader interface {
	Load(ctx context.Context, aggregateType string, ids []string) (map[string]Loaded, error)
	ReadPartition(ctx context.Context, topic string, partition int32, fromSeq int64, limit int) ([]StoredEvent, error)
	Written(ctx context.Context, aggregateType string, fromVersion map[string]int64) ([]string, error)
}

var _ Reader = (*EventStore)(nil)
