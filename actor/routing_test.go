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
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/onceflow/onceflow/actor"
	"github.com/onceflow/onceflow/eventsource"
	"github.com/onceflow/onceflow/internal/chaos"
	"github.com/onceflow/onceflow/txn"
)

// A second team produces commands with librdkafka's default partitioner
// (consistent_random, CRC32): some records land on a partition that does
// not own their aggregate. Each such record is dead-lettered with a reason
// naming the aggregate and both partitions; every aggregate keeps exactly
// one partition with versions 1..n, and the owning partitions keep serving.
// (Before the fix the stray records were committed on the wrong partition,
// forking the aggregate, and the owning partition halted on the version
// conflict.)
func TestRecordsFromAnotherPartitionerAreDeadLetteredNotForked(t *testing.T) {
	e := newEnv(t)
	a := e.start("a")
	owns(t, a, testPartitions)
	c := e.client()

	cm := kafka.ConfigMap{"bootstrap.servers": e.brokers, "enable.metrics.push": false, "partitioner": "consistent_random"}
	for k, v := range e.kafka {
		cm[k] = v
	}
	prod, err := kafka.NewProducer(&cm)
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	type stray struct {
		account string
		landed  int32
		owner   int32
	}
	var strays []stray
	landedOK := 0
	for i := range 24 {
		acc := fmt.Sprintf("x-%d", i)
		dr := make(chan kafka.Event, 1)
		err := prod.Produce(&kafka.Message{
			TopicPartition: kafka.TopicPartition{Topic: &e.topic, Partition: kafka.PartitionAny},
			Key:            []byte(acc), Value: []byte(fmt.Sprintf(`{"account":%q,"amount":1}`, acc)),
			Headers: []kafka.Header{
				{Key: actor.HeaderCommandID, Value: []byte("crc-" + acc)},
				{Key: actor.HeaderCommandType, Value: []byte("test.Deposit")},
			},
		}, dr)
		if err != nil {
			t.Fatal(err)
		}
		m := (<-dr).(*kafka.Message)
		if m.TopicPartition.Error != nil {
			t.Fatal(m.TopicPartition.Error)
		}
		owner := actor.Murmur2.Partition([]byte(acc), testPartitions)
		if got := actor.CRC32.Partition([]byte(acc), testPartitions); got != m.TopicPartition.Partition {
			t.Fatalf("actor.CRC32 puts %q on %d, librdkafka consistent_random on %d", acc, got, m.TopicPartition.Partition)
		}
		if m.TopicPartition.Partition != owner {
			strays = append(strays, stray{acc, m.TopicPartition.Partition, owner})
		} else {
			landedOK++
		}
	}
	if len(strays) == 0 {
		t.Fatal("no record landed on a foreign partition: the test proves nothing")
	}
	// Every aggregate, stray or not, is then served on its own partition.
	for i := range 24 {
		acc := fmt.Sprintf("x-%d", i)
		out, err := send(t, c, Deposit{Account: acc, Amount: 10})
		if err != nil {
			t.Fatalf("%s: %v", acc, err)
		}
		if want := actor.Murmur2.Partition([]byte(acc), testPartitions); out.Partition != want {
			t.Fatalf("%s handled on partition %d, the Client's murmur2 says %d", acc, out.Partition, want)
		}
	}
	store := txn.NewStore(e.pool)
	for _, s := range strays {
		r, err := store.Result(context.Background(), e.agg.Type, "crc-"+s.account)
		if err != nil || r.Outcome != txn.OutcomeDeadLettered {
			t.Fatalf("stray command for %s: %+v %v, want dead_lettered", s.account, r, err)
		}
		for _, want := range []string{"misrouted", fmt.Sprintf("%q", s.account), fmt.Sprintf("partition %d", s.landed), fmt.Sprintf("belongs to partition %d", s.owner)} {
			if !strings.Contains(r.Reason, want) {
				t.Errorf("reason %q does not contain %q", r.Reason, want)
			}
		}
	}
	if n := countRows(t, e.pool, `SELECT count(*) FROM onceflow.dead_letters WHERE error LIKE 'misrouted%'`); n != int64(len(strays)) {
		t.Fatalf("%d misrouted dead letters, want %d", n, len(strays))
	}
	if n := countRows(t, e.pool, `SELECT count(*) FROM (SELECT aggregate_id FROM onceflow.events GROUP BY aggregate_id HAVING count(DISTINCT partition) > 1) f`); n != 0 {
		t.Fatalf("%d aggregates have events in more than one partition", n)
	}
	if n := countRows(t, e.pool, `SELECT count(*) FROM (SELECT aggregate_id FROM onceflow.events GROUP BY aggregate_id HAVING max(version) <> count(*) OR min(version) <> 1) f`); n != 0 {
		t.Fatalf("%d aggregates with versions not 1..n", n)
	}
	if n := countRows(t, e.pool, `SELECT count(*) FROM onceflow.events`); n != int64(24+landedOK) {
		t.Fatalf("%d events, want %d (24 client deposits + %d well-routed ones)", n, 24+landedOK, landedOK)
	}
	st := a.rt.Stats()
	if st.Halted != 0 || st.Misrouted != int64(len(strays)) {
		t.Fatalf("stats: halted %d misrouted %d, want 0 and %d", st.Halted, st.Misrouted, len(strays))
	}
}

// foreignWriter appends events for an aggregate as a second writer would
// (another service, a stray partition), in its own transaction.
type foreignWriter struct {
	pool *pgxpool.Pool
	agg  string
	seq  atomic.Int64
}

func (f *foreignWriter) write(ctx context.Context, aggregateID string) error {
	return pgx.BeginFunc(ctx, f.pool, func(tx pgx.Tx) error {
		var v int64
		if err := tx.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM onceflow.events WHERE aggregate_type = $1 AND aggregate_id = $2`, f.agg, aggregateID).Scan(&v); err != nil {
			return err
		}
		return eventsource.AppendTx(ctx, tx, []eventsource.StoredEvent{{
			Topic: "foreign", Partition: 0, Seq: f.seq.Add(1), AggregateType: f.agg, AggregateID: aggregateID,
			Version: v + 1, Type: "test.Deposited", Data: []byte(`{"amount":100}`), CommandID: fmt.Sprintf("foreign-%d", f.seq.Load()),
		}})
	})
}

// Defence in depth: a version conflict at commit (someone else wrote the
// aggregate) never halts the partition. A one-off second write is absorbed
// by reloading and deciding again; a writer that keeps writing gets the
// commands of that aggregate dead-lettered, and the rest of the batch and
// the partition move on.
func TestVersionConflictReloadsAndNeverHalts(t *testing.T) {
	e := newEnv(t)
	fw := &foreignWriter{pool: e.pool, agg: e.agg.Type}
	var persist atomic.Bool
	a := e.start("a", actor.WithFaults(actor.Faults{BeforeCommit: func(ctx context.Context, b actor.BatchInfo) {
		if persist.Load() {
			for _, id := range b.CommandIDs {
				if id == "c-persist" {
					if err := fw.write(ctx, "acc-p"); err != nil {
						t.Errorf("foreign write: %v", err)
					}
				}
			}
		}
	}}))
	c := e.client()
	if _, err := send(t, c, Deposit{Account: "acc-1", Amount: 5}); err != nil {
		t.Fatal(err)
	}
	// acc-1 is in memory at version 1; someone else writes version 2.
	if err := fw.write(context.Background(), "acc-1"); err != nil {
		t.Fatal(err)
	}
	out, err := send(t, c, Deposit{Account: "acc-1", Amount: 7})
	if err != nil || out.FirstVersion != 3 {
		t.Fatalf("deposit after a foreign write: %+v %v, want accepted as version 3", out, err)
	}
	if st := a.rt.Stats(); st.VersionConflicts == 0 || st.Halted != 0 {
		t.Fatalf("stats %+v: want a counted version conflict and no halt", st)
	}
	// The balance folds the foreign event too: 5 + 100 + 7.
	if _, err := send(t, c, Withdraw{Account: "acc-1", Amount: 112}); err != nil {
		t.Fatalf("withdrawing the whole folded balance: %v", err)
	}

	// A writer that writes acc-p before every commit attempt.
	if _, err := send(t, c, Deposit{Account: "acc-p", Amount: 1}); err != nil {
		t.Fatal(err)
	}
	persist.Store(true)
	_, err = send(t, c, Deposit{Account: "acc-p", Amount: 1}, actor.WithCommandID("c-persist"))
	var dl *actor.DeadLetteredError
	if !errors.As(err, &dl) || !strings.Contains(dl.Reason, "written by another writer") {
		t.Fatalf("command under a persistent second writer: %v, want dead-lettered naming the second writer", err)
	}
	persist.Store(false)
	if _, err := send(t, c, Deposit{Account: "acc-p", Amount: 1}); err != nil {
		t.Fatalf("the aggregate after the second writer stopped: %v", err)
	}
	if st := a.rt.Stats(); st.Halted != 0 || st.VersionConflicts < 4 {
		t.Fatalf("stats %+v: want >= 4 version conflicts and no halt", st)
	}
	if n := countRows(t, e.pool, `SELECT count(*) FROM (SELECT aggregate_id FROM onceflow.events GROUP BY aggregate_id HAVING max(version) <> count(*) OR min(version) <> 1) f`); n != 0 {
		t.Fatalf("%d aggregates with versions not 1..n", n)
	}
}

// Command ids are scoped to the aggregate type: the same id sent to two
// aggregate types in one database is applied by both. A resend of an id
// with another payload is reported as a mismatch, not as a plain duplicate.
func TestCommandIDScopeAndPayloadMismatch(t *testing.T) {
	e := newEnv(t)
	e.start("a")
	c := e.client()

	// A second aggregate type on its own topic, same database.
	other := newAccountAggregate(t)
	other.Type = "test.savings"
	topic2 := e.topic + ".savings"
	rt2, err := actor.NewRuntime(other, e.pool, actor.WithBrokers(e.brokers), actor.WithTopic(topic2), actor.WithCreateTopics(testPartitions),
		actor.WithKafkaConfig(e.kafka), actor.WithKafkaConfig(fastGroup), actor.WithLogger(testLogger(t)), actor.WithBatch(100, 5*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	runBackground(t, rt2)
	cctx, ccancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer ccancel()
	c2, err := actor.NewClient(cctx, other.Registry, actor.WithBrokers(e.brokers), actor.WithTopic(topic2), actor.WithCreateTopics(testPartitions),
		actor.WithKafkaConfig(e.kafka), actor.WithLogger(testLogger(t)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c2.Close() })

	o1, err := send(t, c, Deposit{Account: "acc-s", Amount: 5}, actor.WithCommandID("shared-1"))
	if err != nil || o1.Duplicate {
		t.Fatalf("account: %+v %v", o1, err)
	}
	o2, err := send(t, c2, Deposit{Account: "acc-s", Amount: 9}, actor.WithCommandID("shared-1"))
	if err != nil || o2.Duplicate || o2.FirstVersion != 1 {
		t.Fatalf("savings with the same command id: %+v %v, want accepted as a new command (ids are per aggregate type)", o2, err)
	}
	if n := countRows(t, e.pool, `SELECT count(*) FROM onceflow.command_results WHERE command_id = 'shared-1'`); n != 2 {
		t.Fatalf("%d results for shared-1, want one per aggregate type", n)
	}

	// Same id, same payload: a plain duplicate.
	o3, err := send(t, c, Deposit{Account: "acc-s", Amount: 5}, actor.WithCommandID("shared-1"))
	if err != nil || !o3.Duplicate || o3.PayloadMismatch {
		t.Fatalf("resend with the same payload: %+v %v", o3, err)
	}
	// Same id, another payload: a mismatch, not applied.
	o4, err := send(t, c, Deposit{Account: "acc-s", Amount: 6}, actor.WithCommandID("shared-1"))
	var pm *actor.PayloadMismatchError
	if !errors.As(err, &pm) || !errors.Is(err, actor.ErrPayloadMismatch) || !o4.Duplicate || !o4.PayloadMismatch || pm.Outcome.Status != txn.OutcomeAccepted {
		t.Fatalf("resend with another payload: %+v %v, want a PayloadMismatchError", o4, err)
	}
	// Two records of one id in one batch with different payloads.
	h := map[string]string{actor.HeaderCommandID: "batch-dup", actor.HeaderCommandType: "test.Deposit"}
	e.produceRaw([]byte("acc-s"), []byte(`{"account":"acc-s","amount":1}`), h)
	e.produceRaw([]byte("acc-s"), []byte(`{"account":"acc-s","amount":2}`), h)
	o5, err := send(t, c, Deposit{Account: "acc-s", Amount: 1}, actor.WithCommandID("batch-dup"))
	if err != nil || !o5.Duplicate {
		t.Fatalf("resend of batch-dup: %+v %v", o5, err)
	}
	if n := countRows(t, e.pool, `SELECT count(*) FROM onceflow.events WHERE aggregate_type = $1 AND aggregate_id = 'acc-s'`, e.agg.Type); n != 2 {
		t.Fatalf("%d account events for acc-s, want 2 (shared-1 and batch-dup once each)", n)
	}
}

// A rebalance assigning many partitions while Postgres does not answer
// (a silent network: connections hang) returns from librdkafka's callback
// within the rebalance deadline, not after one claim timeout per partition;
// the partitions are claimed from the poll loop once Postgres is back.
func TestRebalanceWithManyPartitionsAndPostgresDownIsBounded(t *testing.T) {
	e := newEnv(t)
	if _, err := txn.Migrate(context.Background(), e.pool); err != nil {
		t.Fatal(err)
	}
	cc := e.pool.Config().ConnConfig
	proxy, err := chaos.NewProxy(fmt.Sprintf("%s:%d", cc.Host, cc.Port), false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(proxy.Close)
	cfg := e.pool.Config().Copy()
	cfg.ConnConfig.Host, cfg.ConnConfig.Port = "127.0.0.1", uint16(proxyPort(t, proxy.Addr()))
	cfg.ConnConfig.ConnectTimeout = 0
	cfg.MaxConns = 4
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	proxy.Cut(chaos.CutBlackhole)

	const parts = 24
	const deadline = 2 * time.Second
	wide := e.topic + ".wide"
	rt, err := actor.NewRuntime(e.agg, pool, actor.WithBrokers(e.brokers), actor.WithTopic(wide), actor.WithCreateTopics(parts),
		actor.WithKafkaConfig(e.kafka), actor.WithKafkaConfig(fastGroup), actor.WithLogger(testLogger(t)),
		actor.WithAutoMigrate(false), actor.WithRebalanceTimeout(deadline), actor.WithClaimLockTimeout(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	runBackground(t, rt)

	eventually(t, 60*time.Second, "all partitions assigned and waiting for their claims", func() error {
		h := rt.Health()
		claiming := 0
		for _, p := range h.Partitions {
			if p.State == actor.PartitionClaiming {
				claiming++
			}
		}
		if claiming != parts {
			return fmt.Errorf("%d of %d partitions claiming: %+v", claiming, parts, h.Partitions)
		}
		return nil
	})
	// Serially this callback would have taken parts x the claim timeout.
	if got := rt.Stats().RebalanceMax; got > deadline+2*time.Second {
		t.Fatalf("the rebalance callback took %v with Postgres down; its deadline is %v", got, deadline)
	}
	if h := rt.Health(); h.Healthy() {
		t.Fatalf("health says healthy with no partition claimed: %+v", h)
	}
	proxy.Heal()
	eventually(t, 90*time.Second, "every partition claimed once Postgres answers", func() error {
		if h := rt.Health(); !h.Healthy() || len(h.Partitions) != parts {
			return fmt.Errorf("%+v", h)
		}
		return nil
	})
}

func proxyPort(t *testing.T, addr string) int {
	t.Helper()
	var port int
	if _, err := fmt.Sscanf(addr[strings.LastIndex(addr, ":")+1:], "%d", &port); err != nil {
		t.Fatal(err)
	}
	return port
}

// A halted partition reports why in Health and on its claim row, and is
// resumed without restarting the process once the cause is fixed: here by
// clearing the halt from "another process" (txn.Store.Resume, what
// `onceflow resume` does); the record that halted it is then handled.
func TestHaltedPartitionReportsAndResumes(t *testing.T) {
	e := newEnv(t)
	var fixed atomic.Bool
	decide := e.agg.Decider.Decide
	e.agg.Decider.Decide = func(s Account, c eventsource.Command) ([]any, error) {
		if _, ok := c.(Explode); ok && fixed.Load() {
			return nil, errors.New("explode: no longer")
		}
		return decide(s, c)
	}
	a := e.start("a", actor.WithFailurePolicy(actor.Halt))
	owns(t, a, testPartitions)
	c := e.client()
	sctx, scancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer scancel()
	res := make(chan error, 1)
	go func() {
		_, err := c.Send(sctx, Explode{Account: "boom-1"}, actor.WithCommandID("explode-1"))
		res <- err
	}()
	p := actor.Murmur2.Partition([]byte("boom-1"), testPartitions)
	eventually(t, 30*time.Second, "the partition to halt", func() error {
		for _, ph := range a.rt.Health().Partitions {
			if ph.Partition == p && ph.State == actor.PartitionHalted && strings.Contains(ph.HaltReason, "panicked") {
				return nil
			}
		}
		return fmt.Errorf("%+v", a.rt.Health())
	})
	if a.rt.Health().Healthy() || a.rt.Stats().HaltedNow != 1 {
		t.Fatalf("health with a halted partition: %+v %+v", a.rt.Health(), a.rt.Stats())
	}
	store := txn.NewStore(e.pool)
	key := txn.PartitionKey{Group: a.rt.Group(), Topic: e.topic, Partition: p}
	claim, err := store.ReadClaim(context.Background(), key)
	if err != nil || claim.HaltedAt == nil || !strings.Contains(claim.HaltReason, "panicked") {
		t.Fatalf("claim row of the halted partition: %+v %v", claim, err)
	}
	fixed.Store(true)
	if was, err := store.Resume(context.Background(), key); err != nil || !was {
		t.Fatalf("Resume: %v %v", was, err)
	}
	var rej *actor.RejectedError
	if err := <-res; !errors.As(err, &rej) {
		t.Fatalf("the halting command after resume: %v, want rejected by the fixed handler", err)
	}
	eventually(t, 30*time.Second, "a healthy runtime", func() error {
		if h := a.rt.Health(); !h.Healthy() || a.rt.Stats().HaltedNow != 0 {
			return fmt.Errorf("%+v", h)
		}
		return nil
	})
	if _, err := send(t, c, Deposit{Account: "boom-1", Amount: 1}); err != nil {
		t.Fatal(err)
	}
	// The runtime's own API resumes too (nothing halted now).
	if was, err := a.rt.ResumePartition(context.Background(), p); err != nil || was {
		t.Fatalf("ResumePartition of a running partition: %v %v", was, err)
	}
}

// A partitioner of the user's own (no librdkafka equivalent) is shared by
// the Runtime and the Client: the Client places each record itself, the
// Runtime checks against the same mapping; a client left on the default
// partitioner gets its stray records dead-lettered, never applied.
func TestCustomPartitionerSharedByClientAndRuntime(t *testing.T) {
	e := newEnv(t)
	lastByte := actor.Partitioner{Name: "last-byte", Partition: func(key []byte, n int32) int32 { return int32(key[len(key)-1]) % n }}
	a := e.start("a", actor.WithPartitioner(lastByte))
	owns(t, a, testPartitions)
	c := e.client(actor.WithPartitioner(lastByte))
	for i := range 8 {
		acc := fmt.Sprintf("lb-%c", 'a'+i)
		out, err := send(t, c, Deposit{Account: acc, Amount: 1})
		if err != nil {
			t.Fatalf("%s: %v", acc, err)
		}
		if want := lastByte.Partition([]byte(acc), testPartitions); out.Partition != want {
			t.Fatalf("%s handled on partition %d, the custom partitioner says %d", acc, out.Partition, want)
		}
	}
	// A client on the default (murmur2): whatever lands elsewhere is refused.
	def := e.client()
	strays := 0
	for i := range 8 {
		acc := fmt.Sprintf("lb-%c", 'a'+i)
		_, err := send(t, def, Deposit{Account: acc, Amount: 1})
		var dl *actor.DeadLetteredError
		switch {
		case actor.Murmur2.Partition([]byte(acc), testPartitions) == lastByte.Partition([]byte(acc), testPartitions):
			if err != nil {
				t.Fatalf("%s, placed alike by both partitioners: %v", acc, err)
			}
		case errors.As(err, &dl) && strings.Contains(dl.Reason, "last-byte partitioner"):
			strays++
		default:
			t.Fatalf("%s from a murmur2 client: %v, want dead-lettered as misrouted", acc, err)
		}
	}
	if strays == 0 {
		t.Fatal("no stray record: the test proves nothing")
	}
	if n := countRows(t, e.pool, `SELECT count(*) FROM (SELECT aggregate_id FROM onceflow.events GROUP BY aggregate_id HAVING count(DISTINCT partition) > 1) f`); n != 0 {
		t.Fatalf("%d aggregates have events in more than one partition", n)
	}
}
