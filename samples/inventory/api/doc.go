// Package api is the inventory sample's HTTP JSON API.
//
//	POST /v1/stock/{warehouse}/{sku}/receive  {"qty": 10}
//	POST /v1/stock/{warehouse}/{sku}/reserve  {"reservation_id": "order-7", "qty": 2}
//	POST /v1/stock/{warehouse}/{sku}/release  {"reservation_id": "order-7"}
//	POST /v1/stock/{warehouse}/{sku}/ship     {"reservation_id": "order-7"}
//	POST /v1/stock/{warehouse}/{sku}/adjust   {"counted": 8, "reason": "cycle count"}
//	GET  /v1/stock/{warehouse}/{sku}
//	GET  /v1/warehouses/{warehouse}/stock?limit=&cursor=
//	GET  /v1/low-stock?below=N&limit=&cursor=
//	GET  /v1/reservations/{reservation_id}
//	GET  /healthz
//
// Command requests wait for the command's outcome and map it to a status:
// 200 accepted, 409 rejected by the domain (the reason says why), 422
// dead-lettered, 504 outcome unknown (retry with the same Idempotency-Key,
// the command is never applied twice), 503 shutting down, 500 anything else.
// Invalid requests get a 4xx before anything is sent: 400 with the exact
// problem, 405, 413 (body over 64 KiB), 415 (not application/json).
// Every error body is JSON: {"code": "...", "error": "..."} plus, where it
// helps, "field", "command_id" and "idempotency_key".
//
// # What each GET reads
//
// GET /v1/stock/{warehouse}/{sku} reads the aggregate itself (Reader:
// its snapshot and later events from the event store): one SKU, always
// current, so a command answered 200 is visible to the next GET.
//
// The other GETs read the read models (ReadModels; package readmodel), kept
// by projections that consume the history topic asynchronously: listings
// the aggregate cannot answer, but possibly behind the commands.
//
//   - /v1/warehouses/{warehouse}/stock: the warehouse's SKUs in SKU order
//     (on_hand, reserved, available, version), limit per page (default
//     100, at most 1000).
//   - /v1/low-stock: every (warehouse, sku) whose available stock is below
//     the required below, lowest first.
//   - /v1/reservations/{reservation_id}: an open reservation's lines
//     (warehouse, sku, qty); 404 when none is open (never made, released
//     or shipped). An id with characters a path segment cannot hold is
//     percent-encoded ("order%2F7").
//
// Listings are paginated by key: a page has "next_cursor" unless it is the
// last one; pass it back as cursor, unchanged (it is opaque and checked: a
// cursor the listing did not hand out is a 400). Each answer names the read
// model and version it read ("read_model"). Unknown or repeated query
// parameters are a 400 naming the parameter.
//
// # Read your writes
//
// A command request with the header "Read-Your-Writes: true" answers only
// once every read model (Config.Projections) has applied the command, so a
// read-model GET sent after the answer sees it: the server waits for the
// outcome's position (actor.Outcome.Position, projection.Waiter). Only an
// accepted command is waited for; a retry (same Idempotency-Key) waits for
// the first send's events. If a read model has not caught up within
// Config.ReadYourWritesTimeout (default 5s) the answer is 504
// read_model_behind, naming the projection and where it is; if one is
// halted or paused, 503 read_model_halted with the reason. In both cases
// the command WAS accepted: the body says so and carries its command_id.
// "false" or no header answers as soon as the outcome is known; any other
// value is a 400.
//
// # Idempotency
//
// A command request may carry an Idempotency-Key header (1-128 printable
// ASCII characters). The command id is derived from it, the operation and the
// aggregate (see CommandID), so retrying a request with the same key returns
// the first attempt's outcome and never applies the command twice, while the
// same key sent to another SKU or operation is a different command instead
// of silently returning an unrelated outcome. Without the header the server
// picks a random key and returns it in the response, so a client can still
// retry after a 504.
//
// The package depends on small interfaces, Sender (actor.Client satisfies
// it), Reader (StoreReader is the Postgres one), ReadModels
// (readmodel.Reader) and Waiter (projection.Waiter), so the HTTP layer is
// tested without Kafka or Postgres.
package api
