package eventsource

import (
	"context"
	"fmt"
	"reflect"
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
//
// State type S: unless snapshots are disabled (SnapshotEvery < 0), the
// runtime snapshots S with the registry's codec and later rebuilds from the
// snapshot instead of the events before it, so the codec must round-trip S
// exactly: decoding an encoded S (into a zero S) must give a state equal to
// it. With the default JSONCodec that means every field that carries state is
// exported, not tagged json:"-", not a channel, func or complex number, and
// not a non-empty interface, recursively (or its type implements
// json.Marshaler and json.Unmarshaler, or encoding.TextMarshaler and
// TextUnmarshaler, and round-trips itself). Validate rejects a state type
// that breaks this visibly (a *StateCodecError naming the field), and
// EncodeState, which the runtime uses for every snapshot, decodes each
// snapshot back and refuses it when it does not equal the state (a
// *SnapshotRoundTripError); the runtime then logs and writes no snapshot.
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
	// snapshots. State S is encoded with the registry's codec, which must
	// round-trip it exactly (see "State type S" in the Aggregate doc): with
	// JSONCodec its fields must be exported and none that carries state may
	// be tagged json:"-". A snapshot that does not decode back to the state
	// is refused.
	SnapshotEvery int
}

// Validate reports configuration errors. When snapshots are enabled and the
// registry uses JSONCodec it also checks the state type S statically and
// returns a *StateCodecError for the first field encoding/json cannot
// round-trip (unexported, tagged json:"-", a channel, func or complex number,
// a non-empty interface, an unsupported map key, ...).
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
	if a.SnapshotInterval() > 0 && isJSONCodec(a.Registry.Codec()) {
		t := reflect.TypeFor[S]()
		if field, reason := checkJSONState(t); field != "" {
			return &StateCodecError{AggregateType: a.Type, Type: t, Field: field, Reason: reason}
		}
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

// EncodeState encodes a state for a snapshot and verifies the snapshot: it
// decodes it with the same codec into a zero S, as DecodeState does, and
// compares the result with s. When they differ it returns a
// *SnapshotRoundTripError (wrapping ErrSnapshotRoundTrip) naming the first
// differing field and both values, and no bytes: such a snapshot would
// silently change the state on the next load.
//
// The comparison is reflect.DeepEqual's, except that values whose type has a
// method Equal(T) bool are compared with it (so a time.Time that lost its
// monotonic reading or location in JSON is equal) and a nil slice or map
// equals an empty one.
func (a *Aggregate[S, C, E]) EncodeState(s S) ([]byte, error) {
	codec := a.Registry.Codec()
	b, err := codec.Marshal(s)
	if err != nil {
		return nil, fmt.Errorf("eventsource: encode %q state: %w", a.Type, err)
	}
	if err := a.verifyState(codec, s, b); err != nil {
		return nil, err
	}
	return b, nil
}

// verifyState checks that b, the encoding of s, decodes back to s.
func (a *Aggregate[S, C, E]) verifyState(codec Codec, s S, b []byte) (err error) {
	t := reflect.TypeFor[S]()
	fail := func(e *SnapshotRoundTripError) error {
		e.AggregateType, e.Type = a.Type, t
		return e
	}
	defer func() {
		// A panicking Equal method (or codec) costs this snapshot, not the
		// aggregate.
		if p := recover(); p != nil {
			err = fail(&SnapshotRoundTripError{Err: fmt.Errorf("verifying the snapshot panicked: %v", p)})
		}
	}()
	var back S
	if err := codec.Unmarshal(b, &back); err != nil {
		return fail(&SnapshotRoundTripError{Err: err})
	}
	if d := diffState(reflect.ValueOf(&s).Elem(), reflect.ValueOf(&back).Elem()); d != nil {
		return fail(&SnapshotRoundTripError{Field: d.path(rootName(t)), Before: d.before, After: d.after})
	}
	return nil
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
