// Package baseline switches the runtime to the usual at-least-once design,
// for the benchmark only (cmd/onceflow-bench): it measures what
// exactly-once costs against the same service and load without it. It is
// internal on purpose: no service can turn it on.
//
// In at-least-once mode a batch's transaction writes the events and
// snapshots without the fence (no compare-and-set on the claim row: a
// zombie's batch would commit) and without command results (no
// idempotency: a redelivered command is applied again), and the runtime
// does not look command ids up before deciding. Offsets still go to Kafka
// after the writes (the runtime mirrors them there).
package baseline

import "sync/atomic"

var atLeastOnce atomic.Bool

// SetAtLeastOnce turns the at-least-once mode on or off for the whole
// process. Only the benchmark calls it, between runs.
func SetAtLeastOnce(on bool) { atLeastOnce.Store(on) }

// AtLeastOnce reports whether the at-least-once mode is on.
func AtLeastOnce() bool { return atLeastOnce.Load() }
