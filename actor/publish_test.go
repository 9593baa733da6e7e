package actor_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"
	"github.com/jackc/pgx/v5"

	"github.com/onceflow/onceflow/actor"
	"github.com/onceflow/onceflow/eventsource"
	"github.com/onceflow/onceflow/internal/chaos"
	"github.com/onceflow/onceflow/txn"
)

// topicRecord is one record read from a history or state topic.
type topicRecord struct {
	partition int32
	key       string
	value     []byte
	headers   map[string]string
}

// readTopic reads every partition of topic from the beginning
// (read_committed) until done says it has enough, or fails t at the deadline.
func (e *env) readTopic(t *testing.T, topic string, done func([]topicRecord) error) []topicRecord {
	t.Helper()
	cm := kafka.ConfigMap{"bootstrap.servers": e.brokers, "enable.metrics.push": false, "group.id": "reader-" + strconv.FormatInt(time.Now().UnixNano(), 36),
		"enable.auto.commit": false, "enable.partition.eof": false, "isolation.level": "read_committed"}
	for k, v := range e.kafka {
		cm[k] = v
	}
	c, err := kafka.NewConsumer(&cm)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	md, err := c.GetMetadata(&topic, false, 10000)
	if err != nil || len(md.Topics[topic].Partitions) == 0 {
		t.Fatalf("topic %q metadata: %v %+v", topic, err, md)
	}
	var tps []kafka.TopicPartition
	for _, p := range md.Topics[topic].Partitions {
		tps = append(tps, kafka.TopicPartition{Topic: &topic, Partition: p.ID, Offset: kafka.OffsetBeginning})
	}
	if err := c.Assign(tps); err != nil {
		t.Fatal(err)
	}
	var recs []topicRecord
	deadline := time.Now().Add(60 * time.Second)
	for {
		if err := done(recs); err == nil {
			return recs
		} else if time.Now().After(deadline) {
			t.Fatalf("reading %q: %v (after %d records)", topic, err, len(recs))
		}
		m, ok := c.Poll(100).(*kafka.Message)
		if !ok {
			continue
		}
		h := map[string]string{}
		for _, x := range m.Headers {
			h[x.Key] = string(x.Value)
		}
		recs = append(recs, topicRecord{partition: m.TopicPartition.Partition, key: string(m.Key), value: m.Value, headers: h})
	}
}

// checkHistory checks the history topic against the event store: per
// partition, the first occurrences of the seqs are 1..n in order without
// gap, a repeat is only of an earlier seq, and every record equals its
// stored event. It returns the number of repeats.
func (e *env) checkHistory(t *testing.T, topic string) int {
	t.Helper()
	stored := map[int32][]eventsource.StoredEvent{}
	es := eventsource.NewEventStore(e.pool)
	total := 0
	for p := range int32(testPartitions) {
		evs, err := es.ReadPartition(context.Background(), e.topic, p, 1, 1_000_000)
		if err != nil {
			t.Fatal(err)
		}
		stored[p] = evs
		total += len(evs)
	}
	firsts := func(recs []topicRecord) (map[int32]int64, error) {
		next := map[int32]int64{}
		for _, r := range recs {
			seq, err := strconv.ParseInt(r.headers[actor.HeaderSeq], 10, 64)
			if err != nil {
				return nil, fmt.Errorf("record without a seq header: %+v", r.headers)
			}
			switch {
			case seq == next[r.partition]+1:
				next[r.partition] = seq
			case seq > next[r.partition]+1:
				return nil, fmt.Errorf("partition %d: seq %d after %d: a gap", r.partition, seq, next[r.partition])
			}
		}
		return next, nil
	}
	recs := e.readTopic(t, topic, func(recs []topicRecord) error {
		next, err := firsts(recs)
		if err != nil {
			return err
		}
		for p, evs := range stored {
			if next[p] != int64(len(evs)) {
				return fmt.Errorf("partition %d: seqs up to %d published, %d stored", p, next[p], len(evs))
			}
		}
		return nil
	})
	if _, err := firsts(recs); err != nil {
		t.Fatal(err)
	}
	repeats := 0
	seen := map[[2]int64]bool{}
	for _, r := range recs {
		seq, _ := strconv.ParseInt(r.headers[actor.HeaderSeq], 10, 64)
		k := [2]int64{int64(r.partition), seq}
		if seen[k] {
			repeats++
		}
		seen[k] = true
		ev := stored[r.partition][seq-1]
		if r.key != ev.AggregateID || !bytes.Equal(r.value, ev.Data) || r.headers[actor.HeaderEventType] != ev.Type ||
			r.headers[actor.HeaderVersion] != strconv.FormatInt(ev.Version, 10) || r.headers[actor.HeaderCommandID] != ev.CommandID ||
			r.headers[actor.HeaderSourceTopic] != e.topic || r.headers[actor.HeaderSourcePartition] != strconv.Itoa(int(r.partition)) ||
			r.headers[actor.HeaderAggregateType] != ev.AggregateType {
			t.Fatalf("history record %d/%d %q %s %v differs from the stored event %+v", r.partition, seq, r.key, r.value, r.headers, ev)
		}
	}
	t.Logf("history topic: %d events stored, %d records, %d repeats", total, len(recs), repeats)
	return repeats
}

// checkStates checks that the latest record per key of the state topic is
// the fold of the aggregate's stored events.
func (e *env) checkStates(t *testing.T, topic string) {
	t.Helper()
	want := map[string]Account{}
	versions := map[string]int64{}
	rows, _ := e.pool.Query(context.Background(), `SELECT aggregate_id, type, data, version FROM onceflow.events WHERE aggregate_type = $1 ORDER BY aggregate_id, version`, e.agg.Type)
	var id, typ string
	var data []byte
	var v int64
	if _, err := pgx.ForEachRow(rows, []any{&id, &typ, &data, &v}, func() error {
		ev, err := e.agg.DecodeEvent(typ, data)
		if err != nil {
			return err
		}
		want[id] = e.agg.Decider.Evolve(want[id], ev)
		versions[id] = v
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	latest := func(recs []topicRecord) map[string]topicRecord {
		m := map[string]topicRecord{}
		for _, r := range recs {
			m[r.key] = r
		}
		return m
	}
	e.readTopic(t, topic, func(recs []topicRecord) error {
		got := latest(recs)
		for id, acc := range want {
			r, ok := got[id]
			if !ok {
				return fmt.Errorf("no state for %s", id)
			}
			var s Account
			if err := json.Unmarshal(r.value, &s); err != nil {
				return err
			}
			if s != acc || r.headers[actor.HeaderVersion] != strconv.FormatInt(versions[id], 10) {
				return fmt.Errorf("state of %s is %s at version %s, the fold of its events is %+v at %d", id, r.value, r.headers[actor.HeaderVersion], acc, versions[id])
			}
		}
		return nil
	})
}

// Every stored event reaches the history topic, in seq order per partition
// with no gap, through a steady stream with a rebalance, a crash right
// after a commit (before its publish) and an owner that leaves; the state
// topic's latest value per aggregate is the fold of its events.
func TestEventsArePublishedInOrderThroughRebalanceAndCrash(t *testing.T) {
	e := newEnv(t)
	var crashes atomic.Int64
	a := e.start("a", actor.WithFaults(actor.Faults{AfterCommit: func(_ context.Context, b actor.BatchInfo) error {
		if b.Records > 0 && crashes.Load() < 3 && b.FirstOffset%50 == 7 {
			crashes.Add(1)
			return errors.New("simulated crash after commit, before publish")
		}
		return nil
	}}))
	owns(t, a, testPartitions)
	c := e.client(actor.WithResults(txn.NewStore(e.pool), 2*time.Second))
	accounts := []string{"acc-0", "acc-1", "acc-2", "acc-3", "acc-4", "acc-5", "acc-6", "acc-7", "acc-8", "acc-9"}
	l := startLoad(t, c, accounts, 6)
	l.waitFor(t, 200)
	b := e.start("b")
	eventually(t, 60*time.Second, "partitions split between a and b", func() error {
		if sb := b.rt.Stats(); sb.OwnedPartitions == 0 {
			return errNotYet
		}
		return nil
	})
	l.waitFor(t, 200)
	a.stop(t)
	owns(t, b, testPartitions)
	l.waitFor(t, 200)
	cmds := l.finish()
	checkInvariants(t, e.pool, cmds)
	eventually(t, 60*time.Second, "publishing to catch up", func() error {
		if lag := b.rt.Stats().PublishLag; lag != 0 {
			return fmt.Errorf("publish lag %d", lag)
		}
		return nil
	})
	e.checkHistory(t, e.topic+".events")
	e.checkStates(t, e.topic+".state")
	if sa, sb := a.rt.Stats(), b.rt.Stats(); sa.Published == 0 || sb.Published == 0 {
		t.Fatalf("both owners should have published: a %+v, b %+v", sa, sb)
	}
	t.Logf("crashes after commit: %d", crashes.Load())
	eventually(t, 30*time.Second, "published_seq to reach next_seq - 1 on every claim", func() error {
		var behind int64
		if err := e.pool.QueryRow(context.Background(), `SELECT sum(next_seq - 1) - sum(published_seq) FROM onceflow.partition_claims WHERE group_id = $1`, a.rt.Group()).Scan(&behind); err != nil || behind != 0 {
			return fmt.Errorf("published_seq behind by %d (%v)", behind, err)
		}
		return nil
	})
}

// While the publishers cannot reach the broker, commands still commit; the
// lag shows in Health and Stats; once the broker is reachable again the
// publishers catch up and nothing is missing.
func TestPublishingCatchesUpAfterTheBrokerWasUnreachable(t *testing.T) {
	e := newEnv(t)
	proxy, err := chaos.NewProxy(e.brokers, true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(proxy.Close)
	a := e.start("a", actor.WithPublishBrokers(proxy.Addr()))
	owns(t, a, testPartitions)
	c := e.client()
	for i := range 20 {
		if _, err := send(t, c, Deposit{Account: fmt.Sprintf("p-%d", i%5), Amount: 1}); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 60*time.Second, "the first events published", func() error {
		if st := a.rt.Stats(); st.Published < 20 || st.PublishLag != 0 {
			return fmt.Errorf("%+v", st)
		}
		return nil
	})
	proxy.Cut(chaos.CutReset)
	for i := range 40 {
		if _, err := send(t, c, Deposit{Account: fmt.Sprintf("p-%d", i%5), Amount: 2}); err != nil {
			t.Fatalf("a command while publishing is down: %v", err)
		}
	}
	eventually(t, 60*time.Second, "the lag to show", func() error {
		h := a.rt.Health()
		var lag int64
		errs := 0
		for _, p := range h.Partitions {
			lag += p.PublishLag
			if p.PublishError != "" {
				errs++
			}
		}
		if lag == 0 || errs == 0 || a.rt.Stats().PublishErrors == 0 {
			return fmt.Errorf("lag %d, %d partitions with an error: %+v", lag, errs, h)
		}
		return nil
	})
	proxy.Heal()
	eventually(t, 90*time.Second, "publishing to catch up", func() error {
		if st := a.rt.Stats(); st.PublishLag != 0 || st.Published < 60 {
			return fmt.Errorf("%+v", st)
		}
		return nil
	})
	e.checkHistory(t, e.topic+".events")
	e.checkStates(t, e.topic+".state")
}

// A new owner publishes what its predecessor stored but did not publish
// (here: a runtime with publishing off stored events; the next owner, with
// publishing on, catches up from Postgres).
func TestNewOwnerCatchesUpFromPostgres(t *testing.T) {
	e := newEnv(t)
	a := e.start("a", actor.WithPublishing(false))
	owns(t, a, testPartitions)
	c := e.client()
	for i := range 30 {
		if _, err := send(t, c, Deposit{Account: fmt.Sprintf("q-%d", i%7), Amount: int64(i + 1)}); err != nil {
			t.Fatal(err)
		}
	}
	a.stop(t)
	b := e.start("b")
	owns(t, b, testPartitions)
	if _, err := send(t, c, Deposit{Account: "q-0", Amount: 100}); err != nil {
		t.Fatal(err)
	}
	e.checkHistory(t, e.topic+".events")
	e.checkStates(t, e.topic+".state")
}

// Records a handler puts in the outbox are stored in the batch's
// transaction and sent to their topics after commit by the same publisher,
// each outbox seq of every source partition at least once, also across
// crashes right after a commit.
func TestOutboxRecordsAreSentAfterCommit(t *testing.T) {
	e := newEnv(t)
	out := e.topic + ".out"
	e.createTopic(t, out, 3)
	var crashes atomic.Int64
	a := e.start("a", actor.WithFaults(actor.Faults{
		Outbox: func(id string) []txn.OutboxRecord {
			return []txn.OutboxRecord{{Topic: out, Key: []byte(id), Value: []byte("sent-by-" + id), Headers: map[string]string{"cause": id}}}
		},
		AfterCommit: func(_ context.Context, b actor.BatchInfo) error {
			if b.FirstOffset%5 == 2 && crashes.Add(1) <= 3 {
				return errors.New("simulated crash after commit, before publish")
			}
			return nil
		},
	}))
	owns(t, a, testPartitions)
	c := e.client(actor.WithResults(txn.NewStore(e.pool), time.Second))
	ids := map[string]bool{}
	for i := range 40 {
		id := fmt.Sprintf("o-%d", i)
		if _, err := send(t, c, Deposit{Account: fmt.Sprintf("acc-%d", i%6), Amount: 1}, actor.WithCommandID(id)); err != nil {
			t.Fatal(err)
		}
		ids[id] = true
	}
	var stored int
	if err := e.pool.QueryRow(context.Background(), `SELECT count(*) FROM onceflow.outbox`).Scan(&stored); err != nil || stored != 40 {
		t.Fatalf("%d outbox rows (%v), want one per accepted command: 40", stored, err)
	}
	recs := e.readTopic(t, out, func(recs []topicRecord) error {
		seen := map[string]bool{}
		for _, r := range recs {
			seen[r.key] = true
		}
		if len(seen) < len(ids) {
			return fmt.Errorf("%d of %d outbox records sent", len(seen), len(ids))
		}
		return nil
	})
	seqs := map[string]map[int64]bool{}
	for _, r := range recs {
		if !ids[r.key] || string(r.value) != "sent-by-"+r.key || r.headers["cause"] != r.key || r.headers[actor.HeaderOutboxSeq] == "" {
			t.Fatalf("outbox record %q %q %v", r.key, r.value, r.headers)
		}
		sp := r.headers[actor.HeaderSourcePartition]
		if seqs[sp] == nil {
			seqs[sp] = map[int64]bool{}
		}
		n, _ := strconv.ParseInt(r.headers[actor.HeaderOutboxSeq], 10, 64)
		seqs[sp][n] = true
	}
	for sp, set := range seqs {
		for n := int64(1); n <= int64(len(set)); n++ {
			if !set[n] {
				t.Fatalf("source partition %s: outbox seq %d missing of 1..%d", sp, n, len(set))
			}
		}
	}
	eventually(t, 30*time.Second, "the outbox lag to reach 0", func() error {
		if st := a.rt.Stats(); st.PublishLag != 0 || st.PublishedOutbox < 40 {
			return fmt.Errorf("%+v", st)
		}
		return nil
	})
	t.Logf("%d outbox records sent for 40 stored, %d crashes after commit", len(recs), min(crashes.Load(), 3))
}

// createTopic creates a topic on the test broker.
func (e *env) createTopic(t *testing.T, topic string, partitions int) {
	t.Helper()
	cm := kafka.ConfigMap{"bootstrap.servers": e.brokers, "enable.metrics.push": false}
	for k, v := range e.kafka {
		cm[k] = v
	}
	admin, err := kafka.NewAdminClient(&cm)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := admin.CreateTopics(ctx, []kafka.TopicSpecification{{Topic: topic, NumPartitions: partitions, ReplicationFactor: -1}})
	if err != nil || (res[0].Error.Code() != kafka.ErrNoError && res[0].Error.Code() != kafka.ErrTopicAlreadyExists) {
		t.Fatalf("create topic %s: %v %v", topic, err, res)
	}
}
