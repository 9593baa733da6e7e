// Package api is the inventory sample's HTTP JSON API.
//
//	POST /v1/stock/{warehouse}/{sku}/receive  {"qty": 10}
//	POST /v1/stock/{warehouse}/{sku}/reserve  {"reservation_id": "order-7", "qty": 2}
//	POST /v1/stock/{warehouse}/{sku}/release  {"reservation_id": "order-7"}
//	POST /v1/stock/{warehouse}/{sku}/ship     {"reservation_id": "order-7"}
//	POST /v1/stock/{warehouse}/{sku}/adjust   {"counted": 8, "reason": "cycle count"}
//	GET  /v1/stock/{warehouse}/{sku}
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
// The package depends on two small interfaces, Sender (actor.Client
// satisfies it) and Reader (StoreReader is the Postgres one), so the HTTP
// layer is tested without Kafka or Postgres.
package api
