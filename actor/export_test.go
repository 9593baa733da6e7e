package actor

import (
	"github.com/onceflow/onceflow/eventsource"
	"github.com/onceflow/onceflow/txn"
)

// StallPolls freezes r's poll loop (as SIGSTOP would freeze the process's
// consumer) until release is called. librdkafka's background threads keep
// running, so the group evicts the instance once max.poll.interval.ms passes.
func StallPolls(r *Runtime) (release func()) {
	ch := make(chan struct{})
	r.pollStall.Store(&ch)
	return func() {
		r.pollStall.Store(nil)
		close(ch)
	}
}

// WithPublishBrokers points only the publishers at another bootstrap
// address (a proxy the test can cut), so publishing can fail while commands
// keep flowing.
func WithPublishBrokers(addr string) Option {
	return option(func(c *config) { c.publishBrokers = addr })
}

// Faults are the fault-injection seams (not public API).
type Faults = faultHooks

// WithFaults installs fault-injection seams for a test.
func WithFaults(f Faults) Option { return option(func(c *config) { c.faults = f }) }

// NewRuntimeInMemory builds a Runtime on an in-memory backend (txn/txnmem):
// the fast tests of the pipeline run without Postgres.
func NewRuntimeInMemory[S, C, E any](agg *eventsource.Aggregate[S, C, E], backend txn.Backend, reader eventsource.Reader, opts ...Option) (*Runtime, error) {
	return newRuntime(agg, nil, backend, reader, opts...)
}
