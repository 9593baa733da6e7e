package eventsource

import (
	"context"
	"fmt"
	"time"
)

// DefaultSnapshotEvery is the snapshot interval used when
// Aggregate.SnapshotEvery is zero.
const DefaultSnapshotEvery = 100

// StoredEvent is one row of the event store.
type StoredEvent struct {
	Topic         string // the command topic whose partition's writer stored it
	Partition     int32  // that Kafka partition
	Seq           int64  // gap-free per (Topic, Partition) sequence, from 1
	AggregateType string // Aggregate.Type
	AggregateID   string
	Version       int64 // per-aggregate version, from 1, no gaps
	Type          string
	Data          []byte
	Metadata      []byte // optional, opaque
	CommandID     string // the command that produced it
	RecordedAt    time.Time
}

// Snapshot is an aggregate's encoded state as of Version.
type Snapshot struct {
	AggregateType string
	AggregateID   string
	Version       int64
	State         []byte
}

// Loaded is what the store holds for one aggregate: the latest snapshot (nil
// if none) and the events after it, in version order.
type Loaded struct {
	Snapshot *Snapshot
	Events   []StoredEvent
}

// Aggregate binds a Decider to a stable type name and a registry. It is the
// unit the runtime serves: one Aggregate per command topic.
type Aggregate[S, C, E any] struct {
	// Type is the stable aggregate type name stored with every event
	// (for example "inventory.stock"). Renaming it orphans stored events.
	Type string
	// Decider holds the domain logic.
	Decider Decider[S, C, E]
	// Registry names every command type (implementing C) and event type
	// (implementing E) this aggregate uses.
	Registry *Registry
	// SnapshotEvery writes a snapshot when an aggregate's version crosses a
	// multiple of it. 0 means DefaultSnapshotEvery; negative disables
	// snapshots. State S is encoded with the registry's codec, so with JSON
	// its fields must be exported.
	SnapshotEvery int
}

// Validate reports configuration errors.
func (a *Aggregate[S, C, E]) Validate() error {
	if a == nil {
		return fmt.Errorf("eventsource: Aggregate is nil")
	}
	if a.Type == "" {
		return fmt.Errorf("eventsource: Aggregate.Type is empty")
	}
	if a.Registry == nil {
		return fmt.Errorf("eventsource: Aggregate %q: Registry is nil", a.Type)
	}
	if err := a.Decider.Validate(); err != nil {
		return fmt.Errorf("aggregate %q: %w", a.Type, err)
	}
	return nil
}

// SnapshotInterval returns the effective snapshot interval (0 = disabled).
func (a *Aggregate[S, C, E]) SnapshotInterval() int64 {
	switch {
	case a.SnapshotEvery < 0:
		return 0
	case a.SnapshotEvery == 0:
		return DefaultSnapshotEvery
	}
	return int64(a.SnapshotEvery)
}

// DecodeCommand decodes a command registered as name. A registered type that
// does not implement C is an error.
func (a *Aggregate[S, C, E]) DecodeCommand(name string, data []byte) (C, error) {
	var zero C
	v, err := a.Registry.Decode(name, data)
	if err != nil {
		return zero, err
	}
	c, ok := v.(C)
	if !ok {
		return zero, fmt.Errorf("eventsource: %q decodes to %T, which is not a command of aggregate %q", name, v, a.Type)
	}
	return c, nil
}

// DecodeEvent decodes an event registered as name.
func (a *Aggregate[S, C, E]) DecodeEvent(name string, data []byte) (E, error) {
	var zero E
	v, err := a.Registry.Decode(name, data)
	if err != nil {
		return zero, err
	}
	e, ok := v.(E)
	if !ok {
		return zero, fmt.Errorf("eventsource: %q decodes to %T, which is not an event of aggregate %q", name, v, a.Type)
	}
	return e, nil
}

// EncodeState encodes a state for a snapshot.
func (a *Aggregate[S, C, E]) EncodeState(s S) ([]byte, error) {
	b, err := a.Registry.Codec().Marshal(s)
	if err != nil {
		return nil, fmt.Errorf("eventsource: encode %q state: %w", a.Type, err)
	}
	return b, nil
}

// DecodeState decodes a snapshot's state.
func (a *Aggregate[S, C, E]) DecodeState(b []byte) (S, error) {
	var s S
	if err := a.Registry.Codec().Unmarshal(b, &s); err != nil {
		return s, fmt.Errorf("eventsource: decode %q snapshot: %w", a.Type, err)
	}
	return s, nil
}

// Rebuild folds a loaded aggregate into its state and version. Events must
// be in version order and follow the snapshot without gaps.
func (a *Aggregate[S, C, E]) Rebuild(l Loaded) (S, int64, error) {
	state := a.Decider.Initial()
	var version int64
	if l.Snapshot != nil {
		s, err := a.DecodeState(l.Snapshot.State)
		if err != nil {
			return state, 0, err
		}
		state, version = s, l.Snapshot.Version
	}
	for _, se := range l.Events {
		if se.Version != version+1 {
			return state, version, fmt.Errorf("eventsource: %s/%s: event version %d follows %d (gap or repeat)", a.Type, se.AggregateID, se.Version, version)
		}
		ev, err := a.DecodeEvent(se.Type, se.Data)
		if err != nil {
			return state, version, fmt.Errorf("eventsource: %s/%s version %d: %w", a.Type, se.AggregateID, se.Version, err)
		}
		state = a.Decider.Evolve(state, ev)
		version = se.Version
	}
	return state, version, nil
}

// Load reads one aggregate from the store and rebuilds it. An aggregate with
// no events yields Initial() and version 0.
func (a *Aggregate[S, C, E]) Load(ctx context.Context, store *EventStore, id string) (S, int64, error) {
	m, err := store.Load(ctx, a.Type, []string{id})
	if err != nil {
		var zero S
		return zero, 0, err
	}
	return a.Rebuild(m[id])
}
