package actor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"sync/atomic"
	"time"

	pa "github.com/asynkron/protoactor-go/actor"
	"github.com/confluentinc/confluent-kafka-go/v2/kafka"
	"github.com/jackc/pgx/v5"

	"github.com/onceflow/onceflow/eventsource"
	"github.com/onceflow/onceflow/internal/baseline"
	"github.com/onceflow/onceflow/txn"
)

type itemStatus int

const (
	statusPending        itemStatus = iota
	statusDeadLetter                // could not be handled; goes to dead_letters
	statusRejected                  // Decide returned an error
	statusAccepted                  // events (maybe none) to store
	statusDuplicate                 // the command id already has a stored result
	statusBatchDuplicate            // the command id appeared earlier in this batch
)

// item is one record of a batch and, once decided, its result.
type item struct {
	msg    *kafka.Message
	offset int64
	env    envelope
	hasID  bool   // env.commandID is usable
	hash   []byte // requestHash of the record's type and payload
	cmd    any
	aggID  string
	// mismatch: a duplicate whose payload differs from the command first
	// stored under its id (the id was reused for another request).
	mismatch bool
	// misrouted: dead-lettered because its key maps to another partition.
	misrouted bool

	status       itemStatus
	reason       string
	events       []encodedEvent
	firstVersion int64
	lastVersion  int64
	firstSeq     int64
	lastSeq      int64
	stored       txn.CommandResult // for statusDuplicate
	dupOf        *item             // for statusBatchDuplicate
}

// Messages of the partition actor.
type (
	record        struct{ msg *kafka.Message }
	flushTick     struct{ gen uint64 }
	stopReq       struct{ done chan struct{} }
	passivateTick struct{}
	childEntry    struct {
		pid      *pa.PID
		lastUsed time.Time
	}
)

// decideTimeout bounds one batch's Decide calls for one aggregate. A Decide
// that takes longer is a bug (it must be pure); the partition halts.
const decideTimeout = 30 * time.Second

// commitTimeout bounds one commit attempt. It is not tied to the partition's
// lifetime: a batch already decided still attempts its commit after a
// revoke, and the fence decides whether it lands.
const commitTimeout = 30 * time.Second

// partitionActor owns one assigned partition for one epoch: it batches the
// partition's records, has aggregate children decide them, and commits each
// batch in one fenced transaction.
type partitionActor struct {
	rt        *Runtime
	claim     txn.Claim
	ctx       context.Context // cancelled when the partition is let go
	log       *slog.Logger
	queued    *atomic.Int64 // records sent by the poll loop, not yet received here
	inflight  *atomic.Int64 // records received by the poll loop, not yet committed or dropped
	committed *atomic.Int64 // the claim's next offset, for Health
	pub       *publisher    // nil when publishing is off

	pending  []*kafka.Message
	received int64 // next offset expected from Kafka
	timerGen uint64
	armed    bool
	children map[string]*childEntry
	stopped  bool
	gapSeen  bool
	// Batched replies of the batch being answered, by reply topic, and
	// the buffer they are encoded in (both reused from batch to batch).
	replies  map[string][]reply
	replyBuf []byte

	lastRecord  time.Time // consumers: when the last record arrived
	nextCatchUp time.Time // consumers: next idle catch-up check
}

func (p *partitionActor) Receive(actx pa.Context) {
	defer func() {
		// A panic here is a bug in onceflow; never let protoactor restart
		// the actor with fresh state behind the consumer's back.
		if r := recover(); r != nil {
			p.log.Error("partition actor panicked; restarting the partition from Postgres", "panic", r)
			p.shutdown(actx)
			p.rt.requestControl(controlMsg{kind: controlRestart, partition: p.claim.Partition, epoch: p.claim.Epoch})
		}
	}()
	switch m := actx.Message().(type) {
	case *record:
		p.queued.Add(-1)
		p.onRecord(actx, m.msg)
	case *flushTick:
		if m.gen == p.timerGen && !p.stopped {
			p.armed = false
			p.flush(actx)
		}
	case *stopReq:
		p.shutdown(actx)
		close(m.done)
	case *pa.Started:
		p.armPassivation(actx)
		p.armConsumerTick(actx)
	case *consumerTickMsg:
		if !p.stopped {
			p.onConsumerTick(actx)
			p.armConsumerTick(actx)
		}
	case *passivateTick:
		if !p.stopped {
			p.passivateIdle(actx)
			p.armPassivation(actx)
		}
	}
}

func (p *partitionActor) onRecord(actx pa.Context, msg *kafka.Message) {
	if p.stopped {
		p.inflight.Add(-1)
		return
	}
	off := int64(msg.TopicPartition.Offset)
	if off < p.received {
		// Already committed (the claim is past it) or already queued.
		p.inflight.Add(-1)
		return
	}
	if off > p.received && !p.gapSeen {
		// Normal with compaction or transaction markers; worth one line
		// otherwise (retention deleted records never consumed).
		p.gapSeen = true
		p.log.Info("offset gap in partition", "expected", p.received, "got", off)
	}
	p.received = off + 1
	p.lastRecord = time.Now()
	p.pending = append(p.pending, msg)
	cfg := &p.rt.cfg
	switch {
	case len(p.pending) >= cfg.maxRecords:
		p.flush(actx)
	case p.queued.Load() == 0:
		// Nothing more has been handed to this partition: close the batch
		// now rather than wait (maxWait is the cap, not a delay). Under
		// load the records that arrive while a batch commits queue up in
		// the mailbox and form the next batch, so batches grow with the
		// load by themselves, and an idle partition answers at once.
		p.flush(actx)
	case !p.armed:
		p.armed = true
		gen, self, root := p.timerGen, actx.Self(), p.rt.system.Root
		time.AfterFunc(cfg.maxWait, func() { root.Send(self, &flushTick{gen: gen}) })
	}
}

func (p *partitionActor) flush(actx pa.Context) {
	recs := p.pending
	p.pending = nil
	p.timerGen++
	p.armed = false
	if len(recs) == 0 {
		return
	}
	if p.rt.cons != nil {
		p.processEvents(actx, recs)
	} else {
		p.process(actx, recs)
	}
	p.inflight.Add(-int64(len(recs)))
	p.evictOverCap(actx)
}

// maxConflictRetries bounds how often a batch is decided again after its
// commit met an aggregate version written by another writer.
const maxConflictRetries = 3

// process runs one batch to completion: commit, fence, halt, or shutdown.
func (p *partitionActor) process(actx pa.Context, recs []*kafka.Message) {
	conflicts := 0
	var foreign map[string]bool // aggregates another writer keeps writing
	for !p.stopped {
		items := p.prepare(recs)
		if !baseline.AtLeastOnce() {
			if err := p.retry(actx, "look up command ids", func(ctx context.Context) error { return p.markDuplicates(ctx, items) }); err != nil {
				return
			}
		}
		p.refuseForeign(items, foreign)
		if err := p.retry(actx, "load aggregates", func(ctx context.Context) error { return p.ensureLoaded(ctx, actx, items) }); err != nil {
			return
		}
		snaps, states, err := p.decideAll(actx, items)
		if err != nil {
			p.halt(actx, err)
			return
		}
		if p.rt.cfg.onFailure == Halt {
			for _, it := range items {
				if it.status == statusDeadLetter {
					p.halt(actx, fmt.Errorf("offset %d: %s (failure policy is Halt)", it.offset, it.reason))
					return
				}
			}
		}
		b := p.assemble(items, snaps)
		if baseline.AtLeastOnce() {
			b.Results = nil // the benchmark's at-least-once baseline: no idempotency records
		}
		if f := p.rt.cfg.faults.Outbox; f != nil {
			// Tests only: records a handler would produce (no handler kind
			// produces outbox records yet).
			for _, it := range items {
				if it.status == statusAccepted {
					for _, r := range f(it.env.commandID) {
						r.Seq = p.claim.NextOutboxSeq + int64(len(b.Outbox))
						b.Outbox = append(b.Outbox, r)
					}
				}
			}
		}
		info := BatchInfo{Key: p.claim.PartitionKey, Epoch: p.claim.Epoch, FirstOffset: int64(recs[0].TopicPartition.Offset), NextOffset: b.NextOffset, Records: len(recs)}
		if hooks, faults := p.rt.cfg.hooks, p.rt.cfg.faults; hooks.OnCommitted != nil || hooks.OnFenced != nil || faults.BeforeCommit != nil || faults.AfterCommit != nil {
			for _, it := range items {
				if it.hasID {
					info.CommandIDs = append(info.CommandIDs, it.env.commandID)
				}
			}
		}
		if h := p.rt.cfg.faults.BeforeCommit; h != nil {
			h(p.ctx, info)
		}
		start := time.Now()
		committed, err := p.commit(b)
		var fe *txn.FencedError
		switch {
		case err == nil:
			p.rt.metrics.observeCommit(len(recs), len(b.Events), time.Since(start))
			p.claim.NextOffset, p.claim.NextSeq, p.claim.NextOutboxSeq = committed.NextOffset, committed.NextSeq, committed.NextOutboxSeq
			p.committed.Store(committed.NextOffset)
			if h := p.rt.cfg.faults.AfterCommit; h != nil {
				if herr := h(p.ctx, info); herr != nil {
					// As a crash right after the commit: no publish hand-off,
					// no replies (the next publisher reads Postgres).
					p.log.Warn("injected crash after commit: restarting the partition without replies", "err", herr)
					p.shutdown(actx)
					p.rt.requestControl(controlMsg{kind: controlRestart, partition: p.claim.Partition, epoch: p.claim.Epoch})
					return
				}
			}
			if p.pub != nil {
				p.pub.offer(b.Events, states, committed.NextSeq-1, committed.NextOutboxSeq-1)
			}
			if h := p.rt.cfg.hooks.OnCommitted; h != nil {
				h(info)
			}
			p.reply(items)
			p.rt.mirrorOffset(p.claim.PartitionKey, committed.NextOffset)
			return
		case errors.As(err, &fe) && fe.SelfFenced():
			// Our own earlier attempt landed (its acknowledgement was
			// lost). Postgres is the truth: reload and continue after it.
			p.log.Warn("commit found the claim already advanced by this owner; reloading", "next_offset", fe.Current.NextOffset)
			p.resetChildren(actx)
			p.claim.NextOffset, p.claim.NextSeq, p.claim.NextOutboxSeq = fe.Current.NextOffset, fe.Current.NextSeq, fe.Current.NextOutboxSeq
			p.committed.Store(fe.Current.NextOffset)
			if p.pub != nil {
				p.pub.offer(nil, nil, fe.Current.NextSeq-1, fe.Current.NextOutboxSeq-1) // it reads them from Postgres
			}
			p.replyStored(items, fe.Current.NextOffset)
			recs = dropBelow(recs, fe.Current.NextOffset)
			if len(recs) == 0 {
				return
			}
		case errors.As(err, &fe):
			p.rt.metrics.fenced.Add(1)
			p.log.Warn("commit fenced: partition claimed by a newer owner; dropping in-memory state", "err", err)
			if h := p.rt.cfg.hooks.OnFenced; h != nil {
				h(info, err)
			}
			p.shutdown(actx)
			p.rt.requestControl(controlMsg{kind: controlFenced, partition: p.claim.Partition, epoch: p.claim.Epoch})
			return
		case errors.Is(err, txn.ErrDuplicateCommand):
			// A command id of this batch got a result elsewhere meanwhile
			// (sent to two partitions). Decide the batch again: the lookup
			// will now find it.
			p.log.Warn("command id already has a result; deciding the batch again", "err", err)
			p.resetChildren(actx)
		case errors.Is(err, eventsource.ErrConcurrencyConflict):
			// Someone else wrote one of this batch's aggregates: a second
			// writer exists (a producer that bypasses the partitioner, a
			// misconfigured service). Never halt for it: reload from
			// Postgres and decide again; if it keeps happening, refuse the
			// aggregates it keeps happening to.
			conflicts++
			p.rt.metrics.conflicts.Add(1)
			p.log.Error("an aggregate of this batch was written by another writer meanwhile (a second writer exists: check the producers of this topic); reloading and deciding again",
				"attempt", conflicts, "err", err)
			p.resetChildren(actx)
			if conflicts >= maxConflictRetries {
				var ferr error
				var more map[string]bool
				if perr := p.retry(actx, "find conflicting aggregates", func(ctx context.Context) error {
					more, ferr = p.foreignWritten(ctx, items)
					return ferr
				}); perr != nil {
					return
				}
				if foreign == nil {
					foreign = map[string]bool{}
				}
				maps.Copy(foreign, more)
			}
		case p.ctx.Err() != nil:
			p.shutdown(actx)
			return
		default:
			p.halt(actx, fmt.Errorf("commit: %w", err))
			return
		}
	}
}

// foreignWritten returns the aggregates of a decided batch that have stored
// events at or beyond the versions the batch meant to write: the ones a
// second writer wrote.
func (p *partitionActor) foreignWritten(ctx context.Context, items []*item) (map[string]bool, error) {
	from := map[string]int64{}
	for _, it := range items {
		if it.status == statusAccepted && it.firstVersion > 0 {
			if v, ok := from[it.aggID]; !ok || it.firstVersion < v {
				from[it.aggID] = it.firstVersion
			}
		}
	}
	ids, err := p.rt.es.Written(ctx, p.rt.h.aggregateType(), from)
	if err != nil {
		return nil, err
	}
	out := make(map[string]bool, len(ids))
	for _, id := range ids {
		out[id] = true
	}
	return out, nil
}

// refuseForeign dead-letters the commands of aggregates that another writer
// kept writing while this batch was decided again and again.
func (p *partitionActor) refuseForeign(items []*item, foreign map[string]bool) {
	for _, it := range items {
		if it.status == statusPending && foreign[it.aggID] {
			it.status = statusDeadLetter
			it.reason = fmt.Sprintf("aggregate %q of partition %d was written by another writer during %d attempts to commit this command (two writers for one aggregate: check the producers of this topic); not applied",
				it.aggID, p.claim.Partition, maxConflictRetries)
		}
	}
}

// retry runs fn until it succeeds, fails with a non-retryable error (the
// partition halts) or the partition is let go.
func (p *partitionActor) retry(actx pa.Context, what string, fn func(ctx context.Context) error) error {
	backoff := 50 * time.Millisecond
	for {
		err := fn(p.ctx)
		if err == nil {
			return nil
		}
		if p.ctx.Err() != nil {
			p.stopped = true
			return p.ctx.Err()
		}
		if !txn.IsRetryable(err) {
			p.halt(actx, fmt.Errorf("%s: %w", what, err))
			return err
		}
		p.log.Warn("retrying", "step", what, "err", err, "backoff", backoff)
		if !p.sleep(&backoff) {
			p.stopped = true
			return p.ctx.Err()
		}
	}
}

// sleep waits out *backoff and doubles it (at most 5s). It returns false,
// early, when the partition is let go.
func (p *partitionActor) sleep(backoff *time.Duration) bool {
	select {
	case <-time.After(*backoff):
	case <-p.ctx.Done():
		return false
	}
	*backoff = min(*backoff*2, 5*time.Second)
	return true
}

// commit writes the batch, retrying transient errors. Each attempt has its
// own timeout and is not cancelled by a revoke (the fence decides).
func (p *partitionActor) commit(b *txn.Batch) (txn.Committed, error) {
	backoff := 50 * time.Millisecond
	for {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(p.ctx), commitTimeout)
		c, err := p.rt.store.Commit(ctx, b)
		cancel()
		if err == nil || !txn.IsRetryable(err) || p.ctx.Err() != nil {
			return c, err
		}
		p.log.Warn("commit failed, retrying", "err", err, "backoff", backoff)
		if !p.sleep(&backoff) {
			return c, err
		}
	}
}

func dropBelow(recs []*kafka.Message, off int64) []*kafka.Message {
	out := recs[:0:0]
	for _, m := range recs {
		if int64(m.TopicPartition.Offset) >= off {
			out = append(out, m)
		}
	}
	return out
}

// prepare parses and decodes records (decodeBatch). It changes no state.
func (p *partitionActor) prepare(recs []*kafka.Message) []*item {
	return decodeBatch(recs, p.rt.h.decode, p.routing())
}

// routing is what decodeBatch checks record keys against.
func (p *partitionActor) routing() routing {
	return routing{topic: p.claim.Topic, partition: p.claim.Partition, partitions: p.rt.partitions.Load(), partitioner: p.rt.cfg.partitioner}
}

// markDuplicates finds command ids that already have a stored result for
// this aggregate type, and duplicates whose payload differs from the stored
// command's.
func (p *partitionActor) markDuplicates(ctx context.Context, items []*item) error {
	ids := make([]string, 0, len(items))
	for _, it := range items {
		if it.hasID && it.status != statusBatchDuplicate {
			ids = append(ids, it.env.commandID)
		}
	}
	if len(ids) == 0 {
		return nil
	}
	found, err := p.rt.store.LookupResults(ctx, p.rt.h.aggregateType(), ids)
	if err != nil {
		return err
	}
	for _, it := range items {
		switch {
		case it.status == statusBatchDuplicate:
			it.mismatch = !sameRequest(it.dupOf.hash, it.hash)
		case it.hasID:
			if r, ok := found[it.env.commandID]; ok {
				it.status, it.stored = statusDuplicate, r
				it.mismatch = !sameRequest(r.RequestHash, it.hash)
			}
		}
	}
	return nil
}

// ensureLoaded spawns a child for every aggregate of the batch that has
// none, with its state loaded from Postgres in one round trip.
func (p *partitionActor) ensureLoaded(ctx context.Context, actx pa.Context, items []*item) error {
	var missing []string
	want := map[string]bool{}
	for _, it := range items {
		if it.status == statusPending && p.children[it.aggID] == nil && !want[it.aggID] {
			want[it.aggID] = true
			missing = append(missing, it.aggID)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	loaded, err := p.rt.es.Load(ctx, p.rt.h.aggregateType(), missing)
	if err != nil {
		return err
	}
	p.rt.metrics.loads.Add(int64(len(missing)))
	broken := map[string]error{}
	for _, id := range missing {
		var state any
		var version int64
		if l, ok := loaded[id]; ok {
			state, version, err = p.rt.h.rebuild(l)
			if err != nil {
				broken[id] = err
				continue
			}
		} else {
			state = p.rt.h.initial()
		}
		p.spawnChild(actx, id, state, version)
	}
	for _, it := range items {
		if err, ok := broken[it.aggID]; ok && it.status == statusPending {
			it.status, it.reason = statusDeadLetter, fmt.Sprintf("cannot load aggregate %q: %v", it.aggID, err)
		}
	}
	return nil
}

func (p *partitionActor) spawnChild(actx pa.Context, id string, state any, version int64) {
	p.children[id] = &childEntry{pid: p.spawnAggregate(actx, state, version), lastUsed: time.Now()}
}

// stopOnPanic never restarts a child: a restarted child would have lost its
// state. The parent notices the missing response and halts.
var stopOnPanic = pa.NewOneForOneStrategy(0, 0, func(reason any) pa.Directive { return pa.StopDirective })

// decideAll sends each aggregate its commands of the batch, in order, and
// waits for all of them. It returns the snapshots to write and, when state
// publishing is on, the encoded states of the aggregates that changed.
func (p *partitionActor) decideAll(actx pa.Context, items []*item) ([]eventsource.Snapshot, map[string]stateRec, error) {
	byAgg := map[string][]*item{}
	var order []string
	for _, it := range items {
		if it.status != statusPending {
			continue
		}
		if _, ok := byAgg[it.aggID]; !ok {
			order = append(order, it.aggID)
		}
		byAgg[it.aggID] = append(byAgg[it.aggID], it)
	}
	reqs := make([]decideReq, len(order))
	round := newDecideRound(len(order))
	now := time.Now()
	for i, id := range order {
		c := p.children[id]
		c.lastUsed = now
		reqs[i] = decideReq{items: byAgg[id], round: round}
		actx.Send(c.pid, &reqs[i])
	}
	timeout := time.NewTimer(decideTimeout)
	defer timeout.Stop()
	select {
	case <-round.done:
	case <-timeout.C:
		// The batch is abandoned (the partition halts); a child that has
		// not answered may still write its items, which are never read.
		return nil, nil, fmt.Errorf("%d of %d aggregates of the batch did not answer within %v", round.remaining.Load(), len(order), decideTimeout)
	}
	var snaps []eventsource.Snapshot
	var states map[string]stateRec
	for i := range reqs {
		r := &reqs[i].resp
		if r.err != nil {
			return nil, nil, fmt.Errorf("aggregate %q: %w", order[i], r.err)
		}
		if r.state != nil {
			if states == nil {
				states = make(map[string]stateRec, len(order))
			}
			states[order[i]] = stateRec{version: r.version, data: r.state}
		}
		switch {
		case r.snapErr != nil:
			// The events are the truth and commit as usual; only the
			// snapshot, which would load back wrong, is refused.
			p.rt.metrics.snapshotErrors.Add(1)
			p.log.Error("snapshot refused: the aggregate's state does not survive the codec (fix the state type; events are stored and loading replays them)", "aggregate", order[i], "err", r.snapErr)
		case r.snapshot != nil:
			snaps = append(snaps, eventsource.Snapshot{AggregateType: p.rt.h.aggregateType(), AggregateID: order[i], Version: r.version, State: r.snapshot})
		}
	}
	return snaps, states, nil
}

// assemble builds the batch transaction (assembleBatch) and adds the
// inline projections as the handler's own SQL.
func (p *partitionActor) assemble(items []*item, snaps []eventsource.Snapshot) *txn.Batch {
	b := assembleBatch(p.claim, p.rt.h.aggregateType(), items, snaps)
	// One timestamp per batch, at the millisecond: the history record's
	// Kafka timestamp carries it exactly, so a consumer sees the same
	// RecordedAt whether it reads an event from the topic or the store.
	at := time.Now().Truncate(time.Millisecond)
	for i := range b.Events {
		b.Events[i].RecordedAt = at
	}
	if len(p.rt.cfg.inline) > 0 && len(b.Events) > 0 {
		events, projs := b.Events, p.rt.cfg.inline
		b.InTx = func(ctx context.Context, tx pgx.Tx) error {
			for _, proj := range projs {
				if err := proj(ctx, tx, events); err != nil {
					return fmt.Errorf("inline projection: %w", err)
				}
			}
			return nil
		}
	}
	return b
}

// outcome returns the outcome to reply with for a committed item.
func (p *partitionActor) outcome(it *item) Outcome {
	switch it.status {
	case statusDuplicate:
		o := outcomeFromResult(it.stored, true)
		o.PayloadMismatch = it.mismatch
		return o
	case statusBatchDuplicate:
		o := p.outcome(it.dupOf)
		o.Duplicate, o.PayloadMismatch = true, it.mismatch
		return o
	}
	o := Outcome{CommandID: it.env.commandID, AggregateID: it.aggID, Partition: p.claim.Partition, Offset: it.offset, Reason: it.reason}
	switch it.status {
	case statusAccepted:
		o.Status, o.FirstVersion, o.LastVersion, o.FirstSeq, o.LastSeq = txn.OutcomeAccepted, it.firstVersion, it.lastVersion, it.firstSeq, it.lastSeq
	case statusRejected:
		o.Status = txn.OutcomeRejected
	default:
		o.Status = txn.OutcomeDeadLettered
	}
	return o
}

func (p *partitionActor) reply(items []*item) {
	for _, it := range items {
		p.rt.metrics.countOutcome(it.status)
		if it.misrouted {
			p.rt.metrics.misrouted.Add(1)
		}
		if !it.hasID || it.env.replyTopic == "" {
			continue
		}
		p.addReply(it, reply{Outcome: p.outcome(it), SendID: it.env.sendID})
	}
	p.sendReplies()
}

// addReply queues the reply to it: a batched reply when its sender reads
// those, else a JSON reply of its own, sent at once.
func (p *partitionActor) addReply(it *item, r reply) {
	if !it.env.batchReply {
		p.rt.sendReply(it.env.replyTopic, r)
		return
	}
	if p.replies == nil {
		p.replies = map[string][]reply{}
	}
	p.replies[it.env.replyTopic] = append(p.replies[it.env.replyTopic], r)
}

// sendReplies sends the queued batched replies: one record per reply topic
// (a few for a very large batch).
func (p *partitionActor) sendReplies() {
	for topic, reps := range p.replies {
		if len(reps) > 0 {
			p.replyBuf = p.rt.sendReplies(topic, reps, p.replyBuf)
			clear(reps)
			p.replies[topic] = reps[:0]
		}
	}
}

// replyStored answers the records below next from their stored results:
// they were committed by an attempt whose acknowledgement was lost, so their
// replies were never sent. Best effort: clients can also read the results
// table (WithResults).
func (p *partitionActor) replyStored(items []*item, next int64) {
	var ids []string
	for _, it := range items {
		if it.offset < next && it.hasID && it.env.replyTopic != "" {
			ids = append(ids, it.env.commandID)
		}
	}
	if len(ids) == 0 {
		return
	}
	found, err := p.rt.store.LookupResults(p.ctx, p.rt.h.aggregateType(), ids)
	if err != nil {
		p.log.Warn("replies for an already committed batch not sent (clients can read command_results)", "err", err)
		return
	}
	for _, it := range items {
		if r, ok := found[it.env.commandID]; ok && it.offset < next && it.env.replyTopic != "" {
			p.addReply(it, reply{Outcome: outcomeFromResult(r, it.status == statusBatchDuplicate || r.Offset != it.offset), SendID: it.env.sendID})
		}
	}
	p.sendReplies()
}

func (p *partitionActor) resetChildren(actx pa.Context) {
	for id, c := range p.children {
		actx.Stop(c.pid)
		delete(p.children, id)
	}
}

// shutdown stops the partition for good: children and pending records are
// dropped (they are still in Kafka; the claim says where to resume).
func (p *partitionActor) shutdown(actx pa.Context) {
	p.stopped = true
	p.resetChildren(actx)
	if n := len(p.pending); n > 0 {
		p.inflight.Add(-int64(n))
		p.pending = nil
	}
}

// halt is the one way a partition halts: it stops its children and drops
// its queue (shutdown), counts and logs the halt, records it on the claim
// row (so `onceflow claims` shows it and `onceflow resume` can clear it) and
// tells the runtime, which reports it in Health and watches for a resume.
func (p *partitionActor) halt(actx pa.Context, err error) {
	p.rt.metrics.halted.Add(1)
	p.log.Error("partition halted: it consumes nothing until resumed (Runtime.ResumePartition, onceflow resume) or reassigned", "err", err)
	p.shutdown(actx)
	reason := err.Error()
	p.rt.recordHalt(p.claim.PartitionKey, p.claim.Epoch, reason)
	p.rt.requestControl(controlMsg{kind: controlHalted, partition: p.claim.Partition, epoch: p.claim.Epoch, reason: reason})
}
