package testkit_test

// The package documentation's example, compiled and run (keep the two the
// same).

import (
	"context"
	"testing"

	"github.com/onceflow/onceflow/actor"
	"github.com/onceflow/onceflow/samples/inventory/stock"
	"github.com/onceflow/onceflow/testkit"
	"github.com/onceflow/onceflow/txn"
)

func TestReserve(t *testing.T) {
	env := testkit.Start(t) // Kafka + Postgres with the schema migrated; removed when t ends
	env.CreateTopic(t, "inventory.commands", 4)
	env.CreateTopic(t, "inventory.commands.replies", 4)

	agg, err := stock.NewAggregate()
	if err != nil {
		t.Fatal(err)
	}
	shared := []actor.SharedOption{actor.WithBrokers(env.Brokers()),
		actor.WithKafkaConfig(env.KafkaConfig()), actor.WithTopic("inventory.commands")}
	rt, err := actor.NewRuntime(agg, env.Pool(), shared[0], shared[1], shared[2])
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- rt.Run(ctx) }()
	t.Cleanup(func() { stop(); <-done }) // before the environment goes

	client, err := actor.NewClient(ctx, agg.Registry, shared[0], shared[1], shared[2])
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	_, err = client.Send(ctx, stock.ReceiveStock{Warehouse: "ams-1", SKU: "MUG", Qty: 10}, actor.WithCommandID("recv-1"))
	if err != nil {
		t.Fatal(err)
	}

	res := env.WaitOutcome(t, "recv-1") // the stored outcome, or the test fails after 30s
	if res.Outcome != txn.OutcomeAccepted {
		t.Fatalf("recv-1: %s %s", res.Outcome, res.Reason)
	}
}
