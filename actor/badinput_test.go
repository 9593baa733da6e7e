package actor_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/onceflow/onceflow/actor"
	"github.com/onceflow/onceflow/txn"
)

// produceTo writes a raw record to one partition of the command topic.
func (e *env) produceTo(partition int32, key, value []byte, headers map[string]string) int64 {
	e.t.Helper()
	return int64(e.produce(partition, key, value, headers).Offset)
}

// Malformed records beyond TestOutcomes' set, all in the partition of one
// live aggregate: each ends as a dead letter with the raw record (and a
// dead-lettered result when it has a usable command id), and the partition
// keeps moving: a command sent after them is accepted.
func TestMalformedRecordsAreDeadLetteredAndThePartitionMoves(t *testing.T) {
	e := newEnv(t)
	e.start("a")
	c := e.client(actor.WithResults(txn.NewStore(e.pool), time.Second))
	first, err := send(t, c, Deposit{Account: "acc-9", Amount: 5})
	if err != nil {
		t.Fatal(err)
	}
	p := first.Partition
	hdr := func(id, typ string) map[string]string {
		return map[string]string{actor.HeaderCommandID: id, actor.HeaderCommandType: typ}
	}
	good := []byte(`{"account":"acc-9","amount":1}`)
	huge := []byte(`{"account":"acc-9","amount":1,"pad":"` + strings.Repeat("p", 900_000) + `"}`)
	cases := []struct {
		name       string
		key, value []byte
		headers    map[string]string
		id         string // "" when the record has no usable command id
		reason     string
	}{
		{"empty key", nil, good, hdr("bad-emptykey", "test.Deposit"), "bad-emptykey", "empty record key"},
		{"invalid UTF-8 key", []byte("acc-\xff"), good, hdr("bad-utf8key", "test.Deposit"), "bad-utf8key", "record key is not valid UTF-8"},
		{"missing type header", []byte("acc-9"), good, map[string]string{actor.HeaderCommandID: "bad-notype"}, "bad-notype", "missing header onceflow-command-type"},
		{"oversized command id", []byte("acc-9"), good, hdr(strings.Repeat("x", 300), "test.Deposit"), "", "is 300 bytes, limit 200"},
		{"huge payload", []byte("acc-9"), huge, hdr("bad-huge", "test.Deposit"), "bad-huge", "decode command"},
		{"empty value", []byte("acc-9"), nil, hdr("bad-empty", "test.Deposit"), "bad-empty", "decode command"},
	}
	offsets := map[int64]int{}
	for i, tc := range cases {
		offsets[e.produceTo(p, tc.key, tc.value, tc.headers)] = i
	}
	after, err := send(t, c, Deposit{Account: "acc-9", Amount: 7})
	if err != nil || after.Partition != p || after.LastVersion != 2 {
		t.Fatalf("command after the malformed records: %+v %v (want accepted as version 2 in partition %d)", after, err, p)
	}
	store := txn.NewStore(e.pool)
	eventually(t, 30*time.Second, "dead letters", func() error {
		dls, err := store.DeadLetters(context.Background(), txn.DeadLetterQuery{})
		if err != nil {
			return err
		}
		if len(dls) != len(cases) {
			return fmt.Errorf("%d dead letters, want %d", len(dls), len(cases))
		}
		return nil
	})
	dls, _ := store.DeadLetters(context.Background(), txn.DeadLetterQuery{})
	for _, d := range dls {
		i, ok := offsets[d.Offset]
		if !ok || d.Partition != p {
			t.Errorf("dead letter at %d/%d is none of the malformed records", d.Partition, d.Offset)
			continue
		}
		tc := cases[i]
		if !strings.Contains(d.Error, tc.reason) {
			t.Errorf("%s: dead letter reason %q, want it to contain %q", tc.name, d.Error, tc.reason)
		}
		if string(d.Key) != string(tc.key) || len(d.Value) != len(tc.value) {
			t.Errorf("%s: dead letter lost the raw record (key %q, %d value bytes)", tc.name, d.Key, len(d.Value))
		}
		if tc.id != "" {
			r, err := store.Result(context.Background(), e.agg.Type, tc.id)
			if err != nil || r.Outcome != txn.OutcomeDeadLettered {
				t.Errorf("%s: result %+v %v, want dead_lettered", tc.name, r, err)
			}
		}
	}
	claim, err := store.ReadClaim(context.Background(), txn.PartitionKey{Group: e.group, Topic: e.topic, Partition: p})
	if err != nil || claim.NextOffset != after.Offset+1 {
		t.Fatalf("claim %+v %v: want next_offset %d (past every malformed record)", claim, err, after.Offset+1)
	}
}
