package api_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/onceflow/onceflow/actor"
	"github.com/onceflow/onceflow/eventsource"
	"github.com/onceflow/onceflow/samples/inventory/api"
	"github.com/onceflow/onceflow/samples/inventory/stock"
	"github.com/onceflow/onceflow/txn"
)

// fakeSender records the commands it is given and answers with fn.
type fakeSender struct {
	mu   sync.Mutex
	cmds []eventsource.Command
	opts [][]actor.SendOption
	fn   func(ctx context.Context, cmd eventsource.Command) (actor.Outcome, error)
}

func (f *fakeSender) Send(ctx context.Context, cmd eventsource.Command, opts ...actor.SendOption) (actor.Outcome, error) {
	f.mu.Lock()
	f.cmds = append(f.cmds, cmd)
	f.opts = append(f.opts, opts)
	f.mu.Unlock()
	if f.fn == nil {
		return actor.Outcome{Status: txn.OutcomeAccepted, AggregateID: cmd.AggregateID(), FirstVersion: 1, LastVersion: 1}, nil
	}
	return f.fn(ctx, cmd)
}

func (f *fakeSender) sent() []eventsource.Command {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]eventsource.Command(nil), f.cmds...)
}

type fakeReader struct {
	state   stock.State
	version int64
	err     error
	got     [2]string
}

func (f *fakeReader) Load(_ context.Context, warehouse, sku string) (stock.State, int64, error) {
	f.got = [2]string{warehouse, sku}
	return f.state, f.version, f.err
}

func newServer(t *testing.T, s api.Sender, r api.Reader) *api.Server {
	t.Helper()
	srv, err := api.New(api.Config{Sender: s, Reader: r, Logger: slog.New(slog.DiscardHandler), SendTimeout: 2 * time.Second,
		ReadModels: &fakeReadModels{}, Waiter: &fakeWaiter{}, Projections: []string{"stock_rm", "reservations_rm"}})
	if err != nil {
		t.Fatal(err)
	}
	return srv
}

type response struct {
	status int
	header http.Header
	body   map[string]any
	raw    string
}

func do(t *testing.T, h http.Handler, method, path, contentType, body string, header ...string) response {
	t.Helper()
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Add(header[i], header[i+1])
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	res := response{status: rec.Code, header: rec.Header(), raw: rec.Body.String()}
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Fatalf("%s %s: Content-Type %q, want application/json (body %q)", method, path, ct, res.raw)
	}
	if method != http.MethodHead {
		if err := json.Unmarshal(rec.Body.Bytes(), &res.body); err != nil {
			t.Fatalf("%s %s: response is not a JSON object: %q", method, path, res.raw)
		}
	}
	return res
}

const path = "/v1/stock/ams-1/MUG-BLUE"

func TestCommandsAccepted(t *testing.T) {
	for _, tc := range []struct {
		op, body string
		want     stock.Command
	}{
		{"receive", `{"qty": 10}`, stock.ReceiveStock{Warehouse: "ams-1", SKU: "MUG-BLUE", Qty: 10}},
		{"reserve", `{"reservation_id":"o-1","qty":1000000}`, stock.Reserve{Warehouse: "ams-1", SKU: "MUG-BLUE", ReservationID: "o-1", Qty: 1_000_000}},
		{"release", `{"reservation_id":"o-1"}`, stock.Release{Warehouse: "ams-1", SKU: "MUG-BLUE", ReservationID: "o-1"}},
		{"ship", `{"reservation_id":"o-1"}`, stock.Ship{Warehouse: "ams-1", SKU: "MUG-BLUE", ReservationID: "o-1"}},
		{"adjust", `{"counted":0,"reason":"cycle count"}`, stock.Adjust{Warehouse: "ams-1", SKU: "MUG-BLUE", Counted: 0, Reason: "cycle count"}},
	} {
		t.Run(tc.op, func(t *testing.T) {
			fs := &fakeSender{}
			res := do(t, newServer(t, fs, &fakeReader{}), "POST", path+"/"+tc.op, "application/json; charset=utf-8", tc.body, "Idempotency-Key", "k-1")
			if res.status != http.StatusOK {
				t.Fatalf("status %d, body %s", res.status, res.raw)
			}
			if got := fs.sent(); len(got) != 1 || !reflect.DeepEqual(got[0], tc.want) {
				t.Fatalf("sent %#v, want %#v", got, tc.want)
			}
			if len(fs.opts[0]) != 1 {
				t.Fatalf("Send got %d options, want 1 (the command id)", len(fs.opts[0]))
			}
			wantID := api.CommandID(tc.op, "ams-1/MUG-BLUE", "k-1")
			if res.body["command_id"] != wantID || res.body["idempotency_key"] != "k-1" || res.body["status"] != "accepted" || res.body["last_version"] != 1.0 {
				t.Fatalf("body %s, want command_id %q", res.raw, wantID)
			}
		})
	}
}

func TestCommandIDScopesTheKey(t *testing.T) {
	a := api.CommandID("reserve", "ams-1/A", "k")
	if a != api.CommandID("reserve", "ams-1/A", "k") {
		t.Fatal("CommandID is not deterministic")
	}
	for _, other := range []string{api.CommandID("release", "ams-1/A", "k"), api.CommandID("reserve", "ams-1/B", "k"), api.CommandID("reserve", "ams-1/A", "k2")} {
		if other == a {
			t.Fatalf("CommandID collides: %q", a)
		}
	}
}

func TestGeneratedKeyIsReturned(t *testing.T) {
	res := do(t, newServer(t, &fakeSender{}, &fakeReader{}), "POST", path+"/receive", "application/json", `{"qty":1}`)
	key, _ := res.body["idempotency_key"].(string)
	if res.status != 200 || len(key) != 32 {
		t.Fatalf("status %d, generated key %q", res.status, key)
	}
	if res.body["command_id"] != api.CommandID("receive", "ams-1/MUG-BLUE", key) {
		t.Fatalf("command_id %v does not derive from the generated key %q", res.body["command_id"], key)
	}
}

// Every bad request is answered before anything is sent, with a JSON error
// that names the problem.
func TestBadRequests(t *testing.T) {
	big := `{"qty": 1` + strings.Repeat(" ", api.MaxBodyBytes) + `}`
	for _, tc := range []struct {
		name, method, path, ct, body string
		header                       []string
		status                       int
		code, field, msgContains     string
	}{
		{"bad json", "POST", path + "/receive", "application/json", `{"qty": }`, nil, 400, "invalid_json", "", "malformed JSON at byte offset"},
		{"truncated json", "POST", path + "/receive", "application/json", `{"qty": 1`, nil, 400, "invalid_json", "", "ends in the middle"},
		{"empty body", "POST", path + "/receive", "application/json", ``, nil, 400, "invalid_json", "", "empty"},
		{"not an object", "POST", path + "/receive", "application/json", `[1]`, nil, 400, "invalid_json", "", "must be a JSON object"},
		{"unknown field", "POST", path + "/receive", "application/json", `{"qty":1,"quantity":2}`, nil, 400, "unknown_field", "quantity", `unknown field "quantity" (allowed: qty)`},
		{"trailing data", "POST", path + "/receive", "application/json", `{"qty":1} {"qty":2}`, nil, 400, "trailing_data", "", "exactly one JSON object"},
		{"trailing garbage", "POST", path + "/receive", "application/json", `{"qty":1}x`, nil, 400, "trailing_data", "", ""},
		{"missing qty", "POST", path + "/receive", "application/json", `{}`, nil, 400, "missing_field", "qty", `missing required field "qty"`},
		{"null qty", "POST", path + "/receive", "application/json", `{"qty":null}`, nil, 400, "missing_field", "qty", ""},
		{"zero qty", "POST", path + "/receive", "application/json", `{"qty":0}`, nil, 400, "invalid_field", "qty", "qty must be between 1 and 1000000, got 0"},
		{"negative qty", "POST", path + "/reserve", "application/json", `{"reservation_id":"r","qty":-1}`, nil, 400, "invalid_field", "qty", "got -1"},
		{"absurd qty", "POST", path + "/receive", "application/json", `{"qty":1000001}`, nil, 400, "invalid_field", "qty", "got 1000001"},
		{"huge qty", "POST", path + "/receive", "application/json", `{"qty":1e30}`, nil, 400, "invalid_field", "qty", `field "qty" must be an integer`},
		{"fractional qty", "POST", path + "/receive", "application/json", `{"qty":1.5}`, nil, 400, "invalid_field", "qty", "1.5"},
		{"string qty", "POST", path + "/receive", "application/json", `{"qty":"5"}`, nil, 400, "invalid_field", "qty", "got a JSON string"},
		{"missing reservation", "POST", path + "/reserve", "application/json", `{"qty":1}`, nil, 400, "missing_field", "reservation_id", ""},
		{"empty reservation", "POST", path + "/ship", "application/json", `{"reservation_id":""}`, nil, 400, "invalid_field", "reservation_id", "reservation id is empty"},
		{"number reservation", "POST", path + "/release", "application/json", `{"reservation_id":7}`, nil, 400, "invalid_field", "reservation_id", "must be a string, got a JSON number"},
		{"missing counted", "POST", path + "/adjust", "application/json", `{"reason":"x"}`, nil, 400, "missing_field", "counted", ""},
		{"negative counted", "POST", path + "/adjust", "application/json", `{"counted":-1,"reason":"x"}`, nil, 400, "invalid_field", "counted", ""},
		{"missing reason", "POST", path + "/adjust", "application/json", `{"counted":1}`, nil, 400, "missing_field", "reason", ""},
		{"blank reason", "POST", path + "/adjust", "application/json", `{"counted":1,"reason":" "}`, nil, 400, "invalid_field", "reason", ""},
		{"bad sku", "POST", "/v1/stock/ams-1/mug/receive", "application/json", `{"qty":1}`, nil, 400, "invalid_path", "sku", `sku "mug": invalid character 'm'`},
		{"long sku", "GET", "/v1/stock/ams-1/" + strings.Repeat("A", 65), "", "", nil, 400, "invalid_path", "sku", "65 characters"},
		{"bad warehouse", "GET", "/v1/stock/AMS/MUG", "", "", nil, 400, "invalid_path", "warehouse", ""},
		{"escaped slash in sku", "GET", "/v1/stock/ams-1/A%2FB", "", "", nil, 400, "invalid_path", "sku", ""},
		{"too large", "POST", path + "/receive", "application/json", big, nil, 413, "body_too_large", "", "65536"},
		{"no content type", "POST", path + "/receive", "", `{"qty":1}`, nil, 415, "unsupported_media_type", "", "got none"},
		{"wrong content type", "POST", path + "/receive", "text/plain", `{"qty":1}`, nil, 415, "unsupported_media_type", "", `got "text/plain"`},
		{"form content type", "POST", path + "/receive", "application/x-www-form-urlencoded", `qty=1`, nil, 415, "unsupported_media_type", "", ""},
		{"GET on command", "GET", path + "/receive", "", "", nil, 405, "method_not_allowed", "", "allowed: POST"},
		{"POST on stock", "POST", path, "application/json", `{}`, nil, 405, "method_not_allowed", "", "allowed: GET, HEAD"},
		{"DELETE healthz", "DELETE", "/healthz", "", "", nil, 405, "method_not_allowed", "", ""},
		{"unknown route", "GET", "/v1/nope", "", "", nil, 404, "not_found", "", "no route for GET /v1/nope"},
		{"unknown op", "POST", path + "/steal", "application/json", `{}`, nil, 404, "not_found", "", ""},
		{"empty key", "POST", path + "/receive", "application/json", `{"qty":1}`, []string{"Idempotency-Key", ""}, 400, "invalid_idempotency_key", "Idempotency-Key", ""},
		{"long key", "POST", path + "/receive", "application/json", `{"qty":1}`, []string{"Idempotency-Key", strings.Repeat("k", 129)}, 400, "invalid_idempotency_key", "", "got 129"},
		{"key with space", "POST", path + "/receive", "application/json", `{"qty":1}`, []string{"Idempotency-Key", "a b"}, 400, "invalid_idempotency_key", "", "position 2"},
		{"two keys", "POST", path + "/receive", "application/json", `{"qty":1}`, []string{"Idempotency-Key", "a", "Idempotency-Key", "b"}, 400, "invalid_idempotency_key", "", "more than once"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := &fakeSender{}
			res := do(t, newServer(t, fs, &fakeReader{}), tc.method, tc.path, tc.ct, tc.body, tc.header...)
			t.Log(res.raw)
			if res.status != tc.status || res.body["code"] != tc.code {
				t.Fatalf("status %d code %v, want %d %s; body %s", res.status, res.body["code"], tc.status, tc.code, res.raw)
			}
			if tc.field != "" && res.body["field"] != tc.field {
				t.Errorf("field %v, want %q", res.body["field"], tc.field)
			}
			if msg, _ := res.body["error"].(string); !strings.Contains(msg, tc.msgContains) || msg == "" {
				t.Errorf("error %q does not contain %q", msg, tc.msgContains)
			}
			if n := len(fs.sent()); n != 0 {
				t.Errorf("a bad request sent %d commands", n)
			}
			if tc.status == 405 && res.header.Get("Allow") == "" {
				t.Error("405 without an Allow header")
			}
		})
	}
}

func TestOutcomeMapping(t *testing.T) {
	for _, tc := range []struct {
		name        string
		out         actor.Outcome
		err         error
		status      int
		code        string
		msgContains string
	}{
		{"accepted duplicate", actor.Outcome{Status: txn.OutcomeAccepted, Duplicate: true, LastVersion: 3}, nil, 200, "", ""},
		{"rejected error", actor.Outcome{}, &actor.RejectedError{CommandID: "x", Reason: "insufficient stock: requested 5, available 3"}, 409, "rejected", "insufficient stock: requested 5, available 3"},
		{"rejected wrapped", actor.Outcome{}, fmt.Errorf("send: %w", &actor.RejectedError{Reason: "nope"}), 409, "rejected", "nope"},
		{"rejected status", actor.Outcome{Status: txn.OutcomeRejected, Reason: "unknown reservation"}, nil, 409, "rejected", "unknown reservation"},
		{"dead-lettered", actor.Outcome{}, &actor.DeadLetteredError{Reason: "handler panicked"}, 422, "dead_lettered", "handler panicked"},
		{"dead-lettered status", actor.Outcome{Status: txn.OutcomeDeadLettered, Reason: "bad"}, nil, 422, "dead_lettered", "bad"},
		{"unknown", actor.Outcome{}, &actor.OutcomeUnknownError{CommandID: "x", Err: context.DeadlineExceeded}, 504, "outcome_unknown", `retry the same request with header "Idempotency-Key: k-9"`},
		{"deadline", actor.Outcome{}, context.DeadlineExceeded, 504, "outcome_unknown", "Idempotency-Key: k-9"},
		{"closed", actor.Outcome{}, actor.ErrClosed, 503, "unavailable", "shutting down"},
		{"key reused", actor.Outcome{Status: txn.OutcomeAccepted, Duplicate: true, PayloadMismatch: true}, &actor.PayloadMismatchError{CommandID: "x", Outcome: actor.Outcome{Status: txn.OutcomeAccepted}}, 422, "idempotency_key_reused", `Idempotency-Key "k-9" was already used for a different request`},
		{"other", actor.Outcome{}, errors.New("kafka: secret broker detail"), 500, "internal", "internal error"},
		{"bad status", actor.Outcome{Status: "weird"}, nil, 500, "internal", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := &fakeSender{fn: func(context.Context, eventsource.Command) (actor.Outcome, error) { return tc.out, tc.err }}
			res := do(t, newServer(t, fs, &fakeReader{}), "POST", path+"/reserve", "application/json", `{"reservation_id":"o-1","qty":5}`, "Idempotency-Key", "k-9")
			if res.status != tc.status {
				t.Fatalf("status %d, want %d; body %s", res.status, tc.status, res.raw)
			}
			if tc.status == 200 {
				if res.body["duplicate"] != true {
					t.Fatalf("body %s", res.raw)
				}
				return
			}
			msg, _ := res.body["error"].(string)
			if res.body["code"] != tc.code || !strings.Contains(msg, tc.msgContains) {
				t.Fatalf("body %s, want code %s and %q", res.raw, tc.code, tc.msgContains)
			}
			if strings.Contains(res.raw, "secret") {
				t.Fatal("500 leaks the internal error")
			}
			if res.body["command_id"] != api.CommandID("reserve", "ams-1/MUG-BLUE", "k-9") {
				t.Fatalf("command_id %v", res.body["command_id"])
			}
		})
	}
}

func TestSendTimeoutBoundsTheWait(t *testing.T) {
	fs := &fakeSender{fn: func(ctx context.Context, _ eventsource.Command) (actor.Outcome, error) {
		<-ctx.Done()
		return actor.Outcome{}, &actor.OutcomeUnknownError{Err: ctx.Err()}
	}}
	srv, err := api.New(api.Config{Sender: fs, Reader: &fakeReader{}, Logger: slog.New(slog.DiscardHandler), SendTimeout: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	res := do(t, srv, "POST", path+"/receive", "application/json", `{"qty":1}`)
	if res.status != 504 || res.body["idempotency_key"] == "" {
		t.Fatalf("status %d body %s", res.status, res.raw)
	}
}

func TestGetStock(t *testing.T) {
	fr := &fakeReader{state: stock.State{OnHand: 10, Reserved: 4, Reservations: map[string]int64{"o-1": 3, "o-2": 1}}, version: 7}
	res := do(t, newServer(t, &fakeSender{}, fr), "GET", path, "", "")
	if res.status != 200 {
		t.Fatalf("status %d body %s", res.status, res.raw)
	}
	want := map[string]any{"warehouse": "ams-1", "sku": "MUG-BLUE", "on_hand": 10.0, "reserved": 4.0, "available": 6.0,
		"reservations": map[string]any{"o-1": 3.0, "o-2": 1.0}, "version": 7.0}
	if !reflect.DeepEqual(res.body, want) {
		t.Fatalf("body %v, want %v", res.body, want)
	}
	if fr.got != [2]string{"ams-1", "MUG-BLUE"} {
		t.Fatalf("reader asked for %v", fr.got)
	}
}

func TestGetUnknownSKUIsEmpty(t *testing.T) {
	res := do(t, newServer(t, &fakeSender{}, &fakeReader{}), "GET", path, "", "")
	if res.status != 200 || res.body["version"] != 0.0 || !reflect.DeepEqual(res.body["reservations"], map[string]any{}) {
		t.Fatalf("status %d body %s", res.status, res.raw)
	}
}

func TestGetStockReaderError(t *testing.T) {
	res := do(t, newServer(t, &fakeSender{}, &fakeReader{err: errors.New("pg: password=hunter2")}), "GET", path, "", "")
	if res.status != 500 || strings.Contains(res.raw, "hunter2") {
		t.Fatalf("status %d body %s", res.status, res.raw)
	}
}

func TestHealthz(t *testing.T) {
	res := do(t, newServer(t, &fakeSender{}, &fakeReader{}), "GET", "/healthz", "", "")
	if res.status != 200 || res.body["status"] != "ok" {
		t.Fatalf("status %d body %s", res.status, res.raw)
	}
	srv, err := api.New(api.Config{Sender: &fakeSender{}, Reader: &fakeReader{}, Logger: slog.New(slog.DiscardHandler),
		Health: func(context.Context) error { return errors.New("db down") }})
	if err != nil {
		t.Fatal(err)
	}
	if res := do(t, srv, "GET", "/healthz", "", ""); res.status != 503 {
		t.Fatalf("unhealthy: status %d", res.status)
	}
}

func TestNewValidates(t *testing.T) {
	_, err := api.New(api.Config{SendTimeout: -1})
	if err == nil {
		t.Fatal("New accepted an empty config")
	}
	for _, want := range []string{"Sender is nil", "Reader is nil", "SendTimeout"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

// Through a real server: the body limit closes the request cleanly and the
// client sees 413.
func TestOverHTTP(t *testing.T) {
	ts := httptest.NewServer(newServer(t, &fakeSender{}, &fakeReader{}))
	defer ts.Close()
	resp, err := http.Post(ts.URL+path+"/receive", "application/json", strings.NewReader(`{"qty":1,"pad":"`+strings.Repeat("a", api.MaxBodyBytes)+`"}`))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 413 {
		t.Fatalf("status %d body %s", resp.StatusCode, b)
	}
}
