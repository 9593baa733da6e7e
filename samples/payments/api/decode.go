package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"mime"
	"net/http"
	"strings"

	"github.com/onceflow/onceflow/samples/payments/ledger"
)

// Request bodies. Pointer fields tell a missing field from a zero value.
type (
	flagsRequest struct {
		DebitsMustNotExceedCredits *bool `json:"debits_must_not_exceed_credits"`
		CreditsMustNotExceedDebits *bool `json:"credits_must_not_exceed_debits"`
	}
	openAccountRequest struct {
		ID     *string       `json:"id"`
		Ledger *int64        `json:"ledger"`
		Code   *int64        `json:"code"`
		Flags  *flagsRequest `json:"flags"`
	}
	createTransferRequest struct {
		ID              *string `json:"id"`
		DebitAccountID  *string `json:"debit_account_id"`
		CreditAccountID *string `json:"credit_account_id"`
		Amount          *int64  `json:"amount"`
		Ledger          *int64  `json:"ledger"`
		Code            *int64  `json:"code"`
		Pending         *bool   `json:"pending"`
		TimeoutSeconds  *int64  `json:"timeout_seconds"`
	}
	postRequest struct {
		Amount *int64 `json:"amount"`
	}
	emptyRequest     struct{}
	authorizeRequest struct {
		AuthorizationID   *string `json:"authorization_id"`
		CardAccountID     *string `json:"card_account_id"`
		MerchantAccountID *string `json:"merchant_account_id"`
		Amount            *int64  `json:"amount"`
		Ledger            *int64  `json:"ledger"`
		Code              *int64  `json:"code"`
		TimeoutSeconds    *int64  `json:"timeout_seconds"`
	}
	captureRequest struct {
		AuthorizationID *string `json:"authorization_id"`
		Amount          *int64  `json:"amount"`
	}
	cardVoidRequest struct {
		AuthorizationID *string `json:"authorization_id"`
	}
	refundRequest struct {
		AuthorizationID *string `json:"authorization_id"`
		RefundID        *string `json:"refund_id"`
		Amount          *int64  `json:"amount"`
	}
)

func missing(field string) *apiError {
	return &apiError{status: http.StatusBadRequest, Code: "missing_field", Field: field, Message: fmt.Sprintf("missing required field %q", field)}
}

func invalid(field, msg string) *apiError {
	return &apiError{status: http.StatusBadRequest, Code: "invalid_field", Field: field, Message: msg}
}

func id(field string, v *string) (string, *apiError) {
	if v == nil {
		return "", missing(field)
	}
	if err := ledger.ValidateID(field, *v); err != nil {
		return "", invalid(field, err.Error())
	}
	return *v, nil
}

// amount reads a required amount in minor units: an integer from 1 to the
// largest int64.
func amount(field string, v *int64) (int64, *apiError) {
	if v == nil {
		return 0, missing(field)
	}
	if *v <= 0 {
		return 0, invalid(field, fmt.Sprintf("%s must be an integer number of minor units between 1 and %d, got %d", field, int64(math.MaxInt64), *v))
	}
	return *v, nil
}

func ledgerField(v *int64) (uint32, *apiError) {
	if v == nil {
		return 0, missing("ledger")
	}
	if *v < 1 || *v > math.MaxUint32 {
		return 0, invalid("ledger", fmt.Sprintf("ledger must be between 1 and %d (the currency's ledger number, e.g. 840 for USD), got %d", uint32(math.MaxUint32), *v))
	}
	return uint32(*v), nil
}

// codeField reads a code (1..65535); def applies when it is absent and def
// is not zero.
func codeField(v *int64, def uint16) (uint16, *apiError) {
	if v == nil {
		if def != 0 {
			return def, nil
		}
		return 0, missing("code")
	}
	if *v < 1 || *v > math.MaxUint16 {
		return 0, invalid("code", fmt.Sprintf("code must be between 1 and %d, got %d", math.MaxUint16, *v))
	}
	return uint16(*v), nil
}

func timeoutField(v *int64, pending bool) (int64, *apiError) {
	if v == nil {
		return 0, nil
	}
	switch {
	case !pending:
		return 0, invalid("timeout_seconds", "timeout_seconds is for pending (two-phase) transfers only: set \"pending\": true or leave it out")
	case *v < 0 || *v > ledger.MaxTimeout:
		return 0, invalid("timeout_seconds", fmt.Sprintf("timeout_seconds must be between 0 (no timeout) and %d, got %d", int64(ledger.MaxTimeout), *v))
	}
	return *v, nil
}

// decodeJSON reads r's body into dst strictly: Content-Type
// application/json, at most MaxBodyBytes, one JSON object, no unknown
// fields. allowEmpty accepts an empty body (as {}). allowed lists the
// fields for error messages.
func decodeJSON(w http.ResponseWriter, r *http.Request, dst any, allowed string, allowEmpty bool) *apiError {
	if allowEmpty && r.ContentLength == 0 {
		return nil
	}
	ct := r.Header.Get("Content-Type")
	mt, _, err := mime.ParseMediaType(ct)
	if ct == "" || err != nil || mt != "application/json" {
		got := "none"
		if ct != "" {
			got = fmt.Sprintf("%q", ct)
		}
		return &apiError{status: http.StatusUnsupportedMediaType, Code: "unsupported_media_type", Field: "Content-Type",
			Message: fmt.Sprintf("Content-Type must be application/json, got %s", got)}
	}
	r.Body = http.MaxBytesReader(w, r.Body, MaxBodyBytes)
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		if allowEmpty && errors.Is(err, io.EOF) {
			return nil
		}
		return jsonError(err, allowed)
	}
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
		syntax  *json.SyntaxError
		typ     *json.UnmarshalTypeError
		tooBig  *http.MaxBytesError
		unknown = "json: unknown field "
		bad     = func(code, msg string) *apiError {
			return &apiError{status: http.StatusBadRequest, Code: code, Message: msg}
		}
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
		switch k := typ.Type.String(); k {
		case "int64", "*int64":
			want = fmt.Sprintf("an integer (minor units; at most %d)", int64(math.MaxInt64))
		case "bool", "*bool":
			want = "true or false"
		case "api.flagsRequest", "*api.flagsRequest":
			want = "a JSON object"
		}
		return &apiError{status: http.StatusBadRequest, Code: "invalid_field", Field: typ.Field,
			Message: fmt.Sprintf("field %q must be %s, got %s", typ.Field, want, describe(typ.Value))}
	case strings.HasPrefix(err.Error(), unknown):
		name := strings.Trim(strings.TrimPrefix(err.Error(), unknown), `"`)
		return &apiError{status: http.StatusBadRequest, Code: "unknown_field", Field: name,
			Message: fmt.Sprintf("unknown field %q (allowed: %s)", name, allowed)}
	}
	return bad("invalid_json", "malformed JSON: "+strings.TrimPrefix(err.Error(), "json: "))
}

// describe turns UnmarshalTypeError.Value ("string", "number 1.5", ...)
// into words.
func describe(v string) string {
	if n, ok := strings.CutPrefix(v, "number "); ok {
		return "the number " + n + " (not an integer in range)"
	}
	switch v {
	case "number":
		return "a number out of range"
	case "array", "object", "string", "bool":
		return "a JSON " + v
	}
	return v
}
