package actor

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
