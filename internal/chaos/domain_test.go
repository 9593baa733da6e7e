package chaos

import (
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/onceflow/onceflow/eventsource"
)

// The checker is generic over the aggregate: a counter that must never go
// negative, checked with the same rules as the inventory sample.

type cAdd struct {
	ID string `json:"id"`
	N  int64  `json:"n"`
}

func (c cAdd) AggregateID() string { return c.ID }

type cAdded struct {
	N int64 `json:"n"`
}

type cState struct {
	Total int64 `json:"total"`
}

func counterDomain(t *testing.T) Domain {
	reg := eventsource.NewRegistry()
	if err := errors.Join(eventsource.Register[cAdd](reg, "c.Add"), eventsource.Register[cAdded](reg, "c.Added")); err != nil {
		t.Fatal(err)
	}
	agg := &eventsource.Aggregate[cState, eventsource.Command, any]{Type: "counter", Registry: reg, Decider: eventsource.Decider[cState, eventsource.Command, any]{
		Initial: func() cState { return cState{} },
		Decide: func(s cState, c eventsource.Command) ([]any, error) {
			a := c.(cAdd)
			if s.Total+a.N < 0 {
				return nil, fmt.Errorf("total %d cannot go below zero", s.Total)
			}
			return []any{cAdded{N: a.N}}, nil
		},
		Evolve: func(s cState, e any) cState { s.Total += e.(cAdded).N; return s },
	}}
	return DomainOf(agg, func(s cState) error {
		if s.Total < 0 {
			return fmt.Errorf("total %d", s.Total)
		}
		return nil
	}, nil)
}

func TestCheckWithAnotherAggregate(t *testing.T) {
	dom := counterDomain(t)
	build := func() *Data {
		d := &Data{HighWater: map[int32]int64{0: 3}}
		for i, n := range []int64{5, -2, -9} {
			id := fmt.Sprintf("c%d", i)
			typ, val, _ := dom.Registry.Encode(cAdd{ID: "k", N: n})
			d.Records = append(d.Records, Record{Partition: 0, Offset: int64(i), Key: []byte("k"), Value: val, CommandID: id, HasID: true, Type: typ})
			d.Attempts = append(d.Attempts, Attempt{Key: id, CommandID: id, Aggregate: "k", N: 1})
		}
		add := func(i int, n, version, seq int64) {
			typ, data, _ := dom.Registry.Encode(cAdded{N: n})
			id := fmt.Sprintf("c%d", i)
			d.Events = append(d.Events, Event{Partition: 0, Seq: seq, AggregateID: "k", Version: version, Type: typ, Data: data, CommandID: id})
			d.Results = append(d.Results, Result{CommandID: id, Partition: 0, Offset: int64(i), AggregateID: "k", Outcome: "accepted", FirstVersion: version, LastVersion: version, FirstSeq: seq, LastSeq: seq})
			d.Attempts[i].HTTP, d.Attempts[i].FirstVersion, d.Attempts[i].LastVersion, d.Attempts[i].Offset = 200, version, version, int64(i)
		}
		add(0, 5, 1, 1)
		add(1, -2, 2, 2)
		d.Results = append(d.Results, Result{CommandID: "c2", Partition: 0, Offset: 2, AggregateID: "k", Outcome: "rejected", Reason: "total 3 cannot go below zero"})
		d.Attempts[2].HTTP, d.Attempts[2].Code, d.Attempts[2].Reason = 409, "rejected", "total 3 cannot go below zero"
		d.Claims = []Claim{{Partition: 0, NextOffset: 3, NextSeq: 3, PublishedSeq: 2}}
		for _, e := range d.Events {
			d.History = append(d.History, TopicRecord{Partition: 0, Offset: e.Seq - 1, Key: "k", Value: e.Data, Headers: map[string]string{
				"onceflow-seq": fmt.Sprint(e.Seq), "onceflow-event-type": e.Type, "onceflow-version": fmt.Sprint(e.Version),
				"onceflow-command-id": e.CommandID, "onceflow-source-partition": "0"}})
		}
		d.States = []TopicRecord{{Key: "k", Value: []byte(`{"total":3}`), Headers: map[string]string{"onceflow-version": "2"}}}
		return d
	}
	if res := CheckWith(build(), dom); len(res.Violations) != 0 {
		t.Fatalf("violations on a clean counter history: %v", res.Violations)
	}
	// The rejected command applied anyway: total -6.
	d := build()
	typ, data, _ := dom.Registry.Encode(cAdded{N: -9})
	d.Events = append(d.Events, Event{Partition: 0, Seq: 3, AggregateID: "k", Version: 3, Type: typ, Data: data, CommandID: "c2"})
	d.Claims[0].NextSeq = 4
	got := kinds(CheckWith(d, dom))
	for _, want := range []string{VEvents, VInvariant} {
		if !slices.Contains(got, want) {
			t.Errorf("a rejected command applied anyway: kinds %v, want %s among them; details:\n%s", got, want, details(CheckWith(d, dom)))
		}
	}
}
