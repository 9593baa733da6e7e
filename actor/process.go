package actor

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"runtime/debug"
	"time"

	pa "github.com/asynkron/protoactor-go/actor"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/onceflow/onceflow/eventsource"
	"github.com/onceflow/onceflow/txn"
)

// ProcessManager reacts to the events of one command topic (its history
// topic) and sends commands to aggregates: a saga across aggregates that
// live on other partitions. It is a handler kind of the same partition
// pipeline as aggregates and projections (NewProcessManager).
//
// Exactly-once in both directions. A batch's process state (written by the
// handler through tx), the commands it sends (Effects.Send: rows of the
// outbox), its deadlines and its position on the source partition commit
// in ONE transaction fenced by the claim's epoch. The outbox is sent to
// Kafka after commit by the partition's publisher in Kafka transactions; a
// resend after a crash carries the same command id, which the target
// aggregate dedupes. A redelivered event is skipped by seq; a crash before
// commit sends nothing. Give every command a deterministic id (CommandID
// of the process id and the step) so that a step the process takes again —
// a retry on a deadline, a replay after a reset — is a duplicate, never a
// second effect.
//
// Outcomes. The process learns what its commands did from the target's
// events on a history topic (run one ProcessManager per source topic, with
// the same Name, to hear from several aggregate types). A target that can
// refuse should answer a process's command with an event (a refusal is an
// answer: FundsRefused, not an error), so the process sees it; a Decide
// error is stored only as a command result, which Effects.Result reads (at
// a deadline, say).
//
// Ordering and single writer. Events of one source partition arrive in seq
// order, one batch at a time. Events of one process instance can come from
// several partitions and source topics, handled concurrently by different
// partition owners; the process state is one row per process instance in
// the service's table, read with SELECT ... FOR UPDATE in the handler: the
// row lock makes the handlers of one instance run one after another (a
// deadlock between two batches is detected by Postgres and the batch
// retried), and the handler must accept the instance's events in any order
// across partitions (a state machine that ignores what it has already
// seen).
//
// Deadlines (Effects.Schedule) are stored in the batch's transaction and
// fired by the current owner of the partition that scheduled them, once:
// firing deletes the row in the firing batch's fenced transaction, with
// OnDeadline's effects. A cancel (Effects.Cancel, from any source) that
// commits first wins.
type ProcessManager struct {
	// Name: 1-63 characters of [a-z0-9_-]; shared by the runtimes of one
	// process manager over several source topics (deadlines are per Name).
	Name string
	// Source is the command topic whose events it reacts to.
	Source string
	// HistoryTopic is Source's history topic; default Source + ".events".
	HistoryTopic string
	// Events decodes each event's payload into Event.Payload; an event it
	// cannot decode is a poison event (failure policy).
	Events *eventsource.Registry
	// Commands encodes the commands it sends (the targets' registry).
	Commands *eventsource.Registry
	// Handle reacts to one event in tx. An error (or panic) rolls the
	// batch back; the event is then retried alone and, if it fails again,
	// dead-lettered or halted on (WithFailurePolicy).
	Handle func(ctx context.Context, tx pgx.Tx, ev Event, fx *Effects) error
	// OnDeadline handles a fired deadline in tx. An error rolls the firing
	// back; the deadline stays due and is retried (logged and counted).
	OnDeadline func(ctx context.Context, tx pgx.Tx, d Deadline, fx *Effects) error
}

// Deadline is a fired timeout of a process.
type Deadline struct {
	ID      string
	DueAt   time.Time
	Payload []byte
}

// HeaderProcess names the process manager that sent a command.
const HeaderProcess = "onceflow-process"

// CommandID is the deterministic id of a process's step: the same process
// and step always give the same id, so a step taken twice is applied once.
func CommandID(processID, step string) string { return processID + "/" + step }

// Effects is what a process manager's handler does besides its own SQL:
// commands to send (after commit, through the outbox), deadlines to
// schedule or cancel, command results to read. Valid during one handler
// call only.
type Effects struct {
	ctx     context.Context
	tx      pgx.Tx
	schema  string
	process string
	key     txn.PartitionKey
	reg     *eventsource.Registry
	out     []txn.OutboxRecord
	// deadlines: the process manager has an OnDeadline (Schedule is refused
	// otherwise: nothing would ever fire).
	deadlines bool
}

// Send sends cmd to topic (keyed by cmd.AggregateID(), so it lands on the
// aggregate's partition) under commandID, after the batch commits.
// commandID must be deterministic (see CommandID).
func (fx *Effects) Send(topic string, cmd eventsource.Command, commandID string) error {
	if topic == "" || commandID == "" {
		return fmt.Errorf("process %s: Send: topic %q and command id %q must not be empty", fx.process, topic, commandID)
	}
	name, data, err := fx.reg.Encode(cmd)
	if err != nil {
		return fmt.Errorf("process %s: Send: %w", fx.process, err)
	}
	if unsafeRandomCommandID {
		commandID = randomID() // BROKEN ON PURPOSE (see process_unsafe_on.go)
	}
	fx.out = append(fx.out, txn.OutboxRecord{Topic: topic, Key: []byte(cmd.AggregateID()), Value: data,
		Headers: map[string]string{HeaderCommandID: commandID, HeaderCommandType: name, HeaderProcess: fx.process}})
	return nil
}

// Schedule stores (or moves) the deadline id of this process manager, due
// at at, in the batch's transaction. It fires once, by the owner of this
// partition, after at (OnDeadline), unless cancelled first.
func (fx *Effects) Schedule(id string, at time.Time, payload []byte) error {
	if !fx.deadlines {
		return fmt.Errorf("process %s: Schedule %q: the process manager has no OnDeadline to fire it", fx.process, id)
	}
	return txn.ScheduleTx(fx.ctx, fx.tx, fx.schema, txn.Deadline{Process: fx.process, ID: id, Key: fx.key, DueAt: at, Payload: payload})
}

// Cancel deletes the deadline id in the batch's transaction; it reports
// whether it was still pending.
func (fx *Effects) Cancel(id string) (bool, error) {
	return txn.CancelTx(fx.ctx, fx.tx, fx.schema, fx.process, id)
}

// Result reads the stored outcome of a command (txn.ErrNotFound when it has
// none yet) in the batch's transaction.
func (fx *Effects) Result(aggregateType, commandID string) (txn.CommandResult, error) {
	return txn.ResultTx(fx.ctx, fx.tx, fx.schema, aggregateType, commandID)
}

// pmState is what a process manager adds to the consumer kind.
type pmState struct {
	p ProcessManager
}

var processName = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)

// NewProcessManager validates pm and the options and returns the Runtime
// that runs it over pm.Source's history topic, in the consumer group
// "onceflow.process.<name>.<source>". Options as for NewProjection; the
// runtime's publisher sends the outbox.
func NewProcessManager(pm ProcessManager, pool *pgxpool.Pool, opts ...Option) (*Runtime, error) {
	if pool == nil {
		return nil, errors.New("onceflow: NewProcessManager: pool is nil")
	}
	var errs []error
	if !processName.MatchString(pm.Name) {
		errs = append(errs, fmt.Errorf("process manager name %q: want 1-63 characters of [a-z0-9_-] starting with a letter or digit", pm.Name))
	}
	if pm.Source == "" {
		errs = append(errs, fmt.Errorf("process manager %q: Source is empty (the command topic whose events it reacts to)", pm.Name))
	}
	if pm.Handle == nil {
		errs = append(errs, fmt.Errorf("process manager %q: Handle is nil", pm.Name))
	}
	if pm.Commands == nil {
		errs = append(errs, fmt.Errorf("process manager %q: Commands is nil (the registry that encodes the commands it sends)", pm.Name))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("onceflow: invalid process manager: %w", err)
	}
	if pm.HistoryTopic == "" {
		pm.HistoryTopic = pm.Source + ".events"
	}
	cfg := defaultConfig()
	for _, o := range opts {
		o.apply(&cfg)
	}
	cfg.topic, cfg.group = pm.HistoryTopic, "onceflow.process."+pm.Name+"."+pm.Source
	cfg.publish, cfg.publishState, cfg.createTopic = true, false, 0
	r, err := newRuntimeFromConfig(cfg, nil, pool, nil, nil)
	if err != nil {
		return nil, err
	}
	st := &pmState{p: pm}
	schema := r.cfg.schema
	r.cons = &consumerKind{
		what: fmt.Sprintf("process manager %s (source %s)", pm.Name, pm.Source), source: pm.Source, registry: pm.Events, pm: st,
		pg: txn.NewStore(pool, txn.WithSchema(schema)),
		handle: func(ctx context.Context, tx pgx.Tx, key txn.PartitionKey, evs []Event) ([]txn.OutboxRecord, error) {
			fx := &Effects{ctx: ctx, tx: tx, schema: schema, process: pm.Name, key: key, reg: pm.Commands, deadlines: pm.OnDeadline != nil}
			for _, ev := range evs {
				if err := pm.Handle(ctx, tx, ev, fx); err != nil {
					return nil, fmt.Errorf("event seq %d (%s of %q): %w", ev.Seq, ev.Type, ev.AggregateID, err)
				}
			}
			return fx.out, nil
		},
	}
	return r, nil
}

// A consumer partition ticks every consumerTick: a process manager fires
// its due deadlines (at most deadlineBatch at a time), and an idle
// partition (no record for idleCatchUp) catches up from the event store.
const (
	consumerTick  = 250 * time.Millisecond
	deadlineBatch = 100
	idleCatchUp   = time.Second
)

type consumerTickMsg struct{}

func (p *partitionActor) armConsumerTick(actx pa.Context) {
	if p.rt.cons == nil {
		return
	}
	self, root := actx.Self(), p.rt.system.Root
	time.AfterFunc(consumerTick, func() { root.Send(self, &consumerTickMsg{}) })
}

func (p *partitionActor) onConsumerTick(actx pa.Context) {
	if pm := p.rt.cons.pm; pm != nil && pm.p.OnDeadline != nil {
		p.fireDeadlines(actx)
	}
	if !p.stopped && len(p.pending) == 0 && p.queued.Load() == 0 && time.Since(p.lastRecord) >= idleCatchUp && time.Now().After(p.nextCatchUp) {
		p.nextCatchUp = time.Now().Add(idleCatchUp)
		if p.claimMoved() {
			// An operator moved the position (projection Reset or Skip)
			// while this partition had nothing to commit: reclaim, and
			// continue from the row.
			p.log.Info("the claim row's position was moved (a reset); reclaiming the partition")
			p.shutdown(actx)
			p.rt.requestControl(controlMsg{kind: controlRestart, partition: p.claim.Partition, epoch: p.claim.Epoch})
			return
		}
		p.catchUpIdle(actx)
	}
}

// claimMoved reports whether the claim row, still this epoch's, no longer
// holds the position this partition works from.
func (p *partitionActor) claimMoved() bool {
	ctx, cancel := context.WithTimeout(p.ctx, 10*time.Second)
	defer cancel()
	c, err := p.rt.store.ReadClaim(ctx, p.claim.PartitionKey)
	return err == nil && c.Epoch == p.claim.Epoch && (c.NextSeq != p.claim.NextSeq || c.NextOffset != p.claim.NextOffset)
}

// catchUpIdle applies, from the event store, the events the source has
// published that this idle partition has not seen: the history topic no
// longer holds them (retention deleted every record, so none arrives to
// reveal the gap). It is exact whatever the topic holds: records that do
// arrive later are skipped by seq.
func (p *partitionActor) catchUpIdle(actx pa.Context) {
	k := p.rt.cons
	// Only when the topic has nothing more for us (it is empty, or we are
	// at its end, a transaction marker aside): otherwise records are on
	// their way and the catch-up would read Postgres for nothing.
	if low, high := p.rt.watermarks(p.claim.Partition); high < 0 || (low < high && p.received < high-1) {
		return
	}
	ctx, cancel := context.WithTimeout(p.ctx, 10*time.Second)
	published, err := k.pg.PublishedSeq(ctx, k.source, p.claim.Partition)
	cancel()
	if err != nil || published < p.claim.NextSeq {
		return
	}
	p.fillGap(actx, published)
}

// fireDeadlines fires the due deadlines of this partition in one fenced
// batch: their rows are deleted (only those still pending fire) and
// OnDeadline's effects written in the same transaction. When OnDeadline
// fails, the deadlines are fired one per transaction, so one failing
// deadline (which stays due, retried at the next tick, logged and counted,
// or halts the partition under the Halt policy) never holds the others
// back.
func (p *partitionActor) fireDeadlines(actx pa.Context) {
	k := p.rt.cons
	ctx, cancel := context.WithTimeout(p.ctx, 10*time.Second)
	due, err := k.pg.DueDeadlines(ctx, k.pm.p.Name, p.claim.PartitionKey, time.Now(), deadlineBatch)
	cancel()
	if err != nil {
		if p.ctx.Err() == nil {
			p.log.Warn("reading due deadlines failed; retrying", "err", err)
		}
		return
	}
	if len(due) == 0 {
		return
	}
	ids := make([]string, len(due))
	for i, d := range due {
		ids[i] = d.ID
	}
	ok, failed := p.fire(actx, ids)
	if !ok || failed == nil || len(ids) == 1 {
		return
	}
	for _, id := range ids {
		if ok, _ = p.fire(actx, []string{id}); !ok {
			return
		}
	}
}

// fire fires the deadlines ids in one fenced timer batch. ok is false when
// the partition stopped; failed is OnDeadline's error (the batch rolled
// back, the deadlines stay due).
func (p *partitionActor) fire(actx pa.Context, ids []string) (ok bool, failed error) {
	k := p.rt.cons
	pm := k.pm
	schema, key, name, now := p.rt.cfg.schema, p.claim.PartitionKey, pm.p.Name, time.Now()
	var fired int
	b := &txn.Batch{Claim: p.claim, NextOffset: p.claim.NextOffset, NextSeq: p.claim.NextSeq, Timer: true}
	b.Emit = func(ctx context.Context, tx pgx.Tx) (out []txn.OutboxRecord, err error) {
		ds, err := txn.FireTx(ctx, tx, schema, name, key, now, ids)
		if err != nil {
			return nil, err
		}
		fired = len(ds)
		defer func() {
			if r := recover(); r != nil {
				out, err = nil, &applyError{fmt.Errorf("OnDeadline panicked: %v\n%s", r, debug.Stack())}
			}
		}()
		fx := &Effects{ctx: ctx, tx: tx, schema: schema, process: name, key: key, reg: pm.p.Commands, deadlines: true}
		for _, d := range ds {
			if err := pm.p.OnDeadline(ctx, tx, Deadline{ID: d.ID, DueAt: d.DueAt, Payload: d.Payload}, fx); err != nil {
				return nil, &applyError{fmt.Errorf("deadline %q: %w", d.ID, err)}
			}
		}
		return fx.out, nil
	}
	info := BatchInfo{Key: p.claim.PartitionKey, Epoch: p.claim.Epoch, FirstOffset: p.claim.NextOffset, NextOffset: p.claim.NextOffset}
	committed, err := p.commit(b)
	var ae *applyError
	switch {
	case err == nil:
		p.rt.metrics.deadlinesFired.Add(int64(fired))
		return p.consumerCommitted(actx, info, committed), nil
	case errors.As(err, &ae) && p.ctx.Err() == nil:
		p.rt.metrics.deadlineErrors.Add(1)
		if p.rt.cfg.onFailure == Halt && len(ids) == 1 {
			p.halt(actx, fmt.Errorf("process %s: %w (failure policy is Halt)", name, err))
			return false, err
		}
		p.log.Error("OnDeadline failed; the deadline stays due and is retried", "process", name, "deadlines", len(ids), "err", err)
		return true, err
	default:
		p.consumerCommitFailed(actx, info, err)
		return false, err
	}
}
