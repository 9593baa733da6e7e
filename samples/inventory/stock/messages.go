package stock

// Command is a command for one stock aggregate. The set is closed: only the
// types in this package implement it.
type Command interface {
	AggregateID() string
	isCommand()
}

// Event is a stock event. Events carry only what changed; the warehouse and
// SKU are the aggregate id stored with every event.
type Event interface{ isEvent() }

// Quantity limits.
const (
	// MaxQty is the largest quantity one command may move. Anything larger is
	// almost certainly a typo (or a unit mix-up) and is rejected.
	MaxQty = 1_000_000
	// MaxOnHand is the most stock one SKU may hold in one warehouse. It keeps
	// arithmetic far from overflow whatever the command history.
	MaxOnHand = 1_000_000_000
)

// ReceiveStock adds Qty units to on-hand stock (goods arrived).
type ReceiveStock struct {
	Warehouse string `json:"warehouse"`
	SKU       string `json:"sku"`
	Qty       int64  `json:"qty"`
}

// Reserve holds Qty available units under ReservationID. Rejected with
// ErrInsufficientStock when fewer are available, and with
// ErrDuplicateReservation when the id is already open.
type Reserve struct {
	Warehouse     string `json:"warehouse"`
	SKU           string `json:"sku"`
	ReservationID string `json:"reservation_id"`
	Qty           int64  `json:"qty"`
}

// Release cancels an open reservation: its units become available again.
type Release struct {
	Warehouse     string `json:"warehouse"`
	SKU           string `json:"sku"`
	ReservationID string `json:"reservation_id"`
}

// Ship ships an open reservation: on-hand goes down by its quantity and the
// reservation is closed.
type Ship struct {
	Warehouse     string `json:"warehouse"`
	SKU           string `json:"sku"`
	ReservationID string `json:"reservation_id"`
}

// Adjust records a stock count: on-hand becomes Counted. Rejected with
// ErrBelowReserved when Counted is below the reserved quantity.
type Adjust struct {
	Warehouse string `json:"warehouse"`
	SKU       string `json:"sku"`
	Counted   int64  `json:"counted"`
	Reason    string `json:"reason"`
}

// AggregateID implements eventsource.Command.
func (c ReceiveStock) AggregateID() string { return AggregateID(c.Warehouse, c.SKU) }

// AggregateID implements eventsource.Command.
func (c Reserve) AggregateID() string { return AggregateID(c.Warehouse, c.SKU) }

// AggregateID implements eventsource.Command.
func (c Release) AggregateID() string { return AggregateID(c.Warehouse, c.SKU) }

// AggregateID implements eventsource.Command.
func (c Ship) AggregateID() string { return AggregateID(c.Warehouse, c.SKU) }

// AggregateID implements eventsource.Command.
func (c Adjust) AggregateID() string { return AggregateID(c.Warehouse, c.SKU) }

func (ReceiveStock) isCommand() {}
func (Reserve) isCommand()      {}
func (Release) isCommand()      {}
func (Ship) isCommand()         {}
func (Adjust) isCommand()       {}

// StockReceived: Qty units arrived.
type StockReceived struct {
	Qty int64 `json:"qty"`
}

// StockReserved: Qty units are held under ReservationID.
type StockReserved struct {
	ReservationID string `json:"reservation_id"`
	Qty           int64  `json:"qty"`
}

// ReservationReleased: the reservation's Qty units are available again.
type ReservationReleased struct {
	ReservationID string `json:"reservation_id"`
	Qty           int64  `json:"qty"`
}

// ReservationShipped: the reservation's Qty units left the warehouse.
type ReservationShipped struct {
	ReservationID string `json:"reservation_id"`
	Qty           int64  `json:"qty"`
}

// StockAdjusted: a count found Counted units where the books said Previous.
// It is recorded even when they match, so every count is in the history.
type StockAdjusted struct {
	Previous int64  `json:"previous"`
	Counted  int64  `json:"counted"`
	Reason   string `json:"reason"`
}

func (StockReceived) isEvent()       {}
func (StockReserved) isEvent()       {}
func (ReservationReleased) isEvent() {}
func (ReservationShipped) isEvent()  {}
func (StockAdjusted) isEvent()       {}
