package api

import (
	"encoding/json"
	"net/http"
)

// apiError is every non-2xx answer. Code is a ledger result code for the
// domain's rejections ("exceeds_credits", "pending_transfer_expired", ...)
// and an HTTP-layer code otherwise ("missing_field", "invalid_field",
// "idempotency_key_reused", ...). Message says exactly what is wrong, in
// terms of the request the client sent; Field names the offending field,
// header or parameter.
type apiError struct {
	status         int
	Code           string        `json:"code"`
	Message        string        `json:"error"`
	Field          string        `json:"field,omitempty"`
	CommandID      string        `json:"command_id,omitempty"`
	IdempotencyKey string        `json:"idempotency_key,omitempty"`
	Transfer       *transferBody `json:"transfer,omitempty"` // the transfer as it is, when a request about it was refused
	Account        *accountBody  `json:"account,omitempty"`
}

func writeError(w http.ResponseWriter, e *apiError) { writeJSON(w, e.status, e) }

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil { // only our own fixed types are written: a bug
		status = http.StatusInternalServerError
		b = []byte(`{"code":"internal","error":"internal error"}`)
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}
