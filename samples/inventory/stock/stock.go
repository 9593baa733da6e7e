package stock

import (
	"fmt"
	"maps"
	"strings"
	"unicode/utf8"

	"github.com/onceflow/onceflow/eventsource"
)

// AggregateType is the stable type name stored with every stock event.
// Renaming it orphans the stored events.
const AggregateType = "inventory.stock"

// State is the stock of one SKU in one warehouse. It is encoded with JSON for
// snapshots, so its fields are exported and tagged.
//
// Invariant (kept by Decide): 0 <= Reserved <= OnHand <= MaxOnHand, and
// Reserved is the sum of Reservations.
type State struct {
	OnHand       int64            `json:"on_hand"`
	Reserved     int64            `json:"reserved"`
	Reservations map[string]int64 `json:"reservations"` // reservation id -> qty
}

// Available is what can still be reserved.
func (s State) Available() int64 { return s.OnHand - s.Reserved }

// Initial returns the state of a SKU never seen: nothing on hand.
func Initial() State { return State{Reservations: map[string]int64{}} }

// Decide validates cmd against s and returns the events that record it, or a
// rejection (see errors.go). It is pure.
func Decide(s State, cmd Command) ([]Event, error) {
	if err := validateTarget(cmd); err != nil {
		return nil, err
	}
	switch c := cmd.(type) {
	case ReceiveStock:
		if err := validateQty(c.Qty); err != nil {
			return nil, err
		}
		if s.OnHand+c.Qty > MaxOnHand {
			return nil, fmt.Errorf("%w: receiving %d would bring on-hand to %d (at most %d)", ErrCapacity, c.Qty, s.OnHand+c.Qty, MaxOnHand)
		}
		return []Event{StockReceived{Qty: c.Qty}}, nil

	case Reserve:
		if err := validateReservationID(c.ReservationID); err != nil {
			return nil, err
		}
		if err := validateQty(c.Qty); err != nil {
			return nil, err
		}
		if _, ok := s.Reservations[c.ReservationID]; ok {
			return nil, fmt.Errorf("%w: %q is already open", ErrDuplicateReservation, c.ReservationID)
		}
		if c.Qty > s.Available() {
			return nil, fmt.Errorf("%w: requested %d, available %d", ErrInsufficientStock, c.Qty, s.Available())
		}
		return []Event{StockReserved{ReservationID: c.ReservationID, Qty: c.Qty}}, nil

	case Release:
		qty, err := openReservation(s, c.ReservationID)
		if err != nil {
			return nil, err
		}
		return []Event{ReservationReleased{ReservationID: c.ReservationID, Qty: qty}}, nil

	case Ship:
		qty, err := openReservation(s, c.ReservationID)
		if err != nil {
			return nil, err
		}
		return []Event{ReservationShipped{ReservationID: c.ReservationID, Qty: qty}}, nil

	case Adjust:
		if c.Counted < 0 || c.Counted > MaxOnHand {
			return nil, fmt.Errorf("%w: counted must be between 0 and %d, got %d", ErrInvalidCommand, MaxOnHand, c.Counted)
		}
		if err := validateReason(c.Reason); err != nil {
			return nil, err
		}
		if c.Counted < s.Reserved {
			return nil, fmt.Errorf("%w: counted %d, reserved %d (release or ship reservations first)", ErrBelowReserved, c.Counted, s.Reserved)
		}
		return []Event{StockAdjusted{Previous: s.OnHand, Counted: c.Counted, Reason: c.Reason}}, nil
	}
	// Unreachable while Command is sealed; a nil interface lands here.
	return nil, fmt.Errorf("%w: unsupported command %T", ErrInvalidCommand, cmd)
}

// Evolve applies one event. It never mutates s: events that change
// reservations copy the map first, because the runtime keeps the last
// committed state to fall back on. Unknown events leave the state unchanged
// (Evolve is total).
func Evolve(s State, ev Event) State {
	switch e := ev.(type) {
	case StockReceived:
		s.OnHand += e.Qty
	case StockReserved:
		s.Reservations = withReservation(s.Reservations, e.ReservationID, e.Qty)
		s.Reserved += e.Qty
	case ReservationReleased:
		s.Reservations = withoutReservation(s.Reservations, e.ReservationID)
		s.Reserved -= e.Qty
	case ReservationShipped:
		s.Reservations = withoutReservation(s.Reservations, e.ReservationID)
		s.Reserved -= e.Qty
		s.OnHand -= e.Qty
	case StockAdjusted:
		s.OnHand = e.Counted
	}
	return s
}

// Decider returns the stock decider.
func Decider() eventsource.Decider[State, Command, Event] {
	return eventsource.Decider[State, Command, Event]{Initial: Initial, Decide: Decide, Evolve: Evolve}
}

// NewRegistry returns a registry naming every stock command and event. The
// names ("inventory.ReceiveStock", ...) are stored in Postgres and sent on
// Kafka: treat them as a schema and never rename them.
func NewRegistry() (*eventsource.Registry, error) {
	r := eventsource.NewRegistry()
	for _, err := range []error{
		eventsource.Register[ReceiveStock](r, "inventory.ReceiveStock"),
		eventsource.Register[Reserve](r, "inventory.Reserve"),
		eventsource.Register[Release](r, "inventory.Release"),
		eventsource.Register[Ship](r, "inventory.Ship"),
		eventsource.Register[Adjust](r, "inventory.Adjust"),
		eventsource.Register[StockReceived](r, "inventory.StockReceived"),
		eventsource.Register[StockReserved](r, "inventory.StockReserved"),
		eventsource.Register[ReservationReleased](r, "inventory.ReservationReleased"),
		eventsource.Register[ReservationShipped](r, "inventory.ReservationShipped"),
		eventsource.Register[StockAdjusted](r, "inventory.StockAdjusted"),
	} {
		if err != nil {
			return nil, fmt.Errorf("stock: %w", err)
		}
	}
	return r, nil
}

// NewAggregate returns the stock aggregate, ready for actor.NewRuntime.
func NewAggregate() (*eventsource.Aggregate[State, Command, Event], error) {
	reg, err := NewRegistry()
	if err != nil {
		return nil, err
	}
	agg := &eventsource.Aggregate[State, Command, Event]{
		Type:     AggregateType,
		Decider:  Decider(),
		Registry: reg,
	}
	if err := agg.Validate(); err != nil {
		return nil, err
	}
	return agg, nil
}

func validateTarget(cmd Command) error {
	if cmd == nil {
		return fmt.Errorf("%w: nil command", ErrInvalidCommand)
	}
	var w, sku string
	switch c := cmd.(type) {
	case ReceiveStock:
		w, sku = c.Warehouse, c.SKU
	case Reserve:
		w, sku = c.Warehouse, c.SKU
	case Release:
		w, sku = c.Warehouse, c.SKU
	case Ship:
		w, sku = c.Warehouse, c.SKU
	case Adjust:
		w, sku = c.Warehouse, c.SKU
	}
	if err := ValidateWarehouse(w); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidCommand, err)
	}
	if err := ValidateSKU(sku); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidCommand, err)
	}
	return nil
}

func validateQty(q int64) error {
	if q <= 0 || q > MaxQty {
		return fmt.Errorf("%w: qty must be between 1 and %d, got %d", ErrInvalidCommand, MaxQty, q)
	}
	return nil
}

func validateReservationID(id string) error {
	if err := ValidateReservationID(id); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidCommand, err)
	}
	return nil
}

func validateReason(r string) error {
	switch {
	case strings.TrimSpace(r) == "":
		return fmt.Errorf("%w: reason is empty (say why the count differs, e.g. \"cycle count\")", ErrInvalidCommand)
	case len(r) > MaxReasonLen:
		return fmt.Errorf("%w: reason is %d bytes long (at most %d)", ErrInvalidCommand, len(r), MaxReasonLen)
	case !utf8.ValidString(r):
		return fmt.Errorf("%w: reason is not valid UTF-8", ErrInvalidCommand)
	}
	return nil
}

func openReservation(s State, id string) (int64, error) {
	if err := validateReservationID(id); err != nil {
		return 0, err
	}
	qty, ok := s.Reservations[id]
	if !ok {
		return 0, fmt.Errorf("%w: %q is not open (never made, or already shipped or released)", ErrUnknownReservation, id)
	}
	return qty, nil
}

func withReservation(m map[string]int64, id string, qty int64) map[string]int64 {
	out := make(map[string]int64, len(m)+1)
	maps.Copy(out, m)
	out[id] = qty
	return out
}

func withoutReservation(m map[string]int64, id string) map[string]int64 {
	out := maps.Clone(m)
	if out == nil {
		out = map[string]int64{}
	}
	delete(out, id)
	return out
}
