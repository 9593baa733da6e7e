package decidertest

import (
	"errors"
	"strings"
	"testing"

	"github.com/onceflow/onceflow/eventsource"
)

type add struct{ N int }
type added struct{ N int }

var errNegative = errors.New("negative")

func counter() eventsource.Decider[int, add, added] {
	return eventsource.Decider[int, add, added]{
		Initial: func() int { return 0 },
		Decide: func(s int, c add) ([]added, error) {
			if s+c.N < 0 {
				return nil, errNegative
			}
			return []added{{N: c.N}}, nil
		},
		Evolve: func(s int, e added) int { return s + e.N },
	}
}

func TestRunPasses(t *testing.T) {
	reg := eventsource.NewRegistry()
	if err := eventsource.Register[added](reg, "added"); err != nil {
		t.Fatal(err)
	}
	Run(t, counter(), []Scenario[int, add, added]{
		{Name: "add", When: add{N: 2}, Then: []added{{N: 2}}, Check: func(t testing.TB, s int) {
			if s != 2 {
				t.Fatalf("state %d", s)
			}
		}},
		{Name: "reject", Given: []added{{N: 1}}, When: add{N: -2}, WantErr: errNegative, WantMsg: "negative"},
	}, WithRegistry(reg), WithInvariant(func(s int) error {
		if s < 0 {
			return errors.New("below zero")
		}
		return nil
	}))
}

// Each broken expectation is reported, naming what differs.
func TestRunCatches(t *testing.T) {
	type unexported struct{ n int }
	reg := eventsource.NewRegistry()
	_ = eventsource.Register[added](reg, "added")
	nondet := 0
	flaky := counter()
	flaky.Decide = func(s int, c add) ([]added, error) { nondet++; return []added{{N: nondet}}, nil }
	for _, tc := range []struct {
		name string
		d    eventsource.Decider[int, add, added]
		sc   Scenario[int, add, added]
		opts []Option
		want string
	}{
		{"wrong events", counter(), Scenario[int, add, added]{When: add{N: 2}, Then: []added{{N: 3}}}, nil, "want"},
		{"accepted, want rejection", counter(), Scenario[int, add, added]{When: add{N: 2}, WantErr: errNegative}, nil, "want a rejection"},
		{"rejected, want events", counter(), Scenario[int, add, added]{When: add{N: -1}, Then: []added{{N: -1}}}, nil, "Decide rejected"},
		{"wrong error", counter(), Scenario[int, add, added]{When: add{N: -1}, WantErr: errors.New("other")}, nil, "want an error matching"},
		{"wrong text", counter(), Scenario[int, add, added]{When: add{N: -1}, WantMsg: "nope"}, nil, `rejection text "negative"`},
		{"not deterministic", flaky, Scenario[int, add, added]{When: add{N: 1}, Then: []added{{N: 1}}}, nil, "not deterministic"},
		{"invariant", counter(), Scenario[int, add, added]{Given: []added{{N: 5}}, When: add{N: 1}, Then: []added{{N: 1}}},
			[]Option{WithInvariant(func(s int) error {
				if s > 5 {
					return errors.New("above five")
				}
				return nil
			})}, "break an invariant: above five"},
		{"unregistered event", counter(), Scenario[int, add, added]{When: add{N: 1}, Then: []added{{N: 1}}}, []Option{WithRegistry(eventsource.NewRegistry())}, "produced event 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var o options
			for _, opt := range tc.opts {
				opt(&o)
			}
			err := run(tc.d, tc.sc, &o, t)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("run = %v, want an error containing %q", err, tc.want)
			}
		})
	}
	_ = unexported{}
}
