package actor_test

import (
	"context"
	"errors"
	"fmt"
	"log"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/onceflow/onceflow/actor"
	"github.com/onceflow/onceflow/eventsource"
)

// Credit is a command: its AggregateID is the Kafka key.
type Credit struct {
	Account string
	Amount  int64
}

func (c Credit) AggregateID() string { return c.Account }

// Credited is an event.
type Credited struct{ Amount int64 }

// The README's taste of the API: a decider served by a runtime, and a client
// that sends a command and gets its outcome. (It needs Kafka and Postgres,
// so it is compiled but not run.)
func Example() {
	ctx := context.Background()
	reg := eventsource.NewRegistry()
	if err := errors.Join(
		eventsource.Register[Credit](reg, "bank.Credit"),
		eventsource.Register[Credited](reg, "bank.Credited"),
	); err != nil {
		log.Fatal(err)
	}
	account := &eventsource.Aggregate[int64, Credit, Credited]{
		Type: "bank.account", Registry: reg,
		Decider: eventsource.Decider[int64, Credit, Credited]{
			Initial: func() int64 { return 0 },
			Decide: func(balance int64, c Credit) ([]Credited, error) {
				if c.Amount <= 0 {
					return nil, fmt.Errorf("amount must be positive, got %d", c.Amount)
				}
				return []Credited{{Amount: c.Amount}}, nil
			},
			Evolve: func(balance int64, e Credited) int64 { return balance + e.Amount },
		},
	}
	pool, err := pgxpool.New(ctx, "postgres://localhost/bank")
	if err != nil {
		log.Fatal(err)
	}
	kafka := []actor.SharedOption{actor.WithBrokers("localhost:9092"), actor.WithTopic("bank.commands"), actor.WithCreateTopics(12)}
	rt, err := actor.NewRuntime(account, pool, kafka[0], kafka[1], kafka[2])
	if err != nil {
		log.Fatal(err)
	}
	go rt.Run(ctx) // migrates, joins the group, serves until ctx ends

	client, err := actor.NewClient(ctx, reg, kafka[0], kafka[1], kafka[2])
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()
	out, err := client.Send(ctx, Credit{Account: "alice", Amount: 10}, actor.WithCommandID("payment-42"))
	switch {
	case errors.Is(err, actor.ErrRejected):
		fmt.Println("rejected:", err)
	case err != nil:
		log.Fatal(err) // outcome unknown: resend with the same command id
	default:
		fmt.Println("accepted at version", out.LastVersion)
	}
}
