package testkit_test

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/onceflow/onceflow/actor"
	"github.com/onceflow/onceflow/eventsource"
	"github.com/onceflow/onceflow/samples/inventory/stock"
	"github.com/onceflow/onceflow/testkit"
	"github.com/onceflow/onceflow/txn"
)

var quiet = slog.New(slog.DiscardHandler)

// The runtime against the environment, whichever mode it is in: commands
// through Kafka, outcomes, an inline read model and a dead letter in
// Postgres.
func TestRuntimeAgainstEnv(t *testing.T) {
	env := testkit.Start(t)
	const topic = "stock.commands"
	env.CreateTopic(t, topic, 4)
	env.CreateTopic(t, topic+".replies", 4)
	env.CreateTopic(t, topic, 4) // idempotent

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// An inline read model: the highest event seq applied per partition.
	if _, err := env.Pool().Exec(ctx, `CREATE TABLE seen (topic text, partition int, seq bigint NOT NULL, PRIMARY KEY (topic, partition))`); err != nil {
		t.Fatal(err)
	}
	project := func(ctx context.Context, tx pgx.Tx, evs []eventsource.StoredEvent) error {
		for _, ev := range evs {
			if _, err := tx.Exec(ctx, `INSERT INTO seen VALUES ($1, $2, $3) ON CONFLICT (topic, partition) DO UPDATE SET seq = GREATEST(seen.seq, EXCLUDED.seq)`,
				ev.Topic, ev.Partition, ev.Seq); err != nil {
				return err
			}
		}
		return nil
	}

	agg, err := stock.NewAggregate()
	if err != nil {
		t.Fatal(err)
	}
	shared := []actor.SharedOption{actor.WithBrokers(env.Brokers()), actor.WithTopic(topic),
		actor.WithKafkaConfig(env.KafkaConfig()), actor.WithLogger(quiet)}
	rt, err := actor.NewRuntime(agg, env.Pool(), shared[0], shared[1], shared[2], shared[3],
		actor.WithInstanceID("it-1"), actor.WithInlineProjection(project), actor.WithBatch(100, 5*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	rtCtx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- rt.Run(rtCtx) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("runtime: %v", err)
		}
	})
	client, err := actor.NewClient(ctx, agg.Registry, shared[0], shared[1], shared[2], shared[3])
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()

	if _, err := client.Send(ctx, stock.ReceiveStock{Warehouse: "ams-1", SKU: "MUG", Qty: 10}, actor.WithCommandID("recv-1")); err != nil {
		t.Fatal(err)
	}
	recv := env.WaitOutcome(t, "recv-1")
	if recv.Outcome != txn.OutcomeAccepted || recv.LastVersion != 1 || recv.LastSeq < 1 {
		t.Fatalf("recv-1: %+v", recv)
	}
	_, err = client.Send(ctx, stock.Reserve{Warehouse: "ams-1", SKU: "MUG", ReservationID: "o-1", Qty: 11}, actor.WithCommandID("res-1"))
	var rej *actor.RejectedError
	if !errors.As(err, &rej) {
		t.Fatalf("over-reserve: %v, want a rejection", err)
	}
	if got := env.WaitOutcome(t, "res-1"); got.Outcome != txn.OutcomeRejected {
		t.Fatalf("res-1: %+v", got)
	}

	// Read-your-writes on the read model: wait for the seq of recv-1.
	env.WaitPosition(t, "read model seen", recv.LastSeq, func(ctx context.Context) (int64, error) {
		var seq int64
		err := env.Pool().QueryRow(ctx, `SELECT coalesce(max(seq), 0) FROM seen WHERE topic = $1 AND partition = $2`, topic, recv.Partition).Scan(&seq)
		return seq, err
	})

	// A record no client would send: no headers, not JSON. It is
	// dead-lettered with its bytes, and the partition moves on.
	kc, err := kgo.NewClient(kgo.SeedBrokers(env.Brokers()))
	if err != nil {
		t.Fatal(err)
	}
	defer kc.Close()
	if err := kc.ProduceSync(ctx, &kgo.Record{Topic: topic, Key: []byte("ams-1/MUG"), Value: []byte("not json")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	env.WaitFor(t, "one dead letter", func(ctx context.Context) (bool, error) {
		dls, err := env.Store().DeadLetters(ctx, txn.DeadLetterQuery{Topic: topic})
		return len(dls) == 1, err
	})
	if dls := env.DeadLetters(t, txn.DeadLetterQuery{Topic: topic}); len(dls) != 1 || string(dls[0].Value) != "not json" {
		t.Fatalf("dead letters: %+v", dls)
	}
	// The partition still serves after the dead letter.
	if _, err := client.Send(ctx, stock.Reserve{Warehouse: "ams-1", SKU: "MUG", ReservationID: "o-2", Qty: 4}, actor.WithCommandID("res-2")); err != nil {
		t.Fatal(err)
	}
	if got := env.WaitOutcome(t, "res-2"); got.Outcome != txn.OutcomeAccepted || got.LastVersion != 2 {
		t.Fatalf("res-2: %+v", got)
	}
}

// Tests sharing one Env stay apart with their own databases.
func TestFreshDatabase(t *testing.T) {
	env := testkit.Start(t)
	a, b := env.FreshDatabase(t), env.FreshDatabase(t)
	if a == b || a == env.DSN() {
		t.Fatalf("FreshDatabase returned %s twice or the env's own", a)
	}
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM onceflow.schema_migrations`).Scan(&n); err != nil || n == 0 {
		t.Fatalf("fresh database not migrated: %d, %v", n, err)
	}
}
