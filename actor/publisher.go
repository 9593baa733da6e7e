package actor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"

	"github.com/onceflow/onceflow/eventsource"
	"github.com/onceflow/onceflow/txn"
)

// Events out. Every event a partition stores is published to Kafka after
// commit, twice:
//
//   - the history topic (default <command topic>.events): one record per
//     event, on the same partition number as its source partition, in seq
//     order, key = aggregate id, value = the stored event data, headers
//     HeaderSourceTopic, HeaderSourcePartition, HeaderSeq, HeaderAggregateType,
//     HeaderVersion, HeaderEventType, HeaderCommandID;
//   - the state topic (default <command topic>.state, compacted): key =
//     aggregate id, value = the aggregate's state encoded by the registry's
//     codec, headers HeaderAggregateType and HeaderVersion.
//
// The publisher of a partition is its current owner, for one epoch. It runs
// beside the partition actor and never blocks it: after each commit the
// actor hands it the batch's events and states (low latency); on claim, and
// whenever a hand-off is missing, it reads the events from Postgres from
// the partition's published_seq. Each publish step is ONE Kafka transaction
// (transactional.id per source topic and partition, so a new owner's
// InitTransactions fences a zombie publisher in Kafka too); published_seq
// moves in Postgres only after that transaction committed. Hence a consumer
// of the history topic (read_committed, the librdkafka default) sees every
// seq of a partition, in order, without gap; a seq can repeat (a crash
// between the Kafka commit and the Postgres update, an ambiguous commit),
// but only after it was first seen: dedupe by HeaderSeq. A publish failure
// (broker down, topic missing) never blocks commands: the publisher retries
// with backoff, the lag shows in Health and the metrics, and it catches up.

// Headers of history and state records.
const (
	HeaderSourceTopic     = "onceflow-source-topic"
	HeaderSourcePartition = "onceflow-source-partition"
	HeaderSeq             = "onceflow-seq"
	HeaderAggregateType   = "onceflow-aggregate-type"
	HeaderVersion         = "onceflow-version"
	HeaderEventType       = "onceflow-event-type"
	// HeaderMetadata carries the stored event's metadata, when it has any.
	HeaderMetadata = "onceflow-metadata"
	// HeaderOutboxSeq is the outbox seq of a record the publisher sent
	// from the outbox (with the source topic and partition headers).
	HeaderOutboxSeq = "onceflow-outbox-seq"
)

// publishBatch bounds the events of one Kafka transaction read from
// Postgres during catch-up.
const publishBatch = 2000

// stateRec is an aggregate's encoded state after a batch.
type stateRec struct {
	version int64
	data    []byte
}

// handoff is what a committed batch gives its publisher.
type handoff struct {
	events []eventsource.StoredEvent // seq order, contiguous
	states map[string]stateRec
}

type publisher struct {
	rt    *Runtime
	key   txn.PartitionKey
	epoch int64
	log   *slog.Logger
	in    chan *handoff

	committed atomic.Int64 // last committed seq of the partition
	published atomic.Int64 // last seq published (Kafka transaction committed)
	// The same for the outbox: records the handlers produced, sent to their
	// topics in the same kind of Kafka transactions.
	committedOut atomic.Int64
	publishedOut atomic.Int64
	lastErr      atomic.Pointer[string]
	done         chan struct{}
}

func newPublisher(r *Runtime, claim txn.Claim, log *slog.Logger) *publisher {
	p := &publisher{rt: r, key: claim.PartitionKey, epoch: claim.Epoch, log: log.With("component", "publisher"),
		in: make(chan *handoff, 256), done: make(chan struct{})}
	if r.cons != nil {
		// An event consumer (process manager) publishes its outbox only;
		// its claim's next_seq is its position in another partition's
		// events.
		claim.NextSeq, claim.PublishedSeq = 1, 0
	}
	p.committed.Store(claim.NextSeq - 1)
	start := claim.PublishedSeq
	if unsafeSkipPublish && start > 0 {
		// Only in builds with the onceflow_unsafe_skip_publish tag, which
		// break the promise on purpose so the chaos checker can show it
		// catches a gap (see publisher_unsafe_on.go).
		start++
	}
	p.published.Store(start)
	p.committedOut.Store(claim.NextOutboxSeq - 1)
	p.publishedOut.Store(claim.PublishedOutboxSeq)
	return p
}

// offer hands a committed batch to the publisher. It never blocks: when the
// queue is full the hand-off is dropped and the publisher reads those events
// from Postgres instead.
func (p *publisher) offer(events []eventsource.StoredEvent, states map[string]stateRec, committedSeq, committedOutboxSeq int64) {
	p.committed.Store(committedSeq)
	if committedOutboxSeq > p.committedOut.Swap(committedOutboxSeq) {
		select {
		case p.in <- &handoff{}: // wake the publisher: outbox records to send
		default:
		}
	}
	if len(events) == 0 {
		return
	}
	select {
	case p.in <- &handoff{events: events, states: states}:
	default:
	}
}

func (p *publisher) lag() int64 {
	return max(p.committed.Load()-p.published.Load(), 0) + max(p.committedOut.Load()-p.publishedOut.Load(), 0)
}

// behind reports whether events or outbox records wait to be published.
func (p *publisher) behind() bool {
	return p.published.Load() < p.committed.Load() || p.publishedOut.Load() < p.committedOut.Load()
}

func (p *publisher) err() string {
	if e := p.lastErr.Load(); e != nil {
		return *e
	}
	return ""
}

func (p *publisher) setErr(err error) {
	if err == nil {
		p.lastErr.Store(nil)
		return
	}
	s := err.Error()
	p.lastErr.Store(&s)
}

// run publishes until ctx ends or the partition has a newer owner.
func (p *publisher) run(ctx context.Context) {
	defer close(p.done)
	var (
		prod     *txnProducer
		pending  []*handoff
		dirty    bool // published moved but Postgres not told yet
		lastMark time.Time
		backoff  = 100 * time.Millisecond
	)
	defer func() {
		if prod != nil {
			prod.close()
		}
		if dirty {
			// Stopping (revoke, shutdown): record the position so the next
			// owner does not repeat what this one published. Best effort.
			_ = p.mark(context.WithoutCancel(ctx))
		}
	}()
	fail := func(what string, err error) bool {
		p.rt.metrics.publishErrors.Add(1)
		p.setErr(fmt.Errorf("%s: %w", what, err))
		p.log.Warn("publishing events failed; commands go on, publishing lags and retries", "step", what, "err", err, "backoff", backoff, "lag", p.lag())
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return false
		}
		backoff = min(backoff*2, 5*time.Second)
		return true
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for ctx.Err() == nil {
		// progressed: this round published something. Behind without
		// progress (nothing readable yet) waits for a hand-off or the tick
		// instead of spinning.
		progressed := false
	drain:
		for {
			select {
			case h := <-p.in:
				pending = append(pending, h)
			default:
				break drain
			}
		}
		if p.behind() {
			if prod == nil {
				var err error
				if prod, err = p.newProducer(ctx); err != nil {
					if errors.Is(err, txn.ErrFenced) {
						return
					}
					prod = nil
					if !fail("start transactional producer", err) {
						return
					}
					continue
				}
			}
			var (
				events []eventsource.StoredEvent
				states map[string]stateRec
				recs   []txn.OutboxRecord
				err    error
			)
			if pos := p.published.Load(); pos < p.committed.Load() {
				events, states, pending, err = p.next(ctx, pos, pending)
			}
			if pos := p.publishedOut.Load(); err == nil && pos < p.committedOut.Load() {
				rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
				recs, err = p.rt.store.ReadOutbox(rctx, p.key, pos+1, publishBatch)
				cancel()
				if err == nil && len(recs) > 0 && recs[0].Seq != pos+1 {
					err = fmt.Errorf("outbox of %s[%d] has seq %d after %d: a gap (the store is corrupt or was edited)", p.key.Topic, p.key.Partition, recs[0].Seq, pos)
				}
			}
			if err == nil && (len(events) > 0 || len(recs) > 0) {
				err = prod.publish(ctx, p, events, states, recs)
			}
			if err != nil {
				prod.close()
				prod = nil
				if !fail("publish", err) {
					return
				}
				continue
			}
			if len(events) > 0 {
				p.published.Store(events[len(events)-1].Seq)
				p.rt.metrics.published.Add(int64(len(events)))
			}
			if len(recs) > 0 {
				p.publishedOut.Store(recs[len(recs)-1].Seq)
				p.rt.metrics.publishedOutbox.Add(int64(len(recs)))
			}
			if len(events) > 0 || len(recs) > 0 {
				p.rt.metrics.publishTxns.Add(1)
				dirty = true
				progressed = true
			}
			backoff = 100 * time.Millisecond
			p.setErr(nil)
		}
		// The position in Postgres follows at most every markEvery (and
		// when the publisher stops): a lagging position only means a new
		// owner repeats a few events, and one Postgres transaction per
		// Kafka transaction would double the commit load at small batches.
		if dirty && time.Since(lastMark) >= markEvery {
			lastMark = time.Now()
			switch err := p.mark(ctx); {
			case err == nil:
				dirty = false
			case errors.Is(err, txn.ErrFenced):
				p.log.Info("publisher stops: the partition has a newer owner", "err", err)
				return
			default:
				p.log.Warn("recording the published position failed; will retry (a new owner may publish those events again)", "err", err)
			}
		}
		if p.behind() && progressed {
			continue
		}
		var markSoon <-chan time.Time
		if dirty {
			markSoon = time.After(markEvery - time.Since(lastMark))
		}
		select {
		case h := <-p.in:
			pending = append(pending, h)
		case <-tick.C:
		case <-markSoon:
		case <-ctx.Done():
		}
	}
}

// next returns the events to publish after pos, with the states to publish
// for them, from the hand-offs when they continue pos, from Postgres
// otherwise; and the hand-offs still pending.
func (p *publisher) next(ctx context.Context, pos int64, pending []*handoff) ([]eventsource.StoredEvent, map[string]stateRec, []*handoff, error) {
	events, states, rest, ok := takeHandoffs(pos, pending, publishBatch)
	if ok {
		return events, states, rest, nil
	}
	pending = rest
	var err error
	// Catch up from Postgres, up to the first hand-off.
	limit := publishBatch
	if len(pending) > 0 {
		limit = int(min(int64(limit), pending[0].events[0].Seq-1-pos))
	}
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	events, err = p.rt.es.ReadPartition(rctx, p.key.Topic, p.key.Partition, pos+1, limit)
	if err != nil {
		return nil, nil, pending, err
	}
	if len(events) == 0 {
		return nil, nil, pending, nil
	}
	if events[0].Seq != pos+1 {
		return nil, nil, pending, fmt.Errorf("event store of %s[%d] has seq %d after %d: a gap (the store is corrupt or was edited)", p.key.Topic, p.key.Partition, events[0].Seq, pos)
	}
	states, err = p.loadStates(rctx, events)
	return events, states, pending, err
}

// takeHandoffs returns the events to publish after pos from the queued
// hand-offs, when the first one still needed continues pos: hand-offs
// already published are dropped, a partly published one is trimmed, and the
// contiguous ones queued behind it are coalesced (up to limit events; a
// later state of an aggregate replaces an earlier one), so that under load
// one Kafka transaction carries many commits. ok is false when pos is not
// continued (the events in between must be read from Postgres); rest is
// then the queue without the hand-offs already published.
func takeHandoffs(pos int64, pending []*handoff, limit int) (events []eventsource.StoredEvent, states map[string]stateRec, rest []*handoff, ok bool) {
	for len(pending) > 0 && (len(pending[0].events) == 0 || pending[0].events[len(pending[0].events)-1].Seq <= pos) {
		pending = pending[1:] // already published (by a catch-up), or only a wake-up
	}
	if len(pending) == 0 || pending[0].events[0].Seq > pos+1 {
		return nil, nil, pending, false
	}
	h := pending[0]
	events, states = h.events[pos+1-h.events[0].Seq:], h.states
	pending = pending[1:]
	for len(pending) > 0 && len(events) < limit && len(pending[0].events) > 0 && pending[0].events[0].Seq == events[len(events)-1].Seq+1 {
		nh := pending[0]
		pending = pending[1:]
		events = append(events[:len(events):len(events)], nh.events...)
		if len(nh.states) > 0 {
			merged := make(map[string]stateRec, len(states)+len(nh.states))
			maps.Copy(merged, states)
			maps.Copy(merged, nh.states)
			states = merged
		}
	}
	return events, states, pending, true
}

// loadStates reads the current state of the aggregates of events (at least
// as new as the events: the latest record per key on the compacted topic is
// what counts).
func (p *publisher) loadStates(ctx context.Context, events []eventsource.StoredEvent) (map[string]stateRec, error) {
	if !p.rt.cfg.publishState {
		return nil, nil
	}
	aggType := p.rt.h.aggregateType()
	var ids []string
	seen := map[string]bool{}
	for _, e := range events {
		if e.AggregateType == aggType && !seen[e.AggregateID] {
			seen[e.AggregateID] = true
			ids = append(ids, e.AggregateID)
		}
	}
	loaded, err := p.rt.es.Load(ctx, aggType, ids)
	if err != nil {
		return nil, err
	}
	out := make(map[string]stateRec, len(ids))
	for _, id := range ids {
		state, version, err := p.rt.h.rebuild(loaded[id])
		if err != nil {
			p.log.Warn("state of an aggregate not published: it cannot be loaded", "aggregate", id, "err", err)
			continue
		}
		data, err := p.rt.h.marshalState(state)
		if err != nil {
			p.log.Warn("state of an aggregate not published: it cannot be encoded", "aggregate", id, "err", err)
			continue
		}
		out[id] = stateRec{version: version, data: data}
	}
	return out, nil
}

// markEvery is how often at most the publisher records its position.
const markEvery = 100 * time.Millisecond

func (p *publisher) mark(ctx context.Context) error {
	mctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return p.rt.store.MarkPublished(mctx, p.key, p.epoch, p.published.Load(), p.publishedOut.Load())
}

// newProducer starts a transactional producer for this partition, after
// checking in Postgres that this epoch still owns it (so a zombie does not
// fence the live owner's producer in Kafka).
func (p *publisher) newProducer(ctx context.Context) (*txnProducer, error) {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	c, err := p.rt.store.ReadClaim(cctx, p.key)
	if err != nil {
		return nil, err
	}
	if c.Epoch != p.epoch {
		return nil, fmt.Errorf("%w: epoch %d, claim has %d", txn.ErrFenced, p.epoch, c.Epoch)
	}
	m := baseConfig(&p.rt.cfg)
	for _, k := range consumerOnly {
		delete(m, k)
	}
	if b := p.rt.cfg.publishBrokers; b != "" {
		m["bootstrap.servers"] = b
	}
	// Outbox records are keyed by their destination's aggregate id: place
	// them with the runtime's partitioner.
	if pt := p.rt.cfg.partitioner.Librdkafka; pt != "" {
		m["partitioner"] = pt
	}
	m["transactional.id"] = fmt.Sprintf("onceflow.publish.%s.%d", p.key.Topic, p.key.Partition)
	if p.rt.cons != nil {
		// Several consumers read one history topic: one id per claim key.
		m["transactional.id"] = fmt.Sprintf("onceflow.publish.%s.%s.%d", p.key.Group, p.key.Topic, p.key.Partition)
	}
	m["go.delivery.reports"] = false
	producerChannels(m)
	m["client.id"] = p.rt.cfg.instanceID + "-publish-" + strconv.Itoa(int(p.key.Partition))
	if _, ok := m["linger.ms"]; !ok {
		m["linger.ms"] = 1
	}
	prod, err := kafka.NewProducer(&m)
	if err != nil {
		return nil, fmt.Errorf("kafka producer: %w", err)
	}
	tp := &txnProducer{p: prod, drained: make(chan struct{})}
	go func() {
		defer close(tp.drained)
		for range prod.Events() {
		}
	}()
	if err := prod.InitTransactions(cctx); err != nil {
		tp.close()
		return nil, fmt.Errorf("init transactions: %w", err)
	}
	return tp, nil
}

// txnProducer is one transactional producer and its event drain.
type txnProducer struct {
	p       *kafka.Producer
	drained chan struct{}
	open    bool // a transaction is open
}

func (t *txnProducer) close() {
	if t.open {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = t.p.AbortTransaction(ctx)
		cancel()
	}
	t.p.Close()
	<-t.drained
}

// publish writes events and states in one Kafka transaction.
func (t *txnProducer) publish(ctx context.Context, p *publisher, events []eventsource.StoredEvent, states map[string]stateRec, recs []txn.OutboxRecord) error {
	if err := t.p.BeginTransaction(); err != nil {
		return fmt.Errorf("begin transaction: %w", err)
	}
	t.open = true
	cfg := &p.rt.cfg
	part := p.key.Partition
	srcPart := []byte(strconv.Itoa(int(part)))
	produce := func(m *kafka.Message) error {
		for {
			err := t.p.Produce(m, nil)
			var ke kafka.Error
			if err == nil || !errors.As(err, &ke) || ke.Code() != kafka.ErrQueueFull {
				return err
			}
			select {
			case <-time.After(5 * time.Millisecond):
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
	for i := range events {
		e := &events[i]
		m := &kafka.Message{
			TopicPartition: kafka.TopicPartition{Topic: &cfg.historyTopic, Partition: part},
			Key:            []byte(e.AggregateID),
			Value:          e.Data,
			Timestamp:      e.RecordedAt, // when it was stored (zero: librdkafka's now)
			Headers: []kafka.Header{
				{Key: HeaderSourceTopic, Value: []byte(e.Topic)},
				{Key: HeaderSourcePartition, Value: srcPart},
				{Key: HeaderSeq, Value: strconv.AppendInt(nil, e.Seq, 10)},
				{Key: HeaderAggregateType, Value: []byte(e.AggregateType)},
				{Key: HeaderVersion, Value: strconv.AppendInt(nil, e.Version, 10)},
				{Key: HeaderEventType, Value: []byte(e.Type)},
				{Key: HeaderCommandID, Value: []byte(e.CommandID)},
			},
		}
		if e.Metadata != nil {
			m.Headers = append(m.Headers, kafka.Header{Key: HeaderMetadata, Value: e.Metadata})
		}
		if err := produce(m); err != nil {
			return fmt.Errorf("produce to %q: %w", cfg.historyTopic, err)
		}
	}
	var aggType []byte
	if len(states) > 0 {
		aggType = []byte(p.rt.h.aggregateType())
	}
	for id, s := range states {
		if err := produce(&kafka.Message{
			TopicPartition: kafka.TopicPartition{Topic: &cfg.stateTopic, Partition: part},
			Key:            []byte(id),
			Value:          s.data,
			Headers: []kafka.Header{
				{Key: HeaderAggregateType, Value: aggType},
				{Key: HeaderVersion, Value: strconv.AppendInt(nil, s.version, 10)},
			},
		}); err != nil {
			return fmt.Errorf("produce to %q: %w", cfg.stateTopic, err)
		}
	}
	for i := range recs {
		r := &recs[i]
		hs := make([]kafka.Header, 0, len(r.Headers)+3)
		for k, v := range r.Headers {
			hs = append(hs, kafka.Header{Key: k, Value: []byte(v)})
		}
		hs = append(hs,
			kafka.Header{Key: HeaderSourceTopic, Value: []byte(p.key.Topic)},
			kafka.Header{Key: HeaderSourcePartition, Value: srcPart},
			kafka.Header{Key: HeaderOutboxSeq, Value: strconv.AppendInt(nil, r.Seq, 10)})
		if err := produce(&kafka.Message{
			TopicPartition: kafka.TopicPartition{Topic: &r.Topic, Partition: kafka.PartitionAny},
			Key:            r.Key, Value: r.Value, Headers: hs,
		}); err != nil {
			return fmt.Errorf("produce outbox record %d to %q: %w", r.Seq, r.Topic, err)
		}
	}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := t.p.CommitTransaction(cctx); err != nil {
		return fmt.Errorf("commit transaction: %w", err)
	}
	t.open = false
	return nil
}
