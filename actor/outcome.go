package actor

import (
	"errors"
	"fmt"

	"github.com/onceflow/onceflow/projection"
	"github.com/onceflow/onceflow/txn"
)

// Outcome is what happened to a command, as stored in Postgres.
type Outcome struct {
	CommandID    string      `json:"command_id"`
	Status       txn.Outcome `json:"status"`
	AggregateID  string      `json:"aggregate_id,omitempty"`
	Partition    int32       `json:"partition"`
	Offset       int64       `json:"offset"`
	FirstVersion int64       `json:"first_version,omitempty"` // versions of the events written; 0 when none
	LastVersion  int64       `json:"last_version,omitempty"`
	FirstSeq     int64       `json:"first_seq,omitempty"` // (topic, partition, seq) positions of the events written
	LastSeq      int64       `json:"last_seq,omitempty"`
	Reason       string      `json:"reason,omitempty"` // rejection or dead-letter reason
	// Duplicate is true when the command id had been handled before: this
	// is the stored outcome of that first handling, and nothing changed.
	Duplicate bool `json:"duplicate,omitempty"`
	// PayloadMismatch is true on a duplicate whose command type or payload
	// differs from the command first handled under this id: the id was
	// reused for a different request, which was not applied. Client.Send
	// returns a *PayloadMismatchError for it (an HTTP API answers 422, per
	// the IETF httpapi idempotency-key draft).
	PayloadMismatch bool `json:"payload_mismatch,omitempty"`
}

var (
	// ErrRejected matches a *RejectedError.
	ErrRejected = errors.New("command rejected")
	// ErrDeadLettered matches a *DeadLetteredError.
	ErrDeadLettered = errors.New("command dead-lettered")
	// ErrPayloadMismatch matches a *PayloadMismatchError.
	ErrPayloadMismatch = errors.New("command id reused with a different payload")
	// ErrOutcomeUnknown matches an *OutcomeUnknownError.
	ErrOutcomeUnknown = errors.New("command outcome unknown")
	// ErrClosed is returned by a closed Client or Runtime.
	ErrClosed = errors.New("onceflow: closed")
)

// RejectedError is returned by Client.Send when Decide rejected the command.
// Nothing was changed; the offset moved on.
type RejectedError struct {
	CommandID string
	Reason    string
}

// Error implements error.
func (e *RejectedError) Error() string {
	return fmt.Sprintf("command %s rejected: %s", e.CommandID, e.Reason)
}

// Is makes errors.Is(err, ErrRejected) true.
func (e *RejectedError) Is(t error) bool { return t == ErrRejected }

// DeadLetteredError is returned by Client.Send when the runtime could not
// handle the command (undecodable, or the handler panicked). The raw record
// is in the dead-letter table.
type DeadLetteredError struct {
	CommandID string
	Reason    string
}

// Error implements error.
func (e *DeadLetteredError) Error() string {
	return fmt.Sprintf("command %s dead-lettered: %s", e.CommandID, e.Reason)
}

// Is makes errors.Is(err, ErrDeadLettered) true.
func (e *DeadLetteredError) Is(t error) bool { return t == ErrDeadLettered }

// PayloadMismatchError is returned by Client.Send when the command id had
// already been used for a command with another type or payload. The new
// command was not applied; Outcome is the stored outcome of the first one.
// Reusing an idempotency key for a different request is a client bug: use a
// new command id for a new request.
type PayloadMismatchError struct {
	CommandID string
	Outcome   Outcome // the stored outcome of the command first sent under the id
}

// Error implements error.
func (e *PayloadMismatchError) Error() string {
	return fmt.Sprintf("command id %s was already used for a different command (type or payload differ); this one was not applied (the first ended %s)", e.CommandID, e.Outcome.Status)
}

// Is makes errors.Is(err, ErrPayloadMismatch) true.
func (e *PayloadMismatchError) Is(t error) bool { return t == ErrPayloadMismatch }

// OutcomeUnknownError is returned by Client.Send when no outcome arrived
// before the deadline. The command may or may not be applied later: resend
// it with the same command id (WithCommandID) to learn its outcome; it will
// not be applied twice.
type OutcomeUnknownError struct {
	CommandID string
	Err       error // the context or timeout error
}

// Error implements error.
func (e *OutcomeUnknownError) Error() string {
	return fmt.Sprintf("command %s: outcome unknown (resend with the same command id to find out): %v", e.CommandID, e.Err)
}

// Is makes errors.Is(err, ErrOutcomeUnknown) true.
func (e *OutcomeUnknownError) Is(t error) bool { return t == ErrOutcomeUnknown }

// Unwrap returns the context or timeout error.
// Unwrap returns the underlying error.
func (e *OutcomeUnknownError) Unwrap() error { return e.Err }

// Position is where the command's events are in its source partition's
// sequence, for read-your-writes (projection.Waiter.WaitFor): the partition
// and the last seq it stored; Seq is 0 when it stored no event (a
// rejection, a dead letter, a command without events), and waiting for it
// returns at once.
func (o Outcome) Position() projection.Position {
	return projection.Position{Partition: o.Partition, Seq: o.LastSeq}
}
