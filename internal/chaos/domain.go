package chaos

import (
	"fmt"
	"reflect"

	"github.com/onceflow/onceflow/eventsource"
	"github.com/onceflow/onceflow/samples/inventory/stock"
)

// Domain is what the checker knows about the aggregate under test: its
// registry (commands, events), its Decider (the sequential replay of the
// handled commands and the fold of the stored events), its invariants, how
// to decode a stored or published state, and when two states are equal.
// CheckWith is generic over it; DomainOf adapts any eventsource.Aggregate.
type Domain struct {
	Registry    *eventsource.Registry
	Initial     func() any
	Decide      func(state, cmd any) ([]any, error) // cmd as the registry decodes it
	Evolve      func(state, ev any) (any, error)    // ev as the registry decodes it
	Invariants  func(state any) error               // nil: none
	DecodeState func(data []byte) (any, error)
	Equal       func(a, b any) bool
}

// DomainOf adapts an aggregate to the checker. invariants may be nil;
// equal nil means reflect.DeepEqual.
func DomainOf[S, C, E any](agg *eventsource.Aggregate[S, C, E], invariants func(S) error, equal func(a, b S) bool) Domain {
	if equal == nil {
		equal = func(a, b S) bool { return reflect.DeepEqual(a, b) }
	}
	d := Domain{
		Registry: agg.Registry,
		Initial:  func() any { return agg.Decider.Initial() },
		Decide: func(state, cmd any) ([]any, error) {
			c, ok := cmd.(C)
			if !ok {
				return nil, fmt.Errorf("%T is not a command of %s", cmd, agg.Type)
			}
			evs, err := agg.Decider.Decide(state.(S), c)
			out := make([]any, len(evs))
			for i, e := range evs {
				out[i] = e
			}
			return out, err
		},
		Evolve: func(state, ev any) (any, error) {
			e, ok := ev.(E)
			if !ok {
				return state, fmt.Errorf("%T is not an event of %s", ev, agg.Type)
			}
			return agg.Decider.Evolve(state.(S), e), nil
		},
		DecodeState: func(data []byte) (any, error) {
			var s S
			err := agg.Registry.Codec().Unmarshal(data, &s)
			return s, err
		},
		Equal: func(a, b any) bool { return equal(a.(S), b.(S)) },
	}
	if invariants != nil {
		d.Invariants = func(s any) error { return invariants(s.(S)) }
	}
	return d
}

// Inventory is the domain of the inventory sample, the service the harness
// runs.
func Inventory() Domain {
	agg, err := stock.NewAggregate()
	if err != nil {
		panic(err) // a static aggregate: a bug
	}
	return DomainOf(agg, stockInvariants, sameState)
}

func sameState(a, b stock.State) bool {
	if len(a.Reservations) == 0 && len(b.Reservations) == 0 {
		return a.OnHand == b.OnHand && a.Reserved == b.Reserved
	}
	return reflect.DeepEqual(a, b)
}

func stockInvariants(s stock.State) error {
	var sum int64
	for id, q := range s.Reservations {
		if q <= 0 {
			return fmt.Errorf("reservation %q holds %d", id, q)
		}
		sum += q
	}
	switch {
	case s.OnHand < 0:
		return fmt.Errorf("on-hand %d is negative", s.OnHand)
	case s.Reserved < 0 || s.Reserved > s.OnHand:
		return fmt.Errorf("reserved %d outside [0, on-hand %d]", s.Reserved, s.OnHand)
	case sum != s.Reserved:
		return fmt.Errorf("reserved %d but reservations sum to %d", s.Reserved, sum)
	}
	return nil
}
