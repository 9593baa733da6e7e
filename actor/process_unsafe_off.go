//go:build !onceflow_unsafe_random_command_id

package actor

// unsafeRandomCommandID is false in every normal build (see
// process_unsafe_on.go).
const unsafeRandomCommandID = false
