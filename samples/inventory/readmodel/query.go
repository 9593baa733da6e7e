package readmodel

import (
	"cmp"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/onceflow/onceflow/projection"
	"github.com/onceflow/onceflow/samples/inventory/stock"
)

// Page sizes.
const (
	// DefaultLimit is the page size the HTTP API uses when none is given.
	DefaultLimit = 100
	// MaxLimit is the largest page.
	MaxLimit = 1000
	// maxCursorLen bounds a cursor before it is decoded.
	maxCursorLen = 512
)

var (
	// ErrNotFound: no such row (Reservation: no open reservation with the id).
	ErrNotFound = errors.New("not found")
	// ErrNotReady: the projection has no active version yet (its runtime,
	// or Install, registers it).
	ErrNotReady = errors.New("read model not ready")
)

// ArgumentError is an invalid query argument; Name is the parameter.
type ArgumentError struct {
	Name   string // "warehouse", "limit", "cursor", "below", "reservation_id"
	Reason string
}

func (e *ArgumentError) Error() string { return "invalid " + e.Name + ": " + e.Reason }

// StockItem is one row of the stock read model.
type StockItem struct {
	Warehouse string
	SKU       string
	OnHand    int64
	Reserved  int64
	Available int64 // OnHand - Reserved
	Version   int64 // the aggregate version the row reflects
}

// StockPage is one page of stock items.
type StockPage struct {
	Items []StockItem
	// Next is the cursor of the next page; empty on the last one.
	Next string
	// Version is the projection version that was read.
	Version int
}

// ReservationLine is the stock one open reservation holds of one SKU.
type ReservationLine struct {
	Warehouse string
	SKU       string
	Qty       int64
}

// Reservation is an open reservation: the lines it holds, by warehouse and
// SKU. Reservation ids are unique per (warehouse, sku), so one id may hold
// several SKUs.
type Reservation struct {
	ID      string
	Lines   []ReservationLine
	Version int // the projection version that was read
}

// Reader queries the read models. Safe for concurrent use.
//
// Every query runs in one transaction that first reads the projection's
// active version from the registry (projection.ActiveTx, which holds its
// registry row FOR SHARE) and then queries that version's table: after a
// blue/green switch the next query reads the new version, and a switch
// (with the drop of the old version's table) waits for the queries in
// flight, so a query never sees a table vanish. The columns a query reads
// must exist in every version it may find active: a version that changes
// them ships with queries for both.
type Reader struct {
	pool   *pgxpool.Pool
	schema string
}

// NewReader returns a Reader on pool. schema is onceflow's (the registry's)
// schema: "" for the default, "onceflow", else what actor.WithSchema set.
func NewReader(pool *pgxpool.Pool, schema string) *Reader {
	return &Reader{pool: pool, schema: cmp.Or(schema, "onceflow")}
}

// read runs q in a transaction, on the table of name's active version.
func (r *Reader) read(ctx context.Context, name string, q func(tx pgx.Tx, table string, version int) error) error {
	var version int
	err := pgx.BeginFunc(ctx, r.pool, func(tx pgx.Tx) error {
		info, err := projection.ActiveTx(ctx, tx, r.schema, name)
		if errors.Is(err, projection.ErrNotFound) {
			return fmt.Errorf("%w: projection %s has no active version yet (it is registered when its runtime or Install runs)", ErrNotReady, name)
		}
		if err != nil {
			return err
		}
		version = info.Version
		return q(tx, table(name, version), version)
	})
	switch {
	case errors.Is(err, ErrNotReady):
		return err
	case err != nil && version == 0:
		return fmt.Errorf("readmodel: %s: %w", name, err)
	case err != nil:
		return fmt.Errorf("readmodel: %s v%d: %w", name, version, err)
	}
	return nil
}

func checkLimit(limit int) error {
	if limit < 1 || limit > MaxLimit {
		return &ArgumentError{Name: "limit", Reason: fmt.Sprintf("limit must be between 1 and %d, got %d", MaxLimit, limit)}
	}
	return nil
}

const stockColumns = `warehouse, sku, on_hand, reserved, available, version`

func scanStock(row pgx.CollectableRow) (StockItem, error) {
	var it StockItem
	err := row.Scan(&it.Warehouse, &it.SKU, &it.OnHand, &it.Reserved, &it.Available, &it.Version)
	return it, err
}

// StockOfWarehouse returns the stock of warehouse's SKUs in SKU order (byte
// order), limit (1..MaxLimit) at a time: cursor is empty for the first page,
// then the previous page's Next. Keyset pagination: a page starts after the
// last SKU of the previous one, so a SKU that appears meanwhile is listed
// if it sorts after that point, and none is listed twice. A warehouse
// without stock events has no items.
func (r *Reader) StockOfWarehouse(ctx context.Context, warehouse string, limit int, cursor string) (StockPage, error) {
	if err := stock.ValidateWarehouse(warehouse); err != nil {
		return StockPage{}, &ArgumentError{Name: "warehouse", Reason: err.Error()}
	}
	if err := checkLimit(limit); err != nil {
		return StockPage{}, err
	}
	after, err := decodeSKUCursor(cursor)
	if err != nil {
		return StockPage{}, err
	}
	var page StockPage
	err = r.read(ctx, StockName, func(tx pgx.Tx, t string, version int) error {
		rows, _ := tx.Query(ctx, `SELECT `+stockColumns+` FROM `+t+` WHERE warehouse = $1 AND sku > $2 ORDER BY sku LIMIT $3`,
			warehouse, after, limit+1)
		items, err := pgx.CollectRows(rows, scanStock)
		if err != nil {
			return err
		}
		page = StockPage{Items: items, Version: version}
		if len(items) > limit {
			page.Items = items[:limit]
			page.Next = encodeCursor(items[limit-1].SKU)
		}
		return nil
	})
	return page, err
}

// LowStock returns the (warehouse, sku) pairs whose available stock is
// below below (1..stock.MaxOnHand), lowest available first, then by
// warehouse and SKU; limit and cursor as in StockOfWarehouse. An item whose
// stock changes between two pages moves in this order: it may then be
// listed twice or not at all. Each page is consistent.
func (r *Reader) LowStock(ctx context.Context, below int64, limit int, cursor string) (StockPage, error) {
	if below < 1 || below > stock.MaxOnHand {
		return StockPage{}, &ArgumentError{Name: "below", Reason: fmt.Sprintf("below must be between 1 and %d, got %d", stock.MaxOnHand, below)}
	}
	if err := checkLimit(limit); err != nil {
		return StockPage{}, err
	}
	// Start before every row: available is never negative.
	after := lowStockKey{available: -1}
	if cursor != "" {
		var err error
		if after, err = decodeLowStockCursor(cursor); err != nil {
			return StockPage{}, err
		}
	}
	var page StockPage
	err := r.read(ctx, StockName, func(tx pgx.Tx, t string, version int) error {
		rows, _ := tx.Query(ctx, `SELECT `+stockColumns+` FROM `+t+`
			WHERE available < $1 AND (available, warehouse, sku) > ($2, $3, $4)
			ORDER BY available, warehouse, sku LIMIT $5`, below, after.available, after.warehouse, after.sku, limit+1)
		items, err := pgx.CollectRows(rows, scanStock)
		if err != nil {
			return err
		}
		page = StockPage{Items: items, Version: version}
		if len(items) > limit {
			page.Items = items[:limit]
			last := items[limit-1]
			page.Next = lowStockKey{last.Available, last.Warehouse, last.SKU}.cursor()
		}
		return nil
	})
	return page, err
}

// Reservation returns the open reservation id: its lines by warehouse and
// SKU, or an error matching ErrNotFound when none is open (never made, or
// released or shipped: closed reservations leave the read model).
func (r *Reader) Reservation(ctx context.Context, id string) (Reservation, error) {
	if err := stock.ValidateReservationID(id); err != nil {
		return Reservation{}, &ArgumentError{Name: "reservation_id", Reason: err.Error()}
	}
	var res Reservation
	err := r.read(ctx, ReservationsName, func(tx pgx.Tx, t string, version int) error {
		rows, _ := tx.Query(ctx, `SELECT warehouse, sku, qty FROM `+t+` WHERE reservation_id = $1 ORDER BY warehouse, sku`, id)
		lines, err := pgx.CollectRows(rows, pgx.RowToStructByPos[ReservationLine])
		res = Reservation{ID: id, Lines: lines, Version: version}
		return err
	})
	if err != nil {
		return Reservation{}, err
	}
	if len(res.Lines) == 0 {
		return Reservation{}, fmt.Errorf("%w: no open reservation %q (never made, or already released or shipped)", ErrNotFound, id)
	}
	return res, nil
}

// Cursors are opaque to clients: URL-safe base64 (no padding) of the last
// key of the page. Decoding validates them fully, so a cursor a client made
// up or took from the other listing is an ArgumentError, never a query.

func encodeCursor(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

func badCursor(why string) error {
	return &ArgumentError{Name: "cursor", Reason: "not a cursor this listing returned (" + why + "): pass next_cursor of the previous page unchanged, or none for the first page"}
}

func decodeCursor(c string) (string, error) {
	if len(c) > maxCursorLen {
		return "", badCursor(fmt.Sprintf("%d characters long", len(c)))
	}
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil {
		return "", badCursor("not base64url")
	}
	return string(b), nil
}

// decodeSKUCursor returns the SKU a StockOfWarehouse page starts after
// ("" for the first page).
func decodeSKUCursor(c string) (string, error) {
	if c == "" {
		return "", nil
	}
	sku, err := decodeCursor(c)
	if err != nil {
		return "", err
	}
	if err := stock.ValidateSKU(sku); err != nil {
		return "", badCursor("it does not hold a SKU")
	}
	return sku, nil
}

// lowStockKey is LowStock's sort key.
type lowStockKey struct {
	available      int64
	warehouse, sku string
}

// cursor encodes "<available>/<warehouse>/<sku>": neither id contains '/'.
func (k lowStockKey) cursor() string {
	return encodeCursor(strconv.FormatInt(k.available, 10) + "/" + k.warehouse + "/" + k.sku)
}

func decodeLowStockCursor(c string) (lowStockKey, error) {
	s, err := decodeCursor(c)
	if err != nil {
		return lowStockKey{}, err
	}
	parts := strings.SplitN(s, "/", 3)
	if len(parts) != 3 {
		return lowStockKey{}, badCursor("it does not hold a low-stock position")
	}
	n, err := strconv.ParseInt(parts[0], 10, 64)
	if err != nil || n < 0 || n > stock.MaxOnHand || stock.ValidateWarehouse(parts[1]) != nil || stock.ValidateSKU(parts[2]) != nil {
		return lowStockKey{}, badCursor("it does not hold a low-stock position")
	}
	return lowStockKey{n, parts[1], parts[2]}, nil
}
