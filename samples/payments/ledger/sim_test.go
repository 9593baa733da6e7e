package ledger

import (
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/onceflow/onceflow/eventsource"
)

// A model of the whole system without Kafka or Postgres: both deciders,
// the process's state machine, command-id dedupe at the targets (as the
// runtime does), and a scheduler that delivers commands in any order and
// each aggregate's events to the process in order but interleaved at
// random with the others; events delivered twice, steps retried (the same
// ids), timeouts firing at any moment, clients posting, voiding and
// refunding at random. After every delivery the money is checked (credits
// posted never ahead of debits posted, per ledger); at the end the event
// log goes through Check's verifier.

type simMsg struct {
	topic string
	cmd   eventsource.Command
	id    string
}

type simEvent struct {
	typ, agg string
	version  int64
	payload  any
	cmdID    string
}

type sim struct {
	t        *testing.T
	rnd      *rand.Rand
	randomID bool // the broken variant: every command a fresh id

	acc      map[string]Account
	tr       map[string]Transfer
	ver      map[string]int64 // by typ|id
	handled  map[string]bool  // typ|command id
	bag      []simMsg
	streams  map[string][]simEvent // by typ|id, not yet delivered to the process
	seen     []simEvent            // delivered to the process (for repeats)
	log      []simEvent
	procs    map[string]Process
	timeouts map[string]bool
	fired    map[string]int
	clock    time.Time
	failures []string
	n        int
}

func newSim(t *testing.T, seed uint64) *sim {
	return &sim{t: t, rnd: rand.New(rand.NewPCG(seed, 7)), acc: map[string]Account{}, tr: map[string]Transfer{}, ver: map[string]int64{},
		handled: map[string]bool{}, streams: map[string][]simEvent{}, procs: map[string]Process{}, timeouts: map[string]bool{},
		fired: map[string]int{}, clock: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)}
}

func (s *sim) send(m simMsg) {
	if s.randomID {
		s.n++
		m.id = fmt.Sprintf("random-%d", s.n)
	}
	s.bag = append(s.bag, m)
}

func (s *sim) deliverCommand(i int) {
	m := s.bag[i]
	s.bag = append(s.bag[:i], s.bag[i+1:]...)
	typ := AccountType
	if m.topic == TransfersTopic {
		typ = TransferType
	}
	if s.handled[typ+"|"+m.id] {
		return // a duplicate: answered from the stored result
	}
	s.handled[typ+"|"+m.id] = true
	id := m.cmd.AggregateID()
	var evs []any
	var err error
	if typ == AccountType {
		var out []AccountEvent
		st, ok := s.acc[id]
		if !ok {
			st = InitialAccount()
		}
		out, err = AccountDecide(st, m.cmd.(AccountCommand))
		for _, e := range out {
			st = AccountEvolve(st, e)
			evs = append(evs, e)
		}
		s.acc[id] = st
		if ierr := CheckAccountInvariants(st); ierr != nil {
			s.t.Fatalf("account %s after %T: %v", id, m.cmd, ierr)
		}
	} else {
		var out []TransferEvent
		st := s.tr[id]
		out, err = TransferDecide(st, m.cmd.(TransferCommand))
		for _, e := range out {
			st = TransferEvolve(st, e)
			evs = append(evs, e)
		}
		s.tr[id] = st
	}
	if err != nil && !strings.HasPrefix(m.id, "client:") {
		s.failures = append(s.failures, fmt.Sprintf("process command %s %T rejected: %v", m.id, m.cmd, err))
	}
	key := typ + "|" + id
	for _, e := range evs {
		s.ver[key]++
		ev := simEvent{typ: typ, agg: id, version: s.ver[key], payload: e, cmdID: m.id}
		s.streams[key] = append(s.streams[key], ev)
		s.log = append(s.log, ev)
	}
	s.checkMoney()
}

// checkMoney: per ledger, credits posted never exceed debits posted.
func (s *sim) checkMoney() {
	dp, cp := map[uint32]int64{}, map[uint32]int64{}
	for _, a := range s.acc {
		dp[a.Ledger] += a.DebitsPosted
		cp[a.Ledger] += a.CreditsPosted
	}
	for l := range dp {
		if cp[l] > dp[l] {
			s.t.Fatalf("ledger %d: credits posted %d exceed debits posted %d: money created", l, cp[l], dp[l])
		}
	}
}

func (s *sim) deliverEvent(key string) {
	ev := s.streams[key][0]
	s.streams[key] = s.streams[key][1:]
	if len(s.streams[key]) == 0 {
		delete(s.streams, key)
	}
	s.seen = append(s.seen, ev)
	s.process(ev)
}

func (s *sim) process(ev simEvent) {
	s.clock = s.clock.Add(time.Millisecond)
	transfer := processTransfer(ev.agg, ev.payload)
	if transfer == "" {
		return
	}
	p, ok := s.procs[transfer]
	if _, create := ev.payload.(TransferCreated); !ok && !create {
		return
	}
	s.advance(p, ev.payload)
}

// advance is the shell's advance, in memory.
func (s *sim) advance(p Process, input any) {
	before := Outstanding(p)
	next, fx := Step(p, input, s.clock)
	sent := map[string]bool{}
	for _, c := range before {
		sent[c.ID] = true
	}
	for _, c := range Outstanding(next) {
		if !sent[c.ID] {
			s.send(simMsg{c.Topic, c.Cmd, c.ID})
		}
	}
	for _, c := range fx.Once {
		s.send(simMsg{c.Topic, c.Cmd, c.ID})
	}
	if fx.ScheduleTimeout {
		s.timeouts[next.Transfer] = true
	}
	if fx.CancelTimeout {
		delete(s.timeouts, next.Transfer)
	}
	if next.Transfer != "" {
		s.procs[next.Transfer] = next
	}
}

func (s *sim) keys(m map[string][]simEvent) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

func (s *sim) pick(set map[string]bool) string {
	ks := make([]string, 0, len(set))
	for k := range set {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks[s.rnd.IntN(len(ks))]
}

// step takes one random action; it reports false when nothing is left.
func (s *sim) step(clients bool) bool {
	if len(s.bag) == 0 && len(s.streams) == 0 && len(s.timeouts) == 0 {
		return false
	}
	switch r := s.rnd.IntN(100); {
	case r < 40 && len(s.bag) > 0:
		s.deliverCommand(s.rnd.IntN(len(s.bag)))
	case r < 80 && len(s.streams) > 0:
		ks := s.keys(s.streams)
		s.deliverEvent(ks[s.rnd.IntN(len(ks))])
	case r < 84 && len(s.seen) > 0:
		s.process(s.seen[s.rnd.IntN(len(s.seen))]) // an event delivered again
	case r < 88:
		// A step retry fires: the outstanding commands again, same ids.
		for _, id := range sortedProcs(s.procs) {
			if out := Outstanding(s.procs[id]); len(out) > 0 && s.rnd.IntN(3) == 0 {
				for _, c := range out {
					s.send(simMsg{c.Topic, c.Cmd, c.ID})
				}
			}
		}
	case r < 93 && len(s.timeouts) > 0:
		id := s.pick(s.timeouts)
		delete(s.timeouts, id)
		s.fired[id+"/timeout"]++
		s.advance(s.procs[id], TimeoutFired{})
	case r < 100 && clients:
		s.clientDecision()
	}
	return true
}

func sortedProcs(m map[string]Process) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// clientDecision posts (fully or partly) or voids a pending transfer, or
// refunds part of a posted one, as a client would, at any moment.
func (s *sim) clientDecision() {
	ids := make([]string, 0, len(s.tr))
	for id := range s.tr {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	if len(ids) == 0 {
		return
	}
	id := ids[s.rnd.IntN(len(ids))]
	t := s.tr[id]
	switch {
	case t.Pending && s.rnd.IntN(2) == 0:
		s.send(simMsg{TransfersTopic, PostPendingTransfer{ID: id, Amount: s.rnd.Int64N(t.Amount + 1)}, "client:post:" + id})
	case t.Pending:
		s.send(simMsg{TransfersTopic, VoidPendingTransfer{ID: id}, "client:void:" + id})
	case t.Status == StatusPosted && t.RefundOf == "":
		r := fmt.Sprintf("r-%d", s.rnd.IntN(3))
		s.send(simMsg{TransfersTopic, RefundTransfer{ID: id, RefundID: r, Amount: 1 + s.rnd.Int64N(t.PostAmount)}, "client:refund:" + id + ":" + r})
	}
}

// run opens the accounts, funds the customers, creates n random transfers
// and runs everything to quiescence.
func (s *sim) run(n int) {
	for _, a := range []OpenAccount{
		{ID: "bank", Ledger: 840, Code: 3},
		{ID: "alice", Ledger: 840, Code: 1, Flags: AccountFlags{DebitsMustNotExceedCredits: true}},
		{ID: "bob", Ledger: 840, Code: 1, Flags: AccountFlags{DebitsMustNotExceedCredits: true}},
		{ID: "carol", Ledger: 840, Code: 1, Flags: AccountFlags{DebitsMustNotExceedCredits: true}},
		{ID: "shop", Ledger: 840, Code: 2},
		{ID: "line", Ledger: 840, Code: 4, Flags: AccountFlags{CreditsMustNotExceedDebits: true}},
		{ID: "eu", Ledger: 978, Code: 1},
	} {
		s.send(simMsg{AccountsTopic, a, "client:open:" + a.ID})
	}
	for s.step(false) {
	}
	for _, c := range []string{"alice", "bob", "carol"} {
		s.send(simMsg{TransfersTopic, CreateTransfer{ID: "fund-" + c, DebitAccountID: "bank", CreditAccountID: c, Amount: 1000, Ledger: 840, Code: 9}, "client:create:fund-" + c})
	}
	for s.step(false) {
	}
	names := []string{"alice", "bob", "carol", "shop", "line", "eu", "ghost"}
	for i := range n {
		d := names[s.rnd.IntN(len(names))]
		c := names[s.rnd.IntN(len(names))]
		if c == d {
			c = "shop"
			if d == "shop" {
				c = "alice"
			}
		}
		ct := CreateTransfer{ID: fmt.Sprintf("t-%d", i), DebitAccountID: d, CreditAccountID: c, Amount: 1 + s.rnd.Int64N(700), Ledger: 840, Code: 1}
		if s.rnd.IntN(5) < 2 {
			ct.Pending, ct.Timeout = true, 1+s.rnd.Int64N(5)
		}
		s.send(simMsg{TransfersTopic, ct, "client:create:" + ct.ID})
		if i == n/2 {
			s.send(simMsg{AccountsTopic, CloseAccount{ID: "line"}, "client:close:line"})
		}
		// Let some work happen between creations.
		for range s.rnd.IntN(20) {
			s.step(true)
		}
	}
	for s.step(true) {
	}
	// Pending transfers without a decision expired (their timeouts all
	// fired above); none is left pending.
}

// verify runs Check's verifier over the log and the process checks that
// need no database.
func (s *sim) verify() Report {
	rep := Report{ByStatus: map[Status]int{}}
	v := newVerifier(&rep)
	log := append([]simEvent(nil), s.log...)
	sort.SliceStable(log, func(i, j int) bool {
		if log[i].typ != log[j].typ {
			return log[i].typ < log[j].typ
		}
		if log[i].agg != log[j].agg {
			return log[i].agg < log[j].agg
		}
		return log[i].version < log[j].version
	})
	for _, e := range log {
		v.event(e.typ, e.agg, e.version, e.payload, e.cmdID)
	}
	transfers := v.finish()
	for id, p := range s.procs {
		if p.Phase != PhaseDone {
			rep.add(VProcessNotDone, id, "phase %s", p.Phase)
		}
	}
	for id, t := range transfers {
		if t.Status == StatusExpired && s.fired[id+"/timeout"] != 1 {
			rep.add(VTimeoutNotFired, id, "fired %d times", s.fired[id+"/timeout"])
		}
	}
	for _, f := range s.failures {
		rep.add(VCommandFailed, "", "%s", f)
	}
	return rep
}

func TestSimulatedTransfersKeepTheLedger(t *testing.T) {
	seeds := 40
	if testing.Short() {
		seeds = 5
	}
	total := map[Status]int{}
	var refunds, partial int
	for seed := range uint64(seeds) {
		s := newSim(t, seed)
		s.run(60)
		rep := s.verify()
		if !rep.OK() {
			t.Fatalf("seed %d: %s", seed, rep)
		}
		for st, n := range rep.ByStatus {
			total[st] += n
		}
		for id, tr := range s.tr {
			if strings.Contains(id, ":refund:") && tr.Status == StatusPosted {
				refunds++
			}
			if tr.Pending && tr.Status == StatusPosted && tr.PostAmount < tr.Amount {
				partial++
			}
		}
	}
	if refunds == 0 || partial == 0 {
		t.Errorf("the workload posted %d refunds and %d partial posts, want some of each", refunds, partial)
	}
	// The workload reaches every final state.
	for _, st := range []Status{StatusPosted, StatusVoided, StatusExpired, StatusFailed} {
		if total[st] == 0 {
			t.Errorf("no transfer ended %s over %d seeds: %v", st, seeds, total)
		}
	}
	t.Logf("%d seeds: %v; %d refunds posted, %d partial posts", seeds, total, refunds, partial)
}

// The verifier catches the broken variant that sends every command with a
// fresh random id: no effect is made under the step's deterministic id.
func TestVerifierCatchesRandomCommandIDs(t *testing.T) {
	s := newSim(t, 1)
	s.randomID = true
	s.run(20)
	rep := s.verify()
	var found bool
	for _, v := range rep.Violations {
		found = found || v.Kind == VEffectNotFromStep
	}
	if !found {
		t.Fatalf("random command ids not reported: %s", rep)
	}
}
