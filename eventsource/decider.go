package eventsource

import "fmt"

// Decider is an aggregate's behaviour as three pure functions.
//
// Contracts the runtime relies on:
//   - Initial returns the state of an aggregate that has no events yet. It is
//     called once per load and must return a fresh value each time.
//   - Decide is pure and deterministic: given the same state and command it
//     returns the same events or the same error. A returned error is a business
//     rejection: it is stored as the command's outcome with err.Error() as the
//     reason, no events are written, and the offset moves on. Decide must not do
//     I/O or keep references to state; a panic in Decide is caught and the
//     command is dead-lettered.
//   - Evolve is pure and total: it applies one event to a state and returns the
//     new state. It must accept every event Decide can return and every event
//     ever stored for this aggregate type (it is used to rebuild state from the
//     store). Evolve must not mutate its input state in place if S holds
//     references (maps, slices): copy first, because the runtime keeps the last
//     committed state to fall back on.
//   - The state type S must survive a snapshot: the runtime encodes it with
//     the registry's codec every Aggregate.SnapshotEvery versions and later
//     starts from the decoded snapshot, so the codec must round-trip S
//     exactly. With the default JSONCodec every field that carries state must
//     be exported and not tagged json:"-" (recursively, through nested
//     structs, pointers, slices, arrays and maps), and none may be a channel,
//     func, complex number or non-empty interface, unless its type implements
//     json.Marshaler and json.Unmarshaler itself. Aggregate.Validate rejects a
//     state type that visibly breaks this, and the runtime verifies every
//     snapshot and refuses one that does not decode back to the state (see
//     Aggregate). Use another Codec, or SnapshotEvery: -1, for a state JSON
//     cannot carry.
//
// Decide and Evolve for one aggregate are always called from one goroutine at a
// time, in the order of that aggregate's commands in its Kafka partition.
type Decider[S, C, E any] struct {
	Initial func() S
	Decide  func(state S, cmd C) ([]E, error)
	Evolve  func(state S, ev E) S
}

// Validate reports a descriptive error when a function is missing.
func (d Decider[S, C, E]) Validate() error {
	switch {
	case d.Initial == nil:
		return fmt.Errorf("eventsource: Decider.Initial is nil")
	case d.Decide == nil:
		return fmt.Errorf("eventsource: Decider.Decide is nil")
	case d.Evolve == nil:
		return fmt.Errorf("eventsource: Decider.Evolve is nil")
	}
	return nil
}

// Fold applies events to state in order with Evolve and returns the result.
func (d Decider[S, C, E]) Fold(state S, events ...E) S {
	for _, ev := range events {
		state = d.Evolve(state, ev)
	}
	return state
}

// Command is what a client sends. AggregateID names the aggregate the command
// is for; the client uses it as the Kafka message key, so all commands for one
// aggregate land in one partition and are handled in order by one writer. The
// runtime dead-letters a command whose key does not equal its AggregateID.
type Command interface {
	AggregateID() string
}
