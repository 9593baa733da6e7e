package stock_test

import (
	"errors"
	"maps"
	"reflect"
	"strings"
	"testing"

	"github.com/onceflow/onceflow/samples/inventory/stock"
)

const (
	wh  = "ams-1"
	sku = "TSHIRT-RED_XL"
)

// scenario is one given/when/then case: events already stored, one command,
// and either the events it produces or the rejection.
type scenario struct {
	name    string
	given   []stock.Event
	when    stock.Command
	then    []stock.Event
	wantErr error  // matched with errors.Is
	wantMsg string // exact rejection text, when set
}

func run(t *testing.T, tests []scenario) {
	t.Helper()
	d := stock.Decider()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			state := d.Fold(d.Initial(), tc.given...)
			got, err := d.Decide(state, tc.when)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("Decide error = %v, want %v", err, tc.wantErr)
				}
				if tc.wantMsg != "" && err.Error() != tc.wantMsg {
					t.Fatalf("Decide error text = %q, want %q", err.Error(), tc.wantMsg)
				}
				if got != nil {
					t.Fatalf("rejected Decide returned events %v", got)
				}
				return
			}
			if err != nil {
				t.Fatalf("Decide: unexpected rejection: %v", err)
			}
			if !reflect.DeepEqual(got, tc.then) {
				t.Fatalf("events = %#v, want %#v", got, tc.then)
			}
			// Every accepted command must keep the invariants.
			checkInvariants(t, d.Fold(state, got...))
		})
	}
}

func checkInvariants(t *testing.T, s stock.State) {
	t.Helper()
	var sum int64
	for id, q := range s.Reservations {
		if q <= 0 {
			t.Errorf("reservation %q has qty %d", id, q)
		}
		sum += q
	}
	if sum != s.Reserved {
		t.Errorf("Reserved = %d, sum of reservations = %d", s.Reserved, sum)
	}
	if s.Reserved < 0 || s.Reserved > s.OnHand || s.OnHand > stock.MaxOnHand {
		t.Errorf("invariant 0 <= reserved (%d) <= on-hand (%d) <= %d broken", s.Reserved, s.OnHand, stock.MaxOnHand)
	}
}

func TestReceiveStock(t *testing.T) {
	run(t, []scenario{
		{name: "first receipt", when: stock.ReceiveStock{Warehouse: wh, SKU: sku, Qty: 10}, then: []stock.Event{stock.StockReceived{Qty: 10}}},
		{name: "adds to on-hand", given: []stock.Event{stock.StockReceived{Qty: 10}}, when: stock.ReceiveStock{Warehouse: wh, SKU: sku, Qty: 1_000_000}, then: []stock.Event{stock.StockReceived{Qty: 1_000_000}}},
		{name: "zero qty", when: stock.ReceiveStock{Warehouse: wh, SKU: sku, Qty: 0}, wantErr: stock.ErrInvalidCommand, wantMsg: "invalid command: qty must be between 1 and 1000000, got 0"},
		{name: "negative qty", when: stock.ReceiveStock{Warehouse: wh, SKU: sku, Qty: -3}, wantErr: stock.ErrInvalidCommand},
		{name: "absurd qty", when: stock.ReceiveStock{Warehouse: wh, SKU: sku, Qty: 1_000_001}, wantErr: stock.ErrInvalidCommand},
		{name: "capacity", given: []stock.Event{stock.StockAdjusted{Counted: stock.MaxOnHand, Reason: "count"}}, when: stock.ReceiveStock{Warehouse: wh, SKU: sku, Qty: 1}, wantErr: stock.ErrCapacity},
		{name: "bad warehouse", when: stock.ReceiveStock{Warehouse: "AMS", SKU: sku, Qty: 1}, wantErr: stock.ErrInvalidCommand, wantMsg: `invalid command: warehouse "AMS": invalid character 'A' at position 1 (want [a-z0-9-])`},
		{name: "bad sku", when: stock.ReceiveStock{Warehouse: wh, SKU: "", Qty: 1}, wantErr: stock.ErrInvalidCommand},
	})
}

func TestReserve(t *testing.T) {
	received := []stock.Event{stock.StockReceived{Qty: 10}}
	run(t, []scenario{
		{name: "reserve part", given: received, when: stock.Reserve{Warehouse: wh, SKU: sku, ReservationID: "o-1", Qty: 4}, then: []stock.Event{stock.StockReserved{ReservationID: "o-1", Qty: 4}}},
		{name: "reserve all", given: received, when: stock.Reserve{Warehouse: wh, SKU: sku, ReservationID: "o-1", Qty: 10}, then: []stock.Event{stock.StockReserved{ReservationID: "o-1", Qty: 10}}},
		{
			name:    "insufficient",
			given:   append(received, stock.StockReserved{ReservationID: "o-1", Qty: 7}),
			when:    stock.Reserve{Warehouse: wh, SKU: sku, ReservationID: "o-2", Qty: 5},
			wantErr: stock.ErrInsufficientStock, wantMsg: "insufficient stock: requested 5, available 3",
		},
		{name: "nothing on hand", when: stock.Reserve{Warehouse: wh, SKU: sku, ReservationID: "o-1", Qty: 1}, wantErr: stock.ErrInsufficientStock, wantMsg: "insufficient stock: requested 1, available 0"},
		{
			name:    "duplicate id",
			given:   append(received, stock.StockReserved{ReservationID: "o-1", Qty: 1}),
			when:    stock.Reserve{Warehouse: wh, SKU: sku, ReservationID: "o-1", Qty: 1},
			wantErr: stock.ErrDuplicateReservation, wantMsg: `duplicate reservation: "o-1" is already open`,
		},
		{
			name:  "id reusable after release",
			given: append(received, stock.StockReserved{ReservationID: "o-1", Qty: 1}, stock.ReservationReleased{ReservationID: "o-1", Qty: 1}),
			when:  stock.Reserve{Warehouse: wh, SKU: sku, ReservationID: "o-1", Qty: 10},
			then:  []stock.Event{stock.StockReserved{ReservationID: "o-1", Qty: 10}},
		},
		{name: "empty id", given: received, when: stock.Reserve{Warehouse: wh, SKU: sku, Qty: 1}, wantErr: stock.ErrInvalidCommand, wantMsg: "invalid command: reservation id is empty"},
		{name: "id with space", given: received, when: stock.Reserve{Warehouse: wh, SKU: sku, ReservationID: "o 1", Qty: 1}, wantErr: stock.ErrInvalidCommand},
		{name: "id too long", given: received, when: stock.Reserve{Warehouse: wh, SKU: sku, ReservationID: strings.Repeat("x", 129), Qty: 1}, wantErr: stock.ErrInvalidCommand},
		{name: "zero qty", given: received, when: stock.Reserve{Warehouse: wh, SKU: sku, ReservationID: "o-1"}, wantErr: stock.ErrInvalidCommand},
		{name: "absurd qty", given: received, when: stock.Reserve{Warehouse: wh, SKU: sku, ReservationID: "o-1", Qty: 2_000_000}, wantErr: stock.ErrInvalidCommand},
	})
}

func TestRelease(t *testing.T) {
	reserved := []stock.Event{stock.StockReceived{Qty: 10}, stock.StockReserved{ReservationID: "o-1", Qty: 4}}
	run(t, []scenario{
		{name: "release", given: reserved, when: stock.Release{Warehouse: wh, SKU: sku, ReservationID: "o-1"}, then: []stock.Event{stock.ReservationReleased{ReservationID: "o-1", Qty: 4}}},
		{name: "unknown", given: reserved, when: stock.Release{Warehouse: wh, SKU: sku, ReservationID: "o-2"}, wantErr: stock.ErrUnknownReservation, wantMsg: `unknown reservation: "o-2" is not open (never made, or already shipped or released)`},
		{name: "twice", given: append(reserved, stock.ReservationReleased{ReservationID: "o-1", Qty: 4}), when: stock.Release{Warehouse: wh, SKU: sku, ReservationID: "o-1"}, wantErr: stock.ErrUnknownReservation},
		{name: "after ship", given: append(reserved, stock.ReservationShipped{ReservationID: "o-1", Qty: 4}), when: stock.Release{Warehouse: wh, SKU: sku, ReservationID: "o-1"}, wantErr: stock.ErrUnknownReservation},
		{name: "empty id", given: reserved, when: stock.Release{Warehouse: wh, SKU: sku}, wantErr: stock.ErrInvalidCommand},
	})
}

func TestShip(t *testing.T) {
	reserved := []stock.Event{stock.StockReceived{Qty: 10}, stock.StockReserved{ReservationID: "o-1", Qty: 4}}
	run(t, []scenario{
		{name: "ship", given: reserved, when: stock.Ship{Warehouse: wh, SKU: sku, ReservationID: "o-1"}, then: []stock.Event{stock.ReservationShipped{ReservationID: "o-1", Qty: 4}}},
		{name: "unknown", given: reserved, when: stock.Ship{Warehouse: wh, SKU: sku, ReservationID: "nope"}, wantErr: stock.ErrUnknownReservation},
		{name: "twice", given: append(reserved, stock.ReservationShipped{ReservationID: "o-1", Qty: 4}), when: stock.Ship{Warehouse: wh, SKU: sku, ReservationID: "o-1"}, wantErr: stock.ErrUnknownReservation},
		{name: "after release", given: append(reserved, stock.ReservationReleased{ReservationID: "o-1", Qty: 4}), when: stock.Ship{Warehouse: wh, SKU: sku, ReservationID: "o-1"}, wantErr: stock.ErrUnknownReservation},
		{name: "empty id", given: reserved, when: stock.Ship{Warehouse: wh, SKU: sku}, wantErr: stock.ErrInvalidCommand},
	})
}

func TestAdjust(t *testing.T) {
	reserved := []stock.Event{stock.StockReceived{Qty: 10}, stock.StockReserved{ReservationID: "o-1", Qty: 4}}
	run(t, []scenario{
		{name: "count lower", given: reserved, when: stock.Adjust{Warehouse: wh, SKU: sku, Counted: 7, Reason: "damaged"}, then: []stock.Event{stock.StockAdjusted{Previous: 10, Counted: 7, Reason: "damaged"}}},
		{name: "count higher", given: reserved, when: stock.Adjust{Warehouse: wh, SKU: sku, Counted: 12, Reason: "found"}, then: []stock.Event{stock.StockAdjusted{Previous: 10, Counted: 12, Reason: "found"}}},
		{name: "count equal is recorded", given: reserved, when: stock.Adjust{Warehouse: wh, SKU: sku, Counted: 10, Reason: "cycle count"}, then: []stock.Event{stock.StockAdjusted{Previous: 10, Counted: 10, Reason: "cycle count"}}},
		{name: "count equal to reserved", given: reserved, when: stock.Adjust{Warehouse: wh, SKU: sku, Counted: 4, Reason: "x"}, then: []stock.Event{stock.StockAdjusted{Previous: 10, Counted: 4, Reason: "x"}}},
		{name: "zero with nothing reserved", when: stock.Adjust{Warehouse: wh, SKU: sku, Counted: 0, Reason: "empty shelf"}, then: []stock.Event{stock.StockAdjusted{Counted: 0, Reason: "empty shelf"}}},
		{name: "below reserved", given: reserved, when: stock.Adjust{Warehouse: wh, SKU: sku, Counted: 3, Reason: "lost"}, wantErr: stock.ErrBelowReserved, wantMsg: "counted stock below reserved: counted 3, reserved 4 (release or ship reservations first)"},
		{name: "negative", when: stock.Adjust{Warehouse: wh, SKU: sku, Counted: -1, Reason: "x"}, wantErr: stock.ErrInvalidCommand},
		{name: "too many", when: stock.Adjust{Warehouse: wh, SKU: sku, Counted: stock.MaxOnHand + 1, Reason: "x"}, wantErr: stock.ErrInvalidCommand},
		{name: "no reason", when: stock.Adjust{Warehouse: wh, SKU: sku, Counted: 1, Reason: "  "}, wantErr: stock.ErrInvalidCommand},
		{name: "long reason", when: stock.Adjust{Warehouse: wh, SKU: sku, Counted: 1, Reason: strings.Repeat("r", 257)}, wantErr: stock.ErrInvalidCommand},
		{name: "bad utf8 reason", when: stock.Adjust{Warehouse: wh, SKU: sku, Counted: 1, Reason: "\xff"}, wantErr: stock.ErrInvalidCommand},
	})
}

func TestNilCommandRejected(t *testing.T) {
	if _, err := stock.Decide(stock.Initial(), nil); !errors.Is(err, stock.ErrInvalidCommand) {
		t.Fatalf("Decide(nil) = %v, want ErrInvalidCommand", err)
	}
}

func TestEvolveState(t *testing.T) {
	d := stock.Decider()
	s := d.Fold(d.Initial(),
		stock.StockReceived{Qty: 10},
		stock.StockReserved{ReservationID: "a", Qty: 3},
		stock.StockReserved{ReservationID: "b", Qty: 2},
		stock.ReservationShipped{ReservationID: "a", Qty: 3},
		stock.StockAdjusted{Previous: 7, Counted: 6, Reason: "count"},
		stock.ReservationReleased{ReservationID: "b", Qty: 2},
		stock.StockReserved{ReservationID: "c", Qty: 1},
	)
	want := stock.State{OnHand: 6, Reserved: 1, Reservations: map[string]int64{"c": 1}}
	if !reflect.DeepEqual(s, want) {
		t.Fatalf("state = %+v, want %+v", s, want)
	}
	if s.Available() != 5 {
		t.Fatalf("Available = %d, want 5", s.Available())
	}
}

// Evolve must never change the state it is given: the runtime keeps the last
// committed state to fall back on when a batch fails.
func TestEvolveDoesNotMutateInput(t *testing.T) {
	d := stock.Decider()
	base := d.Fold(d.Initial(), stock.StockReceived{Qty: 10}, stock.StockReserved{ReservationID: "a", Qty: 3})
	before := maps.Clone(base.Reservations)
	for _, ev := range []stock.Event{
		stock.StockReserved{ReservationID: "b", Qty: 1},
		stock.ReservationReleased{ReservationID: "a", Qty: 3},
		stock.ReservationShipped{ReservationID: "a", Qty: 3},
		stock.StockReceived{Qty: 1},
		stock.StockAdjusted{Previous: 10, Counted: 5, Reason: "x"},
	} {
		_ = d.Evolve(base, ev)
		if !maps.Equal(base.Reservations, before) {
			t.Fatalf("Evolve(%T) mutated its input: %v, was %v", ev, base.Reservations, before)
		}
	}
}

// Evolve is total: a nil state map (for example from an old snapshot) and an
// unknown event must not panic.
func TestEvolveTotal(t *testing.T) {
	s := stock.Evolve(stock.State{OnHand: 2}, stock.StockReserved{ReservationID: "a", Qty: 1})
	s = stock.Evolve(s, nil)
	if s.Reserved != 1 || s.Reservations["a"] != 1 {
		t.Fatalf("state = %+v", s)
	}
	s = stock.Evolve(stock.State{}, stock.ReservationReleased{ReservationID: "a"})
	if s.Reservations == nil {
		t.Fatal("Reservations is nil after release on a nil map")
	}
}

func TestInitialIsFresh(t *testing.T) {
	a, b := stock.Initial(), stock.Initial()
	a.Reservations["x"] = 1
	if len(b.Reservations) != 0 {
		t.Fatal("Initial returns a shared map")
	}
}

func TestValidateWarehouse(t *testing.T) {
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{"a", true}, {"ams-1", true}, {strings.Repeat("w", 32), true},
		{"", false}, {strings.Repeat("w", 33), false}, {"AMS", false}, {"ams_1", false}, {"ams/1", false}, {"ams 1", false}, {"amé", false},
	} {
		if err := stock.ValidateWarehouse(tc.in); (err == nil) != tc.ok {
			t.Errorf("ValidateWarehouse(%q) = %v, want ok=%v", tc.in, err, tc.ok)
		}
	}
}

func TestValidateSKU(t *testing.T) {
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{"A", true}, {"TSHIRT-RED_XL", true}, {"0123", true}, {strings.Repeat("S", 64), true},
		{"", false}, {strings.Repeat("S", 65), false}, {"tshirt", false}, {"A/B", false}, {"A B", false}, {"A.B", false},
	} {
		if err := stock.ValidateSKU(tc.in); (err == nil) != tc.ok {
			t.Errorf("ValidateSKU(%q) = %v, want ok=%v", tc.in, err, tc.ok)
		}
	}
}

func TestAggregateIDRoundTrip(t *testing.T) {
	id := stock.AggregateID(wh, sku)
	if id != "ams-1/TSHIRT-RED_XL" {
		t.Fatalf("AggregateID = %q", id)
	}
	w, s, err := stock.ParseAggregateID(id)
	if err != nil || w != wh || s != sku {
		t.Fatalf("ParseAggregateID(%q) = %q, %q, %v", id, w, s, err)
	}
	for _, bad := range []string{"", "ams-1", "ams-1/", "/SKU", "AMS/SKU", "ams/sku", "ams/SKU/X"} {
		if _, _, err := stock.ParseAggregateID(bad); err == nil {
			t.Errorf("ParseAggregateID(%q) accepted", bad)
		}
	}
	// Every command's AggregateID is its warehouse/sku pair.
	for _, c := range []stock.Command{
		stock.ReceiveStock{Warehouse: wh, SKU: sku}, stock.Reserve{Warehouse: wh, SKU: sku},
		stock.Release{Warehouse: wh, SKU: sku}, stock.Ship{Warehouse: wh, SKU: sku}, stock.Adjust{Warehouse: wh, SKU: sku},
	} {
		if c.AggregateID() != id {
			t.Errorf("%T.AggregateID() = %q, want %q", c, c.AggregateID(), id)
		}
	}
}

// The registry must name every command and event, and they must survive an
// encode/decode round trip through the aggregate (what the runtime does).
func TestAggregateCodecRoundTrip(t *testing.T) {
	agg, err := stock.NewAggregate()
	if err != nil {
		t.Fatal(err)
	}
	if agg.Type != "inventory.stock" {
		t.Fatalf("Type = %q", agg.Type)
	}
	cmds := []stock.Command{
		stock.ReceiveStock{Warehouse: wh, SKU: sku, Qty: 1},
		stock.Reserve{Warehouse: wh, SKU: sku, ReservationID: "r", Qty: 2},
		stock.Release{Warehouse: wh, SKU: sku, ReservationID: "r"},
		stock.Ship{Warehouse: wh, SKU: sku, ReservationID: "r"},
		stock.Adjust{Warehouse: wh, SKU: sku, Counted: 3, Reason: "count"},
	}
	for _, c := range cmds {
		name, data, err := agg.Registry.Encode(c)
		if err != nil {
			t.Fatalf("encode %T: %v", c, err)
		}
		if !strings.HasPrefix(name, "inventory.") {
			t.Errorf("%T registered as %q", c, name)
		}
		got, err := agg.DecodeCommand(name, data)
		if err != nil || !reflect.DeepEqual(got, c) {
			t.Errorf("command round trip %T: got %#v, %v", c, got, err)
		}
	}
	evs := []stock.Event{
		stock.StockReceived{Qty: 1}, stock.StockReserved{ReservationID: "r", Qty: 2},
		stock.ReservationReleased{ReservationID: "r", Qty: 2}, stock.ReservationShipped{ReservationID: "r", Qty: 2},
		stock.StockAdjusted{Previous: 1, Counted: 3, Reason: "count"},
	}
	for _, e := range evs {
		name, data, err := agg.Registry.Encode(e)
		if err != nil {
			t.Fatalf("encode %T: %v", e, err)
		}
		got, err := agg.DecodeEvent(name, data)
		if err != nil || !reflect.DeepEqual(got, e) {
			t.Errorf("event round trip %T: got %#v, %v", e, got, err)
		}
	}
	if n := len(agg.Registry.Names()); n != len(cmds)+len(evs) {
		t.Errorf("registry has %d names, want %d", n, len(cmds)+len(evs))
	}
	// State survives a snapshot round trip.
	s := stock.Decider().Fold(stock.Initial(), evs[0], stock.StockReceived{Qty: 5}, evs[1])
	b, err := agg.EncodeState(s)
	if err != nil {
		t.Fatal(err)
	}
	s2, err := agg.DecodeState(b)
	if err != nil || !reflect.DeepEqual(s, s2) {
		t.Fatalf("state round trip: %+v -> %s -> %+v, %v", s, b, s2, err)
	}
}
