package actor_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"testing/fstest"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/onceflow/onceflow/actor"
	"github.com/onceflow/onceflow/eventsource"
)

// An inline projection writes its read model in the batch's transaction:
// it sees exactly the events the batch stores, once.
func TestInlineProjection(t *testing.T) {
	e := newEnv(t)
	// The read model's table comes with the service's own migrations.
	views := fstest.MapFS{"0001_balances.sql": {Data: []byte(`CREATE TABLE balances (account text PRIMARY KEY, balance bigint NOT NULL, events bigint NOT NULL)`)}}
	project := func(ctx context.Context, tx pgx.Tx, events []eventsource.StoredEvent) error {
		for _, ev := range events {
			var body struct{ Amount int64 }
			if err := json.Unmarshal(ev.Data, &body); err != nil {
				return err
			}
			if ev.Type == "test.Withdrawn" {
				body.Amount = -body.Amount
			}
			if _, err := tx.Exec(ctx, `INSERT INTO balances VALUES ($1, $2, 1)
				ON CONFLICT (account) DO UPDATE SET balance = balances.balance + $2, events = balances.events + 1`,
				ev.AggregateID, body.Amount); err != nil {
				return err
			}
		}
		return nil
	}
	a := e.start("a", actor.WithInlineProjection(project), actor.WithMigrations("test.views", views, "."))
	owns(t, a, testPartitions)
	c := e.client()
	for i, cmd := range []interface{ AggregateID() string }{Deposit{"r", 10}, Deposit{"r", 5}, Withdraw{"r", 3}, Withdraw{"r", 100}} {
		_, err := send(t, c, cmd)
		if (err != nil) != (i == 3) {
			t.Fatalf("command %d: %v", i, err)
		}
	}
	var balance, events int64
	if err := e.pool.QueryRow(context.Background(), `SELECT balance, events FROM balances WHERE account = 'r'`).Scan(&balance, &events); err != nil {
		t.Fatal(err)
	}
	if balance != 12 || events != 3 {
		t.Fatalf("read model: balance %d from %d events, want 12 from 3", balance, events)
	}
}

// A failing inline projection rolls its batch back: nothing of the batch is
// stored and the partition halts (the records stay in Kafka).
func TestInlineProjectionFailureRollsBack(t *testing.T) {
	e := newEnv(t)
	a := e.start("a", actor.WithInlineProjection(func(context.Context, pgx.Tx, []eventsource.StoredEvent) error {
		return errors.New("read model unavailable")
	}))
	owns(t, a, testPartitions)
	c := e.client()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if _, err := c.Send(ctx, Deposit{"f", 1}); !errors.Is(err, actor.ErrOutcomeUnknown) {
		t.Fatalf("want outcome unknown, got %v", err)
	}
	eventually(t, 30*time.Second, "the partition to halt", func() error {
		if a.rt.Stats().Halted != 1 {
			return errNotYet
		}
		return nil
	})
	if n := countRows(t, e.pool, `SELECT count(*) FROM onceflow.events`) + countRows(t, e.pool, `SELECT count(*) FROM onceflow.command_results`); n != 0 {
		t.Fatalf("%d rows stored by a rolled-back batch", n)
	}
}
