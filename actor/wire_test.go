package actor

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/onceflow/onceflow/txn"
)

func sampleReplies(n int) []reply {
	out := make([]reply, n)
	for i := range out {
		out[i] = reply{
			Outcome: Outcome{
				CommandID: fmt.Sprintf("cmd-%d", i), Status: txn.OutcomeAccepted, AggregateID: fmt.Sprintf("w1/SKU-%d", i%7),
				Partition: int32(i % 12), Offset: int64(1000 + i), FirstVersion: int64(i), LastVersion: int64(i + 2),
				FirstSeq: int64(-i), LastSeq: 1 << 40,
			},
			SendID: fmt.Sprintf("s%d", i),
		}
		switch i % 3 {
		case 1:
			out[i].Status, out[i].Reason, out[i].Duplicate = txn.OutcomeRejected, "insufficient stock: ünïcode", true
		case 2:
			out[i].Status, out[i].Reason, out[i].PayloadMismatch, out[i].Duplicate = txn.OutcomeDeadLettered, strings.Repeat("x", 300), true, true
		}
	}
	return out
}

// Batched replies decode to exactly what was encoded, split over records
// of bounded size, with every reply in exactly one record, in order.
func TestBatchedRepliesRoundTrip(t *testing.T) {
	for _, tc := range []struct{ n, maxBytes, wantRecords int }{
		{1, maxReplyRecordBytes, 1},
		{1000, maxReplyRecordBytes, 1},
		{1000, 4096, -1}, // several
		{3, 1, 3},        // each reply larger than the bound: one record each
	} {
		in := sampleReplies(tc.n)
		var got []reply
		records := 0
		var buf []byte
		buf = encodeReplies(buf, in, tc.maxBytes, func(rec []byte, n int) {
			records++
			if n < 1 {
				t.Fatalf("record with count %d", n)
			}
			if tc.maxBytes > 400 && len(rec) > tc.maxBytes+400 {
				t.Errorf("record of %d bytes, bound %d", len(rec), tc.maxBytes)
			}
			reps, err := decodeReplies(bytes.Clone(rec))
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			if len(reps) != n {
				t.Fatalf("emitted with count %d, decoded %d", n, len(reps))
			}
			got = append(got, reps...)
		})
		if !reflect.DeepEqual(got, in) {
			t.Fatalf("n=%d max=%d: round trip differs", tc.n, tc.maxBytes)
		}
		if tc.wantRecords > 0 && records != tc.wantRecords {
			t.Errorf("n=%d max=%d: %d records, want %d", tc.n, tc.maxBytes, records, tc.wantRecords)
		}
		if tc.wantRecords < 0 && records < 2 {
			t.Errorf("n=%d max=%d: %d records, want several", tc.n, tc.maxBytes, records)
		}
	}
}

func TestBatchedReplyDecodeRejectsBadInput(t *testing.T) {
	var rec []byte
	encodeReplies(nil, sampleReplies(2), maxReplyRecordBytes, func(b []byte, _ int) { rec = bytes.Clone(b) })
	bad := map[string][]byte{
		"empty":           nil,
		"unknown version": append([]byte{9}, rec[1:]...),
		"trailing bytes":  append(bytes.Clone(rec), 0),
		"huge count":      {1, 0xff, 0xff, 0xff, 0xff, 0x0f},
		"no command id":   encodeOne(reply{Outcome: Outcome{Status: txn.OutcomeAccepted}}),
	}
	for i := 1; i < len(rec); i++ {
		bad[fmt.Sprintf("truncated at %d", i)] = rec[:i]
	}
	for name, b := range bad {
		if _, err := decodeReplies(b); err == nil {
			t.Errorf("%s: decoded without error", name)
		}
	}
}

func encodeOne(r reply) []byte {
	var out []byte
	encodeReplies(nil, []reply{r}, maxReplyRecordBytes, func(b []byte, _ int) { out = bytes.Clone(b) })
	return out
}

// The batched encoding carries every field of Outcome: a field added to
// Outcome without a place in the encoding fails here.
func TestBatchedReplyCarriesEveryOutcomeField(t *testing.T) {
	in := sampleReplies(3)[2]
	in.AggregateID, in.FirstVersion, in.LastVersion, in.FirstSeq, in.LastSeq = "a", 1, 2, 3, 4
	got, err := decodeReplies(encodeOne(in))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	b, _ := json.Marshal(got[0])
	_ = json.Unmarshal(b, &m)
	for i := range reflect.TypeFor[Outcome]().NumField() {
		tag := strings.Split(reflect.TypeFor[Outcome]().Field(i).Tag.Get("json"), ",")[0]
		if _, ok := m[tag]; !ok {
			t.Errorf("Outcome field %q (set in the input) is lost by the batched encoding", tag)
		}
	}
	if !reflect.DeepEqual(got[0], in) {
		t.Errorf("got %+v, want %+v", got[0], in)
	}
}

// FuzzBatchedReply: decoding never panics, and what decodes re-encodes to
// the same bytes.
func FuzzBatchedReply(f *testing.F) {
	encodeReplies(nil, sampleReplies(3), maxReplyRecordBytes, func(b []byte, _ int) { f.Add(bytes.Clone(b)) })
	f.Add([]byte{1, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		reps, err := decodeReplies(b)
		if err != nil {
			return
		}
		var again []byte
		encodeReplies(nil, reps, 1<<30, func(rec []byte, _ int) { again = bytes.Clone(rec) })
		if len(reps) > 0 && !bytes.Equal(again, b) {
			// Varints have one canonical encoding only when minimal;
			// compare the decoded values instead.
			back, err := decodeReplies(again)
			if err != nil || !reflect.DeepEqual(back, reps) {
				t.Fatalf("re-encoding differs: %v", err)
			}
		}
	})
}
