package eventsource

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
)

var (
	// ErrEmptyTypeName is returned by Register for an empty name.
	ErrEmptyTypeName = errors.New("type name is empty")
	// ErrDuplicateTypeName is returned by Register when a name is already bound to another type.
	ErrDuplicateTypeName = errors.New("type name already registered")
	// ErrDuplicateType is returned by Register when a type is already registered under another name.
	ErrDuplicateType = errors.New("type already registered")
	// ErrConcurrencyConflict is returned (wrapped) by AppendTx and txn.Store.Commit when the
	// aggregate's current version is not the expected one.
	ErrConcurrencyConflict = errors.New("eventsource: concurrency conflict")
	// ErrSnapshotRoundTrip is wrapped by the *SnapshotRoundTripError that
	// Aggregate.EncodeState returns when a state does not decode back to
	// itself with the registry's codec. The runtime then writes no snapshot.
	ErrSnapshotRoundTrip = errors.New("eventsource: snapshot does not round-trip")
)

// UnknownTypeError reports a name (on decode) or a Go type (on encode) that
// is not in the registry.
type UnknownTypeError struct {
	Name   string // set on decode
	GoType string // set on encode
}

// Error implements error.
func (e *UnknownTypeError) Error() string {
	if e.Name != "" {
		return fmt.Sprintf("eventsource: unknown type name %q (not registered)", e.Name)
	}
	return fmt.Sprintf("eventsource: Go type %s is not registered", e.GoType)
}

// DecodeError reports data that could not be decoded as the named type.
type DecodeError struct {
	Name string
	Err  error
}

// Error implements error.
func (e *DecodeError) Error() string {
	return fmt.Sprintf("eventsource: decode %q: %v", e.Name, e.Err)
}

// Unwrap returns the codec error.
func (e *DecodeError) Unwrap() error { return e.Err }

// stateCodecFixes is the advice StateCodecError and SnapshotRoundTripError give.
const stateCodecFixes = "export the field, implement json.Marshaler and json.Unmarshaler on its type, " +
	"register another Codec (WithCodec), or disable snapshots (SnapshotEvery: -1)"

// StateCodecError is returned by Aggregate.Validate when snapshots are enabled,
// the registry uses JSONCodec, and the state type has a field that
// encoding/json cannot round-trip (it would be lost or fail in every snapshot).
type StateCodecError struct {
	AggregateType string       // Aggregate.Type
	Type          reflect.Type // the state type S
	Field         string       // path of the offending field from S, e.g. "State.inner.balance"
	Reason        string       // why encoding/json cannot round-trip it
}

// Error implements error.
func (e *StateCodecError) Error() string {
	return fmt.Sprintf("eventsource: aggregate %q: state type %v cannot be snapshotted with JSONCodec: %s %s; %s",
		e.AggregateType, e.Type, e.Field, e.Reason, stateCodecFixes)
}

// SnapshotRoundTripError is returned by Aggregate.EncodeState when the encoded
// state does not decode back, with the same codec, to the state it was made
// from. It wraps ErrSnapshotRoundTrip (and Err, when decoding failed).
type SnapshotRoundTripError struct {
	AggregateType string       // Aggregate.Type
	Type          reflect.Type // the state type S
	// Field is the path of the first differing field from S, e.g.
	// "State.inner.balance" or `State.Items[2]` or `State.ByID["a"]`;
	// empty when Err is set.
	Field string
	// Before and After are that field's value in the state and after
	// decoding (shortened when long; "<missing>" for an absent element).
	Before, After string
	// Err is the codec's error when the snapshot could not be decoded at all
	// (or the comparison panicked).
	Err error
}

// Error implements error.
func (e *SnapshotRoundTripError) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("eventsource: aggregate %q: snapshot refused: state type %v does not decode back with the codec: %v",
			e.AggregateType, e.Type, e.Err)
	}
	return fmt.Sprintf("eventsource: aggregate %q: snapshot refused: state type %v does not decode back to the same state: %s is %s before encoding but %s after decoding; the codec must round-trip the state exactly: with JSONCodec %s",
		e.AggregateType, e.Type, e.Field, e.Before, e.After, stateCodecFixes)
}

// Unwrap returns ErrSnapshotRoundTrip and, when set, Err.
func (e *SnapshotRoundTripError) Unwrap() []error {
	if e.Err != nil {
		return []error{ErrSnapshotRoundTrip, e.Err}
	}
	return []error{ErrSnapshotRoundTrip}
}

func bytesReader(b []byte) io.Reader { return bytes.NewReader(b) }
