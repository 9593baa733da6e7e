//go:build !onceflow_unsafe_skip_publish

package actor

// unsafeSkipPublish is false in every normal build: a publisher resumes at
// the event after the partition's published position.
const unsafeSkipPublish = false
