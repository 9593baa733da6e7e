package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"

	"github.com/onceflow/onceflow/samples/inventory/stock"
)

// Request bodies. Pointer fields tell a missing field from a zero value.
type (
	receiveRequest struct {
		Qty *int64 `json:"qty"`
	}
	reserveRequest struct {
		ReservationID *string `json:"reservation_id"`
		Qty           *int64  `json:"qty"`
	}
	reservationRequest struct {
		ReservationID *string `json:"reservation_id"`
	}
	adjustRequest struct {
		Counted *int64  `json:"counted"`
		Reason  *string `json:"reason"`
	}
)

func decodeReceive(w http.ResponseWriter, r *http.Request, warehouse, sku string) (stock.Command, *apiError) {
	var req receiveRequest
	if e := decodeJSON(w, r, &req, "qty"); e != nil {
		return nil, e
	}
	qty, e := quantity("qty", req.Qty)
	if e != nil {
		return nil, e
	}
	return stock.ReceiveStock{Warehouse: warehouse, SKU: sku, Qty: qty}, nil
}

func decodeReserve(w http.ResponseWriter, r *http.Request, warehouse, sku string) (stock.Command, *apiError) {
	var req reserveRequest
	if e := decodeJSON(w, r, &req, "reservation_id, qty"); e != nil {
		return nil, e
	}
	id, e := reservationID(req.ReservationID)
	if e != nil {
		return nil, e
	}
	qty, e := quantity("qty", req.Qty)
	if e != nil {
		return nil, e
	}
	return stock.Reserve{Warehouse: warehouse, SKU: sku, ReservationID: id, Qty: qty}, nil
}

func decodeRelease(w http.ResponseWriter, r *http.Request, warehouse, sku string) (stock.Command, *apiError) {
	id, e := decodeReservationRef(w, r)
	if e != nil {
		return nil, e
	}
	return stock.Release{Warehouse: warehouse, SKU: sku, ReservationID: id}, nil
}

func decodeShip(w http.ResponseWriter, r *http.Request, warehouse, sku string) (stock.Command, *apiError) {
	id, e := decodeReservationRef(w, r)
	if e != nil {
		return nil, e
	}
	return stock.Ship{Warehouse: warehouse, SKU: sku, ReservationID: id}, nil
}

// decodeReservationRef reads a body that names an open reservation
// ({"reservation_id": ...}: release, ship) and validates the id.
func decodeReservationRef(w http.ResponseWriter, r *http.Request) (string, *apiError) {
	var req reservationRequest
	if e := decodeJSON(w, r, &req, "reservation_id"); e != nil {
		return "", e
	}
	return reservationID(req.ReservationID)
}

func decodeAdjust(w http.ResponseWriter, r *http.Request, warehouse, sku string) (stock.Command, *apiError) {
	var req adjustRequest
	if e := decodeJSON(w, r, &req, "counted, reason"); e != nil {
		return nil, e
	}
	if req.Counted == nil {
		return nil, missing("counted")
	}
	if c := *req.Counted; c < 0 || c > stock.MaxOnHand {
		return nil, invalid("counted", fmt.Sprintf("counted must be between 0 and %d, got %d", stock.MaxOnHand, c))
	}
	if req.Reason == nil {
		return nil, missing("reason")
	}
	switch reason := *req.Reason; {
	case strings.TrimSpace(reason) == "":
		return nil, invalid("reason", "reason is empty: say why the count was taken, e.g. \"cycle count\"")
	case len(reason) > stock.MaxReasonLen:
		return nil, invalid("reason", fmt.Sprintf("reason is %d bytes long (at most %d)", len(reason), stock.MaxReasonLen))
	}
	return stock.Adjust{Warehouse: warehouse, SKU: sku, Counted: *req.Counted, Reason: *req.Reason}, nil
}

func quantity(field string, q *int64) (int64, *apiError) {
	if q == nil {
		return 0, missing(field)
	}
	if *q <= 0 || *q > stock.MaxQty {
		return 0, invalid(field, fmt.Sprintf("%s must be between 1 and %d, got %d", field, stock.MaxQty, *q))
	}
	return *q, nil
}

func reservationID(id *string) (string, *apiError) {
	if id == nil {
		return "", missing("reservation_id")
	}
	if err := stock.ValidateReservationID(*id); err != nil {
		return "", invalid("reservation_id", err.Error())
	}
	return *id, nil
}

func missing(field string) *apiError {
	return &apiError{status: http.StatusBadRequest, Code: "missing_field", Field: field, Message: fmt.Sprintf("missing required field %q", field)}
}

func invalid(field, msg string) *apiError {
	return &apiError{status: http.StatusBadRequest, Code: "invalid_field", Field: field, Message: msg}
}

// decodeJSON reads r's body into dst strictly: Content-Type must be
// application/json, the body at most MaxBodyBytes, exactly one JSON object,
// no unknown fields. allowed lists the fields for error messages.
func decodeJSON(w http.ResponseWriter, r *http.Request, dst any, allowed string) *apiError {
	ct := r.Header.Get("Content-Type")
	mt, _, err := mime.ParseMediaType(ct)
	if ct == "" || err != nil || mt != "application/json" {
		got := "none"
		if ct != "" {
			got = fmt.Sprintf("%q", ct)
		}
		return &apiError{status: http.StatusUnsupportedMediaType, Code: "unsupported_media_type",
			Message: fmt.Sprintf("Content-Type must be application/json, got %s", got)}
	}
	r.Body = http.MaxBytesReader(w, r.Body, MaxBodyBytes)
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		return jsonError(err, allowed)
	}
	// Exactly one value: anything but trailing white space is an error.
	if err := dec.Decode(&json.RawMessage{}); !errors.Is(err, io.EOF) {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return bodyTooLarge()
		}
		return &apiError{status: http.StatusBadRequest, Code: "trailing_data",
			Message: fmt.Sprintf("unexpected data after the JSON object at byte offset %d: send exactly one JSON object", dec.InputOffset())}
	}
	return nil
}

func bodyTooLarge() *apiError {
	return &apiError{status: http.StatusRequestEntityTooLarge, Code: "body_too_large",
		Message: fmt.Sprintf("request body is larger than %d bytes", MaxBodyBytes)}
}

func jsonError(err error, allowed string) *apiError {
	var (
		syntax *json.SyntaxError
		typ    *json.UnmarshalTypeError
		tooBig *http.MaxBytesError
		bad    = func(code, msg string) *apiError {
			return &apiError{status: http.StatusBadRequest, Code: code, Message: msg}
		}
		unknown = "json: unknown field "
	)
	switch {
	case errors.As(err, &tooBig):
		return bodyTooLarge()
	case errors.Is(err, io.EOF):
		return bad("invalid_json", "request body is empty: expected a JSON object with "+allowed)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return bad("invalid_json", "malformed JSON: the body ends in the middle of a value")
	case errors.As(err, &syntax):
		return bad("invalid_json", fmt.Sprintf("malformed JSON at byte offset %d: %s", syntax.Offset, strings.TrimPrefix(syntax.Error(), "json: ")))
	case errors.As(err, &typ):
		if typ.Field == "" {
			return bad("invalid_json", fmt.Sprintf("request body must be a JSON object, got a JSON %s", typ.Value))
		}
		want := "a string"
		if k := typ.Type.String(); k == "int64" || k == "*int64" {
			want = "an integer"
		}
		return &apiError{status: http.StatusBadRequest, Code: "invalid_field", Field: typ.Field,
			Message: fmt.Sprintf("field %q must be %s, got %s", typ.Field, want, describe(typ.Value, want == "an integer"))}
	case strings.HasPrefix(err.Error(), unknown):
		name := strings.Trim(strings.TrimPrefix(err.Error(), unknown), `"`)
		return &apiError{status: http.StatusBadRequest, Code: "unknown_field", Field: name,
			Message: fmt.Sprintf("unknown field %q (allowed: %s)", name, allowed)}
	}
	return bad("invalid_json", "malformed JSON: "+strings.TrimPrefix(err.Error(), "json: "))
}

// describe turns UnmarshalTypeError.Value ("string", "number 1.5", ...) into
// words.
func describe(v string, wantInt bool) string {
	if n, ok := strings.CutPrefix(v, "number "); ok {
		return "the number " + n + " (not an integer in range)"
	}
	switch v {
	case "number":
		if wantInt {
			return "a number out of range"
		}
		return "a JSON number"
	case "array", "object", "string", "bool":
		return "a JSON " + v
	}
	return v
}
