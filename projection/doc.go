// Package projection is the store side of onceflow's read models: the
// registry of projection versions (building, active, retired; paused),
// their positions per source partition, blue/green switches, the management
// operations (pause, resume, reset, skip), and read-your-writes (Waiter)
// over Postgres LISTEN/NOTIFY.
//
// The runtime that feeds a projection is a handler kind of the partition
// pipeline (actor.NewProjection): it consumes the history topic in the
// version's own consumer group, and a batch's read-model writes and the
// position (the claim row's next_seq: the next source seq to apply) commit
// in ONE transaction fenced by the claim's epoch, like commands. This
// package has no Kafka dependency; the CLI uses it to manage projections.
//
// Concurrency: a Store and a Waiter are safe for concurrent use.
package projection
