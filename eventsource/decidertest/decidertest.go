package decidertest

import (
	"errors"
	"fmt"
	"reflect"
	"testing"

	"github.com/onceflow/onceflow/eventsource"
)

// Scenario is one given/when/then case.
type Scenario[S, C, E any] struct {
	Name  string
	Given []E // events already stored, folded with Evolve from Initial()
	When  C   // the command
	// Then is the events Decide must return, in order (nil or empty: none).
	// Ignored when WantErr or WantMsg is set.
	Then []E
	// WantErr, when set, requires a rejection matching it (errors.Is).
	WantErr error
	// WantMsg, when set, requires a rejection with exactly this text.
	WantMsg string
	// Check, when set, is called with the state after Then (for accepted
	// commands), for assertions beyond the events.
	Check func(t testing.TB, s S)
}

// Option configures Run.
type Option func(*options)

type options struct {
	reg       *eventsource.Registry
	invariant func(s any) error
}

// WithRegistry checks that every given and produced event encodes and
// decodes back to itself with reg (a registered name, a codec that keeps
// every field).
func WithRegistry(reg *eventsource.Registry) Option { return func(o *options) { o.reg = reg } }

// WithInvariant checks inv on the state after the given events and after
// the produced ones: an accepted command must never break an invariant.
func WithInvariant[S any](inv func(S) error) Option {
	return func(o *options) { o.invariant = func(s any) error { return inv(s.(S)) } }
}

// Run runs each scenario as a subtest of t.
func Run[S, C, E any](t *testing.T, d eventsource.Decider[S, C, E], scenarios []Scenario[S, C, E], opts ...Option) {
	t.Helper()
	if err := d.Validate(); err != nil {
		t.Fatalf("decidertest: %v", err)
	}
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	for _, sc := range scenarios {
		t.Run(sc.Name, func(t *testing.T) {
			t.Helper()
			if err := run(d, sc, &o, t); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// run checks one scenario and returns the first failure.
func run[S, C, E any](d eventsource.Decider[S, C, E], sc Scenario[S, C, E], o *options, t testing.TB) error {
	for i, e := range sc.Given {
		if err := roundTrip(o.reg, e); err != nil {
			return fmt.Errorf("given event %d: %w", i, err)
		}
	}
	state := d.Fold(d.Initial(), sc.Given...)
	if o.invariant != nil {
		if err := o.invariant(state); err != nil {
			return fmt.Errorf("the given events break an invariant: %w", err)
		}
	}
	got, err := d.Decide(state, sc.When)
	again, err2 := d.Decide(d.Fold(d.Initial(), sc.Given...), sc.When)
	if !reflect.DeepEqual(got, again) || fmt.Sprint(err) != fmt.Sprint(err2) {
		return fmt.Errorf("Decide is not deterministic: %#v, %v then %#v, %v", got, err, again, err2)
	}
	if sc.WantErr != nil || sc.WantMsg != "" {
		switch {
		case err == nil:
			return fmt.Errorf("Decide accepted with events %#v, want a rejection (%v %q)", got, sc.WantErr, sc.WantMsg)
		case sc.WantErr != nil && !errors.Is(err, sc.WantErr):
			return fmt.Errorf("Decide rejected with %v, want an error matching %v", err, sc.WantErr)
		case sc.WantMsg != "" && err.Error() != sc.WantMsg:
			return fmt.Errorf("rejection text %q, want %q", err.Error(), sc.WantMsg)
		case len(got) > 0:
			return fmt.Errorf("a rejection also returned events %#v (the runtime stores none)", got)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("Decide rejected: %v, want events %#v", err, sc.Then)
	}
	if !(len(got) == 0 && len(sc.Then) == 0) && !reflect.DeepEqual(got, sc.Then) {
		return fmt.Errorf("events %#v, want %#v", got, sc.Then)
	}
	for i, e := range got {
		if err := roundTrip(o.reg, e); err != nil {
			return fmt.Errorf("produced event %d: %w", i, err)
		}
	}
	after := d.Fold(state, got...)
	if o.invariant != nil {
		if err := o.invariant(after); err != nil {
			return fmt.Errorf("the produced events break an invariant: %w", err)
		}
	}
	if sc.Check != nil {
		sc.Check(t, after)
	}
	return nil
}

func roundTrip(reg *eventsource.Registry, e any) error {
	if reg == nil {
		return nil
	}
	name, data, err := reg.Encode(e)
	if err != nil {
		return err
	}
	back, err := reg.Decode(name, data)
	if err != nil {
		return fmt.Errorf("decode %s %s: %w", name, data, err)
	}
	if !reflect.DeepEqual(back, e) {
		return fmt.Errorf("%T %+v comes back from the codec as %+v: it would be replayed differently than it was decided", e, e, back)
	}
	return nil
}
