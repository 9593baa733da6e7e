//go:build onceflow_unsafe_skip_publish

package actor

// BROKEN ON PURPOSE. Built with -tags onceflow_unsafe_skip_publish, a
// publisher that resumes after an earlier owner (a crash, a rebalance)
// skips the first event it should publish, leaving a gap in the history
// topic. It exists only so the chaos harness (internal/chaos, make
// chaos-bite) can prove its checker catches a lost publish. Never ship it.
const unsafeSkipPublish = true
