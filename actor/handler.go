package actor

import (
	"fmt"
	"runtime/debug"

	"github.com/onceflow/onceflow/eventsource"
)

// handler is the type-erased Aggregate the actors run.
type handler interface {
	aggregateType() string
	snapshotEvery() int64
	// decode returns the command and its aggregate id.
	decode(typeName string, data []byte) (cmd any, aggregateID string, err error)
	rebuild(l eventsource.Loaded) (state any, version int64, err error)
	initial() any
	// decide runs Decide then Evolve. rejected is a business rejection;
	// failed is a panic or an encoding failure (dead letter). On either,
	// state is returned unchanged.
	decide(state any, cmd any) (newState any, events []encodedEvent, rejected, failed error)
	encodeState(state any) ([]byte, error)
	// marshalState encodes a state for the state topic (the codec alone:
	// snapshots verify the round trip, the state topic does not need to).
	marshalState(state any) ([]byte, error)
}

type encodedEvent struct {
	typeName string
	data     []byte
}

type typedHandler[S, C, E any] struct {
	agg *eventsource.Aggregate[S, C, E]
}

func (h typedHandler[S, C, E]) aggregateType() string { return h.agg.Type }
func (h typedHandler[S, C, E]) snapshotEvery() int64  { return h.agg.SnapshotInterval() }
func (h typedHandler[S, C, E]) initial() any          { return h.agg.Decider.Initial() }

func (h typedHandler[S, C, E]) decode(typeName string, data []byte) (any, string, error) {
	c, err := h.agg.DecodeCommand(typeName, data)
	if err != nil {
		return nil, "", err
	}
	ac, ok := any(c).(eventsource.Command)
	if !ok {
		return nil, "", fmt.Errorf("command type %q (%T) does not implement eventsource.Command (AggregateID() string)", typeName, c)
	}
	return c, ac.AggregateID(), nil
}

func (h typedHandler[S, C, E]) rebuild(l eventsource.Loaded) (any, int64, error) {
	return h.agg.Rebuild(l)
}

func (h typedHandler[S, C, E]) encodeState(state any) ([]byte, error) {
	return h.agg.EncodeState(state.(S))
}

func (h typedHandler[S, C, E]) marshalState(state any) ([]byte, error) {
	return h.agg.Registry.Codec().Marshal(state.(S))
}

func (h typedHandler[S, C, E]) decide(state any, cmd any) (newState any, out []encodedEvent, rejected, failed error) {
	s := state.(S)
	defer func() {
		if p := recover(); p != nil {
			newState, out, rejected = state, nil, nil
			failed = fmt.Errorf("handler panicked: %v\n%s", p, debug.Stack())
		}
	}()
	evs, err := h.agg.Decider.Decide(s, cmd.(C))
	if err != nil {
		return state, nil, err, nil
	}
	out = make([]encodedEvent, 0, len(evs))
	for _, ev := range evs {
		name, data, err := h.agg.Registry.Encode(ev)
		if err != nil {
			return state, nil, nil, fmt.Errorf("encode event %T: %w", ev, err)
		}
		out = append(out, encodedEvent{typeName: name, data: data})
	}
	for _, ev := range evs {
		s = h.agg.Decider.Evolve(s, ev)
	}
	return s, out, nil, nil
}
