package api

import (
	"encoding/json"
	"net/http"
)

// apiError is every non-2xx answer. Message says exactly what is wrong, in
// terms of the request the client sent.
type apiError struct {
	status         int
	Code           string `json:"code"`
	Message        string `json:"error"`
	Field          string `json:"field,omitempty"`
	CommandID      string `json:"command_id,omitempty"`
	IdempotencyKey string `json:"idempotency_key,omitempty"`
	Projection     string `json:"projection,omitempty"` // the read model a read-your-writes wait gave up on
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
