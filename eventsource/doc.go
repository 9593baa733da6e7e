// Package eventsource is the domain side of onceflow: deciders, the type
// registry and codecs for commands, events and state, the Postgres event store
// (per-aggregate versions with an optimistic check, and a gap-free
// per-partition sequence), and snapshots.
//
// Domain logic is written as a Decider: three pure functions that can be tested
// as given/when/then without Kafka or Postgres. The runtime in package actor
// feeds commands to a Decider exactly once; package txn writes its results.
package eventsource
