package actor

import (
	"slices"
	"testing"

	"github.com/onceflow/onceflow/eventsource"
)

func ho(first, last int64, states map[string]stateRec) *handoff {
	h := &handoff{states: states}
	for s := first; s <= last; s++ {
		h.events = append(h.events, eventsource.StoredEvent{Seq: s})
	}
	return h
}

func seqsOf(evs []eventsource.StoredEvent) []int64 {
	var out []int64
	for _, e := range evs {
		out = append(out, e.Seq)
	}
	return out
}

// The publisher's choice among queued hand-offs: never a gap, never an
// event twice within one incarnation, coalesced under load.
func TestTakeHandoffs(t *testing.T) {
	a := map[string]stateRec{"a": {version: 1}}
	a2 := map[string]stateRec{"a": {version: 2}, "b": {version: 1}}
	for _, tc := range []struct {
		name    string
		pos     int64
		pending []*handoff
		limit   int
		ok      bool
		seqs    []int64
		rest    int
		states  map[string]int64
	}{
		{"continues pos", 4, []*handoff{ho(5, 6, a)}, 100, true, []int64{5, 6}, 0, map[string]int64{"a": 1}},
		{"coalesces contiguous, later state wins", 4, []*handoff{ho(5, 6, a), ho(7, 7, a2), ho(8, 9, nil)}, 100, true, []int64{5, 6, 7, 8, 9}, 0, map[string]int64{"a": 2, "b": 1}},
		{"stops at a gap between hand-offs", 4, []*handoff{ho(5, 6, a), ho(9, 9, a2)}, 100, true, []int64{5, 6}, 1, map[string]int64{"a": 1}},
		{"stops at the limit", 4, []*handoff{ho(5, 6, nil), ho(7, 8, nil), ho(9, 10, nil)}, 3, true, []int64{5, 6, 7, 8}, 1, nil},
		{"drops what is published, trims a partial one", 6, []*handoff{ho(3, 4, nil), ho(5, 8, a)}, 100, true, []int64{7, 8}, 0, map[string]int64{"a": 1}},
		{"a gap before the first: read Postgres", 4, []*handoff{ho(1, 2, nil), ho(7, 8, a)}, 100, false, nil, 1, nil},
		{"nothing queued", 4, nil, 100, false, nil, 0, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			evs, states, rest, ok := takeHandoffs(tc.pos, tc.pending, tc.limit)
			if ok != tc.ok || !slices.Equal(seqsOf(evs), tc.seqs) || len(rest) != tc.rest {
				t.Fatalf("ok %v seqs %v rest %d, want %v %v %d", ok, seqsOf(evs), len(rest), tc.ok, tc.seqs, tc.rest)
			}
			if len(states) != len(tc.states) {
				t.Fatalf("states %v, want %v", states, tc.states)
			}
			for k, v := range tc.states {
				if states[k].version != v {
					t.Fatalf("state of %s at version %d, want %d", k, states[k].version, v)
				}
			}
		})
	}
}
