package eventsource_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/onceflow/onceflow/eventsource"
)

// These tests are pure: no Postgres, no Kafka.

// stateAgg returns an aggregate with state S, a do-nothing decider and a
// registry built with opts.
func stateAgg[S any](snapshotEvery int, opts ...eventsource.RegistryOption) *eventsource.Aggregate[S, any, any] {
	return &eventsource.Aggregate[S, any, any]{
		Type:          "test.state",
		Registry:      eventsource.NewRegistry(opts...),
		SnapshotEvery: snapshotEvery,
		Decider: eventsource.Decider[S, any, any]{
			Initial: func() S { var s S; return s },
			Decide:  func(S, any) ([]any, error) { return nil, nil },
			Evolve:  func(s S, _ any) S { return s },
		},
	}
}

// wantCodecError checks that err is a *StateCodecError for the field.
func wantCodecError(t *testing.T, err error, stateType reflect.Type, field, reason string) {
	t.Helper()
	var ce *eventsource.StateCodecError
	if !errors.As(err, &ce) {
		t.Fatalf("Validate = %v, want a *StateCodecError", err)
	}
	if ce.AggregateType != "test.state" || ce.Type != stateType || ce.Field != field || !strings.Contains(ce.Reason, reason) {
		t.Fatalf("StateCodecError = %+v, want type %v, field %q, reason containing %q", ce, stateType, field, reason)
	}
	msg := err.Error()
	for _, want := range []string{`"test.state"`, stateType.String(), field, "export the field", "json.Marshaler", "Codec", "SnapshotEvery: -1"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not mention %q", msg, want)
		}
	}
}

// wantRoundTripError checks that err is a *SnapshotRoundTripError for the
// field with the given values.
func wantRoundTripError(t *testing.T, b []byte, err error, stateType reflect.Type, field, before, after string) {
	t.Helper()
	if b != nil {
		t.Errorf("EncodeState returned bytes %s with its error", b)
	}
	if !errors.Is(err, eventsource.ErrSnapshotRoundTrip) {
		t.Fatalf("EncodeState = %v, want ErrSnapshotRoundTrip", err)
	}
	var re *eventsource.SnapshotRoundTripError
	if !errors.As(err, &re) {
		t.Fatalf("EncodeState = %v, want a *SnapshotRoundTripError", err)
	}
	if re.AggregateType != "test.state" || re.Type != stateType || re.Field != field || re.Before != before || re.After != after {
		t.Fatalf("SnapshotRoundTripError = %+v, want type %v, field %q, %s -> %s", re, stateType, field, before, after)
	}
	for _, want := range []string{`"test.state"`, stateType.String(), field, before, after} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

func TestValidateRejectsUnexportedStateField(t *testing.T) {
	t.Parallel()
	type State struct{ balance int64 }
	err := stateAgg[State](0).Validate()
	wantCodecError(t, err, reflect.TypeFor[State](), "State.balance", "unexported")
}

// Types for the nested cases (methods need package-level types).
type (
	inner    struct{ balance int64 }
	Account  struct{ Balance, pending int64 }
	embedded struct{ Total int64 }
	ItemNode struct {
		Children []ItemNode
		qty      int64
	}
	onlyMarshals int64
)

func (o onlyMarshals) MarshalJSON() ([]byte, error) { return json.Marshal(fmt.Sprint(int64(o))) }

func TestValidateRejectsNestedStateFields(t *testing.T) {
	t.Parallel()
	type Embeds struct{ inner }
	type Pointer struct{ Acc *Account }
	type Slice struct{ Accs []Account }
	type Array struct{ Accs [2]Account }
	type Map struct{ ByID map[string]*Account }
	type Tagged struct {
		Balance int64
		Pending int64 `json:"-"`
	}
	type Unexported struct{ acc Account }
	type Chan struct{ C chan int }
	type Func struct{ F func() }
	type Complex struct{ C complex128 }
	type Iface struct{ S fmt.Stringer }
	type EmbedsPointer struct{ *embedded }
	type FloatKey struct{ M map[float64]int64 }
	type BigValue struct{ Amount big.Int }
	type MapBigValue struct{ M map[string]big.Int }
	type Recursive struct{ Root ItemNode }
	type MarshalOnly struct{ N onlyMarshals }
	for _, c := range []struct {
		name          string
		validate      func() error
		typ           reflect.Type
		field, reason string
	}{
		{"embedded unexported struct", stateAgg[Embeds](0).Validate, reflect.TypeFor[Embeds](), "Embeds.inner.balance", "unexported"},
		{"pointer", stateAgg[Pointer](0).Validate, reflect.TypeFor[Pointer](), "Pointer.Acc.pending", "unexported"},
		{"pointer state", stateAgg[*Pointer](0).Validate, reflect.TypeFor[*Pointer](), "Pointer.Acc.pending", "unexported"},
		{"slice", stateAgg[Slice](0).Validate, reflect.TypeFor[Slice](), "Slice.Accs[].pending", "unexported"},
		{"array", stateAgg[Array](0).Validate, reflect.TypeFor[Array](), "Array.Accs[].pending", "unexported"},
		{"map value", stateAgg[Map](0).Validate, reflect.TypeFor[Map](), "Map.ByID[].pending", "unexported"},
		{"unnamed state", stateAgg[[]Account](0).Validate, reflect.TypeFor[[]Account](), "[]eventsource_test.Account[].pending", "unexported"},
		{`json:"-"`, stateAgg[Tagged](0).Validate, reflect.TypeFor[Tagged](), "Tagged.Pending", `json:"-"`},
		{"unexported struct field", stateAgg[Unexported](0).Validate, reflect.TypeFor[Unexported](), "Unexported.acc", "unexported"},
		{"chan", stateAgg[Chan](0).Validate, reflect.TypeFor[Chan](), "Chan.C", "cannot encode"},
		{"func", stateAgg[Func](0).Validate, reflect.TypeFor[Func](), "Func.F", "cannot encode"},
		{"complex", stateAgg[Complex](0).Validate, reflect.TypeFor[Complex](), "Complex.C", "cannot encode"},
		{"non-empty interface", stateAgg[Iface](0).Validate, reflect.TypeFor[Iface](), "Iface.S", "non-empty interface"},
		{"embedded pointer to unexported struct", stateAgg[EmbedsPointer](0).Validate, reflect.TypeFor[EmbedsPointer](), "EmbedsPointer.embedded", "cannot allocate"},
		{"float map key", stateAgg[FloatKey](0).Validate, reflect.TypeFor[FloatKey](), "FloatKey.M", "map key"},
		// big.Int's MarshalJSON has a pointer receiver: encoding/json does
		// not call it on a field of the (unaddressable) state.
		{"pointer-receiver MarshalJSON by value", stateAgg[BigValue](0).Validate, reflect.TypeFor[BigValue](), "BigValue.Amount", "pointer receiver"},
		{"pointer-receiver MarshalJSON in a map", stateAgg[MapBigValue](0).Validate, reflect.TypeFor[MapBigValue](), "MapBigValue.M[]", "pointer receiver"},
		{"recursive type", stateAgg[Recursive](0).Validate, reflect.TypeFor[Recursive](), "Recursive.Root.qty", "unexported"},
		{"Marshaler without Unmarshaler", stateAgg[MarshalOnly](0).Validate, reflect.TypeFor[MarshalOnly](), "MarshalOnly.N", "not decode"},
	} {
		t.Run(c.name, func(t *testing.T) {
			wantCodecError(t, c.validate(), c.typ, c.field, c.reason)
		})
	}
}

// selfEncoding has unexported fields but encodes and decodes itself.
type selfEncoding struct{ units, scale int64 }

func (s selfEncoding) MarshalJSON() ([]byte, error) { return json.Marshal([2]int64{s.units, s.scale}) }
func (s *selfEncoding) UnmarshalJSON(b []byte) error {
	var v [2]int64
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	s.units, s.scale = v[0], v[1]
	return nil
}

// textEncoding does the same through encoding.TextMarshaler, both on the
// pointer (it is only held addressably: behind a pointer or in a slice).
type textEncoding struct{ code string }

func (c *textEncoding) MarshalText() ([]byte, error) { return []byte(c.code), nil }
func (c *textEncoding) UnmarshalText(b []byte) error { c.code = string(b); return nil }

func TestValidateAcceptsSelfEncodingTypes(t *testing.T) {
	t.Parallel()
	type Recursive struct {
		Next *Recursive
		Kids []Recursive
		N    int64
	}
	type State struct {
		Money    selfEncoding
		ByID     map[string]selfEncoding
		Codes    []textEncoding
		Code     *textEncoding
		At       time.Time
		Amount   *big.Int
		Raw      json.RawMessage
		Any      any
		Tree     Recursive
		Embedded // exported embedded struct
		_        struct{}
		noCopy   [0]func() // carries no state
	}
	if err := stateAgg[State](0).Validate(); err != nil {
		t.Fatal(err)
	}
	if err := stateAgg[selfEncoding](0).Validate(); err != nil {
		t.Fatal(err)
	}
	if err := stateAgg[int64](0).Validate(); err != nil {
		t.Fatal(err)
	}
}

type Embedded struct{ Total int64 }

func TestValidateSkipsStateCheckWhenSnapshotsDisabled(t *testing.T) {
	t.Parallel()
	type State struct{ balance int64 }
	if err := stateAgg[State](-1).Validate(); err != nil {
		t.Fatalf("SnapshotEvery -1: %v", err)
	}
	if err := stateAgg[State](5).Validate(); err == nil {
		t.Fatal("SnapshotEvery 5: Validate passed")
	}
}

// gobLikeCodec stands for a non-JSON codec: Validate cannot know what it
// round-trips. It is JSON underneath, so it drops unexported fields.
type gobLikeCodec struct{ eventsource.JSONCodec }

func TestValidateSkipsStateCheckForCustomCodec(t *testing.T) {
	t.Parallel()
	type State struct{ balance int64 }
	if err := stateAgg[State](0, eventsource.WithCodec(gobLikeCodec{})).Validate(); err != nil {
		t.Fatalf("custom codec: %v", err)
	}
	// A *JSONCodec is still JSON.
	if err := stateAgg[State](0, eventsource.WithCodec(&eventsource.JSONCodec{})).Validate(); err == nil {
		t.Fatal("*JSONCodec: Validate passed")
	}
}

func TestEncodeStateRefusesLossyCodec(t *testing.T) {
	t.Parallel()
	type State struct {
		Owner   string
		balance int64
	}
	agg := stateAgg[State](0, eventsource.WithCodec(gobLikeCodec{}))
	b, err := agg.EncodeState(State{Owner: "ann", balance: 30})
	wantRoundTripError(t, b, err, reflect.TypeFor[State](), "State.balance", "30", "0")
	// A state whose lost field is zero round-trips: it loses nothing.
	if _, err := agg.EncodeState(State{Owner: "ann"}); err != nil {
		t.Fatal(err)
	}
}

// ledger encodes itself through a plain copy of itself, so it passes the
// static check, but the copy skips Pending.
type ledger struct {
	Balance int64
	Pending int64 `json:"-"`
}

type plainLedger ledger

func (l ledger) MarshalJSON() ([]byte, error)  { return json.Marshal(plainLedger(l)) }
func (l *ledger) UnmarshalJSON(b []byte) error { return json.Unmarshal(b, (*plainLedger)(l)) }

func TestEncodeStateRefusesDroppedFieldBehindSelfEncodingType(t *testing.T) {
	t.Parallel()
	type State struct{ Ledgers map[string]ledger }
	agg := stateAgg[State](0)
	if err := agg.Validate(); err != nil {
		t.Fatalf("Validate: %v (ledger encodes itself, so the static check trusts it)", err)
	}
	b, err := agg.EncodeState(State{Ledgers: map[string]ledger{"eur": {Balance: 30, Pending: 5}}})
	wantRoundTripError(t, b, err, reflect.TypeFor[State](), `State.Ledgers["eur"].Pending`, "5", "0")
}

func TestEncodeStateRefusesChangedDynamicType(t *testing.T) {
	t.Parallel()
	type State struct{ Items []any }
	agg := stateAgg[State](0)
	b, err := agg.EncodeState(State{Items: []any{"a", int64(7)}})
	// JSON decodes a number in an interface as float64.
	wantRoundTripError(t, b, err, reflect.TypeFor[State](), "State.Items[1]", "7 (int64)", "7 (float64)")
}

func TestEncodeStateReportsDecodeError(t *testing.T) {
	t.Parallel()
	type State struct{ Amount big.Int } // pointer-receiver MarshalJSON: encodes {}, cannot decode it
	agg := stateAgg[State](-1)          // snapshots off: Validate lets it through
	var s State
	s.Amount.SetInt64(42)
	b, err := agg.EncodeState(s)
	if b != nil || !errors.Is(err, eventsource.ErrSnapshotRoundTrip) {
		t.Fatalf("EncodeState = %s, %v; want ErrSnapshotRoundTrip", b, err)
	}
	var re *eventsource.SnapshotRoundTripError
	if !errors.As(err, &re) || re.Err == nil || re.Field != "" {
		t.Fatalf("EncodeState = %#v, want a decode error", err)
	}
}

// decimal compares by value: 1.0 (10e-1) equals 1 (1e0). Its JSON is
// normalised, so only Equal says the round trip kept the value.
type decimal struct {
	Units int64
	Exp   int
}

func (d decimal) norm() decimal {
	for d.Units != 0 && d.Units%10 == 0 {
		d.Units, d.Exp = d.Units/10, d.Exp+1
	}
	if d.Units == 0 {
		d.Exp = 0
	}
	return d
}
func (d decimal) Equal(o decimal) bool { return d.norm() == o.norm() }
func (d decimal) MarshalJSON() ([]byte, error) {
	n := d.norm()
	return json.Marshal([2]int64{n.Units, int64(n.Exp)})
}
func (d *decimal) UnmarshalJSON(b []byte) error {
	var v [2]int64
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	d.Units, d.Exp = v[0], int(v[1])
	return nil
}

// stamped hides a time.Time in an unexported field and encodes itself.
type stamped struct{ at time.Time }

func (s stamped) MarshalJSON() ([]byte, error)  { return json.Marshal(s.at) }
func (s *stamped) UnmarshalJSON(b []byte) error { return json.Unmarshal(b, &s.at) }

// pricePtr has its Equal on the pointer.
type pricePtr struct{ Cents, Noise int64 }

func (p *pricePtr) Equal(o pricePtr) bool { return p.Cents == o.Cents }

func TestEncodeStateNoFalseAlarms(t *testing.T) {
	t.Parallel()
	type Line struct {
		SKU  string
		Qty  int64
		Tags []string
	}
	type State struct {
		At        time.Time
		AtZone    time.Time
		AtPtr     *time.Time
		Times     []time.Time
		ByDay     map[string]time.Time
		Stamped   stamped
		Stamps    map[string]stamped
		NilSlice  []int64
		Empty     []int64
		OmitEmpty []int64 `json:",omitempty"`
		NilMap    map[string]int64
		EmptyMap  map[string]int64
		OmitMap   map[string]int64 `json:",omitempty"`
		Bytes     []byte
		NoBytes   []byte
		Lines     map[string]*Line
		Price     decimal
		Prices    map[string]decimal
		PtrEq     pricePtr
		PtrEqs    map[string]pricePtr
		Any       any
		Amount    *big.Int
		Raw       json.RawMessage
		Nested    [2][]Line
		Absent    *Line
	}
	now := time.Now() // has a monotonic reading, which JSON drops
	s := State{
		At:        now,
		AtZone:    time.Date(2026, 3, 1, 12, 0, 0, 5, time.FixedZone("CET", 3600)),
		AtPtr:     &now,
		Times:     []time.Time{now, now.Add(time.Hour)},
		ByDay:     map[string]time.Time{"mon": now},
		Stamped:   stamped{at: now},
		Stamps:    map[string]stamped{"a": {at: now}},
		Empty:     []int64{},
		OmitEmpty: []int64{},
		EmptyMap:  map[string]int64{},
		OmitMap:   map[string]int64{},
		Bytes:     []byte("abc"),
		NoBytes:   []byte{},
		Lines:     map[string]*Line{"l1": {SKU: "x", Qty: 2}, "l2": {SKU: "y", Tags: []string{}}},
		Price:     decimal{Units: 10, Exp: -1},
		Prices:    map[string]decimal{"eur": {Units: 1500, Exp: -2}},
		PtrEq:     pricePtr{Cents: 5, Noise: 1}, // Noise is lost below, Equal ignores it
		PtrEqs:    map[string]pricePtr{"a": {Cents: 7, Noise: 2}},
		Any:       map[string]any{"n": 1.5, "s": "x", "l": []any{true, nil}},
		Amount:    new(big.Int).Lsh(big.NewInt(1), 100),
		Raw:       json.RawMessage(`{"k":[1,2]}`),
		Nested:    [2][]Line{nil, {{SKU: "z"}}},
	}
	for _, codec := range []eventsource.Codec{eventsource.JSONCodec{}, noiseCodec{}} {
		agg := stateAgg[State](0, eventsource.WithCodec(codec))
		b, err := agg.EncodeState(s)
		if err != nil {
			t.Fatalf("%T: EncodeState: %v", codec, err)
		}
		if _, err := agg.DecodeState(b); err != nil {
			t.Fatalf("%T: DecodeState: %v", codec, err)
		}
	}
	if err := stateAgg[State](0).Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
}

// noiseCodec is JSONCodec that loses every field named Noise, which only an
// Equal method treats as unimportant.
type noiseCodec struct{ eventsource.JSONCodec }

func (noiseCodec) Marshal(v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	var m any
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(&m); err != nil {
		return nil, err
	}
	var strip func(any)
	strip = func(x any) {
		switch x := x.(type) {
		case map[string]any:
			delete(x, "Noise")
			for _, v := range x {
				strip(v)
			}
		case []any:
			for _, v := range x {
				strip(v)
			}
		}
	}
	strip(m)
	return json.Marshal(m)
}

// The reported bug: a state with an unexported field passed Validate, worked
// until the first snapshot, then loaded with the wrong balance.
type walletDeposited struct {
	Amount int64 `json:"amount"`
}

func TestUnexportedStateSnapshotBug(t *testing.T) {
	t.Parallel()
	type State struct{ balance int64 }
	reg := eventsource.MustRegister[walletDeposited](eventsource.NewRegistry(), "wallet.Deposited")
	agg := &eventsource.Aggregate[State, any, any]{
		Type:          "test.state",
		Registry:      reg,
		SnapshotEvery: 2,
		Decider: eventsource.Decider[State, any, any]{
			Initial: func() State { return State{} },
			Decide:  func(State, any) ([]any, error) { return nil, nil },
			Evolve: func(s State, e any) State {
				s.balance += e.(walletDeposited).Amount
				return s
			},
		},
	}
	// Now caught up front.
	wantCodecError(t, agg.Validate(), reflect.TypeFor[State](), "State.balance", "unexported")

	// Three deposits of 10; the runtime snapshots when the version crosses 2.
	var events []eventsource.StoredEvent
	for v := int64(1); v <= 3; v++ {
		name, data, err := reg.Encode(walletDeposited{Amount: 10})
		if err != nil {
			t.Fatal(err)
		}
		events = append(events, eventsource.StoredEvent{AggregateType: agg.Type, AggregateID: "w", Version: v, Type: name, Data: data})
	}
	atTwo, v, err := agg.Rebuild(eventsource.Loaded{Events: events[:2]})
	if err != nil || v != 2 || atTwo.balance != 20 {
		t.Fatalf("state at version 2 = %+v v%d, %v", atTwo, v, err)
	}

	// The old behaviour: the snapshot was the bare codec output ({}), and a
	// load from it plus the later event gave 10 instead of 30.
	old, err := agg.Registry.Codec().Marshal(atTwo)
	if err != nil {
		t.Fatal(err)
	}
	bad, _, err := agg.Rebuild(eventsource.Loaded{Snapshot: &eventsource.Snapshot{AggregateType: agg.Type, AggregateID: "w", Version: 2, State: old}, Events: events[2:]})
	if err != nil || bad.balance != 10 {
		t.Fatalf("old snapshot %s: rebuilt %+v, %v; want the reported wrong balance 10", old, bad, err)
	}

	// Now EncodeState, the runtime's snapshot encoder, refuses it, so no
	// snapshot is written and the load folds every event.
	b, err := agg.EncodeState(atTwo)
	wantRoundTripError(t, b, err, reflect.TypeFor[State](), "State.balance", "20", "0")
	got, v, err := agg.Rebuild(eventsource.Loaded{Events: events})
	if err != nil || v != 3 || got.balance != 30 {
		t.Fatalf("rebuilt %+v v%d, %v; want balance 30 at version 3", got, v, err)
	}
}

func TestEncodeStateRecoversFromPanickingEqual(t *testing.T) {
	t.Parallel()
	type State struct{ P panicky }
	b, err := stateAgg[State](0).EncodeState(State{P: panicky{N: 1}})
	var re *eventsource.SnapshotRoundTripError
	if b != nil || !errors.As(err, &re) || re.Err == nil || !strings.Contains(err.Error(), "panicked") {
		t.Fatalf("EncodeState = %s, %v; want a refused snapshot", b, err)
	}
}

type panicky struct{ N int64 }

func (panicky) Equal(panicky) bool { panic("boom") }

// benchState is shaped like a busy aggregate: a hundred open reservations.
type benchState struct {
	OnHand       int64                       `json:"on_hand"`
	Reserved     int64                       `json:"reserved"`
	Reservations map[string]benchReservation `json:"reservations"`
	UpdatedAt    time.Time                   `json:"updated_at"`
}

type benchReservation struct {
	Qty   int64     `json:"qty"`
	Order string    `json:"order"`
	At    time.Time `json:"at"`
	Tags  []string  `json:"tags,omitempty"`
}

// BenchmarkEncodeState compares EncodeState (encode, decode, compare) with
// the bare codec encode it replaced.
func BenchmarkEncodeState(b *testing.B) {
	now := time.Now()
	s := benchState{OnHand: 1000, Reservations: map[string]benchReservation{}, UpdatedAt: now}
	for i := range 100 {
		s.Reservations[fmt.Sprintf("r-%03d", i)] = benchReservation{Qty: int64(i), Order: fmt.Sprintf("order-%d", i), At: now, Tags: []string{"a", "b"}}
		s.Reserved += int64(i)
	}
	agg := stateAgg[benchState](0)
	b.Run("verified", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := agg.EncodeState(s); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("marshal-only", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := agg.Registry.Codec().Marshal(s); err != nil {
				b.Fatal(err)
			}
		}
	})
}
