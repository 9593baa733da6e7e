// Package actor is onceflow's runtime: it consumes a command topic in a Kafka
// consumer group, runs one partition actor per assigned partition and one
// child actor per live aggregate, and writes each partition's batches with
// package txn in one fenced Postgres transaction. It also holds the Client
// that sends commands and waits for their outcomes.
//
// protoactor-go is an implementation detail: no protoactor type appears in
// this package's API.
package actor
