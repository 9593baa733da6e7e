package actor

import (
	"strconv"
	"strings"
	"testing"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"

	"github.com/onceflow/onceflow/eventsource"
	"github.com/onceflow/onceflow/txn"
)

// The pure steps of the event-consumer pipeline, without Kafka or Postgres.

var htopic = "cmds.events"

type evAdded struct {
	N int `json:"n"`
}

// hrec is a history record of cmds[2] with seq and event type typ.
func hrec(off, seq int64, typ, value string) *kafka.Message {
	return &kafka.Message{TopicPartition: kafka.TopicPartition{Topic: &htopic, Partition: 2, Offset: kafka.Offset(off)}, Key: []byte("a1"), Value: []byte(value),
		Headers: []kafka.Header{
			{Key: HeaderSourceTopic, Value: []byte("cmds")}, {Key: HeaderSourcePartition, Value: []byte("2")},
			{Key: HeaderSeq, Value: []byte(strconv.FormatInt(seq, 10))}, {Key: HeaderAggregateType, Value: []byte("acct")},
			{Key: HeaderVersion, Value: []byte("1")}, {Key: HeaderEventType, Value: []byte(typ)}, {Key: HeaderCommandID, Value: []byte("c" + strconv.FormatInt(seq, 10))},
		}}
}

func TestDecodeEvents(t *testing.T) {
	reg := eventsource.MustRegister[evAdded](eventsource.NewRegistry(), "t.Added")
	foreign := hrec(14, 9, "t.Added", `{"n":1}`)
	foreign.Headers[1].Value = []byte("3") // source partition 3 on history partition 2
	bare := &kafka.Message{TopicPartition: kafka.TopicPartition{Topic: &htopic, Partition: 2, Offset: 15}, Value: []byte("x")}
	recs := []*kafka.Message{
		hrec(10, 4, "t.Added", `{"n":4}`),   // repeat: position is 5
		hrec(11, 5, "t.Added", `{"n":5}`),   // applied
		hrec(12, 5, "t.Added", `{"n":5}`),   // repeat within the batch
		hrec(13, 8, "t.Added", `{"n":8}`),   // gap 6..7
		foreign,                             // dead letter
		bare,                                // dead letter
		hrec(16, 9, "t.Nope", `{}`),         // poison: unknown type
		hrec(17, 10, "t.Added", `{"n":10}`), // applied
	}
	items := decodeEvents(recs, 5, "cmds", 2, reg)
	type want struct {
		seq     int64 // 0: no event
		gapFrom int64
		dead    string
		poison  string
	}
	wants := []want{{}, {seq: 5}, {}, {seq: 8, gapFrom: 6}, {dead: "misrouted"}, {dead: "missing header"}, {seq: 9, poison: "decode event"}, {seq: 10}}
	for i, w := range wants {
		it := items[i]
		var seq int64
		if it.ev != nil {
			seq = it.ev.Seq
		}
		if seq != w.seq || it.gapFrom != w.gapFrom || !strings.Contains(it.dead, w.dead) || (w.dead == "") != (it.dead == "") ||
			!strings.Contains(it.poison, w.poison) || (w.poison == "") != (it.poison == "") {
			t.Errorf("item %d: seq %d gapFrom %d dead %q poison %q, want %+v", i, seq, it.gapFrom, it.dead, it.poison, w)
		}
	}
	if p, ok := items[1].ev.Payload.(evAdded); !ok || p.N != 5 {
		t.Errorf("payload %#v, want evAdded{5}", items[1].ev.Payload)
	}
	if e := items[1].ev; e.Topic != "cmds" || e.Partition != 2 || e.AggregateID != "a1" || e.CommandID != "c5" || e.AggregateType != "acct" {
		t.Errorf("event %+v", e.StoredEvent)
	}

	claim := txn.Claim{PartitionKey: txn.PartitionKey{Group: "g", Topic: htopic, Partition: 2}, Epoch: 1, NextOffset: 10, NextSeq: 5}
	b, evs := assembleEvents(claim, items[:3], "p v1")
	if len(evs) != 1 || evs[0].Seq != 5 || b.NextSeqAfter() != 6 || b.NextOffset != 13 || len(b.DeadLetters) != 0 {
		t.Fatalf("first run: %d events, next seq %d, next offset %d, %d dead letters", len(evs), b.NextSeqAfter(), b.NextOffset, len(b.DeadLetters))
	}
	if err := txn.ValidateBatch(b); err != nil {
		t.Fatal(err)
	}
	claim.NextOffset, claim.NextSeq = 13, 8 // after the gap was filled from Postgres
	b, evs = assembleEvents(claim, items[3:], "p v1")
	if len(evs) != 2 || evs[0].Seq != 8 || evs[1].Seq != 10 || b.NextSeqAfter() != 11 || b.NextOffset != 18 || len(b.DeadLetters) != 3 {
		t.Fatalf("second run: %d events, next seq %d, next offset %d, %d dead letters", len(evs), b.NextSeqAfter(), b.NextOffset, len(b.DeadLetters))
	}
	if dl := b.DeadLetters[2]; dl.Headers[HeaderSeq] != "9" || dl.CommandID != "c9" || !strings.Contains(dl.Error, "event seq 9") || string(dl.Key) != "a1" {
		t.Errorf("poison dead letter %+v", dl)
	}
	if err := txn.ValidateBatch(b); err != nil {
		t.Fatal(err)
	}

	// Events read from Postgres (no record) move the position, not the offset.
	pg := []*evItem{{offset: 13, ev: &Event{StoredEvent: eventsource.StoredEvent{Seq: 6}}}, {offset: 13, ev: &Event{StoredEvent: eventsource.StoredEvent{Seq: 7}}}}
	claim.NextSeq = 6
	b, evs = assembleEvents(claim, pg, "p v1")
	if len(evs) != 2 || b.NextOffset != 13 || b.NextSeqAfter() != 8 {
		t.Fatalf("gap fill: %d events, next offset %d, next seq %d", len(evs), b.NextOffset, b.NextSeqAfter())
	}
	if err := txn.ValidateBatch(b); err != nil {
		t.Fatalf("a catch-up batch that keeps the offset must be valid: %v", err)
	}
}
