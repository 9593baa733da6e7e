package txn

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

func checkKey(k PartitionKey) error {
	switch {
	case k.Group == "":
		return errors.New("group is empty")
	case k.Topic == "":
		return errors.New("topic is empty")
	case k.Partition < 0:
		return fmt.Errorf("partition %d is negative", k.Partition)
	}
	return nil
}

// checkID rejects strings Postgres cannot store in a text column. Unlike
// descriptive text, identifiers are never rewritten: two distinct ids must
// stay distinct.
func checkID(what, s string) error {
	switch {
	case s == "":
		return fmt.Errorf("%s is empty", what)
	case !utf8.ValidString(s):
		return fmt.Errorf("%s %q is not valid UTF-8", what, s)
	case strings.ContainsRune(s, 0):
		return fmt.Errorf("%s %q contains a NUL byte", what, s)
	}
	return nil
}

type aggKey struct{ typ, id string }

// validateBatch checks everything about a batch that does not need the
// database, so a caller bug is reported precisely and before any round trip.
func validateBatch(b *Batch) error {
	if b == nil {
		return fmt.Errorf("%w: batch is nil", ErrInvalidBatch)
	}
	if err := validate(b); err != nil {
		c := b.Claim
		return fmt.Errorf("%w: %s[%d] group %q epoch %d: %w", ErrInvalidBatch, c.Topic, c.Partition, c.Group, c.Epoch, err)
	}
	return nil
}

func validate(b *Batch) error {
	c := b.Claim
	if err := checkKey(c.PartitionKey); err != nil {
		return fmt.Errorf("claim: %w", err)
	}
	if c.Epoch < 1 {
		return fmt.Errorf("claim epoch %d: use the Claim returned by Store.Claim (epochs start at 1)", c.Epoch)
	}
	if c.NextOffset < 0 || c.NextSeq < 1 {
		return fmt.Errorf("claim next_offset %d / next_seq %d out of range (offsets start at 0, seqs at 1)", c.NextOffset, c.NextSeq)
	}
	if b.NextOffset < c.NextOffset || (b.NextOffset == c.NextOffset && b.NextSeq <= c.NextSeq && !b.Timer) {
		return fmt.Errorf("NextOffset %d must be greater than the claim's next_offset %d (a batch consumes at least one record; only a consumer's catch-up batch, whose NextSeq moves its position, may leave the offset where it is)", b.NextOffset, c.NextOffset)
	}

	if b.NextSeq != 0 {
		if len(b.Events) > 0 {
			return fmt.Errorf("NextSeq %d set on a batch with %d events (events move next_seq; NextSeq is a consumer's position)", b.NextSeq, len(b.Events))
		}
		if b.NextSeq < c.NextSeq {
			return fmt.Errorf("NextSeq %d is below the claim's next_seq %d (a position never moves back in a batch)", b.NextSeq, c.NextSeq)
		}
	}

	// Events: seqs contiguous from the claim's next_seq; per aggregate,
	// versions contiguous in batch order (the unique index catches a version
	// that already exists, not a gap).
	lastVersion := make(map[aggKey]int64)
	for i := range b.Events {
		e := &b.Events[i]
		if e.Topic != c.Topic {
			return fmt.Errorf("event %d: topic %q, want the claim's topic %q", i, e.Topic, c.Topic)
		}
		if e.Partition != c.Partition {
			return fmt.Errorf("event %d: partition %d, want the claim's partition %d", i, e.Partition, c.Partition)
		}
		if want := c.NextSeq + int64(i); e.Seq != want {
			return fmt.Errorf("event %d: seq %d, want %d (seqs run from the claim's next_seq %d without gaps)", i, e.Seq, want, c.NextSeq)
		}
		if err := checkID("aggregate type", e.AggregateType); err != nil {
			return fmt.Errorf("event %d (seq %d): %w", i, e.Seq, err)
		}
		if err := checkID("aggregate id", e.AggregateID); err != nil {
			return fmt.Errorf("event %d (seq %d): %w", i, e.Seq, err)
		}
		if err := checkID("event type", e.Type); err != nil {
			return fmt.Errorf("event %d (seq %d): %w", i, e.Seq, err)
		}
		if e.CommandID != "" {
			if err := checkID("command id", e.CommandID); err != nil {
				return fmt.Errorf("event %d (seq %d): %w", i, e.Seq, err)
			}
		}
		if e.Version < 1 {
			return fmt.Errorf("event %d (seq %d): %s/%s version %d, versions start at 1", i, e.Seq, e.AggregateType, e.AggregateID, e.Version)
		}
		k := aggKey{e.AggregateType, e.AggregateID}
		if prev, ok := lastVersion[k]; ok && e.Version != prev+1 {
			return fmt.Errorf("event %d (seq %d): %s/%s version %d follows version %d in the batch (versions of an aggregate must be consecutive)", i, e.Seq, e.AggregateType, e.AggregateID, e.Version, prev)
		}
		lastVersion[k] = e.Version
	}

	snaps := make(map[aggKey]struct{}, len(b.Snapshots))
	for i, s := range b.Snapshots {
		if err := checkID("aggregate type", s.AggregateType); err != nil {
			return fmt.Errorf("snapshot %d: %w", i, err)
		}
		if err := checkID("aggregate id", s.AggregateID); err != nil {
			return fmt.Errorf("snapshot %d: %w", i, err)
		}
		if s.Version < 1 {
			return fmt.Errorf("snapshot %d: %s/%s version %d, versions start at 1", i, s.AggregateType, s.AggregateID, s.Version)
		}
		k := aggKey{s.AggregateType, s.AggregateID}
		if _, dup := snaps[k]; dup {
			return fmt.Errorf("snapshot %d: second snapshot of %s/%s (at most one per aggregate per batch: keep the latest)", i, s.AggregateType, s.AggregateID)
		}
		snaps[k] = struct{}{}
	}

	for i := range b.Outbox {
		o := &b.Outbox[i]
		if want := c.NextOutboxSeq + int64(i); o.Seq != want {
			return fmt.Errorf("outbox record %d: seq %d, want %d (outbox seqs run from the claim's next_outbox_seq %d without gaps)", i, o.Seq, want, c.NextOutboxSeq)
		}
		if (o.SourceTopic != "" && o.SourceTopic != c.Topic) || (o.SourceTopic != "" && o.SourcePartition != c.Partition) {
			return fmt.Errorf("outbox record %d: source %s[%d], want the claim's %s[%d] (or leave it empty)", i, o.SourceTopic, o.SourcePartition, c.Topic, c.Partition)
		}
		if err := checkID("outbox record topic", o.Topic); err != nil {
			return fmt.Errorf("outbox record %d (seq %d): %w", i, o.Seq, err)
		}
	}
	if len(b.Outbox) > 0 && c.NextOutboxSeq < 1 {
		return fmt.Errorf("claim next_outbox_seq %d out of range (outbox seqs start at 1)", c.NextOutboxSeq)
	}

	type resultID struct{ id, typ string }
	ids := make(map[resultID]struct{}, len(b.Results))
	for i := range b.Results {
		r := &b.Results[i]
		if err := checkID("command id", r.CommandID); err != nil {
			return fmt.Errorf("result %d: %w", i, err)
		}
		if _, dup := ids[resultID{r.CommandID, r.AggregateType}]; dup {
			return fmt.Errorf("result %d: command id %q of aggregate type %q appears twice in the batch", i, r.CommandID, r.AggregateType)
		}
		ids[resultID{r.CommandID, r.AggregateType}] = struct{}{}
		if r.PartitionKey != (PartitionKey{}) && r.PartitionKey != c.PartitionKey {
			return fmt.Errorf("result %d (command %q): partition key %+v differs from the claim's %+v (leave it zero)", i, r.CommandID, r.PartitionKey, c.PartitionKey)
		}
		if r.Offset < c.NextOffset || r.Offset >= b.NextOffset {
			return fmt.Errorf("result %d (command %q): offset %d outside the batch's offsets [%d, %d)", i, r.CommandID, r.Offset, c.NextOffset, b.NextOffset)
		}
		switch r.Outcome {
		case OutcomeAccepted, OutcomeRejected, OutcomeDeadLettered:
		default:
			return fmt.Errorf("result %d (command %q): unknown outcome %q", i, r.CommandID, r.Outcome)
		}
		for _, f := range []struct{ what, s string }{{"aggregate type", r.AggregateType}, {"aggregate id", r.AggregateID}} {
			if f.s != "" {
				if err := checkID(f.what, f.s); err != nil {
					return fmt.Errorf("result %d (command %q): %w", i, r.CommandID, err)
				}
			}
		}
	}

	offsets := make(map[int64]struct{}, len(b.DeadLetters))
	for i := range b.DeadLetters {
		d := &b.DeadLetters[i]
		if d.PartitionKey != (PartitionKey{}) && d.PartitionKey != c.PartitionKey {
			return fmt.Errorf("dead letter %d (offset %d): partition key %+v differs from the claim's %+v (leave it zero)", i, d.Offset, d.PartitionKey, c.PartitionKey)
		}
		// A consumer's dead letter of an event it read from the event store
		// (no Kafka record) records minus the event's seq, within the
		// batch's positions.
		fromStore := b.NextSeq != 0 && d.Offset < 0 && -d.Offset >= c.NextSeq && -d.Offset < b.NextSeq
		if !fromStore && (d.Offset < c.NextOffset || d.Offset >= b.NextOffset) {
			return fmt.Errorf("dead letter %d: offset %d outside the batch's offsets [%d, %d) (or, for an event a consumer read from the event store, minus a seq in [%d, %d))", i, d.Offset, c.NextOffset, b.NextOffset, c.NextSeq, max(b.NextSeq, c.NextSeq))
		}
		if _, dup := offsets[d.Offset]; dup {
			return fmt.Errorf("dead letter %d: second dead letter for offset %d", i, d.Offset)
		}
		offsets[d.Offset] = struct{}{}
		if d.Error == "" {
			return fmt.Errorf("dead letter %d (offset %d): Error is empty (say why the record could not be handled)", i, d.Offset)
		}
	}
	return nil
}

// ValidateBatch reports what is malformed in a batch, without a database
// (an error wrapping ErrInvalidBatch): the checks Store.Commit runs first.
// Other Backend implementations run the same checks.
func ValidateBatch(b *Batch) error { return validateBatch(b) }
