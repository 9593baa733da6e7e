// Package actor is onceflow's runtime: it consumes a command topic in a Kafka
// consumer group, runs one partition actor per assigned partition and one
// child actor per live aggregate, and writes each partition's batches with
// package txn in one fenced Postgres transaction. After each commit the
// partition's publisher sends the stored events to the history topic, the
// latest states to the compacted state topic and the outbox records to
// their topics, in Kafka transactions. It reports per-partition health
// (Runtime.Health), and holds the Client that sends commands and waits for
// their outcomes. One Option slice configures both.
//
// protoactor-go is an implementation detail: no protoactor type appears in
// this package's API.
package actor
