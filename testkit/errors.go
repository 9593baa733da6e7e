package testkit

import (
	"errors"
	"fmt"
)

// Conditions a caller may branch on (for example to skip a test when no
// Docker engine is available). Errors returned by New wrap one of them in an
// *EnvError.
var (
	// ErrDockerUnavailable: no Docker engine answered.
	ErrDockerUnavailable = errors.New("testkit: docker unavailable")
	// ErrImageUnavailable: an image is not present locally and could not be
	// pulled.
	ErrImageUnavailable = errors.New("testkit: image unavailable")
	// ErrPortInUse: a fixed host port asked for is taken.
	ErrPortInUse = errors.New("testkit: port in use")
	// ErrPostgresUnavailable: Postgres refused the connection or did not
	// become ready in time.
	ErrPostgresUnavailable = errors.New("testkit: postgres unavailable")
	// ErrKafkaUnavailable: the broker did not become ready in time, or its
	// container exited.
	ErrKafkaUnavailable = errors.New("testkit: kafka unavailable")
	// ErrInvalidConfig: an option or environment variable has a bad value.
	ErrInvalidConfig = errors.New("testkit: invalid configuration")
)

// EnvError is a test environment that could not be started. Its message
// names the cause and what to do about it.
type EnvError struct {
	Kind  error  // one of the Err* sentinels of this package
	Cause string // what went wrong, in one sentence
	Fix   string // what to do about it
	Err   error  // the underlying error, if any
}

// Error returns "testkit: cause: err" and the fix on its own line.
func (e *EnvError) Error() string {
	msg := "testkit: " + e.Cause
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	if e.Fix != "" {
		msg += "\n  fix: " + e.Fix
	}
	return msg
}

// Unwrap returns the sentinel and the underlying error, so errors.Is works
// with both.
func (e *EnvError) Unwrap() []error {
	if e.Err == nil {
		return []error{e.Kind}
	}
	return []error{e.Kind, e.Err}
}

func envErr(kind error, err error, fix, format string, args ...any) *EnvError {
	return &EnvError{Kind: kind, Cause: fmt.Sprintf(format, args...), Fix: fix, Err: err}
}
