package readmodel

import (
	"context"
	"embed"
	"fmt"
	"io/fs"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/onceflow/onceflow/actor"
	"github.com/onceflow/onceflow/eventsource"
	"github.com/onceflow/onceflow/projection"
	"github.com/onceflow/onceflow/samples/inventory/stock"
	"github.com/onceflow/onceflow/txn"
)

// The projections. A name is the prefix of its tables: version v of
// inventory_stock writes inventory_stock_v<v>.
const (
	// StockName is the stock projection: on hand, reserved and available
	// per (warehouse, sku).
	StockName = "inventory_stock"
	// StockVersion is the version this build runs. Bump it (with a
	// migration creating inventory_stock_v<new>) to rebuild blue/green.
	StockVersion = 1
	// ReservationsName is the projection of the open reservations.
	ReservationsName = "inventory_reservations"
	// ReservationsVersion is the version this build runs.
	ReservationsVersion = 1
)

// Component is the name the read-model migrations are recorded under
// (txn.MigrateFS, actor.WithMigrations).
const Component = "inventory-readmodel"

//go:embed migrations/*.sql
var migrationFS embed.FS

// Migrations returns the read-model migrations (the tables of every version
// of both projections) for actor.WithMigrations or txn.MigrateFS.
func Migrations() (fs.FS, string) { return migrationFS, "migrations" }

// Names lists the projections of the sample: a read-your-writes request
// waits for each of them.
func Names() []string { return []string{StockName, ReservationsName} }

// Projections returns the sample's projections of the command topic (their
// source; they read its history topic, topic + ".events"). reg is the stock
// aggregate's registry: it decodes each event into Event.Payload.
func Projections(topic string, reg *eventsource.Registry) []actor.Projection {
	return []actor.Projection{Stock(topic, reg), Reservations(topic, reg)}
}

// Stock returns the stock projection, version StockVersion.
func Stock(topic string, reg *eventsource.Registry) actor.Projection {
	return actor.Projection{
		Name: StockName, Version: StockVersion, Source: topic, Registry: reg,
		Apply: applyStock(table(StockName, StockVersion)),
		Drop:  dropFunc(StockName),
	}
}

// Reservations returns the reservations projection, version
// ReservationsVersion.
func Reservations(topic string, reg *eventsource.Registry) actor.Projection {
	return actor.Projection{
		Name: ReservationsName, Version: ReservationsVersion, Source: topic, Registry: reg,
		Apply: applyReservations(table(ReservationsName, ReservationsVersion)),
		Drop:  dropFunc(ReservationsName),
	}
}

// table is the quoted name of version's table of projection name.
func table(name string, version int) string {
	return pgx.Identifier{fmt.Sprintf("%s_v%d", name, version)}.Sanitize()
}

// dropFunc drops a replaced version's table, in the blue/green switch's
// transaction (projection.Store.Switch).
func dropFunc(name string) projection.DropFunc {
	return func(ctx context.Context, tx pgx.Tx, version int) error {
		_, err := tx.Exec(ctx, "DROP TABLE IF EXISTS "+table(name, version))
		return err
	}
}

// Install applies the projection registry's migrations and the read-model
// migrations and registers both projections (projection.Store.Register),
// so that readers and read-your-writes waits work before the projection
// runtimes have started: a projection's runtime does the same at Run,
// idempotently. opts choose the schema (txn.InSchema); give store the same.
func Install(ctx context.Context, pool *pgxpool.Pool, store *projection.Store, topic string, opts ...txn.MigrateOption) error {
	fsys, dir := projection.Migrations()
	if _, err := txn.MigrateFS(ctx, pool, projection.Component, fsys, dir, opts...); err != nil {
		return fmt.Errorf("readmodel: %w", err)
	}
	fsys, dir = Migrations()
	if _, err := txn.MigrateFS(ctx, pool, Component, fsys, dir, opts...); err != nil {
		return fmt.Errorf("readmodel: %w", err)
	}
	for _, p := range Projections(topic, nil) {
		if _, err := store.Register(ctx, projection.Def{Name: p.Name, Version: p.Version, SourceTopic: p.Source, HistoryTopic: p.HistoryTopic}); err != nil {
			return fmt.Errorf("readmodel: %w", err)
		}
	}
	return nil
}

// A batch's statements go to Postgres in one round trip (a pgx.Batch, run
// in order in the projection's transaction); each is checked against the
// event it applies, so an error names the event.
type statements struct {
	b      pgx.Batch
	events []*actor.Event
	checks []func(pgconn.CommandTag) error
}

func (s *statements) queue(ev *actor.Event, check func(pgconn.CommandTag) error, sql string, args ...any) {
	s.b.Queue(sql, args...)
	s.events = append(s.events, ev)
	s.checks = append(s.checks, check)
}

func (s *statements) run(ctx context.Context, tx pgx.Tx) error {
	if s.b.Len() == 0 {
		return nil
	}
	br := tx.SendBatch(ctx, &s.b)
	for i, ev := range s.events {
		tag, err := br.Exec()
		if err == nil && s.checks[i] != nil {
			err = s.checks[i](tag)
		}
		if err != nil {
			_ = br.Close()
			return fmt.Errorf("%s: %w", describe(ev), err)
		}
	}
	return br.Close()
}

// describe names an event for an error: the runtime logs it, and under the
// Halt policy it is the projection's halt reason.
func describe(ev *actor.Event) string {
	return fmt.Sprintf("event %s[%d] seq %d (%s v%d of %s)", ev.Topic, ev.Partition, ev.Seq, ev.Type, ev.Version, ev.AggregateID)
}

// target parses a stock event's aggregate id.
func target(ev *actor.Event) (warehouse, sku string, err error) {
	if ev.AggregateType != stock.AggregateType {
		return "", "", fmt.Errorf("%s: aggregate type %q, want %q", describe(ev), ev.AggregateType, stock.AggregateType)
	}
	warehouse, sku, err = stock.ParseAggregateID(ev.AggregateID)
	if err != nil {
		return "", "", fmt.Errorf("%s: %w", describe(ev), err)
	}
	return warehouse, sku, nil
}

// applyStock keeps on_hand and reserved per (warehouse, sku), the way
// stock.Evolve does. Plain writes: the runtime applies each event once per
// version (again only after a rollback), so nothing here guards against
// repeats. A receipt or a count creates the row (an aggregate's first event
// is one of them); reservations update it, and fail when it is missing. An
// event type it has no rule for fails the batch: a new event needs a rule
// here (and, for past events, a rebuild) rather than being silently left
// out.
func applyStock(t string) func(ctx context.Context, tx pgx.Tx, events []actor.Event) error {
	receive := `INSERT INTO ` + t + ` AS t (warehouse, sku, on_hand, reserved, version) VALUES ($1, $2, $3, 0, $4)
		ON CONFLICT (warehouse, sku) DO UPDATE SET on_hand = t.on_hand + EXCLUDED.on_hand, version = EXCLUDED.version`
	count := `INSERT INTO ` + t + ` AS t (warehouse, sku, on_hand, reserved, version) VALUES ($1, $2, $3, 0, $4)
		ON CONFLICT (warehouse, sku) DO UPDATE SET on_hand = EXCLUDED.on_hand, version = EXCLUDED.version`
	move := `UPDATE ` + t + ` SET on_hand = on_hand + $3, reserved = reserved + $4, version = $5 WHERE warehouse = $1 AND sku = $2`
	return func(ctx context.Context, tx pgx.Tx, events []actor.Event) error {
		var s statements
		for i := range events {
			ev := &events[i]
			w, sku, err := target(ev)
			if err != nil {
				return err
			}
			exists := func(tag pgconn.CommandTag) error {
				if tag.RowsAffected() != 1 {
					return fmt.Errorf("no row for %s/%s in %s (its stock was never received)", w, sku, t)
				}
				return nil
			}
			switch e := ev.Payload.(type) {
			case stock.StockReceived:
				s.queue(ev, nil, receive, w, sku, e.Qty, ev.Version)
			case stock.StockAdjusted:
				s.queue(ev, nil, count, w, sku, e.Counted, ev.Version)
			case stock.StockReserved:
				s.queue(ev, exists, move, w, sku, 0, e.Qty, ev.Version)
			case stock.ReservationReleased:
				s.queue(ev, exists, move, w, sku, 0, -e.Qty, ev.Version)
			case stock.ReservationShipped:
				s.queue(ev, exists, move, w, sku, -e.Qty, -e.Qty, ev.Version)
			default:
				return fmt.Errorf("%s: the stock projection has no rule for %T", describe(ev), ev.Payload)
			}
		}
		return s.run(ctx, tx)
	}
}

// applyReservations keeps the open reservations: a reservation inserts its
// row, a release or a shipment deletes it. Both are checked (a duplicate
// key, a missing row): under the exactly-once contract neither happens, and
// if it did the read model would be wrong, so the batch fails instead.
// Other stock events do not touch reservations.
func applyReservations(t string) func(ctx context.Context, tx pgx.Tx, events []actor.Event) error {
	insert := `INSERT INTO ` + t + ` (reservation_id, warehouse, sku, qty, version) VALUES ($1, $2, $3, $4, $5)`
	del := `DELETE FROM ` + t + ` WHERE reservation_id = $1 AND warehouse = $2 AND sku = $3`
	return func(ctx context.Context, tx pgx.Tx, events []actor.Event) error {
		var s statements
		for i := range events {
			ev := &events[i]
			w, sku, err := target(ev)
			if err != nil {
				return err
			}
			var closed string
			switch e := ev.Payload.(type) {
			case stock.StockReserved:
				s.queue(ev, nil, insert, e.ReservationID, w, sku, e.Qty, ev.Version)
			case stock.ReservationReleased:
				closed = e.ReservationID
			case stock.ReservationShipped:
				closed = e.ReservationID
			case stock.StockReceived, stock.StockAdjusted:
			default:
				return fmt.Errorf("%s: the reservations projection has no rule for %T", describe(ev), ev.Payload)
			}
			if closed != "" {
				s.queue(ev, func(tag pgconn.CommandTag) error {
					if tag.RowsAffected() != 1 {
						return fmt.Errorf("reservation %q is not open in %s", closed, t)
					}
					return nil
				}, del, closed, w, sku)
			}
		}
		return s.run(ctx, tx)
	}
}
