package actor

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"strconv"
	"time"

	pa "github.com/asynkron/protoactor-go/actor"
	"github.com/confluentinc/confluent-kafka-go/v2/kafka"
	"github.com/jackc/pgx/v5"

	"github.com/onceflow/onceflow/eventsource"
	"github.com/onceflow/onceflow/projection"
	"github.com/onceflow/onceflow/txn"
)

// The event-consumer pipeline (projections), one batch at a time
// (partitionActor.processEvents), on the same partition actor, claim, fence,
// halt and commit as the command pipeline:
//
//	records ─ decodeEvents (pure: seq headers; repeats skipped by seq, foreign
//	          records dead-lettered, gaps marked, payloads decoded)
//	        ─ a gap: its events read from the Postgres event store, committed first
//	        ─ assembleEvents (pure: position, offset, dead letters)
//	        ─ ONE fenced transaction: registry check (paused, retired) + NOTIFY,
//	          Apply(events), dead letters, the position (next_seq) and offset
//	        ─ an Apply error: the events one per transaction, to find the poison
//	          event, which the failure policy dead-letters or halts on.

// evItem is one record of a consumer batch, or one event read from Postgres
// to fill a gap (msg nil).
type evItem struct {
	msg    *kafka.Message
	offset int64  // the record's offset; minus the seq for an event read from Postgres
	ev     *Event // nil: a repeat of an applied seq, or a foreign record
	dead   string // a foreign record: why it is dead-lettered
	poison string // an event that cannot be applied: why
	// gapFrom > 0: the topic lacks seqs gapFrom..ev.Seq-1 before this record.
	gapFrom int64
}

// eventFromRecord parses a history-topic record.
func eventFromRecord(m *kafka.Message) (eventsource.StoredEvent, error) {
	hs := make(map[string]string, 8)
	var metadata []byte
	for _, h := range m.Headers {
		hs[h.Key] = string(h.Value)
		if h.Key == HeaderMetadata {
			metadata = h.Value
		}
	}
	ev := eventsource.StoredEvent{
		Topic: hs[HeaderSourceTopic], AggregateType: hs[HeaderAggregateType], AggregateID: string(m.Key),
		Type: hs[HeaderEventType], Data: m.Value, CommandID: hs[HeaderCommandID], RecordedAt: m.Timestamp, Metadata: metadata,
	}
	for _, h := range []string{HeaderSourceTopic, HeaderSourcePartition, HeaderSeq, HeaderAggregateType, HeaderVersion, HeaderEventType} {
		if _, ok := hs[h]; !ok {
			return ev, fmt.Errorf("missing header %s (not a record an onceflow publisher wrote)", h)
		}
	}
	var err error
	var p int64
	if p, err = strconv.ParseInt(hs[HeaderSourcePartition], 10, 32); err != nil || p < 0 {
		return ev, fmt.Errorf("header %s %q is not a partition", HeaderSourcePartition, hs[HeaderSourcePartition])
	}
	ev.Partition = int32(p)
	if ev.Seq, err = strconv.ParseInt(hs[HeaderSeq], 10, 64); err != nil || ev.Seq < 1 {
		return ev, fmt.Errorf("header %s %q is not a seq", HeaderSeq, hs[HeaderSeq])
	}
	if ev.Version, err = strconv.ParseInt(hs[HeaderVersion], 10, 64); err != nil || ev.Version < 1 {
		return ev, fmt.Errorf("header %s %q is not a version", HeaderVersion, hs[HeaderVersion])
	}
	return ev, nil
}

// decodeEvents turns a consumer batch's records into items, in order, given
// the position (next, the next seq to apply) of source partition
// partition of source topic src. A record whose seq is below the position
// is a repeat (skipped); one beyond it marks a gap; one that is not an
// onceflow history record of this source partition is dead-lettered.
func decodeEvents(recs []*kafka.Message, next int64, src string, partition int32, reg *eventsource.Registry) []*evItem {
	items := make([]*evItem, 0, len(recs))
	for _, m := range recs {
		it := &evItem{msg: m, offset: int64(m.TopicPartition.Offset)}
		items = append(items, it)
		ev, err := eventFromRecord(m)
		switch {
		case err != nil:
			it.dead = err.Error()
		case ev.Topic != src || ev.Partition != partition:
			it.dead = fmt.Sprintf("misrouted: an event of %s[%d] on the history partition of %s[%d] (the history topic must be written by onceflow's publisher of %q only)",
				ev.Topic, ev.Partition, src, partition, src)
		case ev.Seq < next:
			// A repeat (publisher crash between Kafka and Postgres commits).
		default:
			if ev.Seq > next {
				it.gapFrom = next
			}
			next = ev.Seq + 1
			it.ev = &Event{StoredEvent: ev}
			it.poison = decodePayload(it.ev, reg)
		}
	}
	return items
}

// decodePayload sets ev.Payload; it returns why when the registry cannot.
func decodePayload(ev *Event, reg *eventsource.Registry) string {
	if reg == nil {
		return ""
	}
	v, err := reg.Decode(ev.Type, ev.Data)
	if err != nil {
		return fmt.Sprintf("decode event: %v", err)
	}
	ev.Payload = v
	return ""
}

// assembleEvents builds the transaction of a consumer unit: the events to
// apply, the dead letters (foreign records; poison events), the position
// after the unit's last event and the offset after its last record (an
// event read from Postgres moves the position only).
func assembleEvents(claim txn.Claim, unit []*evItem, what string) (*txn.Batch, []Event) {
	b := &txn.Batch{Claim: claim, NextOffset: claim.NextOffset, NextSeq: claim.NextSeq}
	var evs []Event
	for _, it := range unit {
		if it.msg != nil {
			b.NextOffset = max(b.NextOffset, it.offset+1)
		}
		switch {
		case it.dead != "":
			b.DeadLetters = append(b.DeadLetters, txn.DeadLetter{PartitionKey: claim.PartitionKey, Offset: it.offset,
				Key: it.msg.Key, Value: it.msg.Value, Headers: headersMap(it.msg), Error: it.dead})
		case it.ev == nil:
		case it.poison != "":
			e := it.ev
			b.DeadLetters = append(b.DeadLetters, txn.DeadLetter{PartitionKey: claim.PartitionKey, Offset: it.offset, CommandID: e.CommandID,
				Key: []byte(e.AggregateID), Value: e.Data, Headers: map[string]string{
					HeaderSourceTopic: e.Topic, HeaderSourcePartition: strconv.Itoa(int(e.Partition)), HeaderSeq: strconv.FormatInt(e.Seq, 10),
					HeaderAggregateType: e.AggregateType, HeaderVersion: strconv.FormatInt(e.Version, 10), HeaderEventType: e.Type, HeaderCommandID: e.CommandID},
				Error: fmt.Sprintf("%s: event seq %d (%s of %s %q): %s", what, e.Seq, e.Type, e.AggregateType, e.AggregateID, it.poison)})
			b.NextSeq = e.Seq + 1
		default:
			evs = append(evs, *it.ev)
			b.NextSeq = it.ev.Seq + 1
		}
	}
	return b, evs
}

// applyError is an error (or panic) of the consumer's handler.
type applyError struct{ err error }

func (e *applyError) Error() string { return "handler: " + e.err.Error() }
func (e *applyError) Unwrap() error { return e.err }

// apply runs the handler on evs in tx, turning a panic into an applyError.
func (k *consumerKind) apply(ctx context.Context, tx pgx.Tx, key txn.PartitionKey, evs []Event) (out []txn.OutboxRecord, err error) {
	defer func() {
		if p := recover(); p != nil {
			out, err = nil, &applyError{fmt.Errorf("panicked: %v\n%s", p, debug.Stack())}
		}
	}()
	out, err = k.handle(ctx, tx, key, evs)
	if err != nil {
		return nil, &applyError{err}
	}
	return out, nil
}

// processEvents runs one consumer batch to completion: commit, fence, halt
// or shutdown.
func (p *partitionActor) processEvents(actx pa.Context, recs []*kafka.Message) {
	k := p.rt.cons
	items := decodeEvents(recs, p.claim.NextSeq, k.source, p.claim.Partition, k.registry)
	for len(items) > 0 && !p.stopped {
		if it := items[0]; it.gapFrom > 0 && p.claim.NextSeq < it.ev.Seq {
			if !p.fillGap(actx, it.ev.Seq-1) {
				return
			}
			continue
		}
		j := 1
		for j < len(items) && items[j].gapFrom == 0 {
			j++
		}
		if !p.commitEvents(actx, items[:j]) {
			return
		}
		items = items[j:]
	}
}

// fillGap reads the events from the position up to seq to (at most
// publishBatch of them) from the Postgres event store and applies them: the
// topic no longer holds them (retention) or never did (a publisher bug,
// which the gap counter shows).
func (p *partitionActor) fillGap(actx pa.Context, to int64) bool {
	k := p.rt.cons
	from := p.claim.NextSeq
	n := min(to-from+1, publishBatch)
	var evs []eventsource.StoredEvent
	err := p.retry(actx, "read missing events from the event store", func(ctx context.Context) error {
		var err error
		evs, err = p.rt.es.ReadPartition(ctx, k.source, p.claim.Partition, from, int(n))
		return err
	})
	if err != nil {
		return false
	}
	if int64(len(evs)) != n || evs[0].Seq != from || evs[len(evs)-1].Seq != from+n-1 {
		p.halt(actx, fmt.Errorf("the history topic has seq %d of %s[%d] but the event store lacks seqs %d..%d: does this %s read another database than the source's?",
			to+1, k.source, p.claim.Partition, from, from+n-1, k.what))
		return false
	}
	p.rt.metrics.gapFilled.Add(n)
	p.log.Warn("events missing from the history topic (retention, or a publisher gap); applying them from the event store",
		"source", k.source, "from_seq", from, "to_seq", from+n-1, "topic_resumes_at_seq", to+1)
	items := make([]*evItem, len(evs))
	for i := range evs {
		// No Kafka offset: a dead letter of such an event records minus
		// its seq (unique per partition, like offsets).
		items[i] = &evItem{offset: -evs[i].Seq, ev: &Event{StoredEvent: evs[i]}}
		items[i].poison = decodePayload(items[i].ev, k.registry)
	}
	return p.commitEvents(actx, items)
}

// emitFunc is a consumer batch's work inside its fenced transaction: the
// registry check of a projection, then the handler.
func (p *partitionActor) emitFunc(evs []Event, next int64) func(ctx context.Context, tx pgx.Tx) ([]txn.OutboxRecord, error) {
	k := p.rt.cons
	schema, key := p.rt.cfg.schema, p.claim.PartitionKey
	partition := key.Partition
	return func(ctx context.Context, tx pgx.Tx) ([]txn.OutboxRecord, error) {
		if k.proj != nil {
			if err := projection.CheckInTx(ctx, tx, schema, k.proj.def, partition, next); err != nil {
				return nil, err
			}
		}
		if len(evs) == 0 {
			return nil, nil
		}
		return k.apply(ctx, tx, key, evs)
	}
}

// commitEvents commits items in one transaction or, when the handler fails,
// one event per transaction until the poison event is found and handled by
// the failure policy. It returns false when the partition stopped.
func (p *partitionActor) commitEvents(actx pa.Context, items []*evItem) bool {
	k := p.rt.cons
	single := false
	backoff := 50 * time.Millisecond
	for len(items) > 0 {
		n := len(items)
		if single {
			n = 1
		}
		unit := items[:n]
		if p.rt.cfg.onFailure == Halt {
			// A poison event halts under the Halt policy; a foreign record
			// (not an event of this source) is always dead-lettered: it is
			// misrouted input, not something a fix of the handler applies.
			for _, it := range unit {
				if it.poison != "" {
					p.halt(actx, fmt.Errorf("event seq %d (offset %d): %s (failure policy is Halt; skip the event with onceflow projections skip, or fix the handler and resume)", it.ev.Seq, it.offset, it.poison))
					return false
				}
			}
		}
		b, evs := assembleEvents(p.claim, unit, k.what)
		b.Emit = p.emitFunc(evs, b.NextSeqAfter())
		records := 0
		for _, it := range unit {
			if it.msg != nil {
				records++
			}
		}
		info := BatchInfo{Key: p.claim.PartitionKey, Epoch: p.claim.Epoch, FirstOffset: p.claim.NextOffset, NextOffset: b.NextOffset, Records: records}
		start := time.Now()
		committed, err := p.commit(b)
		var ae *applyError
		switch {
		case err == nil:
			p.rt.metrics.observeCommit(records, 0, time.Since(start))
			p.rt.metrics.applied.Add(int64(len(evs)))
			p.rt.metrics.deadLetters.Add(int64(len(b.DeadLetters)))
			if !p.consumerCommitted(actx, info, committed) {
				return false
			}
			if single && (unit[0].poison != "" || unit[0].dead != "") {
				single = false // the poison event is handled: whole batches again
			}
			items = items[n:]
		case errors.As(err, &ae) && (p.ctx.Err() != nil || txn.IsRetryable(ae.err) || errors.Is(ae.err, context.DeadlineExceeded)):
			// Not the event's fault: the partition is being let go, or
			// Postgres failed transiently (a deadlock between two process
			// managers' batches, a lost connection, a batch that ran past
			// its timeout). Never dead-letter an event for it.
			if p.ctx.Err() != nil {
				p.shutdown(actx)
				return false
			}
			p.log.Warn("handler failed transiently; retrying the batch", "what", k.what, "err", err, "backoff", backoff)
			if !p.sleep(&backoff) {
				p.shutdown(actx)
				return false
			}
		case errors.As(err, &ae):
			if n > 1 {
				p.log.Warn("handler failed on a batch; applying its events one by one to find the failing one", "what", k.what, "events", len(evs), "err", err)
				single = true
				continue
			}
			p.log.Error("handler failed on an event", "what", k.what, "seq", unit[0].ev.Seq, "policy", p.rt.cfg.onFailure, "err", err)
			unit[0].poison = ae.err.Error()
		default:
			p.consumerCommitFailed(actx, info, err)
			return false
		}
	}
	return true
}

// consumerCommitted moves the partition past a committed consumer batch
// and runs the after-commit effects. It returns false when an injected
// crash stopped the partition.
func (p *partitionActor) consumerCommitted(actx pa.Context, info BatchInfo, committed txn.Committed) bool {
	p.claim.NextOffset, p.claim.NextSeq, p.claim.NextOutboxSeq = committed.NextOffset, committed.NextSeq, committed.NextOutboxSeq
	p.committed.Store(committed.NextOffset)
	if h := p.rt.cfg.faults.AfterCommit; h != nil {
		if herr := h(p.ctx, info); herr != nil {
			p.log.Warn("injected crash after commit: restarting the partition", "err", herr)
			p.shutdown(actx)
			p.rt.requestControl(controlMsg{kind: controlRestart, partition: p.claim.Partition, epoch: p.claim.Epoch})
			return false
		}
	}
	if p.pub != nil {
		p.pub.offer(nil, nil, 0, committed.NextOutboxSeq-1)
	}
	if h := p.rt.cfg.hooks.OnCommitted; h != nil {
		h(info)
	}
	if info.Records > 0 {
		p.rt.mirrorOffset(p.claim.PartitionKey, committed.NextOffset)
	}
	return true
}

// consumerCommitFailed handles a consumer commit that failed for another
// reason than the handler: the partition stops (halt, fence, shutdown).
func (p *partitionActor) consumerCommitFailed(actx pa.Context, info BatchInfo, err error) {
	var fe *txn.FencedError
	switch {
	case errors.Is(err, projection.ErrPaused), errors.Is(err, projection.ErrRetired), errors.Is(err, projection.ErrNotFound):
		p.halt(actx, err)
	case errors.As(err, &fe):
		// A newer owner, or the position moved under us (an operator's
		// reset): reclaim and continue from Postgres.
		kind := controlFenced
		if fe.SelfFenced() {
			kind = controlRestart
		} else {
			p.rt.metrics.fenced.Add(1)
		}
		p.log.Warn("consumer commit fenced; letting the partition go", "err", err)
		if h := p.rt.cfg.hooks.OnFenced; h != nil {
			h(info, err)
		}
		p.shutdown(actx)
		p.rt.requestControl(controlMsg{kind: kind, partition: p.claim.Partition, epoch: p.claim.Epoch})
	case p.ctx.Err() != nil:
		p.shutdown(actx)
	default:
		p.halt(actx, fmt.Errorf("commit: %w", err))
	}
}
