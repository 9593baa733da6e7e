package stock_test

import (
	"fmt"

	"github.com/onceflow/onceflow/samples/inventory/stock"
)

// The decider is pure: fold stored events into a state, decide a command,
// fold the new events in.
func Example() {
	d := stock.Decider()
	s := d.Fold(d.Initial(), stock.StockReceived{Qty: 10})

	for _, cmd := range []stock.Command{
		stock.Reserve{Warehouse: "ams-1", SKU: "MUG-BLUE", ReservationID: "order-7", Qty: 8},
		stock.Reserve{Warehouse: "ams-1", SKU: "MUG-BLUE", ReservationID: "order-8", Qty: 5},
		stock.Ship{Warehouse: "ams-1", SKU: "MUG-BLUE", ReservationID: "order-7"},
	} {
		events, err := d.Decide(s, cmd)
		if err != nil {
			fmt.Printf("%T rejected: %v\n", cmd, err)
			continue
		}
		s = d.Fold(s, events...)
		fmt.Printf("%T -> %+v\n", cmd, events)
	}
	fmt.Printf("on hand %d, reserved %d, available %d\n", s.OnHand, s.Reserved, s.Available())
	// Output:
	// stock.Reserve -> [{ReservationID:order-7 Qty:8}]
	// stock.Reserve rejected: insufficient stock: requested 5, available 2
	// stock.Ship -> [{ReservationID:order-7 Qty:8}]
	// on hand 2, reserved 0, available 2
}
