package api

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/onceflow/onceflow/actor"
	"github.com/onceflow/onceflow/projection"
	"github.com/onceflow/onceflow/samples/inventory/readmodel"
	"github.com/onceflow/onceflow/samples/inventory/stock"
)

// readYourWrites reads the Read-Your-Writes header: absent or "false" is
// false, "true" is true (either in any case), anything else a 400.
func (s *Server) readYourWrites(r *http.Request) (bool, *apiError) {
	vals := r.Header.Values(HeaderReadYourWrites)
	bad := func(msg string) *apiError {
		return &apiError{status: http.StatusBadRequest, Code: "invalid_header", Field: HeaderReadYourWrites, Message: msg}
	}
	switch {
	case len(vals) == 0:
		return false, nil
	case len(vals) > 1:
		return false, bad(HeaderReadYourWrites + " header given more than once")
	case strings.EqualFold(vals[0], "false"):
		return false, nil
	case !strings.EqualFold(vals[0], "true"):
		return false, bad(fmt.Sprintf("%s must be \"true\" or \"false\", got %q", HeaderReadYourWrites, vals[0]))
	case s.cfg.Waiter == nil:
		return false, &apiError{status: http.StatusBadRequest, Code: "read_your_writes_unavailable", Field: HeaderReadYourWrites,
			Message: "this server has no read models to wait for: send the request without \"" + HeaderReadYourWrites + ": true\""}
	}
	return true, nil
}

// awaitReadModels waits until every projection has applied the accepted
// command out, within Config.ReadYourWritesTimeout, and says why not.
func (s *Server) awaitReadModels(r *http.Request, id, key string, out actor.Outcome) *apiError {
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.ReadYourWritesTimeout)
	defer cancel()
	pos := out.Position()
	for _, name := range s.cfg.Projections {
		err := s.cfg.Waiter.WaitFor(ctx, name, pos)
		if err == nil {
			continue
		}
		accepted := fmt.Sprintf("the command was accepted (command_id %s: it is stored, and never applied twice)", id)
		e := &apiError{CommandID: id, IdempotencyKey: key, Projection: name}
		var we *projection.WaitError
		switch {
		case errors.Is(err, projection.ErrHalted), errors.Is(err, projection.ErrPaused):
			e.status, e.Code = http.StatusServiceUnavailable, "read_model_halted"
			e.Message = fmt.Sprintf("%s, but read model %s cannot show it until an operator resumes it: %v", accepted, name, err)
		case errors.Is(err, projection.ErrNotFound):
			e.status, e.Code = http.StatusServiceUnavailable, "read_model_unavailable"
			e.Message = fmt.Sprintf("%s, but read model %s is not available: %v", accepted, name, err)
		case errors.As(err, &we):
			e.status, e.Code = http.StatusGatewayTimeout, "read_model_behind"
			e.Message = fmt.Sprintf("%s, but the read models did not show it within %v: %v. Read again later, or resend the same request with header \"Idempotency-Key: %s\" and \"%s: true\" to wait again",
				accepted, s.cfg.ReadYourWritesTimeout, err, key, HeaderReadYourWrites)
		default:
			s.log.ErrorContext(r.Context(), "read-your-writes wait failed", "path", r.URL.Path, "command_id", id, "projection", name, "err", err)
			e.status, e.Code = http.StatusInternalServerError, "internal"
			e.Message = accepted + ", but waiting for the read models failed (logged on the server)"
		}
		return e
	}
	return nil
}

// Read-model responses.
type (
	readModelBody struct {
		Name    string `json:"name"`
		Version int    `json:"version"`
	}
	stockItemBody struct {
		Warehouse string `json:"warehouse"`
		SKU       string `json:"sku"`
		OnHand    int64  `json:"on_hand"`
		Reserved  int64  `json:"reserved"`
		Available int64  `json:"available"`
		Version   int64  `json:"version"` // the aggregate version the row reflects
	}
	stockPageBody struct {
		Warehouse  string          `json:"warehouse,omitempty"`
		Below      int64           `json:"below,omitempty"`
		Items      []stockItemBody `json:"items"`
		NextCursor string          `json:"next_cursor,omitempty"` // absent on the last page
		ReadModel  readModelBody   `json:"read_model"`
	}
	reservationLineBody struct {
		Warehouse string `json:"warehouse"`
		SKU       string `json:"sku"`
		Qty       int64  `json:"qty"`
	}
	reservationBody struct {
		ReservationID string                `json:"reservation_id"`
		Lines         []reservationLineBody `json:"lines"`
		ReadModel     readModelBody         `json:"read_model"`
	}
)

func stockPage(p readmodel.StockPage) stockPageBody {
	items := make([]stockItemBody, len(p.Items))
	for i, it := range p.Items {
		items[i] = stockItemBody{Warehouse: it.Warehouse, SKU: it.SKU, OnHand: it.OnHand, Reserved: it.Reserved, Available: it.Available, Version: it.Version}
	}
	return stockPageBody{Items: items, NextCursor: p.Next, ReadModel: readModelBody{readmodel.StockName, p.Version}}
}

// GET /v1/warehouses/{warehouse}/stock?limit=&cursor=
func (s *Server) getWarehouseStock(w http.ResponseWriter, r *http.Request) {
	warehouse := r.PathValue("warehouse")
	if err := stock.ValidateWarehouse(warehouse); err != nil {
		writeError(w, &apiError{status: http.StatusBadRequest, Code: "invalid_path", Field: "warehouse", Message: err.Error()})
		return
	}
	q, e := queryParams(r, "limit", "cursor")
	if e != nil {
		writeError(w, e)
		return
	}
	limit, e := limitParam(q)
	if e != nil {
		writeError(w, e)
		return
	}
	page, err := s.cfg.ReadModels.StockOfWarehouse(r.Context(), warehouse, limit, q.Get("cursor"))
	if err != nil {
		s.readError(w, r, err)
		return
	}
	body := stockPage(page)
	body.Warehouse = warehouse
	writeJSON(w, http.StatusOK, body)
}

// GET /v1/low-stock?below=N&limit=&cursor=
func (s *Server) getLowStock(w http.ResponseWriter, r *http.Request) {
	q, e := queryParams(r, "below", "limit", "cursor")
	if e != nil {
		writeError(w, e)
		return
	}
	below, e := belowParam(q)
	if e != nil {
		writeError(w, e)
		return
	}
	limit, e := limitParam(q)
	if e != nil {
		writeError(w, e)
		return
	}
	page, err := s.cfg.ReadModels.LowStock(r.Context(), below, limit, q.Get("cursor"))
	if err != nil {
		s.readError(w, r, err)
		return
	}
	body := stockPage(page)
	body.Below = below
	writeJSON(w, http.StatusOK, body)
}

// GET /v1/reservations/{reservation_id}
func (s *Server) getReservation(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("reservation_id")
	if err := stock.ValidateReservationID(id); err != nil {
		writeError(w, &apiError{status: http.StatusBadRequest, Code: "invalid_path", Field: "reservation_id", Message: err.Error()})
		return
	}
	if _, e := queryParams(r); e != nil {
		writeError(w, e)
		return
	}
	res, err := s.cfg.ReadModels.Reservation(r.Context(), id)
	if errors.Is(err, readmodel.ErrNotFound) {
		writeError(w, &apiError{status: http.StatusNotFound, Code: "reservation_not_found",
			Message: fmt.Sprintf("no open reservation %q: never made, or already released or shipped", id)})
		return
	}
	if err != nil {
		s.readError(w, r, err)
		return
	}
	lines := make([]reservationLineBody, len(res.Lines))
	for i, l := range res.Lines {
		lines[i] = reservationLineBody{Warehouse: l.Warehouse, SKU: l.SKU, Qty: l.Qty}
	}
	writeJSON(w, http.StatusOK, reservationBody{ReservationID: id, Lines: lines, ReadModel: readModelBody{readmodel.ReservationsName, res.Version}})
}

// readError answers a read-model query's error.
func (s *Server) readError(w http.ResponseWriter, r *http.Request, err error) {
	var ae *readmodel.ArgumentError
	switch {
	case errors.As(err, &ae):
		writeError(w, &apiError{status: http.StatusBadRequest, Code: "invalid_parameter", Field: ae.Name, Message: ae.Reason})
	case errors.Is(err, readmodel.ErrNotFound):
		writeError(w, &apiError{status: http.StatusNotFound, Code: "not_found", Message: err.Error()})
	case errors.Is(err, readmodel.ErrNotReady):
		w.Header().Set("Retry-After", "1")
		writeError(w, &apiError{status: http.StatusServiceUnavailable, Code: "read_model_unavailable", Message: err.Error()})
	default:
		s.internal(w, r, "", err)
	}
}

// queryParams parses the query string strictly: only the allowed
// parameters, each at most once.
func queryParams(r *http.Request, allowed ...string) (url.Values, *apiError) {
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return nil, &apiError{status: http.StatusBadRequest, Code: "invalid_query", Message: fmt.Sprintf("malformed query string: %v", err)}
	}
	for _, n := range slices.Sorted(maps.Keys(q)) {
		if !slices.Contains(allowed, n) {
			list := "none"
			if len(allowed) > 0 {
				list = strings.Join(allowed, ", ")
			}
			return nil, &apiError{status: http.StatusBadRequest, Code: "unknown_parameter", Field: n,
				Message: fmt.Sprintf("unknown query parameter %q (allowed: %s)", n, list)}
		}
		if len(q[n]) > 1 {
			return nil, &apiError{status: http.StatusBadRequest, Code: "invalid_parameter", Field: n,
				Message: fmt.Sprintf("query parameter %q given %d times (at most once)", n, len(q[n]))}
		}
	}
	return q, nil
}

// limitParam reads limit: readmodel.DefaultLimit when absent.
func limitParam(q url.Values) (int, *apiError) {
	if !q.Has("limit") {
		return readmodel.DefaultLimit, nil
	}
	v := q.Get("limit")
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > readmodel.MaxLimit {
		return 0, &apiError{status: http.StatusBadRequest, Code: "invalid_parameter", Field: "limit",
			Message: fmt.Sprintf("limit must be an integer between 1 and %d, got %q", readmodel.MaxLimit, v)}
	}
	return n, nil
}

// belowParam reads the required below.
func belowParam(q url.Values) (int64, *apiError) {
	if !q.Has("below") {
		return 0, &apiError{status: http.StatusBadRequest, Code: "missing_parameter", Field: "below",
			Message: fmt.Sprintf("missing required query parameter \"below\": items whose available stock is below it are listed (1-%d)", stock.MaxOnHand)}
	}
	v := q.Get("below")
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 1 || n > stock.MaxOnHand {
		return 0, &apiError{status: http.StatusBadRequest, Code: "invalid_parameter", Field: "below",
			Message: fmt.Sprintf("below must be an integer between 1 and %d, got %q", stock.MaxOnHand, v)}
	}
	return n, nil
}
