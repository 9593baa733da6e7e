package stock_test

import (
	"errors"
	"fmt"
	"maps"
	"reflect"
	"strings"
	"testing"

	"github.com/onceflow/onceflow/eventsource/decidertest"
	"github.com/onceflow/onceflow/samples/inventory/stock"
)

const (
	wh  = "ams-1"
	sku = "TSHIRT-RED_XL"
)

// scenario is one given/when/then case, run by the public Decider harness.
type scenario = decidertest.Scenario[stock.State, stock.Command, stock.Event]

// run checks the scenarios with the harness: events as given, rejections
// exact, Decide deterministic, every event surviving the registry's codec,
// and the stock invariants after every accepted command.
func run(t *testing.T, tests []scenario) {
	t.Helper()
	reg, err := stock.NewRegistry()
	if err != nil {
		t.Fatal(err)
	}
	decidertest.Run(t, stock.Decider(), tests, decidertest.WithRegistry(reg), decidertest.WithInvariant(invariants))
}

func invariants(s stock.State) error {
	var sum int64
	for id, q := range s.Reservations {
		if q <= 0 {
			return fmt.Errorf("reservation %q has qty %d", id, q)
		}
		sum += q
	}
	if sum != s.Reserved {
		return fmt.Errorf("Reserved = %d, sum of reservations = %d", s.Reserved, sum)
	}
	if s.Reserved < 0 || s.Reserved > s.OnHand || s.OnHand > stock.MaxOnHand {
		return fmt.Errorf("invariant 0 <= reserved (%d) <= on-hand (%d) <= %d broken", s.Reserved, s.OnHand, stock.MaxOnHand)
	}
	return nil
}

func TestReceiveStock(t *testing.T) {
	run(t, []scenario{
		{Name: "first receipt", When: stock.ReceiveStock{Warehouse: wh, SKU: sku, Qty: 10}, Then: []stock.Event{stock.StockReceived{Qty: 10}}},
		{Name: "adds to on-hand", Given: []stock.Event{stock.StockReceived{Qty: 10}}, When: stock.ReceiveStock{Warehouse: wh, SKU: sku, Qty: 1_000_000}, Then: []stock.Event{stock.StockReceived{Qty: 1_000_000}}},
		{Name: "zero qty", When: stock.ReceiveStock{Warehouse: wh, SKU: sku, Qty: 0}, WantErr: stock.ErrInvalidCommand, WantMsg: "invalid command: qty must be between 1 and 1000000, got 0"},
		{Name: "negative qty", When: stock.ReceiveStock{Warehouse: wh, SKU: sku, Qty: -3}, WantErr: stock.ErrInvalidCommand},
		{Name: "absurd qty", When: stock.ReceiveStock{Warehouse: wh, SKU: sku, Qty: 1_000_001}, WantErr: stock.ErrInvalidCommand},
		{Name: "capacity", Given: []stock.Event{stock.StockAdjusted{Counted: stock.MaxOnHand, Reason: "count"}}, When: stock.ReceiveStock{Warehouse: wh, SKU: sku, Qty: 1}, WantErr: stock.ErrCapacity},
		{Name: "bad warehouse", When: stock.ReceiveStock{Warehouse: "AMS", SKU: sku, Qty: 1}, WantErr: stock.ErrInvalidCommand, WantMsg: `invalid command: warehouse "AMS": invalid character 'A' at position 1 (want [a-z0-9-])`},
		{Name: "bad sku", When: stock.ReceiveStock{Warehouse: wh, SKU: "", Qty: 1}, WantErr: stock.ErrInvalidCommand},
	})
}

func TestReserve(t *testing.T) {
	received := []stock.Event{stock.StockReceived{Qty: 10}}
	run(t, []scenario{
		{Name: "reserve part", Given: received, When: stock.Reserve{Warehouse: wh, SKU: sku, ReservationID: "o-1", Qty: 4}, Then: []stock.Event{stock.StockReserved{ReservationID: "o-1", Qty: 4}}},
		{Name: "reserve all", Given: received, When: stock.Reserve{Warehouse: wh, SKU: sku, ReservationID: "o-1", Qty: 10}, Then: []stock.Event{stock.StockReserved{ReservationID: "o-1", Qty: 10}}},
		{
			Name:    "insufficient",
			Given:   append(received, stock.StockReserved{ReservationID: "o-1", Qty: 7}),
			When:    stock.Reserve{Warehouse: wh, SKU: sku, ReservationID: "o-2", Qty: 5},
			WantErr: stock.ErrInsufficientStock, WantMsg: "insufficient stock: requested 5, available 3",
		},
		{Name: "nothing on hand", When: stock.Reserve{Warehouse: wh, SKU: sku, ReservationID: "o-1", Qty: 1}, WantErr: stock.ErrInsufficientStock, WantMsg: "insufficient stock: requested 1, available 0"},
		{
			Name:    "duplicate id",
			Given:   append(received, stock.StockReserved{ReservationID: "o-1", Qty: 1}),
			When:    stock.Reserve{Warehouse: wh, SKU: sku, ReservationID: "o-1", Qty: 1},
			WantErr: stock.ErrDuplicateReservation, WantMsg: `duplicate reservation: "o-1" is already open`,
		},
		{
			Name:  "id reusable after release",
			Given: append(received, stock.StockReserved{ReservationID: "o-1", Qty: 1}, stock.ReservationReleased{ReservationID: "o-1", Qty: 1}),
			When:  stock.Reserve{Warehouse: wh, SKU: sku, ReservationID: "o-1", Qty: 10},
			Then:  []stock.Event{stock.StockReserved{ReservationID: "o-1", Qty: 10}},
		},
		{Name: "empty id", Given: received, When: stock.Reserve{Warehouse: wh, SKU: sku, Qty: 1}, WantErr: stock.ErrInvalidCommand, WantMsg: "invalid command: reservation id is empty"},
		{Name: "id with space", Given: received, When: stock.Reserve{Warehouse: wh, SKU: sku, ReservationID: "o 1", Qty: 1}, WantErr: stock.ErrInvalidCommand},
		{Name: "id too long", Given: received, When: stock.Reserve{Warehouse: wh, SKU: sku, ReservationID: strings.Repeat("x", 129), Qty: 1}, WantErr: stock.ErrInvalidCommand},
		{Name: "zero qty", Given: received, When: stock.Reserve{Warehouse: wh, SKU: sku, ReservationID: "o-1"}, WantErr: stock.ErrInvalidCommand},
		{Name: "absurd qty", Given: received, When: stock.Reserve{Warehouse: wh, SKU: sku, ReservationID: "o-1", Qty: 2_000_000}, WantErr: stock.ErrInvalidCommand},
	})
}

func TestRelease(t *testing.T) {
	reserved := []stock.Event{stock.StockReceived{Qty: 10}, stock.StockReserved{ReservationID: "o-1", Qty: 4}}
	run(t, []scenario{
		{Name: "release", Given: reserved, When: stock.Release{Warehouse: wh, SKU: sku, ReservationID: "o-1"}, Then: []stock.Event{stock.ReservationReleased{ReservationID: "o-1", Qty: 4}}},
		{Name: "unknown", Given: reserved, When: stock.Release{Warehouse: wh, SKU: sku, ReservationID: "o-2"}, WantErr: stock.ErrUnknownReservation, WantMsg: `unknown reservation: "o-2" is not open (never made, or already shipped or released)`},
		{Name: "twice", Given: append(reserved, stock.ReservationReleased{ReservationID: "o-1", Qty: 4}), When: stock.Release{Warehouse: wh, SKU: sku, ReservationID: "o-1"}, WantErr: stock.ErrUnknownReservation},
		{Name: "after ship", Given: append(reserved, stock.ReservationShipped{ReservationID: "o-1", Qty: 4}), When: stock.Release{Warehouse: wh, SKU: sku, ReservationID: "o-1"}, WantErr: stock.ErrUnknownReservation},
		{Name: "empty id", Given: reserved, When: stock.Release{Warehouse: wh, SKU: sku}, WantErr: stock.ErrInvalidCommand},
	})
}

func TestShip(t *testing.T) {
	reserved := []stock.Event{stock.StockReceived{Qty: 10}, stock.StockReserved{ReservationID: "o-1", Qty: 4}}
	run(t, []scenario{
		{Name: "ship", Given: reserved, When: stock.Ship{Warehouse: wh, SKU: sku, ReservationID: "o-1"}, Then: []stock.Event{stock.ReservationShipped{ReservationID: "o-1", Qty: 4}}},
		{Name: "unknown", Given: reserved, When: stock.Ship{Warehouse: wh, SKU: sku, ReservationID: "nope"}, WantErr: stock.ErrUnknownReservation},
		{Name: "twice", Given: append(reserved, stock.ReservationShipped{ReservationID: "o-1", Qty: 4}), When: stock.Ship{Warehouse: wh, SKU: sku, ReservationID: "o-1"}, WantErr: stock.ErrUnknownReservation},
		{Name: "after release", Given: append(reserved, stock.ReservationReleased{ReservationID: "o-1", Qty: 4}), When: stock.Ship{Warehouse: wh, SKU: sku, ReservationID: "o-1"}, WantErr: stock.ErrUnknownReservation},
		{Name: "empty id", Given: reserved, When: stock.Ship{Warehouse: wh, SKU: sku}, WantErr: stock.ErrInvalidCommand},
	})
}

func TestAdjust(t *testing.T) {
	reserved := []stock.Event{stock.StockReceived{Qty: 10}, stock.StockReserved{ReservationID: "o-1", Qty: 4}}
	run(t, []scenario{
		{Name: "count lower", Given: reserved, When: stock.Adjust{Warehouse: wh, SKU: sku, Counted: 7, Reason: "damaged"}, Then: []stock.Event{stock.StockAdjusted{Previous: 10, Counted: 7, Reason: "damaged"}}},
		{Name: "count higher", Given: reserved, When: stock.Adjust{Warehouse: wh, SKU: sku, Counted: 12, Reason: "found"}, Then: []stock.Event{stock.StockAdjusted{Previous: 10, Counted: 12, Reason: "found"}}},
		{Name: "count equal is recorded", Given: reserved, When: stock.Adjust{Warehouse: wh, SKU: sku, Counted: 10, Reason: "cycle count"}, Then: []stock.Event{stock.StockAdjusted{Previous: 10, Counted: 10, Reason: "cycle count"}}},
		{Name: "count equal to reserved", Given: reserved, When: stock.Adjust{Warehouse: wh, SKU: sku, Counted: 4, Reason: "x"}, Then: []stock.Event{stock.StockAdjusted{Previous: 10, Counted: 4, Reason: "x"}}},
		{Name: "zero with nothing reserved", When: stock.Adjust{Warehouse: wh, SKU: sku, Counted: 0, Reason: "empty shelf"}, Then: []stock.Event{stock.StockAdjusted{Counted: 0, Reason: "empty shelf"}}},
		{Name: "below reserved", Given: reserved, When: stock.Adjust{Warehouse: wh, SKU: sku, Counted: 3, Reason: "lost"}, WantErr: stock.ErrBelowReserved, WantMsg: "counted stock below reserved: counted 3, reserved 4 (release or ship reservations first)"},
		{Name: "negative", When: stock.Adjust{Warehouse: wh, SKU: sku, Counted: -1, Reason: "x"}, WantErr: stock.ErrInvalidCommand},
		{Name: "too many", When: stock.Adjust{Warehouse: wh, SKU: sku, Counted: stock.MaxOnHand + 1, Reason: "x"}, WantErr: stock.ErrInvalidCommand},
		{Name: "no reason", When: stock.Adjust{Warehouse: wh, SKU: sku, Counted: 1, Reason: "  "}, WantErr: stock.ErrInvalidCommand},
		{Name: "long reason", When: stock.Adjust{Warehouse: wh, SKU: sku, Counted: 1, Reason: strings.Repeat("r", 257)}, WantErr: stock.ErrInvalidCommand},
		{Name: "bad utf8 reason", When: stock.Adjust{Warehouse: wh, SKU: sku, Counted: 1, Reason: "\xff"}, WantErr: stock.ErrInvalidCommand},
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

// Evolve must never change the state it is Given: the runtime keeps the last
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
