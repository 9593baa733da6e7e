package api_test

import (
	"bytes"
	"context"
	"errors"
	"sort"
	"sync"
	"time"

	"github.com/onceflow/onceflow/actor"
	"github.com/onceflow/onceflow/eventsource"
	"github.com/onceflow/onceflow/samples/payments/ledger"
	"github.com/onceflow/onceflow/samples/payments/readmodel"
	"github.com/onceflow/onceflow/txn"
)

// fakeLedger is the whole service in memory, for the HTTP layer's tests:
// both deciders with command-id dedupe as the runtime does it (a repeat
// returns the stored outcome; a repeat with another payload is a payload
// mismatch), and the transfer process run to quiescence after every
// command (or only on drain, when manual).
type fakeLedger struct {
	mu        sync.Mutex
	reg       *eventsource.Registry
	accounts  map[string]ledger.Account
	aver      map[string]int64
	transfers map[string]ledger.Transfer
	tver      map[string]int64
	results   map[string]fakeResult
	procs     map[string]ledger.Process
	queue     []ledger.Send
	timeouts  map[string]bool
	manual    bool
	sent      int // commands handled (not duplicates)
	unknown   bool
}

type fakeResult struct {
	payload []byte
	out     actor.Outcome
}

func newFake() *fakeLedger {
	reg, err := ledger.NewRegistry()
	if err != nil {
		panic(err)
	}
	return &fakeLedger{reg: reg, accounts: map[string]ledger.Account{}, aver: map[string]int64{}, transfers: map[string]ledger.Transfer{},
		tver: map[string]int64{}, results: map[string]fakeResult{}, procs: map[string]ledger.Process{}, timeouts: map[string]bool{}}
}

type fakeSender struct{ f *fakeLedger }

func (s fakeSender) Send(ctx context.Context, cmd eventsource.Command, id string) (actor.Outcome, error) {
	f := s.f
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.unknown {
		return actor.Outcome{CommandID: id}, &actor.OutcomeUnknownError{CommandID: id, Err: context.DeadlineExceeded}
	}
	out := f.handle(cmd, id)
	if !f.manual {
		f.drainLocked()
	}
	switch {
	case out.PayloadMismatch:
		return out, &actor.PayloadMismatchError{CommandID: id, Outcome: out}
	case out.Status == txn.OutcomeRejected:
		return out, &actor.RejectedError{CommandID: id, Reason: out.Reason}
	}
	return out, nil
}

// handle applies one command under id, deduplicated.
func (f *fakeLedger) handle(cmd eventsource.Command, id string) actor.Outcome {
	name, data, err := f.reg.Encode(cmd)
	if err != nil {
		panic(err)
	}
	payload := append([]byte(name+"|"), data...)
	_, isAccount := cmd.(ledger.AccountCommand)
	key := id
	if isAccount {
		key = "a|" + id
	} else {
		key = "t|" + id
	}
	if r, ok := f.results[key]; ok {
		o := r.out
		o.Duplicate, o.PayloadMismatch = true, !bytes.Equal(r.payload, payload)
		return o
	}
	f.sent++
	o := actor.Outcome{CommandID: id, AggregateID: cmd.AggregateID(), Status: txn.OutcomeAccepted}
	var evs []any
	if c, ok := cmd.(ledger.AccountCommand); ok {
		st, ok := f.accounts[c.AggregateID()]
		if !ok {
			st = ledger.InitialAccount()
		}
		out, err := ledger.AccountDecide(st, c)
		if err != nil {
			o.Status, o.Reason = txn.OutcomeRejected, err.Error()
		}
		for _, e := range out {
			st = ledger.AccountEvolve(st, e)
			f.aver[c.AggregateID()]++
			evs = append(evs, e)
		}
		f.accounts[c.AggregateID()] = st
		o.LastVersion, o.LastSeq = f.aver[c.AggregateID()], f.aver[c.AggregateID()]
	} else {
		c := cmd.(ledger.TransferCommand)
		st := f.transfers[c.AggregateID()]
		out, err := ledger.TransferDecide(st, c)
		if err != nil {
			o.Status, o.Reason = txn.OutcomeRejected, err.Error()
		}
		for _, e := range out {
			st = ledger.TransferEvolve(st, e)
			f.tver[c.AggregateID()]++
			evs = append(evs, e)
		}
		f.transfers[c.AggregateID()] = st
		o.LastVersion = f.tver[c.AggregateID()]
	}
	if len(evs) == 0 {
		o.LastSeq = 0
	}
	f.results[key] = fakeResult{payload: payload, out: o}
	for _, e := range evs {
		f.process(cmd.AggregateID(), e, nil)
	}
	return o
}

// process runs one event (or a fired timeout) through the transfer's
// process.
func (f *fakeLedger) process(aggregateID string, ev any, timeoutOf *string) {
	var transfer string
	if timeoutOf != nil {
		transfer = *timeoutOf
	} else {
		transfer = transferOfEvent(aggregateID, ev)
	}
	if transfer == "" {
		return
	}
	p, ok := f.procs[transfer]
	if _, create := ev.(ledger.TransferCreated); !ok && !create {
		return
	}
	before := map[string]bool{}
	for _, s := range ledger.Outstanding(p) {
		before[s.ID] = true
	}
	next, fx := ledger.Step(p, ev, time.Now())
	for _, s := range ledger.Outstanding(next) {
		if !before[s.ID] {
			f.queue = append(f.queue, s)
		}
	}
	f.queue = append(f.queue, fx.Once...)
	if fx.ScheduleTimeout {
		f.timeouts[next.Transfer] = true
	}
	if fx.CancelTimeout {
		delete(f.timeouts, next.Transfer)
	}
	f.procs[next.Transfer] = next
}

func transferOfEvent(aggregateID string, ev any) string {
	switch e := ev.(type) {
	case ledger.DebitReserved:
		return e.Transfer
	case ledger.CreditReserved:
		return e.Transfer
	case ledger.DebitRefused:
		return e.Transfer
	case ledger.CreditRefused:
		return e.Transfer
	case ledger.DebitPosted:
		return e.Transfer
	case ledger.CreditPosted:
		return e.Transfer
	case ledger.DebitVoided:
		return e.Transfer
	case ledger.CreditVoided:
		return e.Transfer
	case ledger.TransferEvent:
		return aggregateID
	}
	return ""
}

func (f *fakeLedger) drainLocked() {
	for len(f.queue) > 0 {
		s := f.queue[0]
		f.queue = f.queue[1:]
		f.handle(s.Cmd, s.ID)
	}
}

// drain runs the process to quiescence.
func (f *fakeLedger) drain() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.drainLocked()
}

// expireAll fires every scheduled timeout.
func (f *fakeLedger) expireAll() {
	f.mu.Lock()
	defer f.mu.Unlock()
	ids := make([]string, 0, len(f.timeouts))
	for id := range f.timeouts {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		delete(f.timeouts, id)
		f.process("", ledger.TimeoutFired{}, &id)
	}
	f.drainLocked()
}

func (f *fakeLedger) Transfer(_ context.Context, id string) (ledger.Transfer, int64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.transfers[id], f.tver[id], nil
}

func (f *fakeLedger) Account(_ context.Context, id string) (ledger.Account, int64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	a, ok := f.accounts[id]
	if !ok {
		a = ledger.InitialAccount()
	}
	return a, f.aver[id], nil
}

// fakeReadModels serves the read-model routes from the fake's state.
type fakeReadModels struct{ f *fakeLedger }

func (m fakeReadModels) Account(ctx context.Context, id string) (readmodel.AccountBalance, error) {
	a, v, _ := m.f.Account(ctx, id)
	if !a.Opened {
		return readmodel.AccountBalance{}, errors.Join(readmodel.ErrNotFound, errors.New("account "+id))
	}
	return readmodel.AccountBalance{ID: id, Ledger: a.Ledger, Code: a.Code, Flags: a.Flags, Closed: a.Closed, Version: v, Balances: a.Balances()}, nil
}

func (m fakeReadModels) Statement(context.Context, string, int64, int) ([]readmodel.StatementLine, int64, error) {
	return nil, 0, nil
}

func (m fakeReadModels) Expiring(_ context.Context, now time.Time, within time.Duration, limit int) ([]readmodel.PendingTransfer, error) {
	m.f.mu.Lock()
	defer m.f.mu.Unlock()
	var out []readmodel.PendingTransfer
	for id, t := range m.f.transfers {
		if t.Status == ledger.StatusPending && !t.ExpiresAt.After(now.Add(within)) {
			e := t.ExpiresAt
			out = append(out, readmodel.PendingTransfer{ID: id, DebitAccountID: t.DebitAccountID, CreditAccountID: t.CreditAccountID, Amount: t.Amount, Ledger: t.Ledger, ExpiresAt: &e})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}
