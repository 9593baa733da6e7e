package actor_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"testing/fstest"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"
	"github.com/jackc/pgx/v5"

	"github.com/onceflow/onceflow/actor"
	"github.com/onceflow/onceflow/projection"
	"github.com/onceflow/onceflow/txn"
)

// Projections (the event-consumer handler kind) against a real broker and
// Postgres: a balances read model fed from the history topic.

// balanceTables are the read model's tables, per version: balances, and
// applied (one row per applied event: a second application of a seq fails
// on its primary key).
func balanceMigrations(versions ...int) fstest.MapFS {
	fs := fstest.MapFS{}
	for i, v := range versions {
		fs[fmt.Sprintf("m/%04d_v%d.sql", i+1, v)] = &fstest.MapFile{Data: []byte(fmt.Sprintf(`
			CREATE TABLE IF NOT EXISTS balances_v%[1]d (account text PRIMARY KEY, balance bigint NOT NULL, events bigint NOT NULL);
			CREATE TABLE IF NOT EXISTS applied_v%[1]d (topic text, partition int, seq bigint, PRIMARY KEY (topic, partition, seq));`, v))}
	}
	return fs
}

type balanceProjection struct {
	applied  atomic.Int64
	failOn   atomic.Pointer[string] // an account whose events fail to apply
	dropped  atomic.Int64
	versions []int
}

func (bp *balanceProjection) def(e *env, version int) actor.Projection {
	return actor.Projection{
		Name: "balances", Version: version, Source: e.topic, Registry: e.agg.Registry,
		Apply: func(ctx context.Context, tx pgx.Tx, evs []actor.Event) error {
			for _, ev := range evs {
				if f := bp.failOn.Load(); f != nil && *f == ev.AggregateID {
					return fmt.Errorf("cannot apply an event of %s", ev.AggregateID)
				}
				var delta int64
				switch p := ev.Payload.(type) {
				case Deposited:
					delta = p.Amount
				case Withdrawn:
					delta = -p.Amount
				default:
					return fmt.Errorf("unexpected payload %T", ev.Payload)
				}
				if _, err := tx.Exec(ctx, fmt.Sprintf(`INSERT INTO applied_v%d VALUES ($1, $2, $3)`, version), ev.Topic, ev.Partition, ev.Seq); err != nil {
					return err
				}
				if _, err := tx.Exec(ctx, fmt.Sprintf(`INSERT INTO balances_v%d VALUES ($1, $2, 1)
					ON CONFLICT (account) DO UPDATE SET balance = balances_v%d.balance + $2, events = balances_v%d.events + 1`, version, version, version), ev.AggregateID, delta); err != nil {
					return err
				}
			}
			bp.applied.Add(int64(len(evs)))
			return nil
		},
		Drop: func(ctx context.Context, tx pgx.Tx, v int) error {
			bp.dropped.Add(1)
			_, err := tx.Exec(ctx, fmt.Sprintf(`DROP TABLE balances_v%d, applied_v%d`, v, v))
			return err
		},
	}
}

func (e *env) startProjection(id string, p actor.Projection, opts ...actor.Option) *running {
	e.t.Helper()
	base := []actor.Option{
		actor.WithBrokers(e.brokers), actor.WithInstanceID(id), actor.WithLogger(testLogger(e.t)),
		actor.WithKafkaConfig(e.kafka), actor.WithKafkaConfig(fastGroup), actor.WithBatch(100, 5*time.Millisecond),
		actor.WithMigrations("test-balances", balanceMigrations(1, 2), "m"),
	}
	rt, err := actor.NewProjection(p, e.pool, append(base, opts...)...)
	if err != nil {
		e.t.Fatalf("NewProjection: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{rt: rt, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- rt.Run(ctx) }()
	e.t.Cleanup(func() { r.stop(e.t) })
	return r
}

// checkReadModel compares version v's read model with the fold of the
// stored events: every event applied exactly once, balances equal.
func (e *env) checkReadModel(t *testing.T, v int) {
	t.Helper()
	ctx := context.Background()
	var missing, extra, wrong int64
	err := e.pool.QueryRow(ctx, fmt.Sprintf(`SELECT
		(SELECT count(*) FROM onceflow.events ev WHERE ev.topic = $1 AND NOT EXISTS (SELECT 1 FROM applied_v%[1]d a WHERE a.topic = ev.topic AND a.partition = ev.partition AND a.seq = ev.seq)),
		(SELECT count(*) FROM applied_v%[1]d a WHERE NOT EXISTS (SELECT 1 FROM onceflow.events ev WHERE a.topic = ev.topic AND a.partition = ev.partition AND a.seq = ev.seq)),
		(SELECT count(*) FROM (
			SELECT aggregate_id, sum(CASE type WHEN 'test.Deposited' THEN (convert_from(data, 'UTF8')::jsonb->>'amount')::bigint ELSE -(convert_from(data, 'UTF8')::jsonb->>'amount')::bigint END) AS b, count(*) AS n
			FROM onceflow.events WHERE topic = $1 GROUP BY aggregate_id) f
		 FULL JOIN balances_v%[1]d r ON r.account = f.aggregate_id
		 WHERE r.balance IS DISTINCT FROM f.b OR r.events IS DISTINCT FROM f.n)`, v), e.topic).Scan(&missing, &extra, &wrong)
	if err != nil {
		t.Fatal(err)
	}
	if missing != 0 || extra != 0 || wrong != 0 {
		t.Fatalf("read model v%d: %d stored events not applied, %d applied rows without an event, %d balances differ from the fold", v, missing, extra, wrong)
	}
}

// waitCaughtUp waits until version v has applied every stored event.
func (e *env) waitCaughtUp(t *testing.T, v int) {
	t.Helper()
	store := projection.NewStore(e.pool)
	eventually(t, 90*time.Second, fmt.Sprintf("balances v%d to catch up", v), func() error {
		var events, applied int64
		if err := e.pool.QueryRow(context.Background(), `SELECT count(*) FROM onceflow.events WHERE topic = $1`, e.topic).Scan(&events); err != nil {
			return err
		}
		st, err := store.Get(context.Background(), "balances", v)
		if err != nil {
			return err
		}
		for _, p := range st.Partitions {
			applied += p.Position
		}
		if applied != events || !st.CaughtUp() {
			return fmt.Errorf("applied %d of %d events (lag %d)", applied, events, st.Lag)
		}
		return nil
	})
}

// A projection fed during a steady command stream, with a second instance
// joining (rebalance) and the first one crashing after commits: its read
// model equals the fold of the stored events, every event applied once.
func TestProjectionIsExactlyOnceThroughRebalanceAndCrash(t *testing.T) {
	e := newEnv(t)
	src := e.start("src")
	owns(t, src, testPartitions)
	bp := &balanceProjection{}
	var crashes atomic.Int64
	p1 := e.startProjection("p1", bp.def(e, 1), actor.WithFaults(actor.Faults{AfterCommit: func(_ context.Context, b actor.BatchInfo) error {
		if crashes.Load() < 4 && b.FirstOffset%40 == 3 {
			crashes.Add(1)
			return errors.New("simulated crash after the projection's commit")
		}
		return nil
	}}))
	c := e.client(actor.WithResults(txn.NewStore(e.pool), 2*time.Second))
	accounts := []string{"acc-0", "acc-1", "acc-2", "acc-3", "acc-4", "acc-5", "acc-6", "acc-7"}
	l := startLoad(t, c, accounts, 6)
	l.waitFor(t, 150)
	p2 := e.startProjection("p2", bp.def(e, 1))
	eventually(t, 60*time.Second, "partitions split between p1 and p2", func() error {
		if p2.rt.Stats().OwnedPartitions == 0 {
			return errNotYet
		}
		return nil
	})
	l.waitFor(t, 150)
	p1.stop(t)
	owns(t, p2, testPartitions)
	l.waitFor(t, 150)
	checkInvariants(t, e.pool, l.finish())
	e.waitCaughtUp(t, 1)
	e.checkReadModel(t, 1)
	if s1, s2 := p1.rt.Stats(), p2.rt.Stats(); s1.Applied == 0 || s2.Applied == 0 || s1.DeadLetters+s2.DeadLetters != 0 {
		t.Fatalf("both instances should have applied events, with no dead letter: p1 %+v, p2 %+v", s1, s2)
	}
	t.Logf("crashes after commit: %d; applied p1 %d p2 %d (Apply calls include rolled-back retries: %d)", crashes.Load(), p1.rt.Stats().Applied, p2.rt.Stats().Applied, bp.applied.Load())
}

// Events deleted from the start of the history topic (retention) are read
// from the Postgres event store, and the switch back to the topic is exact.
func TestProjectionCatchesUpFromPostgresWhenTheTopicLostItsStart(t *testing.T) {
	e := newEnv(t)
	src := e.start("src")
	owns(t, src, testPartitions)
	c := e.client()
	ctx := context.Background()
	for i := range 40 {
		if _, err := c.Send(ctx, Deposit{Account: fmt.Sprintf("acc-%d", i%8), Amount: int64(i + 1)}, actor.WithCommandID(fmt.Sprintf("dep-%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	e.readTopic(t, e.topic+".events", func(r []topicRecord) error {
		if len(r) < 40 {
			return errNotYet
		}
		return nil
	})
	// Delete the first half of two history partitions, and all of the two
	// others.
	ac, err := kafka.NewAdminClient(&kafka.ConfigMap{"bootstrap.servers": e.brokers})
	if err != nil {
		t.Fatal(err)
	}
	defer ac.Close()
	history := e.topic + ".events"
	var del []kafka.TopicPartition
	var deleted int64
	for p := range int32(testPartitions) {
		var n int64
		if err := e.pool.QueryRow(ctx, `SELECT count(*) FROM onceflow.events WHERE topic = $1 AND partition = $2`, e.topic, p).Scan(&n); err != nil {
			t.Fatal(err)
		}
		// History records of a partition: one per event, plus a
		// transaction marker after each Kafka transaction; deleting
		// below offset n/2 deletes at least n/4 events.
		off := kafka.Offset(n / 2)
		if p < 2 {
			off = kafka.OffsetEnd // every record: no record arrives to reveal the gap
		}
		del = append(del, kafka.TopicPartition{Topic: &history, Partition: p, Offset: off})
		deleted += n / 2
	}
	res, err := ac.DeleteRecords(ctx, del)
	if err != nil {
		t.Fatalf("DeleteRecords: %v", err)
	}
	for _, r := range res.DeleteRecordsResults {
		if r.TopicPartition.Error != nil {
			t.Fatalf("DeleteRecords %d: %v", r.TopicPartition.Partition, r.TopicPartition.Error)
		}
	}
	bp := &balanceProjection{}
	p1 := e.startProjection("p1", bp.def(e, 1))
	e.waitCaughtUp(t, 1)
	e.checkReadModel(t, 1)
	if s := p1.rt.Stats(); s.GapFilled == 0 {
		t.Fatalf("no event was read from Postgres after %d history records were deleted: %+v", deleted, s)
	}
	t.Logf("events read from Postgres: %d; applied %d", p1.rt.Stats().GapFilled, p1.rt.Stats().Applied)
	// Live after the switch back to the topic.
	if _, err := c.Send(ctx, Deposit{Account: "acc-1", Amount: 1000}, actor.WithCommandID("dep-live")); err != nil {
		t.Fatal(err)
	}
	e.waitCaughtUp(t, 1)
	e.checkReadModel(t, 1)
}

// Read-your-writes: WaitFor returns once the projection applied the
// command's events; a poison event is dead-lettered with its error and the
// position moves on; a paused version halts (also after a restart) and
// resumes; WaitFor says when the projection is halted.
func TestProjectionReadYourWritesPoisonAndPause(t *testing.T) {
	e := newEnv(t)
	src := e.start("src")
	owns(t, src, testPartitions)
	bp := &balanceProjection{}
	p1 := e.startProjection("p1", bp.def(e, 1))
	owns(t, p1, testPartitions) // registered (Run registers the version before it joins the group)
	c := e.client()
	ctx := context.Background()
	store := projection.NewStore(e.pool)
	w := projection.NewWaiter(store)
	defer w.Close()

	o, err := c.Send(ctx, Deposit{Account: "acc-1", Amount: 10}, actor.WithCommandID("d1"))
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	err = w.WaitFor(wctx, "balances", o.Position())
	cancel()
	if err != nil {
		t.Fatalf("WaitFor: %v", err)
	}
	var bal int64
	if err := e.pool.QueryRow(ctx, `SELECT balance FROM balances_v1 WHERE account = 'acc-1'`).Scan(&bal); err != nil || bal != 10 {
		t.Fatalf("read after WaitFor: balance %d %v, want 10", bal, err)
	}

	// A poison event: dead-lettered with the event and the error.
	bad := "acc-poison"
	bp.failOn.Store(&bad)
	po, err := c.Send(ctx, Deposit{Account: bad, Amount: 5}, actor.WithCommandID("d-poison"))
	if err != nil {
		t.Fatal(err)
	}
	o2, err := c.Send(ctx, Deposit{Account: "acc-2", Amount: 7}, actor.WithCommandID("d2"))
	if err != nil {
		t.Fatal(err)
	}
	for _, pos := range []projection.Position{po.Position(), o2.Position()} {
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		if err := w.WaitFor(wctx, "balances", pos); err != nil {
			t.Fatalf("WaitFor after a poison event: %v", err)
		}
		cancel()
	}
	dls, err := txn.NewStore(e.pool).DeadLetters(ctx, txn.DeadLetterQuery{Group: p1.rt.Group()})
	if err != nil || len(dls) != 1 || dls[0].CommandID != "d-poison" || !strings.Contains(dls[0].Error, "cannot apply an event of acc-poison") || string(dls[0].Key) != bad {
		t.Fatalf("dead letters %+v %v, want the poison event with its error", dls, err)
	}
	bp.failOn.Store(nil)

	// Pause: the next batch halts, also after a restart; WaitFor says so.
	if err := store.Pause(ctx, "balances", 1, "test pause"); err != nil {
		t.Fatal(err)
	}
	o3, err := c.Send(ctx, Deposit{Account: "acc-3", Amount: 3}, actor.WithCommandID("d3"))
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel = context.WithTimeout(ctx, 30*time.Second)
	err = w.WaitFor(wctx, "balances", o3.Position())
	cancel()
	if !errors.Is(err, projection.ErrPaused) && !errors.Is(err, projection.ErrHalted) {
		t.Fatalf("WaitFor on a paused projection: %v, want ErrPaused or ErrHalted", err)
	}
	t.Logf("WaitFor on a paused projection: %v", err)
	p1.stop(t)
	p2 := e.startProjection("p2", bp.def(e, 1))
	owns(t, p2, testPartitions)
	eventually(t, 30*time.Second, "the paused projection to halt after a restart", func() error {
		if p2.rt.Stats().HaltedNow == 0 {
			return errNotYet
		}
		return nil
	})
	if err := e.pool.QueryRow(ctx, `SELECT count(*) FROM balances_v1 WHERE account = 'acc-3'`).Scan(&bal); err != nil || bal != 0 {
		t.Fatalf("a paused projection applied an event: %d rows %v", bal, err)
	}
	if err := store.Resume(ctx, "balances", 1); err != nil {
		t.Fatal(err)
	}
	wctx, cancel = context.WithTimeout(ctx, 30*time.Second)
	err = w.WaitFor(wctx, "balances", o3.Position())
	cancel()
	if err != nil {
		t.Fatalf("WaitFor after resume: %v", err)
	}
	// A WaitFor that cannot be satisfied in time says how far it got.
	wctx, cancel = context.WithTimeout(ctx, 300*time.Millisecond)
	err = w.WaitFor(wctx, "balances", projection.Position{Partition: o3.Partition, Seq: o3.LastSeq + 1000})
	cancel()
	var we *projection.WaitError
	if !errors.As(err, &we) || !errors.Is(err, context.DeadlineExceeded) || we.Applied < o3.LastSeq {
		t.Fatalf("WaitFor timeout: %v", err)
	}
	e.waitCaughtUp(t, 1)
	var n int64
	if err := e.pool.QueryRow(ctx, `SELECT count(*) FROM applied_v1`).Scan(&n); err != nil || n != 3 {
		t.Fatalf("applied rows %d %v, want 3 (the poison event is not applied)", n, err)
	}
}

// Blue/green: version 2 builds into its own tables while version 1 serves;
// once it caught up, readers switch to it in one transaction, version 1's
// tables are dropped, and version 1's runtime stops writing.
func TestProjectionBlueGreenRebuild(t *testing.T) {
	e := newEnv(t)
	src := e.start("src")
	owns(t, src, testPartitions)
	c := e.client(actor.WithResults(txn.NewStore(e.pool), 2*time.Second))
	bp := &balanceProjection{}
	v1 := e.startProjection("v1", bp.def(e, 1))
	owns(t, v1, testPartitions)
	l := startLoad(t, c, []string{"acc-0", "acc-1", "acc-2", "acc-3"}, 4)
	l.waitFor(t, 100)
	store := projection.NewStore(e.pool)
	if a, err := store.Active(context.Background(), "balances"); err != nil || a.Version != 1 {
		t.Fatalf("active %+v %v, want v1", a, err)
	}
	// Readers through the switch: each reads the active version and its
	// table in one transaction (projection.ActiveTx); the events they see
	// never go down and the version never goes back: no reader sees an
	// empty or half-built view.
	readerDone, readerErr := make(chan struct{}), make(chan error, 1)
	var reads, switchedReads atomic.Int64
	go func() {
		defer close(readerErr)
		var lastV int
		var lastN int64
		for {
			select {
			case <-readerDone:
				return
			default:
			}
			var v int
			var n int64
			err := pgx.BeginFunc(context.Background(), e.pool, func(tx pgx.Tx) error {
				a, err := projection.ActiveTx(context.Background(), tx, "onceflow", "balances")
				if err != nil {
					return err
				}
				v = a.Version
				return tx.QueryRow(context.Background(), fmt.Sprintf(`SELECT coalesce(sum(events), 0) FROM balances_v%d`, v)).Scan(&n)
			})
			switch {
			case err != nil:
				readerErr <- fmt.Errorf("reader: %w", err)
				return
			case v < lastV || n < lastN:
				readerErr <- fmt.Errorf("reader saw v%d with %d events after v%d with %d events", v, n, lastV, lastN)
				return
			}
			if v == 2 {
				switchedReads.Add(1)
			}
			reads.Add(1)
			lastV, lastN = v, n
			time.Sleep(2 * time.Millisecond)
		}
	}()
	bp2 := &balanceProjection{}
	v2 := e.startProjection("v2", bp2.def(e, 2))
	l.waitFor(t, 100)
	eventually(t, 90*time.Second, "v2 to become active", func() error {
		a, err := store.Active(context.Background(), "balances")
		if err != nil || a.Version != 2 {
			return fmt.Errorf("active %d %v", a.Version, err)
		}
		return nil
	})
	var rerr error
	eventually(t, 30*time.Second, "a reader to read v2", func() error {
		select {
		case err, ok := <-readerErr:
			if ok {
				rerr = err
			}
			return nil
		default:
		}
		if switchedReads.Load() == 0 {
			return errNotYet
		}
		return nil
	})
	close(readerDone)
	if rerr == nil {
		rerr = <-readerErr
	}
	if rerr != nil {
		t.Fatal(rerr)
	}
	t.Logf("reads through the switch: %d (%d of v2)", reads.Load(), switchedReads.Load())
	if bp2.dropped.Load() != 1 {
		t.Fatalf("v1's tables dropped %d times, want 1", bp2.dropped.Load())
	}
	checkInvariants(t, e.pool, l.finish())
	e.waitCaughtUp(t, 2)
	e.checkReadModel(t, 2)
	if _, err := c.Send(context.Background(), Deposit{Account: "acc-9", Amount: 1}, actor.WithCommandID("after-switch")); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "v1 to halt as retired", func() error {
		if v1.rt.Stats().HaltedNow == 0 {
			return errNotYet
		}
		return nil
	})
	e.waitCaughtUp(t, 2)
	e.checkReadModel(t, 2)
	if v2.rt.Stats().Applied == 0 {
		t.Fatal("v2 applied nothing")
	}
	v1.stop(t)
}
