package eventsource

import (
	"bytes"
	"errors"
	"fmt"
	"io"
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

// Unwrap returns the underlying error.
// Unwrap returns the codec error.
func (e *DecodeError) Unwrap() error { return e.Err }

func bytesReader(b []byte) io.Reader { return bytes.NewReader(b) }
