package txn

import (
	"errors"
	"fmt"
)

var (
	// ErrFenced means a batch commit's compare-and-set matched no row: the
	// partition was claimed by a newer epoch, or its offset moved. Nothing of
	// the batch was written. The writer must stop the partition and drop its
	// in-memory state. Use errors.As with *FencedError for details.
	ErrFenced = errors.New("txn: fenced")
	// ErrNotFound is returned when a claim or command result does not exist.
	ErrNotFound = errors.New("txn: not found")
	// ErrInvalidBatch is returned by Commit for a malformed batch (a bug in
	// the caller, never retried).
	ErrInvalidBatch = errors.New("txn: invalid batch")
)

// FencedError details a fenced commit.
type FencedError struct {
	Key            PartitionKey
	Epoch          int64 // the writer's epoch
	ExpectedOffset int64 // the next_offset the writer expected
	Current        Claim // the claim row as found when the CAS missed
}

func (e *FencedError) Error() string {
	return fmt.Sprintf("txn: fenced: %s[%d] group %q: writer epoch %d expected offset %d, claim has epoch %d owner %q offset %d",
		e.Key.Topic, e.Key.Partition, e.Key.Group, e.Epoch, e.ExpectedOffset, e.Current.Epoch, e.Current.Owner, e.Current.NextOffset)
}

// Is makes errors.Is(err, ErrFenced) true.
func (e *FencedError) Is(target error) bool { return target == ErrFenced }

// SelfFenced reports whether the claim still has the writer's epoch, so the
// miss came from the writer's own earlier commit (for example one whose
// acknowledgement was lost) rather than from a new owner. The writer may then
// reload from Postgres and continue; otherwise it must wait to be assigned
// the partition again.
func (e *FencedError) SelfFenced() bool { return e.Current.Epoch == e.Epoch }
