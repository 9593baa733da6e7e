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

	"github.com/jackc/pgx/v5"

	"github.com/onceflow/onceflow/actor"
	"github.com/onceflow/onceflow/txn"
)

// A process manager against a real broker and Postgres: for every deposit
// to an account it deposits the same amount to the account's mirror (an
// aggregate on another partition), and at a deadline it sends the same
// command again (a retry, which its deterministic id makes a duplicate).
// Its process state is one row per source account, locked FOR UPDATE.

var mirrorMigrations = fstest.MapFS{"m/0001_mirror.sql": &fstest.MapFile{Data: []byte(`
	CREATE TABLE mirror_state (account text PRIMARY KEY, deposits bigint NOT NULL, amount bigint NOT NULL);
	CREATE TABLE mirror_fired (id text PRIMARY KEY, fired_at timestamptz NOT NULL DEFAULT now());`)}}

func mirrorProcess(e *env, deadlines *atomic.Int64) actor.ProcessManager {
	return actor.ProcessManager{
		Name: "mirror", Source: e.topic, Events: e.agg.Registry, Commands: e.agg.Registry,
		Handle: func(ctx context.Context, tx pgx.Tx, ev actor.Event, fx *actor.Effects) error {
			d, ok := ev.Payload.(Deposited)
			if !ok || strings.HasSuffix(ev.AggregateID, "-mirror") {
				return nil
			}
			var n int64
			if err := tx.QueryRow(ctx, `SELECT deposits FROM mirror_state WHERE account = $1 FOR UPDATE`, ev.AggregateID).Scan(&n); err != nil && !errors.Is(err, pgx.ErrNoRows) {
				return err
			}
			if _, err := tx.Exec(ctx, `INSERT INTO mirror_state VALUES ($1, 1, $2)
				ON CONFLICT (account) DO UPDATE SET deposits = mirror_state.deposits + 1, amount = mirror_state.amount + $2`, ev.AggregateID, d.Amount); err != nil {
				return err
			}
			step := actor.CommandID(ev.CommandID, "mirror")
			if err := fx.Send(e.topic, Deposit{Account: ev.AggregateID + "-mirror", Amount: d.Amount}, step); err != nil {
				return err
			}
			deadlines.Add(1)
			return fx.Schedule("resend:"+step, time.Now().Add(200*time.Millisecond), []byte(fmt.Sprintf("%s|%d", ev.AggregateID, d.Amount)))
		},
		OnDeadline: func(ctx context.Context, tx pgx.Tx, d actor.Deadline, fx *actor.Effects) error {
			if _, err := tx.Exec(ctx, `INSERT INTO mirror_fired (id) VALUES ($1)`, d.ID); err != nil {
				return fmt.Errorf("deadline %s fired twice: %w", d.ID, err)
			}
			var acct string
			var amount int64
			if _, err := fmt.Sscanf(strings.Replace(string(d.Payload), "|", " ", 1), "%s %d", &acct, &amount); err != nil {
				return err
			}
			// A retry of the step: the same command id, so at most one effect.
			return fx.Send(e.topic, Deposit{Account: acct + "-mirror", Amount: amount}, strings.TrimPrefix(d.ID, "resend:"))
		},
	}
}

func (e *env) startProcess(id string, pm actor.ProcessManager, opts ...actor.Option) *running {
	e.t.Helper()
	base := []actor.Option{
		actor.WithBrokers(e.brokers), actor.WithInstanceID(id), actor.WithLogger(testLogger(e.t)),
		actor.WithKafkaConfig(e.kafka), actor.WithKafkaConfig(fastGroup), actor.WithBatch(100, 5*time.Millisecond),
		actor.WithMigrations("test-mirror", mirrorMigrations, "m"),
	}
	rt, err := actor.NewProcessManager(pm, e.pool, append(base, opts...)...)
	if err != nil {
		e.t.Fatalf("NewProcessManager: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{rt: rt, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- rt.Run(ctx) }()
	e.t.Cleanup(func() { r.stop(e.t) })
	return r
}

// Every deposit is mirrored exactly once and every deadline fires exactly
// once, through a rebalance of the process manager, crashes after its
// commits and a stopped instance; the resends at the deadlines are
// duplicates.
func TestProcessManagerSendsEachCommandOnceAndFiresEachDeadlineOnce(t *testing.T) {
	e := newEnv(t)
	src := e.start("src")
	owns(t, src, testPartitions)
	var scheduled atomic.Int64
	var crashes atomic.Int64
	pm1 := e.startProcess("pm1", mirrorProcess(e, &scheduled), actor.WithFaults(actor.Faults{AfterCommit: func(_ context.Context, b actor.BatchInfo) error {
		if b.Records > 0 && crashes.Load() < 3 && b.FirstOffset%30 == 5 {
			crashes.Add(1)
			return errors.New("simulated crash after the process manager's commit, before its outbox is sent")
		}
		return nil
	}}))
	c := e.client(actor.WithResults(txn.NewStore(e.pool), 2*time.Second))
	ctx := context.Background()
	var sent int
	send := func(n int) {
		for range n {
			acct := fmt.Sprintf("acc-%d", sent%6)
			if _, err := c.Send(ctx, Deposit{Account: acct, Amount: int64(sent%7 + 1)}, actor.WithCommandID(fmt.Sprintf("dep-%d", sent))); err != nil {
				t.Fatal(err)
			}
			sent++
		}
	}
	send(60)
	pm2 := e.startProcess("pm2", mirrorProcess(e, &scheduled))
	eventually(t, 60*time.Second, "partitions split between pm1 and pm2", func() error {
		if pm2.rt.Stats().OwnedPartitions == 0 {
			return errNotYet
		}
		return nil
	})
	send(60)
	pm1.stop(t)
	owns(t, pm2, testPartitions)
	send(60)

	eventually(t, 90*time.Second, "every deposit mirrored and every deadline fired", func() error {
		var src, mirror, states, fired, pending int64
		err := e.pool.QueryRow(ctx, `SELECT
			(SELECT coalesce(sum((convert_from(data, 'UTF8')::jsonb->>'amount')::bigint), 0) FROM onceflow.events WHERE type = 'test.Deposited' AND aggregate_id NOT LIKE '%-mirror'),
			(SELECT coalesce(sum((convert_from(data, 'UTF8')::jsonb->>'amount')::bigint), 0) FROM onceflow.events WHERE type = 'test.Deposited' AND aggregate_id LIKE '%-mirror'),
			(SELECT coalesce(sum(deposits), 0) FROM mirror_state),
			(SELECT count(*) FROM mirror_fired),
			(SELECT count(*) FROM onceflow.deadlines)`).Scan(&src, &mirror, &states, &fired, &pending)
		if err != nil {
			return err
		}
		if states != int64(sent) || mirror != src || fired != int64(sent) || pending != 0 {
			return fmt.Errorf("source amount %d, mirrored %d; %d of %d deposits in the process state; %d deadlines fired, %d pending", src, mirror, states, sent, fired, pending)
		}
		return nil
	})
	var mirrorEvents, dupResults int64
	if err := e.pool.QueryRow(ctx, `SELECT
		(SELECT count(*) FROM onceflow.events WHERE aggregate_id LIKE '%-mirror'),
		(SELECT count(*) FROM onceflow.command_results WHERE command_id LIKE '%/mirror')`).Scan(&mirrorEvents, &dupResults); err != nil {
		t.Fatal(err)
	}
	if mirrorEvents != int64(sent) || dupResults != int64(sent) {
		t.Fatalf("%d mirror events and %d mirror command results for %d deposits: want one each", mirrorEvents, dupResults, sent)
	}
	s1, s2 := pm1.rt.Stats(), pm2.rt.Stats()
	if s1.DeadlineErrors+s2.DeadlineErrors != 0 || s1.DeadLetters+s2.DeadLetters != 0 {
		t.Fatalf("deadline errors or dead letters: pm1 %+v pm2 %+v", s1, s2)
	}
	if src.rt.Stats().Duplicates == 0 {
		t.Fatal("the resends at the deadlines should have been duplicates at the target")
	}
	t.Logf("%d deposits; crashes after commit %d; deadlines fired pm1 %d pm2 %d; outbox sent pm1 %d pm2 %d; duplicates at the target %d",
		sent, crashes.Load(), s1.DeadlinesFired, s2.DeadlinesFired, s1.PublishedOutbox, s2.PublishedOutbox, src.rt.Stats().Duplicates)
}
