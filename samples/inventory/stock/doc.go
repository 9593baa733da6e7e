// Package stock is the inventory sample's domain: stock of one SKU in one
// warehouse, as a pure eventsource.Decider.
//
// An aggregate is one (warehouse, SKU) pair. Its id is "<warehouse>/<sku>"
// (see AggregateID): the warehouse code comes first so that all of a
// warehouse's SKUs sort together, and the separator cannot appear in either
// part (see ValidateWarehouse and ValidateSKU), so the id parses back
// unambiguously. The id is also the Kafka message key: all commands for one
// SKU in one warehouse are handled in order by one writer.
//
// The rules, enforced by Decide:
//   - on-hand stock is what is physically in the warehouse; reserved stock is
//     the sum of open reservations; available = on-hand - reserved, never
//     negative;
//   - a reservation holds a quantity for an order until it is shipped (on-hand
//     goes down) or released (it becomes available again);
//   - a stock count (Adjust) sets on-hand to the counted number, but never
//     below what is reserved: release or ship reservations first.
//
// Everything here is pure: no I/O, no clock, no randomness, so the decider is
// tested as given/when/then tables.
package stock
