package actor

import (
	"time"

	pa "github.com/asynkron/protoactor-go/actor"
)

// aggregateActor holds one aggregate's state. Its parent, the partition
// actor, is its only sender. The state it holds is speculative while a batch
// is in flight: if the batch does not commit, the parent stops every child
// and reloads from Postgres, so a child never needs to roll back.
type aggregateActor struct {
	h         handler
	id        string
	state     any
	version   int64
	passivate time.Duration
	batch     uint64 // last batch that used this child
}

// decideReq asks a child to decide its commands of one batch, in order. The
// child fills in the items' results; the parent reads them after the
// response arrives (the future gives the happens-before edge).
type decideReq struct {
	batch uint64
	items []*item
}

// decideResp answers a decideReq. snapshot is the encoded state when the
// batch crossed a snapshot boundary.
type decideResp struct {
	version  int64
	snapshot []byte
	snapErr  error
}

// passivateReq is a child asking its parent to be stopped. The parent is
// the one that stops it, so no message can be sent to a stopping child: the
// parent removes the child from its map first (see docs/architecture.md for
// why a self-stop loses messages).
type passivateReq struct {
	id    string
	pid   *pa.PID
	batch uint64
}

func (a *aggregateActor) Receive(ctx pa.Context) {
	switch m := ctx.Message().(type) {
	case *pa.Started:
		ctx.SetReceiveTimeout(a.passivate)
	case *decideReq:
		a.batch = m.batch
		start := a.version
		for _, it := range m.items {
			a.decideOne(it)
		}
		resp := &decideResp{version: a.version}
		if every := a.h.snapshotEvery(); every > 0 && a.version/every != start/every {
			resp.snapshot, resp.snapErr = a.h.encodeState(a.state)
		}
		ctx.Respond(resp)
	case *pa.ReceiveTimeout:
		ctx.Send(ctx.Parent(), &passivateReq{id: a.id, pid: ctx.Self(), batch: a.batch})
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
