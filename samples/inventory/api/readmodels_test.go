package api_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/onceflow/onceflow/actor"
	"github.com/onceflow/onceflow/eventsource"
	"github.com/onceflow/onceflow/projection"
	"github.com/onceflow/onceflow/samples/inventory/api"
	"github.com/onceflow/onceflow/samples/inventory/readmodel"
	"github.com/onceflow/onceflow/txn"
)

// fakeReadModels records its arguments and answers with the fields.
type fakeReadModels struct {
	mu    sync.Mutex
	calls []string
	page  readmodel.StockPage
	res   readmodel.Reservation
	err   error
}

func (f *fakeReadModels) record(format string, args ...any) {
	f.mu.Lock()
	f.calls = append(f.calls, fmt.Sprintf(format, args...))
	f.mu.Unlock()
}

func (f *fakeReadModels) StockOfWarehouse(_ context.Context, warehouse string, limit int, cursor string) (readmodel.StockPage, error) {
	f.record("stock %s %d %q", warehouse, limit, cursor)
	return f.page, f.err
}

func (f *fakeReadModels) LowStock(_ context.Context, below int64, limit int, cursor string) (readmodel.StockPage, error) {
	f.record("low %d %d %q", below, limit, cursor)
	return f.page, f.err
}

func (f *fakeReadModels) Reservation(_ context.Context, id string) (readmodel.Reservation, error) {
	f.record("reservation %s", id)
	if f.err == nil && len(f.res.Lines) == 0 {
		return readmodel.Reservation{}, fmt.Errorf("%w: no open reservation %q", readmodel.ErrNotFound, id)
	}
	return f.res, f.err
}

// fakeWaiter records what it is asked to wait for; fn, when set, answers.
type fakeWaiter struct {
	mu    sync.Mutex
	calls []string
	fn    func(ctx context.Context, name string, pos projection.Position) error
}

func (f *fakeWaiter) WaitFor(ctx context.Context, name string, pos projection.Position) error {
	f.mu.Lock()
	f.calls = append(f.calls, fmt.Sprintf("%s %d/%d", name, pos.Partition, pos.Seq))
	f.mu.Unlock()
	if f.fn == nil {
		return nil
	}
	return f.fn(ctx, name, pos)
}

func (f *fakeWaiter) waited() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

func readServer(t *testing.T, cfg api.Config) *api.Server {
	t.Helper()
	cfg.Logger = slog.New(slog.DiscardHandler)
	if cfg.Sender == nil {
		cfg.Sender = &fakeSender{}
	}
	if cfg.Reader == nil {
		cfg.Reader = &fakeReader{}
	}
	srv, err := api.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return srv
}

var page = readmodel.StockPage{Version: 3, Next: "QQ", Items: []readmodel.StockItem{
	{Warehouse: "ams-1", SKU: "A", OnHand: 10, Reserved: 4, Available: 6, Version: 7},
	{Warehouse: "ams-1", SKU: "B", OnHand: 1, Reserved: 1, Available: 0, Version: 2},
}}

func TestReadModelEndpoints(t *testing.T) {
	rm := &fakeReadModels{page: page, res: readmodel.Reservation{ID: "order/7", Version: 1, Lines: []readmodel.ReservationLine{
		{Warehouse: "ams-1", SKU: "A", Qty: 3}, {Warehouse: "ber-2", SKU: "B", Qty: 1}}}}
	srv := readServer(t, api.Config{ReadModels: rm})
	items := []any{
		map[string]any{"warehouse": "ams-1", "sku": "A", "on_hand": 10.0, "reserved": 4.0, "available": 6.0, "version": 7.0},
		map[string]any{"warehouse": "ams-1", "sku": "B", "on_hand": 1.0, "reserved": 1.0, "available": 0.0, "version": 2.0},
	}
	for _, tc := range []struct {
		path, call string
		want       map[string]any
	}{
		{"/v1/warehouses/ams-1/stock", `stock ams-1 100 ""`,
			map[string]any{"warehouse": "ams-1", "items": items, "next_cursor": "QQ", "read_model": map[string]any{"name": "inventory_stock", "version": 3.0}}},
		{"/v1/warehouses/ams-1/stock?limit=1000&cursor=QkI", `stock ams-1 1000 "QkI"`, nil},
		{"/v1/warehouses/ams-1/stock?cursor=", `stock ams-1 100 ""`, nil},
		{"/v1/low-stock?below=5", `low 5 100 ""`,
			map[string]any{"below": 5.0, "items": items, "next_cursor": "QQ", "read_model": map[string]any{"name": "inventory_stock", "version": 3.0}}},
		{"/v1/low-stock?limit=1&below=1000000000&cursor=x", `low 1000000000 1 "x"`, nil},
		{"/v1/reservations/order%2F7", `reservation order/7`,
			map[string]any{"reservation_id": "order/7", "read_model": map[string]any{"name": "inventory_reservations", "version": 1.0}, "lines": []any{
				map[string]any{"warehouse": "ams-1", "sku": "A", "qty": 3.0}, map[string]any{"warehouse": "ber-2", "sku": "B", "qty": 1.0}}}},
	} {
		rm.calls = nil
		res := do(t, srv, "GET", tc.path, "", "")
		if res.status != 200 || len(rm.calls) != 1 || rm.calls[0] != tc.call {
			t.Fatalf("GET %s: %d %s; calls %q, want %q", tc.path, res.status, res.raw, rm.calls, tc.call)
		}
		if tc.want != nil && !reflect.DeepEqual(res.body, tc.want) {
			t.Fatalf("GET %s:\n got %v\nwant %v", tc.path, res.body, tc.want)
		}
	}
	// The last page has no next_cursor; an empty page is an empty list.
	rm.page = readmodel.StockPage{Version: 1}
	if res := do(t, srv, "GET", "/v1/warehouses/ams-1/stock", "", ""); res.status != 200 || res.raw != `{"warehouse":"ams-1","items":[],"read_model":{"name":"inventory_stock","version":1}}`+"\n" {
		t.Fatalf("empty page: %d %s", res.status, res.raw)
	}
	if res := do(t, srv, "HEAD", "/v1/low-stock?below=3", "", ""); res.status != 200 {
		t.Fatalf("HEAD: %d", res.status)
	}
	// A closed or unknown reservation.
	rm.res = readmodel.Reservation{}
	res := do(t, srv, "GET", "/v1/reservations/order-9", "", "")
	if msg, _ := res.body["error"].(string); res.status != 404 || res.body["code"] != "reservation_not_found" ||
		msg != `no open reservation "order-9": never made, or already released or shipped` {
		t.Fatalf("unknown reservation: %d %s", res.status, res.raw)
	}
}

func TestReadModelBadRequests(t *testing.T) {
	for _, tc := range []struct {
		name, path          string
		err                 error
		status              int
		code, field, inMsg  string
		reachesTheReadModel bool
	}{
		{"limit 0", "/v1/warehouses/ams-1/stock?limit=0", nil, 400, "invalid_parameter", "limit", `limit must be an integer between 1 and 1000, got "0"`, false},
		{"limit too big", "/v1/low-stock?below=1&limit=1001", nil, 400, "invalid_parameter", "limit", `got "1001"`, false},
		{"limit not a number", "/v1/warehouses/ams-1/stock?limit=ten", nil, 400, "invalid_parameter", "limit", `got "ten"`, false},
		{"limit empty", "/v1/warehouses/ams-1/stock?limit=", nil, 400, "invalid_parameter", "limit", `got ""`, false},
		{"below missing", "/v1/low-stock?limit=5", nil, 400, "missing_parameter", "below", `missing required query parameter "below"`, false},
		{"below 0", "/v1/low-stock?below=0", nil, 400, "invalid_parameter", "below", `below must be an integer between 1 and 1000000000, got "0"`, false},
		{"below fraction", "/v1/low-stock?below=1.5", nil, 400, "invalid_parameter", "below", `got "1.5"`, false},
		{"unknown parameter", "/v1/warehouses/ams-1/stock?limt=5", nil, 400, "unknown_parameter", "limt", `unknown query parameter "limt" (allowed: limit, cursor)`, false},
		{"parameter on a reservation", "/v1/reservations/o-1?x=1", nil, 400, "unknown_parameter", "x", "allowed: none", false},
		{"repeated parameter", "/v1/low-stock?below=1&below=2", nil, 400, "invalid_parameter", "below", "given 2 times", false},
		{"malformed query", "/v1/low-stock?below=%zz", nil, 400, "invalid_query", "", "malformed query string", false},
		{"bad warehouse", "/v1/warehouses/AMS-1/stock", nil, 400, "invalid_path", "warehouse", `warehouse "AMS-1": invalid character 'A'`, false},
		{"bad reservation id", "/v1/reservations/a%20b", nil, 400, "invalid_path", "reservation_id", "invalid character ' '", false},
		{"bad cursor", "/v1/warehouses/ams-1/stock?cursor=zz", &readmodel.ArgumentError{Name: "cursor", Reason: "not a cursor this listing returned"}, 400, "invalid_parameter", "cursor", "not a cursor this listing returned", true},
		{"not ready", "/v1/low-stock?below=2", fmt.Errorf("%w: projection inventory_stock has no active version yet", readmodel.ErrNotReady), 503, "read_model_unavailable", "", "no active version yet", true},
		{"database down", "/v1/reservations/o-1", errors.New("pg: password=hunter2"), 500, "internal", "", "internal error", true},
		{"POST on a listing", "/v1/low-stock?below=2", nil, 405, "method_not_allowed", "", "allowed: GET, HEAD", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rm := &fakeReadModels{err: tc.err}
			method := "GET"
			if tc.status == 405 {
				method = "POST"
			}
			res := do(t, readServer(t, api.Config{ReadModels: rm}), method, tc.path, "", "")
			t.Log(res.raw)
			msg, _ := res.body["error"].(string)
			if res.status != tc.status || res.body["code"] != tc.code || !strings.Contains(msg, tc.inMsg) {
				t.Fatalf("%d %s, want %d %s %q", res.status, res.raw, tc.status, tc.code, tc.inMsg)
			}
			if tc.field != "" && res.body["field"] != tc.field {
				t.Errorf("field %v, want %s", res.body["field"], tc.field)
			}
			if (len(rm.calls) > 0) != tc.reachesTheReadModel {
				t.Errorf("read model calls %q", rm.calls)
			}
			if strings.Contains(res.raw, "hunter2") {
				t.Error("500 leaks the internal error")
			}
			if tc.status == 503 && res.header.Get("Retry-After") == "" {
				t.Error("503 without Retry-After")
			}
		})
	}
}

func TestReadModelRoutesNeedReadModels(t *testing.T) {
	srv := readServer(t, api.Config{})
	for _, p := range []string{"/v1/warehouses/ams-1/stock", "/v1/low-stock?below=1", "/v1/reservations/o-1"} {
		if res := do(t, srv, "GET", p, "", ""); res.status != 404 || res.body["code"] != "not_found" {
			t.Fatalf("GET %s without read models: %d %s", p, res.status, res.raw)
		}
	}
	// Read-your-writes without a waiter: refused before sending.
	fs := &fakeSender{}
	srv = readServer(t, api.Config{Sender: fs})
	res := do(t, srv, "POST", path+"/receive", "application/json", `{"qty":1}`, api.HeaderReadYourWrites, "true")
	if res.status != 400 || res.body["code"] != "read_your_writes_unavailable" || len(fs.sent()) != 0 {
		t.Fatalf("%d %s", res.status, res.raw)
	}
	_, err := api.New(api.Config{Sender: fs, Reader: &fakeReader{}, Waiter: &fakeWaiter{}, ReadYourWritesTimeout: -1})
	for _, want := range []string{"Waiter and Config.Projections go together", "ReadYourWritesTimeout must be >= 0"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("New: %v, want %q", err, want)
		}
	}
}

func accepted(partition int32, lastSeq int64, duplicate bool) func(context.Context, eventsource.Command) (actor.Outcome, error) {
	return func(_ context.Context, cmd eventsource.Command) (actor.Outcome, error) {
		return actor.Outcome{Status: txn.OutcomeAccepted, AggregateID: cmd.AggregateID(), Partition: partition, FirstSeq: lastSeq, LastSeq: lastSeq,
			FirstVersion: 1, LastVersion: 1, Duplicate: duplicate}, nil
	}
}

var projections = []string{"inventory_stock", "inventory_reservations"}

// Read-Your-Writes: true waits for every projection at the outcome's
// position before answering; false or no header does not wait; nor does a
// command that stored nothing.
func TestReadYourWrites(t *testing.T) {
	for _, tc := range []struct {
		name, header string
		send         func(context.Context, eventsource.Command) (actor.Outcome, error)
		status       int
		waits        []string
	}{
		{"true", "true", accepted(2, 9, false), 200, []string{"inventory_stock 2/9", "inventory_reservations 2/9"}},
		{"any case", "TRUE", accepted(0, 1, false), 200, []string{"inventory_stock 0/1", "inventory_reservations 0/1"}},
		{"a retry waits for the first send's events", "true", accepted(3, 4, true), 200, []string{"inventory_stock 3/4", "inventory_reservations 3/4"}},
		{"false", "false", accepted(2, 9, false), 200, nil},
		{"no header", "", accepted(2, 9, false), 200, nil},
		{"rejected", "true", func(context.Context, eventsource.Command) (actor.Outcome, error) {
			return actor.Outcome{}, &actor.RejectedError{Reason: "insufficient stock: requested 5, available 3"}
		}, 409, nil},
		{"outcome unknown", "true", func(context.Context, eventsource.Command) (actor.Outcome, error) {
			return actor.Outcome{}, &actor.OutcomeUnknownError{Err: context.DeadlineExceeded}
		}, 504, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wt := &fakeWaiter{}
			srv := readServer(t, api.Config{Sender: &fakeSender{fn: tc.send}, Waiter: wt, Projections: projections})
			var h []string
			if tc.header != "" {
				h = []string{api.HeaderReadYourWrites, tc.header}
			}
			res := do(t, srv, "POST", path+"/reserve", "application/json", `{"reservation_id":"o-1","qty":5}`, h...)
			if res.status != tc.status || !reflect.DeepEqual(wt.waited(), tc.waits) {
				t.Fatalf("%d %s; waited for %q, want %q", res.status, res.raw, wt.waited(), tc.waits)
			}
			if res.status == 200 && (res.body["read_your_writes"] == true) != (tc.waits != nil) {
				t.Fatalf("read_your_writes in %s", res.raw)
			}
		})
	}
}

func TestReadYourWritesBadHeader(t *testing.T) {
	for _, vals := range [][]string{{"yes"}, {"1"}, {""}, {"true "}, {"true", "true"}} {
		fs := &fakeSender{}
		var h []string
		for _, v := range vals {
			h = append(h, api.HeaderReadYourWrites, v)
		}
		res := do(t, readServer(t, api.Config{Sender: fs, Waiter: &fakeWaiter{}, Projections: projections}), "POST", path+"/receive", "application/json", `{"qty":1}`, h...)
		msg, _ := res.body["error"].(string)
		if res.status != 400 || res.body["code"] != "invalid_header" || res.body["field"] != "Read-Your-Writes" || !strings.Contains(msg, "Read-Your-Writes") || len(fs.sent()) != 0 {
			t.Fatalf("header %q: %d %s", vals, res.status, res.raw)
		}
	}
}

// When a read model does not catch up in time, is halted, paused or not
// running, the answer says the command was accepted, which read model, and
// where it is.
func TestReadYourWritesFailures(t *testing.T) {
	pos := projection.Position{Partition: 2, Seq: 9}
	for _, tc := range []struct {
		name   string
		fn     func(ctx context.Context, name string, pos projection.Position) error
		status int
		code   string
		inMsg  []string
	}{
		{"timeout", func(ctx context.Context, name string, p projection.Position) error {
			if name == "inventory_stock" {
				return nil
			}
			<-ctx.Done() // the configured timeout
			return &projection.WaitError{Name: name, Version: 1, Want: p, Applied: 7, Err: ctx.Err(), Duration: 30 * time.Millisecond}
		}, 504, "read_model_behind", []string{
			"the command was accepted (command_id " + api.CommandID("receive", "ams-1/MUG-BLUE", "k-1"),
			"did not show it within 30ms",
			"projection inventory_reservations v1 had not applied partition 2 seq 9 after 30ms (it is at seq 7",
			`"Idempotency-Key: k-1"`,
		}},
		{"halted", func(_ context.Context, name string, p projection.Position) error {
			return &projection.WaitError{Name: name, Version: 1, Want: p, Applied: 8, Reason: "event seq 9: no rule", Err: projection.ErrHalted}
		}, 503, "read_model_halted", []string{"read model inventory_stock cannot show it", "cannot apply partition 2 seq 9 (it is at seq 8): projection halted: event seq 9: no rule"}},
		{"paused", func(_ context.Context, name string, p projection.Position) error {
			return &projection.WaitError{Name: name, Version: 1, Want: p, Applied: 8, Reason: "rebuilding", Err: projection.ErrPaused}
		}, 503, "read_model_halted", []string{"projection paused: rebuilding"}},
		{"not registered", func(_ context.Context, name string, _ projection.Position) error {
			return fmt.Errorf("%w: no active version of %q to wait for", projection.ErrNotFound, name)
		}, 503, "read_model_unavailable", []string{"read model inventory_stock is not available"}},
		{"database down", func(context.Context, string, projection.Position) error {
			return errors.New("pg: password=hunter2")
		}, 500, "internal", []string{"the command was accepted", "logged on the server"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := readServer(t, api.Config{Sender: &fakeSender{fn: accepted(pos.Partition, pos.Seq, false)}, Waiter: &fakeWaiter{fn: tc.fn},
				Projections: projections, ReadYourWritesTimeout: 30 * time.Millisecond})
			res := do(t, srv, "POST", path+"/receive", "application/json", `{"qty":1}`, api.HeaderReadYourWrites, "true", "Idempotency-Key", "k-1")
			t.Log(res.raw)
			msg, _ := res.body["error"].(string)
			if res.status != tc.status || res.body["code"] != tc.code || res.body["idempotency_key"] != "k-1" || strings.Contains(res.raw, "hunter2") {
				t.Fatalf("%d %s, want %d %s", res.status, res.raw, tc.status, tc.code)
			}
			for _, want := range tc.inMsg {
				if !strings.Contains(msg, want) {
					t.Errorf("error %q does not contain %q", msg, want)
				}
			}
			if tc.status != 500 && res.body["projection"] == nil {
				t.Error("no projection field")
			}
		})
	}
}

// The wait is bounded by ReadYourWritesTimeout, not by the send timeout.
func TestReadYourWritesTimeoutIsItsOwn(t *testing.T) {
	var deadline time.Duration
	wt := &fakeWaiter{fn: func(ctx context.Context, _ string, _ projection.Position) error {
		d, _ := ctx.Deadline()
		deadline = time.Until(d)
		return nil
	}}
	srv := readServer(t, api.Config{Sender: &fakeSender{fn: accepted(0, 1, false)}, Waiter: wt, Projections: projections[:1],
		SendTimeout: time.Hour, ReadYourWritesTimeout: time.Minute})
	if res := do(t, srv, "POST", path+"/receive", "application/json", `{"qty":1}`, api.HeaderReadYourWrites, "true"); res.status != 200 {
		t.Fatalf("%d %s", res.status, res.raw)
	}
	if deadline <= 50*time.Second || deadline > time.Minute {
		t.Fatalf("wait deadline in %v, want about a minute", deadline)
	}
	srv = readServer(t, api.Config{Sender: &fakeSender{fn: accepted(0, 1, false)}, Waiter: wt, Projections: projections[:1]})
	if res := do(t, srv, "POST", path+"/receive", "application/json", `{"qty":1}`, api.HeaderReadYourWrites, "true"); res.status != 200 {
		t.Fatalf("%d %s", res.status, res.raw)
	}
	if deadline <= api.DefaultReadYourWritesTimeout-time.Second || deadline > api.DefaultReadYourWritesTimeout {
		t.Fatalf("default wait deadline in %v, want %v", deadline, api.DefaultReadYourWritesTimeout)
	}
}
