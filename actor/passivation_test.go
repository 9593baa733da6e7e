package actor_test

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/onceflow/onceflow/actor"
	"github.com/onceflow/onceflow/eventsource"
	"github.com/onceflow/onceflow/txn"
)

// Idle aggregates are passivated through their parent and reloaded from
// Postgres (snapshot + later events) on their next command.
func TestPassivationReloadsState(t *testing.T) {
	e := newEnv(t)
	a := e.start("a", actor.WithPassivateAfter(100*time.Millisecond))
	owns(t, a, testPartitions)
	c := e.client()
	var cmds []sent
	for i := range 12 { // crosses the snapshot interval (5) twice
		id := fmt.Sprintf("d-%d", i)
		if _, err := send(t, c, Deposit{Account: "p", Amount: 10}, actor.WithCommandID(id)); err != nil {
			t.Fatal(err)
		}
		cmds = append(cmds, sent{id: id, account: "p", delta: 10})
	}
	if n := countRows(t, e.pool, `SELECT count(*) FROM onceflow.snapshots WHERE aggregate_id = 'p' AND version = 10`); n != 1 {
		t.Fatalf("snapshot at version 10: %d rows", n)
	}
	// Every child spawned for "p" (one per load) has been passivated: the
	// aggregate is no longer in memory.
	eventually(t, 30*time.Second, "passivation", func() error {
		if st := a.rt.Stats(); st.Passivations == 0 || st.Passivations != st.Loads {
			return fmt.Errorf("%d loads, %d passivations", st.Loads, st.Passivations)
		}
		return nil
	})
	loads := a.rt.Stats().Loads
	// The reloaded state must hold the full balance of 120.
	if _, err := send(t, c, Withdraw{Account: "p", Amount: 121}, actor.WithCommandID("w-too-much")); !errors.Is(err, actor.ErrRejected) {
		t.Fatalf("withdraw 121 of 120: %v", err)
	}
	o, err := send(t, c, Withdraw{Account: "p", Amount: 120}, actor.WithCommandID("w-all"))
	if err != nil || o.FirstVersion != 13 {
		t.Fatalf("withdraw 120 after reload: %+v %v", o, err)
	}
	if a.rt.Stats().Loads <= loads {
		t.Fatal("the aggregate was not reloaded after passivation")
	}
	cmds = append(cmds, sent{id: "w-too-much", account: "p", delta: -121}, sent{id: "w-all", account: "p", delta: -120})
	checkInvariants(t, e.pool, cmds)
}

// A very short passivation timeout under a steady stream: children are
// stopped and recreated all the time. No command may be lost or applied
// twice (a child that stopped itself would drop messages sent meanwhile).
func TestPassivationUnderLoadLosesNothing(t *testing.T) {
	e := newEnv(t)
	a := e.start("a", actor.WithPassivateAfter(time.Millisecond), actor.WithBatch(10, time.Millisecond))
	owns(t, a, testPartitions)
	c := e.client(actor.WithResults(txn.NewStore(e.pool), time.Second))
	l := startLoad(t, c, []string{"x-0", "x-1", "x-2", "x-3", "x-4", "x-5"}, 6)
	l.waitFor(t, 600)
	cmds := l.finish()
	st := a.rt.Stats()
	t.Logf("%d commands, %d passivations, %d loads", len(cmds), st.Passivations, st.Loads)
	if st.Passivations == 0 {
		t.Fatal("no passivation happened")
	}
	checkInvariants(t, e.pool, cmds)
}

// The KIP-848 consumer group protocol (group.protocol=consumer).
func TestConsumerGroupProtocol(t *testing.T) {
	e := newEnv(t)
	props := map[string]string{"max.poll.interval.ms": "5000"}
	a := e.startWith("a", props, actor.WithGroupProtocol(actor.ProtocolConsumer))
	owns(t, a, testPartitions)
	c := e.client()
	if o, err := send(t, c, Deposit{Account: "k", Amount: 3}, actor.WithCommandID("k-1")); err != nil || o.Status != txn.OutcomeAccepted {
		t.Fatalf("%+v %v", o, err)
	}
	b := e.startWith("b", props, actor.WithGroupProtocol(actor.ProtocolConsumer))
	eventually(t, 60*time.Second, "partitions split between a and b", func() error {
		sa, sb := a.rt.Stats(), b.rt.Stats()
		if sb.OwnedPartitions == 0 || sa.OwnedPartitions+sb.OwnedPartitions != testPartitions {
			return fmt.Errorf("a owns %d, b owns %d", sa.OwnedPartitions, sb.OwnedPartitions)
		}
		return nil
	})
	if o, err := send(t, c, Deposit{Account: "k", Amount: 4}, actor.WithCommandID("k-2")); err != nil || o.Status != txn.OutcomeAccepted {
		t.Fatalf("%+v %v", o, err)
	}
	checkInvariants(t, e.pool, []sent{{id: "k-1", account: "k", delta: 3}, {id: "k-2", account: "k", delta: 4}})
}

// lossyStateCodec is JSON, except that it forgets an Account's balance: a
// state the codec cannot round-trip, which static checks cannot see.
type lossyStateCodec struct{ eventsource.JSONCodec }

func (c lossyStateCodec) Marshal(v any) ([]byte, error) {
	if _, ok := v.(Account); ok {
		return []byte(`{"balance":0}`), nil
	}
	return c.JSONCodec.Marshal(v)
}

// A snapshot that would load back a different state is refused before it
// is written: the batch commits without it, the refusal is counted and
// logged, and an aggregate reloaded after passivation has its full state
// (from the events). Before the fix the lossy snapshot was written and the
// reloaded balance was wrong.
func TestSnapshotThatDoesNotRoundTripIsRefused(t *testing.T) {
	e := newEnv(t)
	e.agg = newAccountAggregate(t, eventsource.WithCodec(lossyStateCodec{}))
	a := e.start("a", actor.WithPassivateAfter(100*time.Millisecond))
	owns(t, a, testPartitions)
	c := e.client()
	for i := range 7 { // crosses the snapshot interval (5)
		if _, err := send(t, c, Deposit{Account: "lossy", Amount: 10}, actor.WithCommandID(fmt.Sprintf("l-%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	if n := countRows(t, e.pool, `SELECT count(*) FROM onceflow.snapshots`); n != 0 {
		t.Fatalf("%d snapshots written from a state that does not round-trip", n)
	}
	if st := a.rt.Stats(); st.SnapshotErrors == 0 {
		t.Fatalf("stats %+v: the refused snapshot is not counted", st)
	}
	eventually(t, 30*time.Second, "passivation", func() error {
		if st := a.rt.Stats(); st.Passivations == 0 || st.Passivations != st.Loads {
			return fmt.Errorf("%d loads, %d passivations", st.Loads, st.Passivations)
		}
		return nil
	})
	if o, err := send(t, c, Withdraw{Account: "lossy", Amount: 70}); err != nil || o.FirstVersion != 8 {
		t.Fatalf("withdrawing the full balance of 70 after a reload: %+v %v", o, err)
	}
}

// WithMaxAggregates bounds the aggregates in memory: 200 accounts through a
// runtime capped at 20 (5 per partition) never have more than the cap plus
// one batch per partition live, the evicted ones are reloaded with their
// state and version on their next command, and every command is applied
// exactly once.
func TestMaxAggregatesBoundsLiveAggregates(t *testing.T) {
	const (
		accounts = 200
		maxAggs  = 20
		batch    = 10
	)
	e := newEnv(t)
	a := e.start("a", actor.WithMaxAggregates(maxAggs), actor.WithPassivateAfter(time.Hour), actor.WithBatch(batch, time.Millisecond))
	owns(t, a, testPartitions)
	c := e.client()

	var peak atomic.Int64
	sampling := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			if n := a.rt.Stats().LiveAggregates; n > peak.Load() {
				peak.Store(n)
			}
			select {
			case <-sampling:
				return
			case <-time.After(time.Millisecond):
			}
		}
	}()
	var mu sync.Mutex
	var cmds []sent
	// each sends fn(i) for every account from 16 workers and checks its
	// outcome.
	each := func(what string, fn func(i int, acct string) (cmd interface{ AggregateID() string }, id string, delta int64, check func(actor.Outcome, error) error)) {
		t.Helper()
		var wg sync.WaitGroup
		var failed atomic.Value
		next := atomic.Int64{}
		for range 16 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					i := int(next.Add(1) - 1)
					if i >= accounts {
						return
					}
					acct := fmt.Sprintf("cap-%03d", i)
					cmd, id, delta, check := fn(i, acct)
					mu.Lock()
					cmds = append(cmds, sent{id: id, account: acct, delta: delta})
					mu.Unlock()
					o, err := send(t, c, cmd, actor.WithCommandID(id))
					if err := check(o, err); err != nil {
						failed.CompareAndSwap(nil, fmt.Errorf("%s, %s: %w", what, acct, err))
					}
				}
			}()
		}
		wg.Wait()
		if err := failed.Load(); err != nil {
			t.Fatal(err)
		}
	}
	accepted := func(version int64) func(actor.Outcome, error) error {
		return func(o actor.Outcome, err error) error {
			if err != nil || o.FirstVersion != version {
				return fmt.Errorf("%+v %v, want accepted at version %d", o, err, version)
			}
			return nil
		}
	}
	each("deposit 10", func(i int, acct string) (interface{ AggregateID() string }, string, int64, func(actor.Outcome, error) error) {
		return Deposit{Account: acct, Amount: 10}, "d1-" + acct, 10, accepted(1)
	})
	each("deposit 5", func(i int, acct string) (interface{ AggregateID() string }, string, int64, func(actor.Outcome, error) error) {
		return Deposit{Account: acct, Amount: 5}, "d2-" + acct, 5, accepted(2)
	})
	loads := a.rt.Stats().Loads
	// A reloaded state that lost a deposit would reject this withdrawal; one
	// that counted a deposit twice would accept the next.
	each("withdraw 15", func(i int, acct string) (interface{ AggregateID() string }, string, int64, func(actor.Outcome, error) error) {
		return Withdraw{Account: acct, Amount: 15}, "w1-" + acct, -15, accepted(3)
	})
	each("withdraw 1 of 0", func(i int, acct string) (interface{ AggregateID() string }, string, int64, func(actor.Outcome, error) error) {
		return Withdraw{Account: acct, Amount: 1}, "w2-" + acct, -1, func(o actor.Outcome, err error) error {
			if !errors.Is(err, actor.ErrRejected) {
				return fmt.Errorf("%+v %v, want rejected", o, err)
			}
			return nil
		}
	})
	close(sampling)
	<-sampled
	st := a.rt.Stats()
	t.Logf("%d commands: peak %d live, %d loads, %d evictions, %d passivations", len(cmds), peak.Load(), st.Loads, st.Evictions, st.Passivations)
	if st.Loads-loads < accounts {
		t.Errorf("%d loads for %d accounts evicted before their next command", st.Loads-loads, accounts)
	}
	if st.Evictions == 0 || st.Passivations != 0 {
		t.Errorf("%d evictions, %d passivations: want evictions only", st.Evictions, st.Passivations)
	}
	// The cap holds between batches; while a batch is decided its
	// aggregates are live too.
	if p := peak.Load(); p > maxAggs+testPartitions*batch {
		t.Errorf("peak %d live aggregates, cap %d + %d partitions * batch %d", p, maxAggs, testPartitions, batch)
	}
	eventually(t, 10*time.Second, "live aggregates within the cap", func() error {
		if n := a.rt.Stats().LiveAggregates; n > maxAggs {
			return fmt.Errorf("%d live", n)
		}
		return nil
	})
	checkInvariants(t, e.pool, cmds)
	// Letting the partitions go drops every aggregate.
	a.stop(t)
	if n := a.rt.Stats().LiveAggregates; n != 0 {
		t.Errorf("%d live aggregates after the runtime stopped", n)
	}
}

// A cap far below the working set under a steady random stream: children
// are evicted and reloaded all the time, between every batch. No command
// may be lost or applied twice.
func TestMaxAggregatesUnderLoadLosesNothing(t *testing.T) {
	e := newEnv(t)
	a := e.start("a", actor.WithMaxAggregates(4), actor.WithBatch(10, time.Millisecond))
	owns(t, a, testPartitions)
	c := e.client(actor.WithResults(txn.NewStore(e.pool), time.Second))
	var accounts []string
	for i := range 40 {
		accounts = append(accounts, fmt.Sprintf("churn-%d", i))
	}
	l := startLoad(t, c, accounts, 8)
	l.waitFor(t, 800)
	cmds := l.finish()
	st := a.rt.Stats()
	t.Logf("%d commands, %d evictions, %d loads, %d live", len(cmds), st.Evictions, st.Loads, st.LiveAggregates)
	if st.Evictions == 0 {
		t.Fatal("no eviction happened")
	}
	checkInvariants(t, e.pool, cmds)
}
