package actor_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/onceflow/onceflow/actor"
	"github.com/onceflow/onceflow/txn"
)

func send(t *testing.T, c *actor.Client, cmd interface{ AggregateID() string }, opts ...actor.SendOption) (actor.Outcome, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	return c.Send(ctx, cmd, opts...)
}

// produceRaw writes a record straight to the command topic, bypassing the
// client (to inject malformed input), partitioned by key like the Client.
func (e *env) produceRaw(key, value []byte, headers map[string]string) kafka.TopicPartition {
	e.t.Helper()
	return e.produce(kafka.PartitionAny, key, value, headers)
}

// produce writes a raw record to a partition (or kafka.PartitionAny) of the
// command topic and returns where it landed.
func (e *env) produce(partition int32, key, value []byte, headers map[string]string) kafka.TopicPartition {
	e.t.Helper()
	cm := kafka.ConfigMap{"bootstrap.servers": e.brokers, "enable.metrics.push": false, "partitioner": "murmur2_random", "message.max.bytes": 2_000_000}
	for k, v := range e.kafka {
		cm[k] = v
	}
	p, err := kafka.NewProducer(&cm)
	if err != nil {
		e.t.Fatal(err)
	}
	defer p.Close()
	var hs []kafka.Header
	for k, v := range headers {
		hs = append(hs, kafka.Header{Key: k, Value: []byte(v)})
	}
	dr := make(chan kafka.Event, 1)
	if err := p.Produce(&kafka.Message{TopicPartition: kafka.TopicPartition{Topic: &e.topic, Partition: partition}, Key: key, Value: value, Headers: hs}, dr); err != nil {
		e.t.Fatal(err)
	}
	m := (<-dr).(*kafka.Message)
	if m.TopicPartition.Error != nil {
		e.t.Fatal(m.TopicPartition.Error)
	}
	return m.TopicPartition
}

func TestOutcomes(t *testing.T) {
	e := newEnv(t)
	e.start("a")
	c := e.client(actor.WithResults(txn.NewStore(e.pool), 2*time.Second))

	o, err := send(t, c, Deposit{Account: "acc-1", Amount: 100})
	if err != nil || o.Status != txn.OutcomeAccepted || o.FirstVersion != 1 || o.LastVersion != 1 || o.FirstSeq < 1 {
		t.Fatalf("deposit: outcome %+v, err %v", o, err)
	}

	// A rejection: stored with its reason, nothing written.
	o, err = send(t, c, Withdraw{Account: "acc-1", Amount: 500})
	var rej *actor.RejectedError
	if !errors.As(err, &rej) || !errors.Is(err, actor.ErrRejected) || o.Status != txn.OutcomeRejected {
		t.Fatalf("withdraw too much: outcome %+v, err %v; want rejection", o, err)
	}
	if !strings.Contains(rej.Reason, "insufficient funds: balance 100, requested 500") {
		t.Fatalf("rejection reason %q", rej.Reason)
	}

	// A panicking handler: dead-lettered with the raw bytes, offset moves on.
	o, err = send(t, c, Explode{Account: "acc-1"})
	if !errors.Is(err, actor.ErrDeadLettered) || o.Status != txn.OutcomeDeadLettered || !strings.Contains(o.Reason, "handler panicked: boom") {
		t.Fatalf("explode: outcome %+v, err %v; want dead letter", o, err)
	}

	// Malformed records straight to the topic.
	e.produceRaw([]byte("acc-2"), []byte("\xff\x00garbage"), map[string]string{actor.HeaderCommandID: "raw-garbage", actor.HeaderCommandType: "test.Deposit"})
	e.produceRaw([]byte("acc-2"), []byte(`{"account":"acc-2","amount":1}`), map[string]string{actor.HeaderCommandID: "raw-unknown", actor.HeaderCommandType: "test.Nope"})
	e.produceRaw([]byte("acc-2"), []byte(`{}`), nil) // no headers at all
	e.produceRaw([]byte("other"), []byte(`{"account":"acc-2","amount":1}`), map[string]string{actor.HeaderCommandID: "raw-wrongkey", actor.HeaderCommandType: "test.Deposit"})

	// The partitions keep moving: later commands are accepted.
	if o, err := send(t, c, Deposit{Account: "acc-2", Amount: 7}); err != nil || o.Status != txn.OutcomeAccepted {
		t.Fatalf("deposit after garbage: %+v %v", o, err)
	}
	store := txn.NewStore(e.pool)
	eventually(t, 30*time.Second, "4 raw dead letters", func() error {
		dls, err := store.DeadLetters(context.Background(), txn.DeadLetterQuery{})
		if err != nil {
			return err
		}
		if len(dls) != 5 { // 4 raw + the panic
			return fmt.Errorf("%d dead letters", len(dls))
		}
		return nil
	})
	dls, _ := store.DeadLetters(context.Background(), txn.DeadLetterQuery{})
	reasons := map[string]string{}
	for _, d := range dls {
		reasons[d.CommandID] = d.Error
		if d.CommandID == "raw-garbage" && string(d.Value) != "\xff\x00garbage" {
			t.Errorf("dead letter lost the raw bytes: %q", d.Value)
		}
	}
	for id, want := range map[string]string{
		"raw-garbage":  "decode command",
		"raw-unknown":  `unknown type name "test.Nope"`,
		"":             "missing header onceflow-command-id",
		"raw-wrongkey": `record key "other" does not match the command's aggregate id "acc-2"`,
	} {
		if !strings.Contains(reasons[id], want) {
			t.Errorf("dead letter %q: reason %q, want it to contain %q", id, reasons[id], want)
		}
	}
	for _, id := range []string{"raw-garbage", "raw-unknown", "raw-wrongkey"} {
		r, err := store.Result(context.Background(), e.agg.Type, id)
		if err != nil || r.Outcome != txn.OutcomeDeadLettered {
			t.Errorf("result of %s: %+v %v", id, r, err)
		}
	}
}

func TestSameCommandIDIsHandledOnce(t *testing.T) {
	e := newEnv(t)
	e.start("a")
	c := e.client()
	first, err := send(t, c, Deposit{Account: "acc-1", Amount: 10}, actor.WithCommandID("cmd-1"))
	if err != nil || first.Duplicate {
		t.Fatalf("first: %+v %v", first, err)
	}
	// Resent with the same id: the stored outcome comes back and nothing
	// changes.
	again, err := send(t, c, Deposit{Account: "acc-1", Amount: 10}, actor.WithCommandID("cmd-1"))
	if err != nil || !again.Duplicate || again.PayloadMismatch || again.FirstVersion != first.FirstVersion || again.Offset != first.Offset {
		t.Fatalf("resend: %+v %v; first was %+v", again, err, first)
	}
	// With a different payload: still nothing changes, and the caller
	// learns the id was reused for another request.
	again, err = send(t, c, Deposit{Account: "acc-1", Amount: 99}, actor.WithCommandID("cmd-1"))
	if !errors.Is(err, actor.ErrPayloadMismatch) || !again.Duplicate || !again.PayloadMismatch || again.FirstVersion != first.FirstVersion {
		t.Fatalf("resend with another payload: %+v %v; first was %+v", again, err, first)
	}
	// A rejection is also remembered.
	if _, err := send(t, c, Withdraw{Account: "acc-1", Amount: 1000}, actor.WithCommandID("cmd-2")); !errors.Is(err, actor.ErrRejected) {
		t.Fatalf("want rejection, got %v", err)
	}
	if _, err := send(t, c, Deposit{Account: "acc-1", Amount: 1000}); err != nil {
		t.Fatal(err)
	}
	o, err := send(t, c, Withdraw{Account: "acc-1", Amount: 1000}, actor.WithCommandID("cmd-2"))
	if !errors.Is(err, actor.ErrRejected) || !o.Duplicate {
		t.Fatalf("resent rejected command must stay rejected: %+v %v", o, err)
	}
	if n := countRows(t, e.pool, `SELECT count(*) FROM onceflow.events WHERE aggregate_id = 'acc-1'`); n != 2 {
		t.Fatalf("events: %d, want 2", n)
	}
}

func TestPrometheusCollector(t *testing.T) {
	e := newEnv(t)
	a := e.start("a")
	c := e.client()
	if _, err := send(t, c, Deposit{Account: "m", Amount: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := send(t, c, Withdraw{Account: "m", Amount: 5}); !errors.Is(err, actor.ErrRejected) {
		t.Fatal(err)
	}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(actor.NewCollector(a.rt))
	want := strings.ReplaceAll(strings.ReplaceAll(`
# HELP onceflow_commands_total Commands by outcome.
# TYPE onceflow_commands_total counter
onceflow_commands_total{group="GROUP",instance="a",outcome="accepted",topic="TOPIC"} 1
onceflow_commands_total{group="GROUP",instance="a",outcome="dead_lettered",topic="TOPIC"} 0
onceflow_commands_total{group="GROUP",instance="a",outcome="duplicate",topic="TOPIC"} 0
onceflow_commands_total{group="GROUP",instance="a",outcome="rejected",topic="TOPIC"} 1
`, "GROUP", e.group), "TOPIC", e.topic)
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "onceflow_commands_total"); err != nil {
		t.Fatal(err)
	}
	if n, err := testutil.GatherAndCount(reg); err != nil || n < 15 {
		t.Fatalf("%d metrics, %v", n, err)
	}
}

// With the Halt failure policy, an undecodable record stops its partition
// without committing: no dead letter, the claim's offset stays before the
// record, and other partitions keep serving.
func TestHaltPolicyStopsThePartition(t *testing.T) {
	e := newEnv(t)
	a := e.start("a", actor.WithFailurePolicy(actor.Halt))
	owns(t, a, testPartitions)
	c := e.client()
	bad := e.produceRaw([]byte("h-1"), []byte("not json"), map[string]string{actor.HeaderCommandID: "bad-1", actor.HeaderCommandType: "test.Deposit"})
	eventually(t, 30*time.Second, "the partition to halt", func() error {
		if a.rt.Stats().Halted != 1 {
			return errNotYet
		}
		return nil
	})
	if n := countRows(t, e.pool, `SELECT count(*) FROM onceflow.dead_letters`); n != 0 {
		t.Fatalf("%d dead letters, want 0 under Halt", n)
	}
	if n := countRows(t, e.pool, `SELECT count(*) FROM onceflow.command_results WHERE command_id = 'bad-1'`); n != 0 {
		t.Fatalf("the halting record got a result")
	}
	claim, err := txn.NewStore(e.pool).ReadClaim(context.Background(), txn.PartitionKey{Group: a.rt.Group(), Topic: e.topic, Partition: bad.Partition})
	if err != nil || claim.NextOffset > int64(bad.Offset) {
		t.Fatalf("claim of the halted partition %d: %+v %v; its offset must stay at or before %d", bad.Partition, claim, err, bad.Offset)
	}
	// Accounts on other partitions are still served.
	served := 0
	for i := 0; i < 8 && served == 0; i++ {
		// An account may hash to the halted partition (then this send
		// times out); generous timeouts keep a loaded machine from
		// failing the others.
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		_, err := c.Send(ctx, Deposit{Account: fmt.Sprintf("other-%d", i), Amount: 1})
		cancel()
		if err == nil {
			served++
		}
	}
	if served == 0 {
		t.Fatal("no other partition served a command after one partition halted")
	}
}

// Two sends of one command id at once (two clients sharing the reply topic):
// one is the first handling, the other must be told it was a duplicate —
// each reply answers its own send, never the other's.
func TestConcurrentSendsOfOneIDEachGetTheirOwnReply(t *testing.T) {
	e := newEnv(t)
	a := e.start("a")
	owns(t, a, testPartitions)
	c1, c2 := e.client(), e.client()
	for i := range 10 {
		id := fmt.Sprintf("same-%d", i)
		type res struct {
			o   actor.Outcome
			err error
		}
		out := make(chan res, 2)
		for _, c := range []*actor.Client{c1, c2} {
			go func() {
				o, err := send(t, c, Deposit{Account: "s", Amount: 1}, actor.WithCommandID(id))
				out <- res{o, err}
			}()
		}
		r1, r2 := <-out, <-out
		if r1.err != nil || r2.err != nil {
			t.Fatalf("%s: %v / %v", id, r1.err, r2.err)
		}
		if r1.o.Duplicate == r2.o.Duplicate || r1.o.FirstVersion != r2.o.FirstVersion {
			t.Fatalf("%s: want exactly one duplicate with the same versions, got %+v and %+v", id, r1.o, r2.o)
		}
	}
	if n := countRows(t, e.pool, `SELECT count(*) FROM onceflow.events WHERE aggregate_id = 's'`); n != 10 {
		t.Fatalf("%d events, want 10", n)
	}
}

// One option slice configures both the Runtime and the Client (each ignores
// the other's options), and the public hooks observe assignment, commits
// and revocation.
func TestOneOptionSliceAndObservingHooks(t *testing.T) {
	e := newEnv(t)
	var assigned, committed, revoked atomic.Int64
	opts := []actor.Option{
		actor.WithBrokers(e.brokers), actor.WithTopic(e.topic), actor.WithKafkaConfig(e.kafka), actor.WithLogger(testLogger(t)),
		actor.WithGroup(e.group), actor.WithBatch(50, 2*time.Millisecond), actor.WithKafkaConfig(fastGroup), // runtime only
		actor.WithSendTimeout(30 * time.Second), // client only
		actor.WithHooks(actor.Hooks{
			OnAssigned:  func(int32, int64) { assigned.Add(1) },
			OnCommitted: func(b actor.BatchInfo) { committed.Add(int64(b.Records)) },
			OnRevoked:   func(int32, bool) { revoked.Add(1) },
		}),
	}
	rt, err := actor.NewRuntime(e.agg, e.pool, opts...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- rt.Run(ctx) }()
	cctx, ccancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer ccancel()
	c, err := actor.NewClient(cctx, e.agg.Registry, opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := range 5 {
		if _, err := send(t, c, Deposit{Account: fmt.Sprintf("o-%d", i), Amount: 1}); err != nil {
			t.Fatal(err)
		}
	}
	if assigned.Load() != testPartitions || committed.Load() < 5 {
		t.Fatalf("hooks saw %d assignments and %d committed records, want %d and >= 5", assigned.Load(), committed.Load(), testPartitions)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if revoked.Load() != testPartitions {
		t.Fatalf("hooks saw %d partitions let go on shutdown, want %d", revoked.Load(), testPartitions)
	}
}

// WithSchema puts everything of a runtime in its own Postgres schema: two
// services in one database, with the same aggregate type and command ids,
// do not see each other.
func TestRuntimesInTheirOwnSchemas(t *testing.T) {
	e := newEnv(t)
	a := e.start("a", actor.WithSchema("svc_a"))
	owns(t, a, testPartitions)
	c := e.client()
	topic2 := e.topic + ".b"
	rtB, err := actor.NewRuntime(e.agg, e.pool, actor.WithBrokers(e.brokers), actor.WithTopic(topic2), actor.WithCreateTopics(testPartitions),
		actor.WithKafkaConfig(e.kafka), actor.WithKafkaConfig(fastGroup), actor.WithLogger(testLogger(t)), actor.WithSchema("svc_b"), actor.WithGroup(e.group+".b"))
	if err != nil {
		t.Fatal(err)
	}
	runBackground(t, rtB)
	cctx, ccancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer ccancel()
	cB, err := actor.NewClient(cctx, e.agg.Registry, actor.WithBrokers(e.brokers), actor.WithTopic(topic2), actor.WithCreateTopics(testPartitions),
		actor.WithKafkaConfig(e.kafka), actor.WithLogger(testLogger(t)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cB.Close() })
	for _, cl := range []*actor.Client{c, cB} {
		if o, err := send(t, cl, Deposit{Account: "s-1", Amount: 5}, actor.WithCommandID("same-id")); err != nil || o.Duplicate || o.FirstVersion != 1 {
			t.Fatalf("send: %+v %v", o, err)
		}
	}
	for schema, want := range map[string]int64{"svc_a": 1, "svc_b": 1, "onceflow": 0} {
		if n := countRows(t, e.pool, `SELECT count(*) FROM `+schema+`.events`); n != want {
			t.Errorf("%s.events: %d rows, want %d", schema, n, want)
		}
	}
	if _, err := actor.NewRuntime(e.agg, e.pool, actor.WithBrokers(e.brokers), actor.WithTopic("x"), actor.WithSchema("Bad-Name")); err == nil || !strings.Contains(err.Error(), "WithSchema") {
		t.Fatalf("a bad schema name: %v", err)
	}
}
