package api_test

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/onceflow/onceflow/samples/inventory/stock"
)

// FuzzAPI throws arbitrary requests at the API. Whatever comes in: no
// panic, no 5xx (the fake sender and reader never fail), every error is a
// JSON body with a code and a message, and a command reaches the sender
// only as a valid command (valid target, quantities in range) answered 200.
//
//	go test -run '^$' -fuzz FuzzAPI -fuzztime 20s ./samples/inventory/api
func FuzzAPI(f *testing.F) {
	for _, s := range [][5]string{
		{"POST", "/v1/stock/ams-1/MUG-BLUE/receive", "application/json", "k1", `{"qty": 10}`},
		{"POST", "/v1/stock/ams-1/MUG-BLUE/reserve", "application/json", "", `{"reservation_id": "o-7", "qty": 3}`},
		{"POST", "/v1/stock/ams-1/MUG-BLUE/release", "application/json; charset=utf-8", "k", `{"reservation_id": "o-7"}`},
		{"POST", "/v1/stock/ams-1/MUG-BLUE/ship", "application/json", "k", `{"reservation_id": "o-7"}`},
		{"POST", "/v1/stock/ams-1/MUG-BLUE/adjust", "application/json", "k", `{"counted": 4, "reason": "cycle count"}`},
		{"GET", "/v1/stock/ams-1/MUG-BLUE", "", "", ""},
		{"GET", "/v1/warehouses/ams-1/stock", "", "", ""},
		{"GET", "/v1/low-stock", "", "", ""},
		{"GET", "/v1/reservations/order%2F7", "", "", ""},
		{"POST", "/v1/stock/AMS/mug/receive", "text/plain", "a b", `{"qty": -1}`},
		{"POST", "/v1/stock/ams-1/MUG-BLUE/receive", "application/json", "k", `{"qty": 1e300}`},
		{"POST", "/v1/stock/ams-1/MUG-BLUE/reserve", "application/json", "k", `{"reservation_id": "\u0000", "qty": 1} {}`},
		{"DELETE", "/healthz", "", "", ""},
	} {
		f.Add(s[0], s[1], s[2], s[3], s[4])
	}
	f.Fuzz(func(t *testing.T, method, path, contentType, key, body string) {
		if _, err := url.ParseRequestURI(path); err != nil || !validMethod(method) || !strings.HasPrefix(path, "/") || strings.ContainsAny(path, " \r\n\t#?") {
			return // httptest.NewRequest panics on requests no client could send
		}
		sender := &fakeSender{}
		srv := newServer(t, sender, &fakeReader{state: stock.Initial()})
		req := httptest.NewRequest(method, "http://api"+path, strings.NewReader(body))
		if contentType != "" {
			req.Header.Set("Content-Type", contentType)
		}
		if key != "" {
			req.Header.Set("Idempotency-Key", key)
		}
		rec := httptest.NewRecorder()
		srv.ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("%s %s %q: %d %s", method, path, body, rec.Code, rec.Body)
		}
		if method == http.MethodHead {
			return
		}
		if rec.Code == http.StatusMovedPermanently || rec.Code == http.StatusTemporaryRedirect || rec.Code == http.StatusPermanentRedirect {
			// net/http.ServeMux sends an unclean path ("/a/../b", "/.")
			// to its clean form, which then gets a proper answer.
			if len(sender.sent()) > 0 || rec.Header().Get("Location") == "" {
				t.Fatalf("%s %s: redirect %d without Location, or after sending a command", method, path, rec.Code)
			}
			return
		}
		var m map[string]any
		if err := json.Unmarshal(rec.Body.Bytes(), &m); err != nil {
			t.Fatalf("%s %s: %d with a body that is not JSON: %q", method, path, rec.Code, rec.Body)
		}
		if rec.Code >= 400 && (m["code"] == "" || m["code"] == nil || m["error"] == "" || m["error"] == nil) {
			t.Fatalf("%s %s: %d without code and message: %v", method, path, rec.Code, m)
		}
		for _, c := range sender.sent() {
			if rec.Code != 200 {
				t.Fatalf("a command reached the sender but the answer was %d", rec.Code)
			}
			if _, _, err := stock.ParseAggregateID(c.AggregateID()); err != nil {
				t.Fatalf("command with an invalid target reached the sender: %#v: %v", c, err)
			}
			sc, ok := c.(stock.Command)
			if !ok {
				t.Fatalf("a non-stock command reached the sender: %#v", c)
			}
			if _, err := stock.Decide(stock.State{OnHand: stock.MaxQty, Reservations: map[string]int64{}}, sc); errors.Is(err, stock.ErrInvalidCommand) {
				t.Fatalf("an invalid command reached the sender: %#v: %v", c, err)
			}
		}
	})
}

func validMethod(m string) bool {
	if m == "" {
		return false
	}
	for _, c := range m {
		if c < 'A' || c > 'Z' {
			return false
		}
	}
	return true
}
