//go:build onceflow_unsafe_random_command_id

package actor

// BROKEN ON PURPOSE. Built with -tags onceflow_unsafe_random_command_id, a
// process manager's Effects.Send gives each command a random id instead of
// the deterministic one the process chose, so a step the process takes
// again (a retry at a deadline) is applied twice. It exists only so the
// chaos harness (internal/chaos, make chaos-bite) can prove its checker
// catches it. Never ship it.
const unsafeRandomCommandID = true
