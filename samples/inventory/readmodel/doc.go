// Package readmodel is the inventory sample's read side: two read models
// fed exactly once by projections (actor.NewProjection) of the stock
// aggregate's history topic, and the queries the HTTP API serves from them.
//
//   - inventory_stock: on hand, reserved and available per (warehouse,
//     sku), for listings across SKUs that the aggregate cannot answer:
//     a warehouse's stock (StockOfWarehouse) and low stock across
//     warehouses (LowStock).
//   - inventory_reservations: the open reservations, looked up by id
//     (Reservation). A released or shipped reservation is deleted: the
//     table holds what is open now, the event store the history. One id may
//     hold several SKUs (ids are unique per warehouse and SKU only), one row
//     each.
//
// # Exactly once, in order
//
// The runtime calls a projection's Apply with the events of one source
// partition in seq order, and commits what Apply wrote with the position
// in the same transaction: each event is applied once per version (again
// only after a rollback, which undid the first try). So Apply is plain
// upserts and deletes, with no dedup table. Every event of one (warehouse,
// sku) is on one partition, and every row here belongs to one (warehouse,
// sku), so concurrent batches of different partitions never touch the same
// row. The tables are a pure fold of the events (no clock, no randomness):
// a rebuild fills the same rows. Consistency checks (the stock invariant as
// a CHECK constraint, a reservation that must exist to be closed) turn a
// broken contract or a missing rule into a failed Apply instead of wrong
// numbers; the sample runs its projections with the Halt failure policy so
// that such an event stops its partition, visibly (read-your-writes answers
// 503 with the reason; onceflow projections list), until an operator fixes
// the projection and resumes it, or skips the event.
//
// # Versions (blue/green)
//
// Tables are per projection version: version v of inventory_stock writes
// inventory_stock_v<v>, created by a migration of this package (Component,
// Migrations). To rebuild a read model (a bug fixed, a column added), add a
// migration creating the new version's table and bump StockVersion or
// ReservationsVersion: the new version fills its table from the start of
// the history topic while the old one keeps serving, and once it has caught
// up its runtime switches readers to it and drops the old table (Drop) in
// one transaction. Readers (Reader) pick the active version from the
// registry in the transaction of every query (projection.ActiveTx), so they
// follow the switch without a restart, and the switch waits for the
// queries in flight before dropping the old table. A new version's table
// must keep the columns the queries read, or ship with queries for both.
//
// # Freshness
//
// The read models are asynchronous: a command answered 200 may not be in
// them yet. The HTTP API's Read-Your-Writes: true header waits
// (projection.Waiter) until every projection in Names has applied the
// command. For a read model that is always current, see
// actor.WithInlineProjection and the sample's README.
package readmodel
