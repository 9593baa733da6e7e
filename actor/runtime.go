package actor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	pa "github.com/asynkron/protoactor-go/actor"
	"github.com/confluentinc/confluent-kafka-go/v2/kafka"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/onceflow/onceflow/eventsource"
	"github.com/onceflow/onceflow/txn"
)

// Runtime serves one aggregate type from one command topic. Create it with
// NewRuntime and start it with Run. Several Runtimes (in one process or
// many) with the same group share the topic's partitions; each partition has
// exactly one fenced writer at a time.
type Runtime struct {
	cfg     config
	h       handler
	pool    *pgxpool.Pool
	store   *txn.Store
	es      *eventsource.EventStore
	metrics metrics
	running atomic.Bool

	// Set by Run.
	system   *pa.ActorSystem
	producer *kafka.Producer
	consumer *kafka.Consumer

	// Owned by the Run goroutine (the poll loop and the rebalance callback,
	// which runs inside Poll).
	handles   map[int32]*partitionHandle
	unclaimed map[int32]*unclaimed // assigned by Kafka, claim not yet taken
	kassigned map[int32]bool       // in librdkafka's assignment

	ctlMu sync.Mutex
	ctl   []controlMsg
	ctlN  atomic.Int32

	// pollStall, when set, blocks the poll loop until the channel is
	// closed. Only tests set it (export_test.go), to freeze an instance
	// the way SIGSTOP would.
	pollStall atomic.Pointer[chan struct{}]
}

type partitionHandle struct {
	pid      *pa.PID
	epoch    int64
	cancel   context.CancelFunc
	queued   *atomic.Int64
	inflight *atomic.Int64
	paused   bool
	fencedAt time.Time
}

type unclaimed struct {
	retryAt  time.Time
	backoff  time.Duration
	assigned bool // already in librdkafka's assignment (restart): seek, don't assign
}

type controlKind int

const (
	controlRestart controlKind = iota // reclaim and resume from Postgres
	controlFenced                     // a newer owner claimed it
)

type controlMsg struct {
	kind      controlKind
	partition int32
	epoch     int64
}

// fenceGrace is how long a fenced partition waits for Kafka to revoke it
// before this instance claims it again (Kafka still says it is ours, so the
// fence came from an owner that has since gone away).
const fenceGrace = 30 * time.Second

// NewRuntime validates agg and the options and returns a Runtime. It does
// not connect to anything: Run does.
func NewRuntime[S, C, E any](agg *eventsource.Aggregate[S, C, E], pool *pgxpool.Pool, opts ...Option) (*Runtime, error) {
	if err := agg.Validate(); err != nil {
		return nil, fmt.Errorf("onceflow: %w", err)
	}
	if pool == nil {
		return nil, errors.New("onceflow: NewRuntime: pool is nil")
	}
	cfg := defaultConfig()
	for _, o := range opts {
		o.applyRuntime(&cfg)
	}
	if cfg.group == "" {
		cfg.group = "onceflow." + agg.Type
	}
	if cfg.instanceID == "" {
		host, _ := os.Hostname()
		cfg.instanceID = fmt.Sprintf("%s-%d-%s", host, os.Getpid(), randomID()[:8])
	}
	if err := cfg.validateRuntime(); err != nil {
		return nil, fmt.Errorf("onceflow: invalid runtime configuration: %w", err)
	}
	if s, ok := cfg.kafka["partition.assignment.strategy"]; ok && s != "cooperative-sticky" {
		return nil, fmt.Errorf("onceflow: invalid runtime configuration: partition.assignment.strategy %q: onceflow needs incremental rebalancing (cooperative-sticky, or WithGroupProtocol(ProtocolConsumer))", s)
	}
	cfg.log = cfg.log.With("group", cfg.group, "topic", cfg.topic, "instance", cfg.instanceID)
	return &Runtime{
		cfg:   cfg,
		h:     typedHandler[S, C, E]{agg: agg},
		pool:  pool,
		store: txn.NewStore(pool, txn.WithLockTimeout(cfg.lockTimeout), txn.WithLogger(cfg.log)),
		es:    eventsource.NewEventStore(pool),
	}, nil
}

// InstanceID returns the name this instance uses in claim rows.
func (r *Runtime) InstanceID() string { return r.cfg.instanceID }

// Group returns the consumer group id.
func (r *Runtime) Group() string { return r.cfg.group }

// Stats returns the runtime's counters.
func (r *Runtime) Stats() Stats { return r.metrics.snapshot() }

// Run migrates the schema, joins the consumer group and serves until ctx is
// cancelled or a fatal error occurs. On return, the consumer has left the
// group and every partition's in-flight batch has committed or been
// abandoned (an abandoned batch is rejected by the fence if it tries later).
// A Runtime can be Run once.
func (r *Runtime) Run(ctx context.Context) error {
	if !r.running.CompareAndSwap(false, true) {
		return errors.New("onceflow: Runtime.Run called twice")
	}
	log := r.cfg.log
	if _, err := txn.Migrate(ctx, r.pool); err != nil {
		return fmt.Errorf("onceflow: migrate: %w", err)
	}
	if r.cfg.createTopic > 0 {
		if err := ensureTopics(ctx, &r.cfg, r.cfg.topic, r.cfg.replyTopic); err != nil {
			return err
		}
	}
	r.system = pa.NewActorSystem(pa.WithLoggerFactory(func(*pa.ActorSystem) *slog.Logger {
		return slog.New(minLevel{r.cfg.log.Handler(), slog.LevelWarn})
	}))
	defer r.system.Shutdown()

	var err error
	r.producer, err = kafka.NewProducer(producerConfig(&r.cfg))
	if err != nil {
		return fmt.Errorf("onceflow: kafka producer: %w", err)
	}
	drained := make(chan struct{})
	go r.drainDeliveries(drained)
	defer func() {
		r.producer.Flush(5000)
		r.producer.Close()
		<-drained
	}()

	r.consumer, err = kafka.NewConsumer(consumerConfig(&r.cfg))
	if err != nil {
		return fmt.Errorf("onceflow: kafka consumer: %w", err)
	}
	r.handles, r.unclaimed, r.kassigned = map[int32]*partitionHandle{}, map[int32]*unclaimed{}, map[int32]bool{}
	cb := func(c *kafka.Consumer, ev kafka.Event) error { return r.rebalance(ctx, c, ev) }
	if err := r.consumer.SubscribeTopics([]string{r.cfg.topic}, cb); err != nil {
		r.consumer.Close()
		return fmt.Errorf("onceflow: subscribe %q: %w", r.cfg.topic, err)
	}
	log.Info("runtime started", "protocol", r.cfg.protocol, "batch", r.cfg.maxRecords, "max_wait", r.cfg.maxWait)

	runErr := r.loop(ctx)

	for p := range r.handles {
		r.stopPartition(p, r.cfg.revokeTimeout)
	}
	if err := r.consumer.Close(); err != nil {
		log.Warn("closing consumer", "err", err)
	}
	log.Info("runtime stopped", "err", runErr)
	return runErr
}

func (r *Runtime) loop(ctx context.Context) error {
	lastTick := time.Now()
	for ctx.Err() == nil {
		if ch := r.pollStall.Load(); ch != nil {
			<-*ch
		}
		switch e := r.consumer.Poll(100).(type) {
		case *kafka.Message:
			r.route(e)
		case kafka.Error:
			if e.IsFatal() {
				return fmt.Errorf("onceflow: fatal kafka error: %w", e)
			}
			r.cfg.log.Warn("kafka", "err", e, "code", e.Code())
		}
		if r.ctlN.Load() > 0 {
			r.handleControl(ctx)
		}
		if now := time.Now(); now.Sub(lastTick) >= 100*time.Millisecond {
			lastTick = now
			r.tick(ctx, now)
		}
	}
	return nil
}

// Backpressure: a partition whose records pile up in memory is paused in
// librdkafka until its actor catches up.
func (r *Runtime) highWater() int64 { return int64(2*r.cfg.maxRecords + 1000) }
func (r *Runtime) lowWater() int64  { return int64(r.cfg.maxRecords) }

func (r *Runtime) route(m *kafka.Message) {
	p := m.TopicPartition.Partition
	h := r.handles[p]
	if h == nil {
		return // revoked or not claimed: the claim row says where to resume
	}
	h.queued.Add(1)
	if h.inflight.Add(1) > r.highWater() && !h.paused {
		if err := r.consumer.Pause([]kafka.TopicPartition{r.tp(p, kafka.OffsetInvalid)}); err == nil {
			h.paused = true
		}
	}
	r.system.Root.Send(h.pid, &record{msg: m})
}

func (r *Runtime) tick(ctx context.Context, now time.Time) {
	for p, h := range r.handles {
		if h.paused && h.inflight.Load() <= r.lowWater() {
			if err := r.consumer.Resume([]kafka.TopicPartition{r.tp(p, kafka.OffsetInvalid)}); err == nil {
				h.paused = false
			}
		}
		if !h.fencedAt.IsZero() && now.Sub(h.fencedAt) > fenceGrace {
			r.cfg.log.Warn("partition still assigned long after it was fenced; claiming it again", "partition", p)
			r.restartPartition(ctx, p)
		}
	}
	for p, u := range r.unclaimed {
		if now.After(u.retryAt) {
			r.claimAndStart(ctx, p, u)
		}
	}
}

func (r *Runtime) tp(p int32, off kafka.Offset) kafka.TopicPartition {
	return kafka.TopicPartition{Topic: &r.cfg.topic, Partition: p, Offset: off}
}

func (r *Runtime) key(p int32) txn.PartitionKey {
	return txn.PartitionKey{Group: r.cfg.group, Topic: r.cfg.topic, Partition: p}
}

func (r *Runtime) rebalance(ctx context.Context, c *kafka.Consumer, ev kafka.Event) error {
	switch e := ev.(type) {
	case kafka.AssignedPartitions:
		r.assign(ctx, c, e.Partitions)
	case kafka.RevokedPartitions:
		r.revoke(c, e.Partitions)
	}
	return nil
}

// assign claims each partition in Postgres (bumping its epoch, waiting for
// the previous owner's in-flight transaction) and assigns it in librdkafka at
// the claimed offset. Partitions whose claim fails are retried from the loop.
func (r *Runtime) assign(ctx context.Context, c *kafka.Consumer, parts []kafka.TopicPartition) {
	var toAssign []kafka.TopicPartition
	for _, tp := range parts {
		claim, err := r.claim(ctx, tp.Partition)
		if err != nil {
			r.cfg.log.Warn("claim failed; will retry", "partition", tp.Partition, "err", err)
			r.retryClaim(tp.Partition, false)
			continue
		}
		r.startPartition(ctx, claim)
		toAssign = append(toAssign, r.tp(tp.Partition, kafka.Offset(claim.NextOffset)))
	}
	if len(toAssign) == 0 {
		return
	}
	if err := c.IncrementalAssign(toAssign); err != nil {
		r.cfg.log.Error("IncrementalAssign failed; will claim again", "err", err)
		for _, tp := range toAssign {
			r.stopPartition(tp.Partition, r.cfg.revokeTimeout)
			r.retryClaim(tp.Partition, false)
		}
		return
	}
	for _, tp := range toAssign {
		r.kassigned[tp.Partition] = true
	}
}

func (r *Runtime) claim(ctx context.Context, p int32) (txn.Claim, error) {
	cctx, cancel := context.WithTimeout(ctx, r.cfg.lockTimeout+5*time.Second)
	defer cancel()
	return r.store.Claim(cctx, r.key(p), r.cfg.instanceID)
}

func (r *Runtime) claimAndStart(ctx context.Context, p int32, u *unclaimed) {
	claim, err := r.claim(ctx, p)
	if err != nil {
		u.backoff = min(2*u.backoff, 30*time.Second)
		u.retryAt = time.Now().Add(u.backoff)
		r.cfg.log.Warn("claim failed; will retry", "partition", p, "err", err, "backoff", u.backoff)
		return
	}
	delete(r.unclaimed, p)
	r.startPartition(ctx, claim)
	tp := r.tp(p, kafka.Offset(claim.NextOffset))
	if u.assigned {
		// Still in librdkafka's assignment: move its position. Seek
		// returns once no message fetched for the old position can be
		// delivered.
		_ = r.consumer.Resume([]kafka.TopicPartition{r.tp(p, kafka.OffsetInvalid)})
		if err := r.consumer.Seek(tp, 0); err != nil {
			r.cfg.log.Error("seek after reclaim failed; will claim again", "partition", p, "err", err)
			r.stopPartition(p, r.cfg.revokeTimeout)
			r.retryClaim(p, true)
		}
		return
	}
	if err := r.consumer.IncrementalAssign([]kafka.TopicPartition{tp}); err != nil {
		r.cfg.log.Error("IncrementalAssign failed; will claim again", "partition", p, "err", err)
		r.stopPartition(p, r.cfg.revokeTimeout)
		r.retryClaim(p, false)
		return
	}
	r.kassigned[p] = true
}

// retryClaim queues a partition Kafka assigned to us for another claim
// attempt from the poll loop. assigned says whether librdkafka already
// consumes it (then the claim is followed by a seek, not an assign).
func (r *Runtime) retryClaim(p int32, assigned bool) {
	r.unclaimed[p] = &unclaimed{retryAt: time.Now().Add(time.Second), backoff: time.Second, assigned: assigned}
}

func (r *Runtime) startPartition(ctx context.Context, claim txn.Claim) {
	pctx, cancel := context.WithCancel(ctx)
	h := &partitionHandle{epoch: claim.Epoch, cancel: cancel, queued: new(atomic.Int64), inflight: new(atomic.Int64)}
	log := r.cfg.log.With("partition", claim.Partition, "epoch", claim.Epoch)
	props := pa.PropsFromProducer(func() pa.Actor {
		return &partitionActor{
			rt: r, claim: claim, ctx: pctx, log: log, queued: h.queued, inflight: h.inflight,
			received: claim.NextOffset, children: map[string]*childEntry{},
		}
	})
	h.pid = r.system.Root.Spawn(props)
	r.handles[claim.Partition] = h
	r.metrics.assigned.Add(1)
	r.metrics.owned.Add(1)
	log.Info("partition claimed", "next_offset", claim.NextOffset, "next_seq", claim.NextSeq)
}

// stopPartition lets a partition go: its actor finishes the batch in flight
// (waiting at most timeout), then drops its state and queued records.
func (r *Runtime) stopPartition(p int32, timeout time.Duration) {
	h := r.handles[p]
	if h == nil {
		return
	}
	delete(r.handles, p)
	r.metrics.owned.Add(-1)
	done := make(chan struct{})
	r.system.Root.Send(h.pid, &stopReq{done: done})
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		r.cfg.log.Warn("in-flight batch did not finish in time; abandoning it (a late commit will be fenced)", "partition", p, "epoch", h.epoch, "timeout", timeout)
	}
	h.cancel()
	r.system.Root.Stop(h.pid)
}

func (r *Runtime) revoke(c *kafka.Consumer, parts []kafka.TopicPartition) {
	lost := c.AssignmentLost()
	var unassign []kafka.TopicPartition
	for _, tp := range parts {
		p := tp.Partition
		delete(r.unclaimed, p)
		if _, ok := r.handles[p]; ok {
			r.metrics.revoked.Add(1)
			if lost {
				r.metrics.lost.Add(1)
			}
			r.cfg.log.Info("partition revoked", "partition", p, "lost", lost)
			r.stopPartition(p, r.cfg.revokeTimeout)
		}
		if r.kassigned[p] {
			delete(r.kassigned, p)
			unassign = append(unassign, r.tp(p, kafka.OffsetInvalid))
		}
	}
	if len(unassign) > 0 {
		if err := c.IncrementalUnassign(unassign); err != nil {
			r.cfg.log.Error("IncrementalUnassign failed", "err", err)
		}
	}
}

func (r *Runtime) requestControl(m controlMsg) {
	r.ctlMu.Lock()
	r.ctl = append(r.ctl, m)
	r.ctlMu.Unlock()
	r.ctlN.Add(1)
}

func (r *Runtime) handleControl(ctx context.Context) {
	r.ctlMu.Lock()
	msgs := r.ctl
	r.ctl = nil
	r.ctlN.Store(0)
	r.ctlMu.Unlock()
	for _, m := range msgs {
		h := r.handles[m.partition]
		if h == nil || h.epoch != m.epoch {
			continue // stale: the partition moved on
		}
		switch m.kind {
		case controlRestart:
			r.restartPartition(ctx, m.partition)
		case controlFenced:
			h.fencedAt = time.Now()
		}
	}
}

// restartPartition reclaims a partition that is still assigned to us and
// resumes it from Postgres.
func (r *Runtime) restartPartition(ctx context.Context, p int32) {
	r.stopPartition(p, r.cfg.revokeTimeout)
	r.retryClaim(p, r.kassigned[p])
	r.claimAndStart(ctx, p, r.unclaimed[p]) // on failure it stays queued
}

// mirrorOffset stores a committed offset in librdkafka so that Kafka's
// group offsets (and lag dashboards) follow Postgres. Kafka's committed
// offsets are never read back: Postgres is the truth.
func (r *Runtime) mirrorOffset(key txn.PartitionKey, next int64) {
	_, _ = r.consumer.StoreOffsets([]kafka.TopicPartition{{Topic: &r.cfg.topic, Partition: key.Partition, Offset: kafka.Offset(next)}})
}

func (r *Runtime) sendReply(topic string, rep reply) {
	o := rep.Outcome
	val, err := encodeReply(rep)
	if err != nil {
		r.metrics.replyErrors.Add(1)
		return
	}
	msg := &kafka.Message{TopicPartition: kafka.TopicPartition{Topic: &topic, Partition: kafka.PartitionAny}, Key: []byte(o.CommandID), Value: val}
	for attempt := 0; ; attempt++ {
		err = r.producer.Produce(msg, nil)
		if err == nil {
			return
		}
		var ke kafka.Error
		if errors.As(err, &ke) && ke.Code() == kafka.ErrQueueFull && attempt < 100 {
			time.Sleep(10 * time.Millisecond) // the producer's queue drains in the background
			continue
		}
		r.metrics.replyErrors.Add(1)
		r.cfg.log.Warn("reply not sent (the client can read the outcome from Postgres)", "command_id", o.CommandID, "err", err)
		return
	}
}

func (r *Runtime) drainDeliveries(done chan<- struct{}) {
	defer close(done)
	for ev := range r.producer.Events() {
		if m, ok := ev.(*kafka.Message); ok && m.TopicPartition.Error != nil {
			r.metrics.replyErrors.Add(1)
			r.cfg.log.Warn("reply delivery failed", "err", m.TopicPartition.Error)
		}
	}
}

// minLevel drops records below a level (protoactor logs chattily at info).
type minLevel struct {
	slog.Handler
	min slog.Level
}

func (h minLevel) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.min && h.Handler.Enabled(ctx, l)
}

func (h minLevel) WithAttrs(a []slog.Attr) slog.Handler {
	return minLevel{h.Handler.WithAttrs(a), h.min}
}
func (h minLevel) WithGroup(n string) slog.Handler { return minLevel{h.Handler.WithGroup(n), h.min} }
