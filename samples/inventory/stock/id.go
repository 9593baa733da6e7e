package stock

import (
	"fmt"
	"strings"
)

// Format limits. They are part of the aggregate id format: changing them
// does not invalidate stored events, but ids outside the old limits would
// have been rejected before.
const (
	// MaxWarehouseLen is the longest warehouse code.
	MaxWarehouseLen = 32
	// MaxSKULen is the longest SKU.
	MaxSKULen = 64
	// MaxReservationIDLen is the longest reservation id.
	MaxReservationIDLen = 128
	// MaxReasonLen is the longest adjustment reason, in bytes.
	MaxReasonLen = 256
)

// ValidateWarehouse checks a warehouse code: 1 to 32 characters of lower-case
// ASCII letters, digits and '-' (for example "ams-1"). Lower case only, so
// "AMS-1" and "ams-1" can never name two aggregates for one warehouse.
func ValidateWarehouse(w string) error {
	if w == "" {
		return fmt.Errorf("warehouse is empty (want 1-%d characters of [a-z0-9-])", MaxWarehouseLen)
	}
	if len(w) > MaxWarehouseLen {
		return fmt.Errorf("warehouse %q is %d characters long (want at most %d)", w, len(w), MaxWarehouseLen)
	}
	for i := 0; i < len(w); i++ {
		c := w[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return fmt.Errorf("warehouse %q: invalid character %q at position %d (want [a-z0-9-])", w, rune(c), i+1)
		}
	}
	return nil
}

// ValidateSKU checks a SKU: 1 to 64 characters of upper-case ASCII letters,
// digits, '-' and '_' (for example "TSHIRT-RED_XL").
func ValidateSKU(sku string) error {
	if sku == "" {
		return fmt.Errorf("sku is empty (want 1-%d characters of [A-Z0-9-_])", MaxSKULen)
	}
	if len(sku) > MaxSKULen {
		return fmt.Errorf("sku %q is %d characters long (want at most %d)", sku, len(sku), MaxSKULen)
	}
	for i := 0; i < len(sku); i++ {
		c := sku[i]
		if !(c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return fmt.Errorf("sku %q: invalid character %q at position %d (want [A-Z0-9-_])", sku, rune(c), i+1)
		}
	}
	return nil
}

// ValidateReservationID checks a reservation id: 1 to 128 printable ASCII
// characters (no spaces or control characters). Reservation ids are chosen
// by the caller, typically an order line id.
func ValidateReservationID(id string) error {
	if id == "" {
		return fmt.Errorf("reservation id is empty")
	}
	if len(id) > MaxReservationIDLen {
		return fmt.Errorf("reservation id is %d characters long (want at most %d)", len(id), MaxReservationIDLen)
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; c <= ' ' || c > '~' {
			return fmt.Errorf("reservation id %q: invalid character %q at position %d (want printable ASCII, no spaces)", id, rune(c), i+1)
		}
	}
	return nil
}

// AggregateID returns the aggregate id "<warehouse>/<sku>". It does not
// validate; see ValidateWarehouse and ValidateSKU.
func AggregateID(warehouse, sku string) string { return warehouse + "/" + sku }

// ParseAggregateID splits and validates an id made by AggregateID.
func ParseAggregateID(id string) (warehouse, sku string, err error) {
	warehouse, sku, ok := strings.Cut(id, "/")
	if !ok {
		return "", "", fmt.Errorf("aggregate id %q: want \"<warehouse>/<sku>\"", id)
	}
	if err := ValidateWarehouse(warehouse); err != nil {
		return "", "", fmt.Errorf("aggregate id %q: %w", id, err)
	}
	if err := ValidateSKU(sku); err != nil {
		return "", "", fmt.Errorf("aggregate id %q: %w", id, err)
	}
	return warehouse, sku, nil
}
