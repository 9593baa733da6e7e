package actor

import (
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
	// from Started to Stopped, however the child stops (passivated,
	// evicted, reset, its partition let go or abandoned).
	live *atomic.Int64
}

// decideReq asks a child to decide its commands of one batch, in order. The
// child fills in the items' results; the parent reads them after the
// response arrives (the future gives the happens-before edge).
type decideReq struct {
	items []*item
}

// decideResp answers a decideReq. snapshot is the encoded state when the
// batch crossed a snapshot boundary.
type decideResp struct {
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
		start := a.version
		for _, it := range m.items {
			a.decideOne(it)
		}
		resp := &decideResp{version: a.version}
		if every := a.h.snapshotEvery(); every > 0 && a.version/every != start/every {
			resp.snapshot, resp.snapErr = a.h.encodeState(a.state)
		}
		if a.publishState && a.version != start {
			// An encoding failure only costs the state record (logged by
			// the publisher's catch-up path when it meets it there).
			resp.state, _ = a.h.marshalState(a.state)
		}
		ctx.Respond(resp)
	case *pa.Started:
		if a.live != nil {
			a.live.Add(1)
		}
	case *pa.Stopped:
		if a.live != nil {
			a.live.Add(-1)
		}
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
