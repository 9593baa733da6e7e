package actor_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/onceflow/onceflow/actor"
	"github.com/onceflow/onceflow/txn"
)

// load sends commands from several workers until stopped. Each command has a
// unique id; a command whose outcome is unknown (timeout during a rebalance)
// is resent with the same id, as a real client would.
type load struct {
	mu    sync.Mutex
	sent  []sent
	done  atomic.Int64
	stop  chan struct{}
	wg    sync.WaitGroup
	retry atomic.Int64
}

func startLoad(t *testing.T, c *actor.Client, accounts []string, workers int) *load {
	l := &load{stop: make(chan struct{})}
	for w := range workers {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 42))
			for i := 0; ; i++ {
				select {
				case <-l.stop:
					return
				default:
				}
				acct := accounts[rng.IntN(len(accounts))]
				amt := int64(1 + rng.IntN(50))
				id := fmt.Sprintf("%s-w%d-%d", t.Name(), w, i)
				var cmd interface{ AggregateID() string } = Deposit{Account: acct, Amount: amt}
				delta := amt
				if rng.IntN(3) == 0 {
					cmd, delta = Withdraw{Account: acct, Amount: amt}, -amt
				}
				l.mu.Lock()
				l.sent = append(l.sent, sent{id: id, account: acct, delta: delta})
				l.mu.Unlock()
				for attempt := 0; ; attempt++ {
					ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
					_, err := c.Send(ctx, cmd, actor.WithCommandID(id))
					cancel()
					if err == nil || errors.Is(err, actor.ErrRejected) || errors.Is(err, actor.ErrDeadLettered) {
						break
					}
					if attempt == 20 {
						t.Errorf("command %s: no outcome after %d attempts: %v", id, attempt+1, err)
						break
					}
					l.retry.Add(1)
				}
				l.done.Add(1)
			}
		}()
	}
	return l
}

func (l *load) finish() []sent {
	close(l.stop)
	l.wg.Wait()
	return l.sent
}

func (l *load) waitFor(t *testing.T, n int64) {
	t.Helper()
	target := l.done.Load() + n
	eventually(t, 60*time.Second, fmt.Sprintf("%d more commands", n), func() error {
		if d := l.done.Load(); d < target {
			return fmt.Errorf("%d of %d done", d, target)
		}
		return nil
	})
}

func owns(t *testing.T, r *running, n int) {
	t.Helper()
	eventually(t, 60*time.Second, fmt.Sprintf("%s to own %d partitions", r.rt.InstanceID(), n), func() error {
		if got := r.rt.Stats().OwnedPartitions; got != n {
			return fmt.Errorf("owns %d", got)
		}
		return nil
	})
}

// Two instances in one group, a rebalance in the middle of a steady stream
// (an instance joins, later another leaves): every command id has exactly
// one outcome, versions and seqs are gap-free, balances match.
func TestRebalanceDuringSteadyStream(t *testing.T) {
	e := newEnv(t)
	a := e.start("a")
	owns(t, a, testPartitions)
	c := e.client(actor.WithResults(txn.NewStore(e.pool), 2*time.Second))
	accounts := []string{"acc-0", "acc-1", "acc-2", "acc-3", "acc-4", "acc-5", "acc-6", "acc-7", "acc-8", "acc-9"}
	l := startLoad(t, c, accounts, 8)

	l.waitFor(t, 200)
	b := e.start("b") // rebalance 1: b takes some partitions from a, mid-stream
	eventually(t, 60*time.Second, "partitions split between a and b", func() error {
		sa, sb := a.rt.Stats(), b.rt.Stats()
		if sa.Revoked == 0 || sb.OwnedPartitions == 0 || sa.OwnedPartitions+sb.OwnedPartitions != testPartitions {
			return fmt.Errorf("a owns %d (revoked %d), b owns %d", sa.OwnedPartitions, sa.Revoked, sb.OwnedPartitions)
		}
		return nil
	})
	l.waitFor(t, 200)
	a.stop(t) // rebalance 2: a leaves, b takes everything
	owns(t, b, testPartitions)
	l.waitFor(t, 200)
	cmds := l.finish()

	sa, sb := a.rt.Stats(), b.rt.Stats()
	t.Logf("%d commands (%d resends); a: %+v; b: %+v", len(cmds), l.retry.Load(), sa, sb)
	if sa.Accepted == 0 || sb.Accepted == 0 {
		t.Fatalf("both instances should have handled commands: a %d, b %d", sa.Accepted, sb.Accepted)
	}
	checkInvariants(t, e.pool, cmds)
}

// The zombie: instance a decides a batch, then freezes (its partition actor
// and its poll loop both stall, as under SIGSTOP) past max.poll.interval.ms.
// The group evicts it, b claims the partition and handles the same records.
// When a wakes up and tries to commit, the fence rejects it: b's results are
// the only ones.
func TestZombieCommitIsFenced(t *testing.T) {
	e := newEnv(t)
	var rtA atomic.Pointer[actor.Runtime]
	decided := make(chan actor.BatchInfo, 1)
	release := make(chan struct{})
	fenced := make(chan error, 1)
	var releasePolls func()
	var armed atomic.Bool
	armed.Store(true)
	a := e.start("a", actor.WithFaults(actor.Faults{
		BeforeCommit: func(_ context.Context, b actor.BatchInfo) {
			if slices.Contains(b.CommandIDs, "zombie-1") && armed.CompareAndSwap(true, false) {
				releasePolls = actor.StallPolls(rtA.Load())
				decided <- b
				<-release
			}
		},
	}), actor.WithHooks(actor.Hooks{OnFenced: func(_ actor.BatchInfo, err error) { fenced <- err }}))
	rtA.Store(a.rt)
	owns(t, a, testPartitions)
	c := e.client()

	cmds := []sent{{id: "before-1", account: "z", delta: 5}}
	if _, err := send(t, c, Deposit{Account: "z", Amount: 5}, actor.WithCommandID("before-1")); err != nil {
		t.Fatal(err)
	}
	type result struct {
		o   actor.Outcome
		err error
	}
	zombieOutcome := make(chan result, 1)
	go func() {
		o, err := send(t, c, Deposit{Account: "z", Amount: 7}, actor.WithCommandID("zombie-1"))
		zombieOutcome <- result{o, err}
	}()
	cmds = append(cmds, sent{id: "zombie-1", account: "z", delta: 7})
	var batch actor.BatchInfo
	select {
	case batch = <-decided:
	case <-time.After(60 * time.Second):
		t.Fatal("a never decided the batch")
	}
	t.Logf("a decided partition %d epoch %d offsets [%d,%d) and froze", batch.Key.Partition, batch.Epoch, batch.FirstOffset, batch.NextOffset)

	b := e.start("b")
	var r result
	select {
	case r = <-zombieOutcome:
	case <-time.After(90 * time.Second):
		t.Fatal("no outcome for zombie-1 from the new owner")
	}
	if r.err != nil || r.o.Status != txn.OutcomeAccepted || r.o.Duplicate {
		t.Fatalf("zombie-1 via b: %+v %v", r.o, r.err)
	}
	claim, err := txn.NewStore(e.pool).ReadClaim(context.Background(), batch.Key)
	if err != nil || claim.Owner != "b" || claim.Epoch <= batch.Epoch {
		t.Fatalf("claim after takeover: %+v %v", claim, err)
	}

	close(release) // the zombie wakes up and commits
	select {
	case err := <-fenced:
		var fe *txn.FencedError
		if !errors.As(err, &fe) || fe.SelfFenced() || fe.Current.Owner != "b" || fe.Epoch != batch.Epoch {
			t.Fatalf("zombie commit: %v; want a fence by b", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("the zombie's commit was not fenced")
	}
	releasePolls()
	if got := a.rt.Stats().Fenced; got != 1 {
		t.Fatalf("a fenced commits: %d, want 1", got)
	}
	// b keeps serving.
	if _, err := send(t, c, Deposit{Account: "z", Amount: 1}, actor.WithCommandID("after-1")); err != nil {
		t.Fatal(err)
	}
	cmds = append(cmds, sent{id: "after-1", account: "z", delta: 1})
	owns(t, b, testPartitions)
	checkInvariants(t, e.pool, cmds)
	if n := countRows(t, e.pool, `SELECT count(*) FROM onceflow.events WHERE command_id = 'zombie-1'`); n != 1 {
		t.Fatalf("zombie-1 events: %d, want 1", n)
	}
}

// A crash between the Postgres commit and the reply: the reply is lost, but
// the effect is stored once. Resending the same command id, or the record
// being delivered again, or a restart on another instance, never applies it
// twice; a client with the Postgres fallback still gets the outcome.
func TestCrashBetweenCommitAndReply(t *testing.T) {
	e := newEnv(t)
	crashOnce := map[string]*atomic.Bool{"crash-1": {}, "crash-2": {}}
	a := e.start("a", actor.WithFaults(actor.Faults{
		AfterCommit: func(_ context.Context, b actor.BatchInfo) error {
			for _, id := range b.CommandIDs {
				if f, ok := crashOnce[id]; ok && f.CompareAndSwap(false, true) {
					return errors.New("simulated crash after commit, before replies")
				}
			}
			return nil
		},
	}))
	owns(t, a, testPartitions)
	replyOnly := e.client()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	_, err := replyOnly.Send(ctx, Deposit{Account: "c", Amount: 10}, actor.WithCommandID("crash-1"))
	cancel()
	if !errors.Is(err, actor.ErrOutcomeUnknown) {
		t.Fatalf("crash-1: want outcome unknown (reply lost), got %v", err)
	}
	eventually(t, 30*time.Second, "crash-1 committed", func() error {
		if countRows(t, e.pool, `SELECT count(*) FROM onceflow.command_results WHERE command_id = 'crash-1'`) != 1 {
			return errNotYet
		}
		return nil
	})

	// The client resends with the same id: stored outcome, nothing applied.
	o, err := send(t, replyOnly, Deposit{Account: "c", Amount: 10}, actor.WithCommandID("crash-1"))
	if err != nil || !o.Duplicate || o.Status != txn.OutcomeAccepted || o.FirstVersion != 1 {
		t.Fatalf("resend crash-1: %+v %v", o, err)
	}
	// The very same record delivered again (a producer retry duplicate).
	e.produceRaw([]byte("c"), []byte(`{"account":"c","amount":10}`), map[string]string{"onceflow-command-id": "crash-1", "onceflow-command-type": "test.Deposit"})

	// A full crash: a goes away, b takes over from Postgres.
	a.stop(t)
	b := e.start("b")
	owns(t, b, testPartitions)
	o, err = send(t, replyOnly, Deposit{Account: "c", Amount: 10}, actor.WithCommandID("crash-1"))
	if err != nil || !o.Duplicate {
		t.Fatalf("resend crash-1 to b: %+v %v", o, err)
	}

	// A client with the Postgres fallback gets the outcome despite a lost
	// reply (b crashes after committing crash-2).
	bHooks := e.start("b2", actor.WithFaults(actor.Faults{AfterCommit: func(_ context.Context, bi actor.BatchInfo) error {
		if slices.Contains(bi.CommandIDs, "crash-2") && crashOnce["crash-2"].CompareAndSwap(false, true) {
			return errors.New("simulated crash")
		}
		return nil
	}}))
	b.stop(t)
	owns(t, bHooks, testPartitions)
	withResults := e.client(actor.WithResults(txn.NewStore(e.pool), 500*time.Millisecond))
	o, err = send(t, withResults, Deposit{Account: "c", Amount: 20}, actor.WithCommandID("crash-2"))
	if err != nil || o.Status != txn.OutcomeAccepted || o.FirstVersion != 2 {
		t.Fatalf("crash-2 via the results table: %+v %v", o, err)
	}
	if !crashOnce["crash-2"].Load() {
		t.Fatal("the crash hook for crash-2 did not fire")
	}
	checkInvariants(t, e.pool, []sent{{id: "crash-1", account: "c", delta: 10}, {id: "crash-2", account: "c", delta: 20}})
}
