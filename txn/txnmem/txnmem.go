package txnmem

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/onceflow/onceflow/eventsource"
	"github.com/onceflow/onceflow/txn"
)

// Store is the in-memory backend. The zero value is not usable: use New.
type Store struct {
	mu        sync.Mutex
	claims    map[txn.PartitionKey]*txn.Claim
	events    map[partKey][]eventsource.StoredEvent // by (topic, partition), seq order
	versions  map[aggKey]int64                      // last version per aggregate
	byAgg     map[aggKey][]eventsource.StoredEvent  // version order
	snapshots map[aggKey]eventsource.Snapshot
	results   map[resultKey]txn.CommandResult
	dead      []txn.DeadLetter
	outbox    map[txn.PartitionKey][]txn.OutboxRecord // per claim key, seq order
}

type partKey struct {
	topic     string
	partition int32
}

type aggKey struct{ typ, id string }

type resultKey struct{ id, typ string }

// New returns an empty in-memory store.
func New() *Store {
	return &Store{
		claims: map[txn.PartitionKey]*txn.Claim{}, events: map[partKey][]eventsource.StoredEvent{},
		versions: map[aggKey]int64{}, byAgg: map[aggKey][]eventsource.StoredEvent{},
		snapshots: map[aggKey]eventsource.Snapshot{}, results: map[resultKey]txn.CommandResult{},
		outbox: map[txn.PartitionKey][]txn.OutboxRecord{},
	}
}

var (
	_ txn.Backend        = (*Store)(nil)
	_ eventsource.Reader = (*Store)(nil)
)

// Claim takes ownership of a partition for owner: a new row continues the
// partition's seq after its stored events; an existing one gets epoch + 1.
// A new claim clears a halt.
func (s *Store) Claim(ctx context.Context, key txn.PartitionKey, owner string) (txn.Claim, error) {
	if err := ctx.Err(); err != nil {
		return txn.Claim{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.claims[key]
	if !ok {
		pk := partKey{key.Topic, key.Partition}
		c = &txn.Claim{PartitionKey: key, NextSeq: int64(len(s.events[pk])) + 1, NextOutboxSeq: int64(len(s.outbox[key])) + 1}
		s.claims[key] = c
	}
	c.Epoch++
	c.Owner, c.ClaimedAt = owner, time.Now()
	c.HaltedAt, c.HaltReason = nil, ""
	return *c, nil
}

// ReadClaim returns a partition's claim, or txn.ErrNotFound.
func (s *Store) ReadClaim(ctx context.Context, key txn.PartitionKey) (txn.Claim, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.claims[key]
	if !ok {
		return txn.Claim{}, fmt.Errorf("%w: claim %s[%d] group %q", txn.ErrNotFound, key.Topic, key.Partition, key.Group)
	}
	return *c, nil
}

// Commit applies a batch atomically under the fence, or nothing.
func (s *Store) Commit(ctx context.Context, b *txn.Batch) (txn.Committed, error) {
	if err := ctx.Err(); err != nil {
		return txn.Committed{}, err
	}
	if err := txn.ValidateBatch(b); err != nil {
		return txn.Committed{}, err
	}
	if b.InTx != nil || b.Emit != nil {
		return txn.Committed{}, fmt.Errorf("%w: InTx and Emit (a handler's own SQL) need the Postgres store", txn.ErrInvalidBatch)
	}
	key := b.Claim.PartitionKey
	next := txn.Committed{NextOffset: b.NextOffset, NextSeq: b.NextSeqAfter(), NextOutboxSeq: b.Claim.NextOutboxSeq + int64(len(b.Outbox))}
	s.mu.Lock()
	defer s.mu.Unlock()
	cur, ok := s.claims[key]
	if !ok || cur.Epoch != b.Claim.Epoch || cur.NextOffset != b.Claim.NextOffset || cur.NextSeq != b.Claim.NextSeq || cur.NextOutboxSeq != b.Claim.NextOutboxSeq {
		fe := &txn.FencedError{Key: key, Epoch: b.Claim.Epoch, ExpectedOffset: b.Claim.NextOffset, ExpectedSeq: b.Claim.NextSeq}
		if ok {
			fe.Current = *cur
		}
		return txn.Committed{}, fe
	}
	// Check every constraint before changing anything.
	pk := partKey{key.Topic, key.Partition}
	versions := map[aggKey]int64{}
	for _, e := range b.Events {
		ak := aggKey{e.AggregateType, e.AggregateID}
		last, seen := versions[ak]
		if !seen {
			last = s.versions[ak]
		}
		if e.Version <= last {
			return txn.Committed{}, fmt.Errorf("%w: %s/%s version %d is taken", eventsource.ErrConcurrencyConflict, e.AggregateType, e.AggregateID, e.Version)
		}
		versions[ak] = e.Version
	}
	ids := map[resultKey]bool{}
	for _, r := range b.Results {
		rk := resultKey{r.CommandID, r.AggregateType}
		if _, dup := s.results[rk]; dup || ids[rk] {
			return txn.Committed{}, fmt.Errorf("%w (command %q of %q)", txn.ErrDuplicateCommand, r.CommandID, r.AggregateType)
		}
		ids[rk] = true
	}
	now := time.Now()
	for _, e := range b.Events {
		e.RecordedAt = now
		s.events[pk] = append(s.events[pk], e)
		ak := aggKey{e.AggregateType, e.AggregateID}
		s.byAgg[ak] = append(s.byAgg[ak], e)
		s.versions[ak] = e.Version
	}
	for _, sn := range b.Snapshots {
		ak := aggKey{sn.AggregateType, sn.AggregateID}
		if old, ok := s.snapshots[ak]; !ok || sn.Version > old.Version {
			s.snapshots[ak] = sn
		}
	}
	for _, r := range b.Results {
		r.PartitionKey, r.RecordedAt = key, now
		s.results[resultKey{r.CommandID, r.AggregateType}] = r
	}
	for _, d := range b.DeadLetters {
		if slices.ContainsFunc(s.dead, func(x txn.DeadLetter) bool { return x.PartitionKey == key && x.Offset == d.Offset }) {
			continue // already recorded (a consumer replaying after a reset)
		}
		d.PartitionKey, d.RecordedAt = key, now
		d.ID = int64(len(s.dead)) + 1
		s.dead = append(s.dead, d)
	}
	for _, o := range b.Outbox {
		o.SourceTopic, o.SourcePartition, o.RecordedAt = key.Topic, key.Partition, now
		s.outbox[key] = append(s.outbox[key], o)
	}
	cur.NextOffset, cur.NextSeq, cur.NextOutboxSeq = next.NextOffset, next.NextSeq, next.NextOutboxSeq
	return next, nil
}

// LookupResults returns the stored results of ids for aggregateType.
func (s *Store) LookupResults(ctx context.Context, aggregateType string, ids []string) (map[string]txn.CommandResult, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]txn.CommandResult, len(ids))
	for _, id := range ids {
		if r, ok := s.results[resultKey{id, aggregateType}]; ok {
			out[id] = r
		}
	}
	return out, nil
}

// Halt marks a partition halted while epoch owns it.
func (s *Store) Halt(ctx context.Context, key txn.PartitionKey, epoch int64, reason string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.claims[key]
	if !ok || c.Epoch != epoch {
		return fmt.Errorf("%w: record halt of %s[%d]: epoch %d no longer owns it", txn.ErrFenced, key.Topic, key.Partition, epoch)
	}
	now := time.Now()
	c.HaltedAt, c.HaltReason = &now, reason
	return nil
}

// Resume clears a halt and reports whether the partition was halted.
func (s *Store) Resume(ctx context.Context, key txn.PartitionKey) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.claims[key]
	if !ok {
		return false, fmt.Errorf("%w: claim %s[%d] group %q", txn.ErrNotFound, key.Topic, key.Partition, key.Group)
	}
	was := c.HaltedAt != nil
	c.HaltedAt, c.HaltReason = nil, ""
	return was, nil
}

// MarkPublished moves the published position forward while epoch owns the
// partition.
func (s *Store) MarkPublished(ctx context.Context, key txn.PartitionKey, epoch, seq, outboxSeq int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.claims[key]
	if !ok || c.Epoch != epoch {
		return fmt.Errorf("%w: mark %s[%d] published: epoch %d no longer owns it", txn.ErrFenced, key.Topic, key.Partition, epoch)
	}
	c.PublishedSeq = max(c.PublishedSeq, seq)
	c.PublishedOutboxSeq = max(c.PublishedOutboxSeq, outboxSeq)
	return nil
}

// ReadOutbox returns up to limit outbox records written under a claim key
// from fromSeq.
func (s *Store) ReadOutbox(ctx context.Context, key txn.PartitionKey, fromSeq int64, limit int) ([]txn.OutboxRecord, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return seqTail(s.outbox[key], func(r txn.OutboxRecord) int64 { return r.Seq }, fromSeq, limit), nil
}

// Load returns, for each id with a snapshot or events, the latest snapshot
// and the events after it.
func (s *Store) Load(ctx context.Context, aggregateType string, ids []string) (map[string]eventsource.Loaded, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]eventsource.Loaded{}
	for _, id := range ids {
		ak := aggKey{aggregateType, id}
		var l eventsource.Loaded
		from := int64(0)
		if sn, ok := s.snapshots[ak]; ok {
			l.Snapshot = &sn
			from = sn.Version
		}
		for _, e := range s.byAgg[ak] {
			if e.Version > from {
				l.Events = append(l.Events, e)
			}
		}
		if l.Snapshot != nil || len(l.Events) > 0 {
			out[id] = l
		}
	}
	return out, nil
}

// ReadPartition returns up to limit events of a partition from fromSeq.
func (s *Store) ReadPartition(ctx context.Context, topic string, partition int32, fromSeq int64, limit int) ([]eventsource.StoredEvent, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return seqTail(s.events[partKey{topic, partition}], func(e eventsource.StoredEvent) int64 { return e.Seq }, fromSeq, limit), nil
}

// seqTail returns a copy of up to limit (<= 0: 1000) elements of xs, which
// is in seq order, from the first with seq >= from.
func seqTail[T any](xs []T, seq func(T) int64, from int64, limit int) []T {
	if limit <= 0 {
		limit = 1000
	}
	i, _ := slices.BinarySearchFunc(xs, from, func(x T, s int64) int { return cmp.Compare(seq(x), s) })
	return slices.Clone(xs[i:min(len(xs), i+limit)])
}

// Written returns the aggregates with a stored event at or beyond the
// given version.
func (s *Store) Written(ctx context.Context, aggregateType string, fromVersion map[string]int64) ([]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for id, v := range fromVersion {
		if s.versions[aggKey{aggregateType, id}] >= v {
			out = append(out, id)
		}
	}
	slices.Sort(out)
	return out, nil
}

// DeadLetters returns the dead letters, in the order they were stored.
func (s *Store) DeadLetters() []txn.DeadLetter {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.dead)
}
