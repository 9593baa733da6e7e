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
	h       handler       // the aggregate kind (nil for a projection)
	cons    *consumerKind // the event-consumer kind: a projection or a process manager (nil for an aggregate)
	pool    *pgxpool.Pool
	store   txn.Backend
	es      eventsource.Reader
	metrics metrics
	running atomic.Bool
	stopped atomic.Bool

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

	// partitions is the command topic's partition count (0 until known),
	// read by partition actors to check that a record's key maps to the
	// partition it arrived on.
	partitions  atomic.Int32
	lastMDCheck time.Time

	// healthMu guards health, the per-partition view Health returns. The
	// Run goroutine writes it; any goroutine reads it.
	healthMu sync.Mutex
	health   map[int32]*PartitionHealth
	pubs     map[int32]*publisher // the current publisher of each owned partition

	pubWG sync.WaitGroup // running publishers

	// pollStall, when set, blocks the poll loop until the channel is
	// closed. Only tests set it (export_test.go), to freeze an instance
	// the way SIGSTOP would.
	pollStall atomic.Pointer[chan struct{}]
}

type partitionHandle struct {
	pid        *pa.PID
	epoch      int64
	cancel     context.CancelFunc
	queued     *atomic.Int64
	inflight   *atomic.Int64
	nextOffset *atomic.Int64 // committed position, written by the partition actor
	paused     bool
	fencedAt   time.Time
	halted     string    // why, when the partition halted
	checkAt    time.Time // next look at the claim row of a halted partition
	checking   atomic.Bool
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
	controlHalted                     // the partition actor halted (reason)
	controlResume                     // resume a halted partition (epoch 0: whatever the epoch)
)

type controlMsg struct {
	kind      controlKind
	partition int32
	epoch     int64
	reason    string
}

// fenceGrace is how long a fenced partition waits for Kafka to revoke it
// before this instance claims it again (Kafka still says it is ours, so the
// fence came from an owner that has since gone away).
const fenceGrace = 30 * time.Second

// NewRuntime validates agg and the options and returns a Runtime. It does
// not connect to anything: Run does.
func NewRuntime[S, C, E any](agg *eventsource.Aggregate[S, C, E], pool *pgxpool.Pool, opts ...Option) (*Runtime, error) {
	if pool == nil {
		return nil, errors.New("onceflow: NewRuntime: pool is nil")
	}
	return newRuntime(agg, pool, nil, nil, opts...)
}

// newRuntime builds a Runtime on pool, or on backend and reader when they
// are given (the in-memory store of the fast tests).
func newRuntime[S, C, E any](agg *eventsource.Aggregate[S, C, E], pool *pgxpool.Pool, backend txn.Backend, reader eventsource.Reader, opts ...Option) (*Runtime, error) {
	if err := agg.Validate(); err != nil {
		return nil, fmt.Errorf("onceflow: %w", err)
	}
	cfg := defaultConfig()
	for _, o := range opts {
		o.apply(&cfg)
	}
	if cfg.group == "" {
		cfg.group = "onceflow." + agg.Type
	}
	return newRuntimeFromConfig(cfg, typedHandler[S, C, E]{agg: agg}, pool, backend, reader)
}

// newRuntimeFromConfig is the part of building a Runtime shared by the
// handler kinds: h is the aggregate handler (nil for a projection).
func newRuntimeFromConfig(cfg config, h handler, pool *pgxpool.Pool, backend txn.Backend, reader eventsource.Reader) (*Runtime, error) {
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
	r := &Runtime{cfg: cfg, h: h, pool: pool, store: backend, es: reader}
	if pool != nil {
		r.store = txn.NewStore(pool, txn.WithLockTimeout(cfg.lockTimeout), txn.WithLogger(cfg.log), txn.WithSchema(cfg.schema))
		r.es = eventsource.NewEventStore(pool, eventsource.WithSchema(cfg.schema))
	} else {
		r.cfg.noMigrate = true // nothing to migrate in memory
		if len(cfg.inline) > 0 {
			return nil, errors.New("onceflow: inline projections need Postgres (a pgx.Tx)")
		}
	}
	return r, nil
}

// InstanceID returns the name this instance uses in claim rows.
func (r *Runtime) InstanceID() string { return r.cfg.instanceID }

// Group returns the consumer group id.
func (r *Runtime) Group() string { return r.cfg.group }

// Stats returns the runtime's counters.
func (r *Runtime) Stats() Stats {
	s := r.metrics.snapshot()
	r.healthMu.Lock()
	for _, p := range r.pubs {
		s.PublishLag += p.lag()
	}
	for _, ph := range r.health {
		if ph.State == PartitionHalted {
			s.HaltedNow++
		}
	}
	r.healthMu.Unlock()
	return s
}

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
	if !r.cfg.noMigrate {
		in := txn.InSchema(r.cfg.schema)
		if _, err := txn.Migrate(ctx, r.pool, in); err != nil {
			return fmt.Errorf("onceflow: migrate: %w", err)
		}
		for _, m := range r.cfg.migrations {
			if _, err := txn.MigrateFS(ctx, r.pool, m.component, m.fsys, m.dir, in); err != nil {
				return fmt.Errorf("onceflow: migrate %s: %w", m.component, err)
			}
		}
	}
	if r.cons != nil && r.cons.proj != nil {
		if err := r.cons.proj.register(ctx); err != nil {
			return err
		}
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
	r.refreshPartitionCount(nil)
	if r.cfg.publish && r.h != nil {
		r.ensureEventTopics(ctx)
	}
	cb := func(c *kafka.Consumer, ev kafka.Event) error { return r.rebalance(ctx, c, ev) }
	if err := r.consumer.SubscribeTopics([]string{r.cfg.topic}, cb); err != nil {
		r.consumer.Close()
		return fmt.Errorf("onceflow: subscribe %q: %w", r.cfg.topic, err)
	}
	log.Info("runtime started", "protocol", r.cfg.protocol, "batch", r.cfg.maxRecords, "max_wait", r.cfg.maxWait)

	runErr := r.loop(ctx)

	var all []int32
	for p := range r.handles {
		all = append(all, p)
		if h := r.cfg.hooks.OnRevoked; h != nil {
			h(p, false)
		}
	}
	r.stopPartitions(all, r.cfg.revokeTimeout)
	r.waitPublishers(10 * time.Second)
	if err := r.consumer.Close(); err != nil {
		log.Warn("closing consumer", "err", err)
	}
	r.stopped.Store(true)
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
	r.tickHealth(now)
	r.tickProjection(now)
	if now.Sub(r.lastMDCheck) > time.Minute {
		r.refreshPartitionCount(nil)
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

// assign claims the partitions of one assignment in Postgres (bumping each
// epoch, waiting for a previous owner's in-flight transaction) concurrently,
// under one deadline (WithRebalanceTimeout) whatever their number, and
// assigns the claimed ones in librdkafka at their claimed offsets. It runs
// inside Poll, so it must return well within max.poll.interval.ms.
// Partitions whose claim fails or misses the deadline are claimed again from
// the poll loop.
func (r *Runtime) assign(ctx context.Context, c *kafka.Consumer, parts []kafka.TopicPartition) {
	start := time.Now()
	defer func() { r.metrics.observeRebalance(time.Since(start)) }()
	r.refreshPartitionCount(parts)
	ps := make([]int32, len(parts))
	for i, tp := range parts {
		ps[i] = tp.Partition
	}
	claims, errs := r.claimAll(ctx, ps, r.cfg.rebalanceTimeout)
	var toAssign []kafka.TopicPartition
	for i, p := range ps {
		if errs[i] != nil {
			r.cfg.log.Warn("claim failed; will retry", "partition", p, "err", errs[i])
			r.retryClaim(p, false, errs[i])
			continue
		}
		r.startPartition(ctx, claims[i])
		toAssign = append(toAssign, r.tp(p, kafka.Offset(claims[i].NextOffset)))
	}
	// Always call IncrementalAssign, even with nothing claimed: a callback
	// that assigns nothing makes confluent-kafka-go assign every partition
	// itself, at Kafka's committed offsets, and the later claim's
	// IncrementalAssign then fails ("already part of the current
	// assignment") again and again.
	if err := c.IncrementalAssign(toAssign); err != nil {
		r.cfg.log.Error("IncrementalAssign failed; will claim again", "err", err)
		stop := make([]int32, len(toAssign))
		for i, tp := range toAssign {
			stop[i] = tp.Partition
		}
		r.stopPartitions(stop, r.cfg.revokeTimeout)
		for _, p := range stop {
			r.retryClaim(p, false, err)
		}
		return
	}
	for _, tp := range toAssign {
		r.kassigned[tp.Partition] = true
	}
}

// claimAll claims partitions concurrently and returns, per partition, its
// claim or the error. It returns by the deadline (now + timeout) even if a
// claim is still stuck in the network: that claim counts as failed, and if
// it lands later, its epoch is simply superseded by the next claim.
func (r *Runtime) claimAll(ctx context.Context, ps []int32, timeout time.Duration) ([]txn.Claim, []error) {
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	type res struct {
		i     int
		claim txn.Claim
		err   error
	}
	ch := make(chan res, len(ps)) // buffered: a late claim never blocks
	for i, p := range ps {
		go func() {
			c, err := r.store.Claim(cctx, r.key(p), r.cfg.instanceID)
			ch <- res{i, c, err}
		}()
	}
	claims, errs := make([]txn.Claim, len(ps)), make([]error, len(ps))
	for i := range errs {
		errs[i] = fmt.Errorf("claim not answered within the rebalance timeout (%v)", timeout)
	}
	// A little grace past the deadline for the drivers to notice it.
	hard := time.NewTimer(timeout + 500*time.Millisecond)
	defer hard.Stop()
	for range ps {
		select {
		case x := <-ch:
			claims[x.i], errs[x.i] = x.claim, x.err
		case <-hard.C:
			return claims, errs
		}
	}
	return claims, errs
}

func (r *Runtime) claimAndStart(ctx context.Context, p int32, u *unclaimed) {
	claims, errs := r.claimAll(ctx, []int32{p}, r.cfg.rebalanceTimeout)
	if err := errs[0]; err != nil {
		u.backoff = min(2*u.backoff, 30*time.Second)
		u.retryAt = time.Now().Add(u.backoff)
		r.cfg.log.Warn("claim failed; will retry", "partition", p, "err", err, "backoff", u.backoff)
		r.setHealth(p, func(ph *PartitionHealth) { ph.Error = err.Error() })
		return
	}
	claim := claims[0]
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
			r.stopPartitions([]int32{p}, r.cfg.revokeTimeout)
			r.retryClaim(p, true, err)
		}
		return
	}
	if err := r.consumer.IncrementalAssign([]kafka.TopicPartition{tp}); err != nil {
		r.cfg.log.Error("IncrementalAssign failed; will claim again", "partition", p, "err", err)
		r.stopPartitions([]int32{p}, r.cfg.revokeTimeout)
		r.retryClaim(p, false, err)
		return
	}
	r.kassigned[p] = true
}

// retryClaim queues a partition Kafka assigned to us for another claim
// attempt from the poll loop. assigned says whether librdkafka already
// consumes it (then the claim is followed by a seek, not an assign).
func (r *Runtime) retryClaim(p int32, assigned bool, why error) {
	r.unclaimed[p] = &unclaimed{retryAt: time.Now().Add(time.Second), backoff: time.Second, assigned: assigned}
	msg := ""
	if why != nil {
		msg = why.Error()
	}
	r.setHealth(p, func(ph *PartitionHealth) { *ph = PartitionHealth{Partition: p, State: PartitionClaiming, Error: msg} })
}

func (r *Runtime) startPartition(ctx context.Context, claim txn.Claim) {
	pctx, cancel := context.WithCancel(ctx)
	h := &partitionHandle{epoch: claim.Epoch, cancel: cancel, queued: new(atomic.Int64), inflight: new(atomic.Int64), nextOffset: new(atomic.Int64)}
	h.nextOffset.Store(claim.NextOffset)
	log := r.cfg.log.With("partition", claim.Partition, "epoch", claim.Epoch)
	var pub *publisher
	if r.cfg.publish {
		pub = newPublisher(r, claim, log)
		r.pubWG.Add(1)
		go func() { defer r.pubWG.Done(); pub.run(pctx) }()
	}
	props := pa.PropsFromProducer(func() pa.Actor {
		return &partitionActor{
			rt: r, claim: claim, ctx: pctx, log: log, queued: h.queued, inflight: h.inflight, committed: h.nextOffset, pub: pub,
			received: claim.NextOffset, children: map[string]*childEntry{}, lastRecord: time.Now(),
		}
	})
	h.pid = r.system.Root.Spawn(props)
	r.handles[claim.Partition] = h
	r.metrics.assigned.Add(1)
	r.metrics.owned.Add(1)
	r.setHealth(claim.Partition, func(ph *PartitionHealth) {
		*ph = PartitionHealth{Partition: claim.Partition, State: PartitionRunning, Epoch: claim.Epoch, NextOffset: claim.NextOffset, HighWatermark: -1, lowWatermark: -1}
	})
	r.healthMu.Lock()
	if r.pubs == nil {
		r.pubs = map[int32]*publisher{}
	}
	if pub != nil {
		r.pubs[claim.Partition] = pub
	} else {
		delete(r.pubs, claim.Partition)
	}
	r.healthMu.Unlock()
	log.Info("partition claimed", "next_offset", claim.NextOffset, "next_seq", claim.NextSeq)
	if h := r.cfg.hooks.OnAssigned; h != nil {
		h(claim.Partition, claim.Epoch)
	}
}

// stopPartitions lets partitions go, concurrently: each actor finishes its
// batch in flight, then drops its state and queued records. It waits at most
// timeout for all of them together; a batch still running then is abandoned
// (a late commit is rejected by the fence).
func (r *Runtime) stopPartitions(ps []int32, timeout time.Duration) {
	type stopping struct {
		p    int32
		h    *partitionHandle
		done chan struct{}
	}
	var all []stopping
	for _, p := range ps {
		h := r.handles[p]
		if h == nil {
			continue
		}
		delete(r.handles, p)
		r.metrics.owned.Add(-1)
		r.dropHealth(p)
		done := make(chan struct{})
		r.system.Root.Send(h.pid, &stopReq{done: done})
		all = append(all, stopping{p, h, done})
	}
	if len(all) == 0 {
		return
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	expired := false
	for _, s := range all {
		if !expired {
			select {
			case <-s.done:
			case <-t.C:
				expired = true
			}
		}
		if expired {
			select {
			case <-s.done:
			default:
				r.cfg.log.Warn("in-flight batch did not finish in time; abandoning it (a late commit will be fenced)", "partition", s.p, "epoch", s.h.epoch, "timeout", timeout)
			}
		}
		s.h.cancel()
		r.system.Root.Stop(s.h.pid)
	}
}

func (r *Runtime) revoke(c *kafka.Consumer, parts []kafka.TopicPartition) {
	start := time.Now()
	defer func() { r.metrics.observeRebalance(time.Since(start)) }()
	lost := c.AssignmentLost()
	var unassign []kafka.TopicPartition
	var stop []int32
	for _, tp := range parts {
		p := tp.Partition
		delete(r.unclaimed, p)
		r.dropHealth(p)
		if _, ok := r.handles[p]; ok {
			r.metrics.revoked.Add(1)
			if lost {
				r.metrics.lost.Add(1)
			}
			r.cfg.log.Info("partition revoked", "partition", p, "lost", lost)
			stop = append(stop, p)
			if h := r.cfg.hooks.OnRevoked; h != nil {
				h(p, lost)
			}
		}
		if r.kassigned[p] {
			delete(r.kassigned, p)
			unassign = append(unassign, r.tp(p, kafka.OffsetInvalid))
		}
	}
	r.stopPartitions(stop, min(r.cfg.revokeTimeout, r.cfg.rebalanceTimeout))
	if len(unassign) > 0 {
		if err := c.IncrementalUnassign(unassign); err != nil {
			r.cfg.log.Error("IncrementalUnassign failed", "err", err)
		}
	}
}

// refreshPartitionCount reads the command topic's partition count from the
// broker when it is unknown, when an assignment names a partition beyond it,
// or (from tick) once a minute. A change is logged: adding partitions to a
// command topic moves keys to other partitions.
func (r *Runtime) refreshPartitionCount(parts []kafka.TopicPartition) {
	known := r.partitions.Load()
	need := known == 0 || time.Since(r.lastMDCheck) > time.Minute
	for _, tp := range parts {
		need = need || tp.Partition >= known
	}
	if !need {
		return
	}
	r.lastMDCheck = time.Now()
	topic := r.cfg.topic
	// Bounded well inside the rebalance deadline (this runs in the
	// callback on an assignment).
	md, err := r.consumer.GetMetadata(&topic, false, int(min(2*time.Second, r.cfg.rebalanceTimeout/4).Milliseconds()))
	if err != nil {
		r.cfg.log.Warn("reading the command topic's partition count", "err", err)
		return
	}
	tm, ok := md.Topics[topic]
	if !ok || len(tm.Partitions) == 0 {
		return
	}
	n := int32(len(tm.Partitions))
	if old := r.partitions.Swap(n); old != 0 && old != n {
		r.cfg.log.Error("the command topic's partition count changed: keys now map to other partitions; records of an aggregate that arrive on its old partition are dead-lettered as misrouted", "was", old, "now", n)
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
		if h == nil || (m.epoch != 0 && h.epoch != m.epoch) {
			continue // stale: the partition moved on
		}
		switch m.kind {
		case controlRestart:
			r.restartPartition(ctx, m.partition)
		case controlFenced:
			h.fencedAt = time.Now()
		case controlHalted:
			h.halted = m.reason
			h.checkAt = time.Now().Add(haltCheckEvery)
			r.setHealth(m.partition, func(ph *PartitionHealth) { ph.State, ph.HaltReason = PartitionHalted, m.reason })
		case controlResume:
			if h.halted != "" {
				r.cfg.log.Info("resuming halted partition", "partition", m.partition, "was", h.halted)
				r.restartPartition(ctx, m.partition)
			}
		}
	}
}

// restartPartition reclaims a partition that is still assigned to us and
// resumes it from Postgres.
func (r *Runtime) restartPartition(ctx context.Context, p int32) {
	r.stopPartitions([]int32{p}, r.cfg.revokeTimeout)
	r.retryClaim(p, r.kassigned[p], nil)
	r.claimAndStart(ctx, p, r.unclaimed[p]) // on failure it stays queued
}

// mirrorOffset stores a committed offset in librdkafka so that Kafka's
// group offsets (and lag dashboards) follow Postgres. Kafka's committed
// offsets are never read back: Postgres is the truth.
func (r *Runtime) mirrorOffset(key txn.PartitionKey, next int64) {
	_, _ = r.consumer.StoreOffsets([]kafka.TopicPartition{{Topic: &r.cfg.topic, Partition: key.Partition, Offset: kafka.Offset(next)}})
}

// sendReply sends one JSON reply (to a command whose sender does not read
// batched replies).
func (r *Runtime) sendReply(topic string, rep reply) {
	val, err := encodeReply(rep)
	if err != nil {
		r.metrics.replyErrors.Add(1)
		return
	}
	r.produceReply(&kafka.Message{TopicPartition: kafka.TopicPartition{Topic: &topic, Partition: kafka.PartitionAny}, Key: []byte(rep.CommandID), Value: val}, 1)
}

// batchReplyHeaders marks a batched reply record.
var batchReplyHeaders = []kafka.Header{{Key: HeaderReplyFormat, Value: []byte(replyFormatBatch)}}

// sendReplies sends replies to topic as batched reply records, encoded in
// buf's storage (the producer copies each record), and returns the buffer
// for reuse.
func (r *Runtime) sendReplies(topic string, reps []reply, buf []byte) []byte {
	return encodeReplies(buf, reps, maxReplyRecordBytes, func(val []byte, n int) {
		r.produceReply(&kafka.Message{TopicPartition: kafka.TopicPartition{Topic: &topic, Partition: kafka.PartitionAny}, Value: val, Headers: batchReplyHeaders}, n)
	})
}

// produceReply produces a reply record holding n replies. Replies are best
// effort: a client that misses one reads command_results (WithResults) or
// resends with the same command id.
func (r *Runtime) produceReply(msg *kafka.Message, n int) {
	for attempt := 0; ; attempt++ {
		err := r.producer.Produce(msg, nil)
		if err == nil {
			return
		}
		var ke kafka.Error
		if errors.As(err, &ke) && ke.Code() == kafka.ErrQueueFull && attempt < 100 {
			time.Sleep(10 * time.Millisecond) // the producer's queue drains in the background
			continue
		}
		r.metrics.replyErrors.Add(int64(n))
		r.cfg.log.Warn("replies not sent (clients can read the outcomes from Postgres or resend)", "topic", *msg.TopicPartition.Topic, "replies", n, "err", err)
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
