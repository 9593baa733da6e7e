package stock

import "errors"

// Rejections returned by Decide. Each is wrapped with the details (for
// example "insufficient stock: requested 5, available 3"); match with
// errors.Is. Across the runtime only the text survives (it is stored as the
// command's rejection reason), so the text is written for the person who
// reads it.
var (
	// ErrInvalidCommand: a field is missing or out of range.
	ErrInvalidCommand = errors.New("invalid command")
	// ErrInsufficientStock: a reservation asks for more than is available.
	ErrInsufficientStock = errors.New("insufficient stock")
	// ErrUnknownReservation: release or ship of a reservation that does not
	// exist (never made, or already released or shipped).
	ErrUnknownReservation = errors.New("unknown reservation")
	// ErrDuplicateReservation: a reservation id that is already open.
	ErrDuplicateReservation = errors.New("duplicate reservation")
	// ErrBelowReserved: a stock count lower than the reserved quantity.
	ErrBelowReserved = errors.New("counted stock below reserved")
	// ErrCapacity: on-hand stock would exceed MaxOnHand.
	ErrCapacity = errors.New("stock capacity exceeded")
)
