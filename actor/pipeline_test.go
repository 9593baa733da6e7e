package actor

import (
	"bytes"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"

	"github.com/onceflow/onceflow/eventsource"
	"github.com/onceflow/onceflow/txn"
)

// The pure steps of the partition pipeline, without Kafka or Postgres.

type pcmd struct {
	ID  string `json:"id"`
	Amt int    `json:"amt"`
}

func pdecode(typeName string, data []byte) (any, string, error) {
	if typeName != "t.Add" {
		return nil, "", errors.New("unknown type")
	}
	var c pcmd
	if err := json.Unmarshal(data, &c); err != nil {
		return nil, "", err
	}
	return c, c.ID, nil
}

var ptopic = "cmds"

func prec(off int64, key, id, typ, value string) *kafka.Message {
	m := &kafka.Message{TopicPartition: kafka.TopicPartition{Topic: &ptopic, Partition: 2, Offset: kafka.Offset(off)}, Key: []byte(key), Value: []byte(value)}
	if id != "" {
		m.Headers = append(m.Headers, kafka.Header{Key: HeaderCommandID, Value: []byte(id)})
	}
	if typ != "" {
		m.Headers = append(m.Headers, kafka.Header{Key: HeaderCommandType, Value: []byte(typ)})
	}
	return m
}

// keyOn returns a key that Murmur2 maps to partition p of n.
func keyOn(t *testing.T, p, n int32, not string) string {
	for i := range 1000 {
		k := "k" + strings.Repeat("x", i%7) + string(rune('a'+i%26)) + string(rune('a'+i/26%26))
		if k != not && Murmur2.Partition([]byte(k), n) == p {
			return k
		}
	}
	t.Fatal("no key found")
	return ""
}

func TestDecodeBatch(t *testing.T) {
	rt := routing{topic: ptopic, partition: 2, partitions: 4, partitioner: Murmur2}
	own := keyOn(t, 2, 4, "")
	other := keyOn(t, 1, 4, "")
	val := func(id string, amt int) string { b, _ := json.Marshal(pcmd{ID: id, Amt: amt}); return string(b) }
	recs := []*kafka.Message{
		prec(10, own, "c1", "t.Add", val(own, 1)),              // 0 pending
		prec(11, own, "c1", "t.Add", val(own, 2)),              // 1 duplicate of 0 in the batch (other payload)
		prec(12, own, "", "t.Add", val(own, 1)),                // 2 no command id
		prec(13, own, "c3", "", val(own, 1)),                   // 3 no type
		prec(14, own, "c4", "t.Nope", val(own, 1)),             // 4 unknown type
		prec(15, own, "c5", "t.Add", `{"id":`),                 // 5 undecodable
		prec(16, own, "c6", "t.Add", val(other, 1)),            // 6 key is not the command's aggregate
		prec(17, other, "c7", "t.Add", val(other, 1)),          // 7 misrouted
		prec(18, "", "c8", "t.Add", val("", 1)),                // 8 empty key
		prec(19, own, "c1", "t.Add", val(own, 1)),              // 9 duplicate of 0, same payload
		prec(20, own, strings.Repeat("x", 201), "t.Add", "{}"), // 10 oversized id
	}
	items := decodeBatch(recs, pdecode, rt)
	want := []struct {
		status itemStatus
		reason string
	}{
		{statusPending, ""},
		{statusBatchDuplicate, ""},
		{statusDeadLetter, "missing header onceflow-command-id"},
		{statusDeadLetter, "missing header onceflow-command-type"},
		{statusDeadLetter, "decode command: unknown type"},
		{statusDeadLetter, "decode command: unexpected end of JSON input"},
		{statusDeadLetter, "does not match the command's aggregate id"},
		{statusDeadLetter, "misrouted: aggregate \"" + other + "\" arrived on partition 2 of \"cmds\" but belongs to partition 1 (murmur2 partitioner, 4 partitions)"},
		{statusDeadLetter, "empty record key"},
		{statusBatchDuplicate, ""},
		{statusDeadLetter, "is 201 bytes, limit 200"},
	}
	for i, w := range want {
		it := items[i]
		if it.status != w.status || !strings.Contains(it.reason, w.reason) || (w.reason == "" && it.reason != "") {
			t.Errorf("record %d: status %d reason %q, want %d %q", i, it.status, it.reason, w.status, w.reason)
		}
		if it.offset != int64(recs[i].TopicPartition.Offset) {
			t.Errorf("record %d: offset %d", i, it.offset)
		}
	}
	if items[0].aggID != own || items[0].cmd.(pcmd).Amt != 1 {
		t.Errorf("pending item: %+v", items[0])
	}
	if items[1].dupOf != items[0] || items[9].dupOf != items[0] {
		t.Error("batch duplicates do not point at the first record of their id")
	}
	if bytes.Equal(items[0].hash, items[1].hash) || !bytes.Equal(items[0].hash, items[9].hash) {
		t.Error("request digests: want equal for the same payload, different for another")
	}
	if !items[7].misrouted || items[6].misrouted {
		t.Error("only the misrouted record is flagged misrouted")
	}
	// Without a known partition count nothing is refused as misrouted.
	rt.partitions = 0
	if it := decodeBatch(recs[7:8], pdecode, rt)[0]; it.status != statusPending {
		t.Errorf("with an unknown partition count: %+v", it)
	}
}

func TestAssembleBatch(t *testing.T) {
	claim := txn.Claim{PartitionKey: txn.PartitionKey{Group: "g", Topic: ptopic, Partition: 2}, Epoch: 3, NextOffset: 10, NextSeq: 41}
	mk := func(off int64, id string) *item {
		return &item{msg: prec(off, "a", id, "t.Add", "v"), offset: off, env: envelope{commandID: id}, hasID: id != "", aggID: "a", hash: []byte{byte(off)}}
	}
	acc := mk(10, "c1")
	acc.status, acc.firstVersion, acc.lastVersion = statusAccepted, 7, 8
	acc.events = []encodedEvent{{"E1", []byte("1")}, {"E2", []byte("2")}}
	none := mk(11, "c2")
	none.status = statusAccepted // accepted, no events
	rej := mk(12, "c3")
	rej.status, rej.reason = statusRejected, "no"
	dl := mk(13, "c4")
	dl.status, dl.reason = statusDeadLetter, "bad"
	dlNoID := mk(14, "")
	dlNoID.status, dlNoID.reason = statusDeadLetter, "no id"
	dup := mk(15, "c1")
	dup.status = statusDuplicate
	acc2 := mk(16, "c5")
	acc2.status, acc2.firstVersion, acc2.lastVersion = statusAccepted, 9, 9
	acc2.events = []encodedEvent{{"E3", []byte("3")}}
	snaps := []eventsource.Snapshot{{AggregateType: "T", AggregateID: "a", Version: 9}}

	b := assembleBatch(claim, "T", []*item{acc, none, rej, dl, dlNoID, dup, acc2}, snaps)
	if b.Claim != claim || b.NextOffset != 17 || len(b.Snapshots) != 1 {
		t.Fatalf("batch claim %+v next %d snapshots %d", b.Claim, b.NextOffset, len(b.Snapshots))
	}
	var seqs, versions []int64
	for _, e := range b.Events {
		seqs = append(seqs, e.Seq)
		versions = append(versions, e.Version)
		if e.Topic != ptopic || e.Partition != 2 || e.AggregateType != "T" || e.AggregateID != "a" {
			t.Errorf("event %+v", e)
		}
	}
	if !slices.Equal(seqs, []int64{41, 42, 43}) || !slices.Equal(versions, []int64{7, 8, 9}) {
		t.Fatalf("seqs %v versions %v, want 41..43 and 7..9", seqs, versions)
	}
	if acc.firstSeq != 41 || acc.lastSeq != 42 || acc2.firstSeq != 43 || acc2.lastSeq != 43 {
		t.Errorf("items' seqs: %d..%d, %d..%d", acc.firstSeq, acc.lastSeq, acc2.firstSeq, acc2.lastSeq)
	}
	var outcomes []string
	for _, r := range b.Results {
		outcomes = append(outcomes, r.CommandID+":"+string(r.Outcome))
		if r.AggregateType != "T" || r.PartitionKey != claim.PartitionKey || len(r.RequestHash) != 1 {
			t.Errorf("result %+v", r)
		}
	}
	if got := strings.Join(outcomes, " "); got != "c1:accepted c2:accepted c3:rejected c4:dead_lettered c5:accepted" {
		t.Fatalf("results %s", got)
	}
	if r := b.Results[0]; r.FirstSeq != 41 || r.LastSeq != 42 || r.FirstVersion != 7 || r.LastVersion != 8 {
		t.Errorf("result of c1: %+v", r)
	}
	if len(b.DeadLetters) != 2 || b.DeadLetters[0].Offset != 13 || b.DeadLetters[1].CommandID != "" || b.DeadLetters[1].Error != "no id" ||
		string(b.DeadLetters[0].Value) != "v" || b.DeadLetters[0].Headers[HeaderCommandID] != "c4" {
		t.Fatalf("dead letters %+v", b.DeadLetters)
	}
}
