package actor

import (
	"fmt"
	"sync/atomic"

	pa "github.com/asynkron/protoactor-go/actor"
)

// aggregateActor holds one aggregate's state. Its parent, the partition
// actor, is its only sender, and the only one that stops it (passivation:
// see passivation.go). The state it holds is speculative while
// a batch is in flight: if the batch does not commit, the parent stops every
// child and reloads from Postgres, so a child never needs to roll back.
type aggregateActor struct {
	h            handler
	state        any
	version      int64
	publishState bool // encode the state for the state topic after a change
	// live counts the aggregates in memory (Stats.LiveAggregates): one
	// from the init message to Stopped, however the child stops
	// (passivated, evicted, reset, its partition let go or abandoned).
	// nil until the init message.
	live *atomic.Int64
}

// aggregateProps spawns every aggregate child: one Props for all of them (a
// Props per child cost ~300 bytes per live aggregate), a lock-free unbounded
// mailbox (protoactor's default ring starts at 10 slots, ~200 bytes; a child
// never holds more than its init and one decideReq), and no restart. The
// child gets its state in its first message (spawnAggregate).
var aggregateProps = pa.PropsFromProducer(func() pa.Actor { return &aggregateActor{} },
	pa.WithSupervisor(stopOnPanic), pa.WithMailbox(pa.UnboundedLockfree()))

// spawnAggregate starts a child holding state at version. Its init message
// is the first in its mailbox, so it is handled before any decideReq the
// parent sends next.
func (p *partitionActor) spawnAggregate(actx pa.Context, state any, version int64) *pa.PID {
	pid := actx.Spawn(aggregateProps)
	actx.Send(pid, &aggregateActor{h: p.rt.h, state: state, version: version, publishState: p.pub != nil && p.rt.cfg.publishState, live: &p.rt.metrics.live})
	return pid
}

// decideReq asks a child to decide its commands of one batch, in order. The
// child fills in the items' results and resp, then finishes its part of
// the round; the parent reads them once the round is done (the round's
// counter and channel give the happens-before edge). A round costs the
// parent one channel per batch rather than a protoactor future (a process
// registered and removed) per aggregate.
type decideReq struct {
	items []*item
	resp  decideResp
	round *decideRound
}

// decideRound is one batch's decide requests: done is closed when every
// child has answered.
type decideRound struct {
	remaining atomic.Int32
	done      chan struct{}
}

func newDecideRound(n int) *decideRound {
	r := &decideRound{done: make(chan struct{})}
	r.remaining.Store(int32(n))
	if n == 0 {
		close(r.done)
	}
	return r
}

func (r *decideRound) finish() {
	if r.remaining.Add(-1) == 0 {
		close(r.done)
	}
}

// decideResp answers a decideReq. snapshot is the encoded state when the
// batch crossed a snapshot boundary.
type decideResp struct {
	// err: the child failed (a bug in onceflow: Decide's own panics are
	// dead letters); the partition halts.
	err      error
	version  int64
	snapshot []byte
	snapErr  error
	// state is the encoded state after the batch, for the state topic,
	// when the batch changed it and state publishing is on.
	state []byte
}

func (a *aggregateActor) Receive(ctx pa.Context) {
	switch m := ctx.Message().(type) {
	case *decideReq:
		a.decideBatch(m)
	case *aggregateActor:
		// The init message (spawnAggregate).
		*a = *m
		a.live.Add(1)
	case *pa.Stopped:
		if a.live != nil {
			a.live.Add(-1)
		}
	}
}

// decideBatch decides a request's commands and answers in m.resp, even
// when it panics.
func (a *aggregateActor) decideBatch(m *decideReq) {
	defer m.round.finish()
	defer func() {
		if r := recover(); r != nil {
			m.resp.err = fmt.Errorf("aggregate actor panicked: %v", r)
		}
	}()
	start := a.version
	for _, it := range m.items {
		a.decideOne(it)
	}
	resp := &m.resp
	resp.version = a.version
	if every := a.h.snapshotEvery(); every > 0 && a.version/every != start/every {
		resp.snapshot, resp.snapErr = a.h.encodeState(a.state)
	}
	if a.publishState && a.version != start {
		// An encoding failure only costs the state record (logged by the
		// publisher's catch-up path when it meets it there).
		resp.state, _ = a.h.marshalState(a.state)
	}
}

func (a *aggregateActor) decideOne(it *item) {
	newState, events, rejected, failed := a.h.decide(a.state, it.cmd)
	switch {
	case failed != nil:
		it.status, it.reason = statusDeadLetter, failed.Error()
	case rejected != nil:
		it.status, it.reason = statusRejected, rejected.Error()
	default:
		it.status = statusAccepted
		it.events = events
		if len(events) > 0 {
			it.firstVersion = a.version + 1
			a.version += int64(len(events))
			it.lastVersion = a.version
		}
		a.state = newState
	}
}
