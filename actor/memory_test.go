package actor_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/onceflow/onceflow/actor"
	"github.com/onceflow/onceflow/txn"
	"github.com/onceflow/onceflow/txn/txnmem"
)

// The whole pipeline on the in-memory backend (txn/txnmem) and an
// in-process broker: no Postgres. Outcomes, idempotency, the stored events
// and their publication are the same as on Postgres (the backend meets the
// same contract, txn/backendtest).
func TestRuntimeOnTheInMemoryBackend(t *testing.T) {
	topic := "mem.commands"
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(testPartitions, topic, topic+".replies"), kfake.GroupMinSessionTimeout(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	brokers := c.ListenAddrs()[0]
	mem := txnmem.New()
	agg := newAccountAggregate(t)
	opts := []actor.Option{actor.WithBrokers(brokers), actor.WithTopic(topic), actor.WithLogger(testLogger(t)), actor.WithKafkaConfig(fastGroup),
		actor.WithBatch(100, 2*time.Millisecond)}
	rt, err := actor.NewRuntimeInMemory(agg, mem, mem, opts...)
	if err != nil {
		t.Fatal(err)
	}
	runBackground(t, rt)
	cctx, ccancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer ccancel()
	cl, err := actor.NewClient(cctx, agg.Registry, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })

	for i := range 12 {
		if _, err := send(t, cl, Deposit{Account: fmt.Sprintf("m-%d", i%3), Amount: 10}, actor.WithCommandID(fmt.Sprintf("d-%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := send(t, cl, Withdraw{Account: "m-0", Amount: 41}); !errors.Is(err, actor.ErrRejected) {
		t.Fatalf("overdraft: %v, want rejected", err)
	}
	o, err := send(t, cl, Deposit{Account: "m-0", Amount: 10}, actor.WithCommandID("d-0"))
	if err != nil || !o.Duplicate || o.FirstVersion != 1 {
		t.Fatalf("resend of d-0: %+v %v", o, err)
	}
	l, err := mem.Load(context.Background(), agg.Type, []string{"m-0", "m-1", "m-2"})
	if err != nil {
		t.Fatal(err)
	}
	for id, want := range map[string]int64{"m-0": 40, "m-1": 40, "m-2": 40} {
		state, version, err := agg.Rebuild(l[id])
		if err != nil || state.Balance != want || version != 4 {
			t.Fatalf("%s: balance %d at version %d (%v), want %d at 4", id, state.Balance, version, err, want)
		}
	}
	r, err := mem.LookupResults(context.Background(), agg.Type, []string{"d-0"})
	if err != nil || r["d-0"].Outcome != txn.OutcomeAccepted {
		t.Fatalf("result of d-0: %+v %v", r, err)
	}
	eventually(t, 30*time.Second, "the events published", func() error {
		if st := rt.Stats(); st.Published != 12 || st.PublishLag != 0 {
			return fmt.Errorf("%+v", st)
		}
		return nil
	})
}
