package chaos

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/onceflow/onceflow/samples/inventory/api"
	"github.com/onceflow/onceflow/samples/inventory/stock"
)

// history builds a consistent synthetic run: commands handled one after
// another in partition 0, exactly once, as the runtime would store them.
type history struct {
	t    *testing.T
	d    *Data
	reg  interface{}
	st   map[string]stock.State
	ver  map[string]int64
	seq  int64
	next int64
}

func newHistory(t *testing.T) *history {
	return &history{t: t, d: &Data{HighWater: map[int32]int64{}}, st: map[string]stock.State{}, ver: map[string]int64{}, seq: 1}
}

// send handles cmd (op names the API operation) and records the client's
// answer.
func (h *history) send(key, op string, cmd stock.Command) string {
	h.t.Helper()
	reg, _ := stock.NewRegistry()
	agg := cmd.AggregateID()
	id := api.CommandID(op, agg, key)
	typ, val, err := reg.Encode(cmd)
	if err != nil {
		h.t.Fatal(err)
	}
	off := h.next
	h.next++
	h.d.Records = append(h.d.Records, Record{Partition: 0, Offset: off, Key: []byte(agg), Value: val, CommandID: id, HasID: true, Type: typ})
	st, ok := h.st[agg]
	if !ok {
		st = stock.Initial()
	}
	a := Attempt{Key: key, CommandID: id, Op: op, Aggregate: agg, N: 1}
	evs, derr := stock.Decide(st, cmd)
	r := Result{CommandID: id, Partition: 0, Offset: off, AggregateID: agg}
	if derr != nil {
		r.Outcome, r.Reason = "rejected", derr.Error()
		a.HTTP, a.Code, a.Reason = 409, "rejected", derr.Error()
	} else {
		r.Outcome = "accepted"
		r.FirstVersion, r.FirstSeq = h.ver[agg]+1, h.seq
		for _, ev := range evs {
			name, data, _ := reg.Encode(ev)
			h.ver[agg]++
			h.d.Events = append(h.d.Events, Event{Partition: 0, Seq: h.seq, AggregateID: agg, Version: h.ver[agg], Type: name, Data: data, CommandID: id})
			h.seq++
			st = stock.Evolve(st, ev)
		}
		r.LastVersion, r.LastSeq = h.ver[agg], h.seq-1
		a.HTTP, a.FirstVersion, a.LastVersion, a.Offset = 200, r.FirstVersion, r.LastVersion, off
	}
	h.st[agg] = st
	h.d.Results = append(h.d.Results, r)
	h.d.Attempts = append(h.d.Attempts, a)
	h.d.HighWater[0] = h.next
	h.d.Claims = []Claim{{Partition: 0, NextOffset: h.next, NextSeq: h.seq, Epoch: 3}}
	return id
}

// resend puts the same command id on the topic again (a client retry) and
// records the duplicate answer.
func (h *history) resend(id string) {
	for _, r := range h.d.Records {
		if r.CommandID == id {
			r.Offset = h.next
			h.next++
			h.d.Records = append(h.d.Records, r)
			break
		}
	}
	for _, a := range h.d.Attempts {
		if a.CommandID == id {
			a.N, a.Duplicate = 2, a.HTTP == 200
			h.d.Attempts = append(h.d.Attempts, a)
			break
		}
	}
	h.d.HighWater[0] = h.next
	h.d.Claims[0].NextOffset = h.next
}

func (h *history) malformed() {
	off := h.next
	h.next++
	h.d.Records = append(h.d.Records, Record{Partition: 0, Offset: off, Key: []byte("x"), Value: []byte("\xff")})
	h.d.DeadLetters = append(h.d.DeadLetters, DeadLetter{Partition: 0, Offset: off, Error: "missing header onceflow-command-id"})
	h.d.Injected = append(h.d.Injected, Injected{Kind: "missing_headers", Expect: "dead_letter", Partition: 0, Offset: off})
	h.d.HighWater[0] = h.next
	h.d.Claims[0].NextOffset = h.next
}

// sample is a small run: receives, reservations, a rejection, a resend, a
// malformed record.
func sample(t *testing.T) (*history, map[string]string) {
	h := newHistory(t)
	ids := map[string]string{}
	ids["recv"] = h.send("k1", "receive", stock.ReceiveStock{Warehouse: "ams-1", SKU: "A", Qty: 10})
	ids["res"] = h.send("k2", "reserve", stock.Reserve{Warehouse: "ams-1", SKU: "A", ReservationID: "r1", Qty: 4})
	ids["over"] = h.send("k3", "reserve", stock.Reserve{Warehouse: "ams-1", SKU: "A", ReservationID: "r2", Qty: 7})
	ids["ship"] = h.send("k4", "ship", stock.Ship{Warehouse: "ams-1", SKU: "A", ReservationID: "r1"})
	ids["recvB"] = h.send("k5", "receive", stock.ReceiveStock{Warehouse: "ber-2", SKU: "B", Qty: 3})
	h.resend(ids["res"])
	h.malformed()
	ids["recv2"] = h.send("k6", "receive", stock.ReceiveStock{Warehouse: "ams-1", SKU: "A", Qty: 1})
	return h, ids
}

// publish fills the history and state topics as a correct publisher would
// from the stored events: every event once, in seq order, and the latest
// state of every aggregate.
func (h *history) publish() {
	h.d.History, h.d.States = nil, nil
	reg, _ := stock.NewRegistry()
	evs := slices.Clone(h.d.Events)
	slices.SortFunc(evs, func(a, b Event) int { return int(a.Seq - b.Seq) })
	states := map[string]stock.State{}
	versions := map[string]int64{}
	for i, e := range evs {
		h.d.History = append(h.d.History, TopicRecord{Partition: e.Partition, Offset: int64(i), Key: e.AggregateID, Value: e.Data, Headers: map[string]string{
			"onceflow-seq": strconv.FormatInt(e.Seq, 10), "onceflow-event-type": e.Type, "onceflow-version": strconv.FormatInt(e.Version, 10),
			"onceflow-command-id": e.CommandID, "onceflow-source-partition": strconv.Itoa(int(e.Partition)),
		}})
		v, _ := reg.Decode(e.Type, e.Data)
		st, ok := states[e.AggregateID]
		if !ok {
			st = stock.Initial()
		}
		if ev, ok := v.(stock.Event); ok {
			states[e.AggregateID] = stock.Evolve(st, ev)
		}
		versions[e.AggregateID] = e.Version
	}
	for _, agg := range slices.Sorted(maps.Keys(states)) {
		data, _ := json.Marshal(states[agg])
		h.d.States = append(h.d.States, TopicRecord{Key: agg, Value: data, Headers: map[string]string{"onceflow-version": strconv.FormatInt(versions[agg], 10)}})
	}
}

func kinds(res CheckResult) []string {
	var out []string
	for k := range res.ViolationsByKind {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func TestCheckCleanHistory(t *testing.T) {
	h, _ := sample(t)
	h.publish()
	// A repeat of an earlier seq (a publish redone after a crash) is allowed.
	h.d.History = append(h.d.History, h.d.History[1])
	res := Check(h.d)
	if len(res.Violations) != 0 {
		t.Fatalf("violations on a clean history: %v", res.Violations)
	}
	if res.Commands != 6 || res.Outcomes["accepted"] != 5 || res.Outcomes["rejected"] != 1 || res.DuplicateRecords != 1 ||
		res.DuplicateAnswers != 1 || res.Aggregates != 2 || res.DeadLetters != 1 || res.HistoryRepeats != 1 || res.StateKeys != 2 {
		t.Fatalf("stats: %+v", res)
	}
}

// Each mutation breaks one promise; the checker must name it.
func TestCheckCatches(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mutate func(h *history, ids map[string]string)
		want   []string
	}{
		{"effect applied twice", func(h *history, ids map[string]string) {
			// The receive's event stored again under the next version and seq.
			ev := h.d.Events[0]
			ev.Version, ev.Seq = 4, h.seq
			h.d.Events = append(h.d.Events, ev)
			h.d.Claims[0].NextSeq++
		}, []string{VEvents, VState, VVersions}},
		{"accepted command lost", func(h *history, ids map[string]string) {
			h.d.Results = slices.DeleteFunc(h.d.Results, func(r Result) bool { return r.CommandID == ids["recvB"] })
			h.d.Events = slices.DeleteFunc(h.d.Events, func(e Event) bool { return e.CommandID == ids["recvB"] })
		}, []string{VLost, VSeq}},
		{"event lost", func(h *history, ids map[string]string) {
			h.d.Events = slices.DeleteFunc(h.d.Events, func(e Event) bool { return e.CommandID == ids["ship"] })
		}, []string{VEvents, VSeq, VState, VVersions}},
		{"reply disagrees", func(h *history, ids map[string]string) {
			h.d.Attempts[1].FirstVersion, h.d.Attempts[1].LastVersion = 7, 7
		}, []string{VReplyMismatch}},
		{"rejected but accepted in sequence", func(h *history, ids map[string]string) {
			for i := range h.d.Results {
				if h.d.Results[i].CommandID == ids["recv2"] {
					h.d.Results[i] = Result{CommandID: ids["recv2"], Partition: 0, Offset: h.d.Results[i].Offset, AggregateID: "ams-1/A", Outcome: "rejected", Reason: "no"}
				}
			}
			h.d.Events = slices.DeleteFunc(h.d.Events, func(e Event) bool { return e.CommandID == ids["recv2"] })
			h.d.Claims[0].NextSeq--
		}, []string{VReplyMismatch, VState}},
		{"rejection reason differs", func(h *history, ids map[string]string) {
			for i := range h.d.Results {
				if h.d.Results[i].CommandID == ids["over"] {
					h.d.Results[i].Reason = "something else"
				}
			}
		}, []string{VReplyMismatch, VState}},
		{"record skipped, handled at a later offset", func(h *history, ids map[string]string) {
			// The first record of the reserve was passed over; its resend got the outcome.
			for i := range h.d.Results {
				if h.d.Results[i].CommandID == ids["res"] {
					h.d.Results[i].Offset = 5
				}
			}
		}, []string{VSkipped, VReplyMismatch, VState}},
		{"partition not drained", func(h *history, ids map[string]string) { h.d.HighWater[0] += 2 }, []string{VNotDrained}},
		{"stranger dead letter", func(h *history, ids map[string]string) {
			h.d.DeadLetters = append(h.d.DeadLetters, DeadLetter{Partition: 0, Offset: 2, Error: "?"})
		}, []string{VUnaccountedDead}},
		{"malformed record without dead letter", func(h *history, ids map[string]string) { h.d.DeadLetters = nil },
			[]string{VInjectedUnhandled, VMalformedNoDeadLtr}},
		{"outcome nobody asked for", func(h *history, ids map[string]string) {
			h.d.Results = append(h.d.Results, Result{CommandID: "ghost", Partition: 0, Offset: 0, Outcome: "rejected"})
		}, []string{VPhantom, VResultRecord, VState}},
		{"command never resolved", func(h *history, ids map[string]string) {
			h.d.Attempts = append(h.d.Attempts, Attempt{Key: "k9", CommandID: "inventory:receive:ams-1/A:k9", Op: "receive", N: 1, Err: "timeout"})
		}, []string{VUnresolved}},
		{"negative stock", func(h *history, ids map[string]string) {
			// A second ship of r1 stored as accepted: the fold goes negative.
			for _, e := range h.d.Events {
				if e.CommandID == ids["ship"] {
					e.Version, e.Seq, e.CommandID = 5, h.seq, "dup-ship"
					h.d.Events = append(h.d.Events, e)
				}
			}
		}, []string{VEvents, VInvariant, VState, VSeq}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, ids := sample(t)
			tc.mutate(h, ids)
			h.publish() // the topics as published from the (mutated) store
			res := Check(h.d)
			got := kinds(res)
			for _, k := range tc.want {
				if !slices.Contains(got, k) {
					t.Errorf("violation kinds %v, want %s among them; details:\n%s", got, k, details(res))
				}
			}
			for _, k := range got {
				if !slices.Contains(tc.want, k) {
					t.Errorf("unexpected violation kind %s; details:\n%s", k, details(res))
				}
			}
		})
	}
}

// Each break of the published topics is named by the checker.
func TestCheckCatchesPublishBreaks(t *testing.T) {
	for _, tc := range []struct {
		name   string
		want   []string
		topics func(h *history)
	}{
		{name: "history skips a seq", want: []string{VHistoryGap}, topics: func(h *history) {
			h.d.History = slices.Delete(h.d.History, 2, 3)
		}},
		{name: "history misses its last events", want: []string{VHistoryGap}, topics: func(h *history) {
			h.d.History = h.d.History[:len(h.d.History)-1]
		}},
		{name: "history out of order", want: []string{VHistoryGap}, topics: func(h *history) {
			h.d.History[1], h.d.History[2] = h.d.History[2], h.d.History[1]
		}},
		{name: "history record differs from the store", want: []string{VHistoryMismatch}, topics: func(h *history) {
			h.d.History[0].Value = []byte(`{"qty":999}`)
		}},
		{name: "state topic stale", want: []string{VStateTopic}, topics: func(h *history) {
			h.d.States = append(h.d.States, TopicRecord{Key: h.d.States[0].Key, Value: []byte(`{"on_hand":1}`), Headers: map[string]string{"onceflow-version": "1"}})
		}},
		{name: "state topic misses an aggregate", want: []string{VStateTopic}, topics: func(h *history) { h.d.States = h.d.States[1:] }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, _ := sample(t)
			h.publish()
			tc.topics(h)
			got := kinds(Check(h.d))
			if !slices.Equal(got, tc.want) {
				t.Errorf("violation kinds %v, want %v; details:\n%s", got, tc.want, details(Check(h.d)))
			}
		})
	}
}

// project fills the read models as correct projections would: the fold of
// every aggregate's events, positions at each partition's last seq.
func (h *history) project() {
	rm := &ReadModels{}
	last := map[int32]int64{}
	for _, e := range h.d.Events {
		last[e.Partition] = max(last[e.Partition], e.Seq)
	}
	for _, name := range inventoryProjections {
		for p, seq := range last {
			rm.Positions = append(rm.Positions, ProjectionPosition{Name: name, Version: 1, Partition: p, Position: seq})
		}
	}
	for _, agg := range slices.Sorted(maps.Keys(h.st)) {
		st := h.st[agg]
		rm.Stock = append(rm.Stock, StockRow{AggregateID: agg, OnHand: st.OnHand, Reserved: st.Reserved, Version: h.ver[agg]})
		for id, qty := range st.Reservations {
			rm.Reservations = append(rm.Reservations, ReservationRow{AggregateID: agg, ReservationID: id, Qty: qty})
		}
	}
	h.d.ReadModels = rm
}

func TestCheckCatchesReadModelBreaks(t *testing.T) {
	for _, tc := range []struct {
		name   string
		want   []string
		mutate func(h *history)
	}{
		{name: "clean", mutate: func(h *history) {}},
		{name: "an event applied twice", want: []string{VReadModel}, mutate: func(h *history) { h.d.ReadModels.Stock[0].OnHand *= 2 }},
		{name: "a row missing", want: []string{VReadModel}, mutate: func(h *history) { h.d.ReadModels.Stock = h.d.ReadModels.Stock[1:] }},
		{name: "a reservation left open", want: []string{VReadModel}, mutate: func(h *history) {
			h.d.ReadModels.Reservations = append(h.d.ReadModels.Reservations, ReservationRow{AggregateID: h.d.ReadModels.Stock[0].AggregateID, ReservationID: "ghost", Qty: 1})
		}},
		{name: "a projection behind", want: []string{VProjectionBehind}, mutate: func(h *history) { h.d.ReadModels.Positions[0].Position-- }},
		{name: "a projection halted", want: []string{VProjectionBehind}, mutate: func(h *history) { h.d.ReadModels.Positions[1].Halted = "poison" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, _ := sample(t)
			h.publish()
			h.project()
			tc.mutate(h)
			got := kinds(Check(h.d))
			if !slices.Equal(got, tc.want) {
				t.Errorf("violation kinds %v, want %v; details:\n%s", got, tc.want, details(Check(h.d)))
			}
		})
	}
}

func details(res CheckResult) string {
	var b strings.Builder
	for _, v := range res.Violations {
		fmt.Fprintf(&b, "  %s: %s\n", v.Kind, v.Detail)
	}
	return b.String()
}

func TestSummarize(t *testing.T) {
	if got := summarize([]int64{1, 2, 4, 4, 5}); got != "1..5 (5 values), missing from [3], repeated [4]" {
		t.Fatal(got)
	}
	if !oneToN([]int64{3, 1, 2}) || oneToN([]int64{1, 3}) || oneToN([]int64{1, 1}) {
		t.Fatal("oneToN")
	}
}
