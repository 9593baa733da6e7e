// Package chaos is onceflow's multi-process fault harness and its checker
// (cmd/onceflow-chaos, `make chaos`): it runs the inventory sample as several
// OS processes in one consumer group against a broker process and a Postgres
// cluster, drives steady load through the HTTP API (with retries that reuse
// the Idempotency-Key), injects faults on a seeded schedule (kill -9, SIGSTOP
// past the session timeout, graceful restarts, scale up and down, Postgres
// and broker restarts, connections cut through per-instance TCP proxies),
// and at the end checks from Postgres, the command topic and the load
// generator's log that every command was handled exactly once.
//
// Check is a pure function over the collected Data, so it is unit-tested on
// synthetic histories. It is generic over the aggregate (CheckWith and a
// Domain, made from any eventsource.Aggregate by DomainOf); the harness
// runs the inventory sample and checks it with Inventory(), plus its read
// models (every projection at the last seq, rows equal to the fold).
// TestUnsafeBuildIsCaught runs the whole harness against a build that
// breaks the protocol on purpose and requires violations.
package chaos
