package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/url"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/onceflow/onceflow/devenv"
	"github.com/onceflow/onceflow/internal/testenv"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

// The whole service against a kfake broker and a real Postgres: commands go
// through Kafka, the runtime and one fenced transaction per batch, and the
// API maps their outcomes.
func TestServiceEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a broker, a database and the runtime")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	base := startService(t, ctx, nil)
	stockURL := base + "/v1/stock/ams-1/MUG-BLUE"

	// post sends a command and, like a well-behaved client, retries a 504
	// with the same Idempotency-Key.
	post := func(op, key, body string) (int, map[string]any) {
		t.Helper()
		for {
			req, _ := http.NewRequestWithContext(ctx, "POST", stockURL+"/"+op, strings.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Idempotency-Key", key)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			var m map[string]any
			err = json.NewDecoder(resp.Body).Decode(&m)
			resp.Body.Close()
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != http.StatusGatewayTimeout {
				return resp.StatusCode, m
			}
			t.Logf("504, retrying %s with the same key", key)
		}
	}

	if code, m := post("receive", "recv-1", `{"qty": 10}`); code != 200 || m["last_version"] != 1.0 {
		t.Fatalf("receive: %d %v", code, m)
	}
	if code, m := post("reserve", "order-7", `{"reservation_id": "order-7", "qty": 3}`); code != 200 || m["duplicate"] != false {
		t.Fatalf("reserve: %d %v", code, m)
	}
	// A client retry: same key, same outcome, applied once.
	if code, m := post("reserve", "order-7", `{"reservation_id": "order-7", "qty": 3}`); code != 200 || m["duplicate"] != true || m["last_version"] != 2.0 {
		t.Fatalf("reserve retry: %d %v", code, m)
	}
	// The same key with a different body: 422 naming the key, not applied.
	if code, m := post("reserve", "order-7", `{"reservation_id": "order-7", "qty": 4}`); code != 422 || m["code"] != "idempotency_key_reused" || !strings.Contains(m["error"].(string), `"order-7"`) {
		t.Fatalf("reserve with a reused key and another body: %d %v", code, m)
	}
	if code, m := post("reserve", "order-8", `{"reservation_id": "order-8", "qty": 8}`); code != 409 || m["error"] != "insufficient stock: requested 8, available 7" {
		t.Fatalf("over-reserve: %d %v", code, m)
	}
	if code, m := post("ship", "ship-7", `{"reservation_id": "order-7"}`); code != 200 {
		t.Fatalf("ship: %d %v", code, m)
	}

	resp, err := http.Get(stockURL)
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	err = json.NewDecoder(resp.Body).Decode(&got)
	resp.Body.Close()
	if err != nil || got["on_hand"] != 7.0 || got["reserved"] != 0.0 || got["available"] != 7.0 || got["version"] != 3.0 {
		t.Fatalf("GET: %v %v", got, err)
	}
}

// startService runs the service (run, as main does) against a kfake broker
// and a fresh Postgres database, with env added to its environment, and
// stops it when the test ends: run must then return nil within a minute.
// It returns the API's base URL.
func startService(t *testing.T, ctx context.Context, env map[string]string) string {
	t.Helper()
	quiet := slog.New(slog.DiscardHandler)
	broker, err := devenv.StartBroker(ctx, devenv.BrokerOptions{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(broker.Close)
	vars := map[string]string{
		"KAFKA_BROKERS": broker.Addr(), "DATABASE_URL": testenv.Postgres(t), "HTTP_ADDR": "127.0.0.1:0",
		"INSTANCE_ID": "e2e", "PARTITIONS": "4", "LOG_LEVEL": "warn",
	}
	maps.Copy(vars, env)
	cfg, err := parseConfig(nil, envOf(vars), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	urls := make(chan string, 1)
	done := make(chan error, 1)
	go func() { done <- run(runCtx, func() {}, cfg, io.Discard, func(u string) { urls <- u }) }()
	t.Cleanup(func() {
		stop()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("run: %v", err)
			}
		case <-time.After(time.Minute):
			t.Error("service did not shut down")
		}
	})
	select {
	case base := <-urls:
		return base
	case err := <-done:
		t.Fatalf("service stopped before it was ready: %v", err)
	}
	return ""
}

// The read side through HTTP: commands sent with "Read-Your-Writes: true"
// are in the read models as soon as they are answered, so the GETs right
// after them show the result (no waiting in the test: the header is the
// guarantee). The read-your-writes timeout is generous: it is a deadline
// for a slow machine, not a delay.
func TestReadModelsEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a broker, a database and the runtimes")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	h := &httpClient{t: t, ctx: ctx, base: startService(t, ctx, map[string]string{"READ_YOUR_WRITES_TIMEOUT": "90s"})}
	ryw := []string{"Read-Your-Writes", "true"}
	mug := "/v1/stock/ams-1/MUG-BLUE"

	if code, m := h.post(mug+"/receive", "recv-1", `{"qty": 10}`, ryw...); code != 200 || m["read_your_writes"] != true {
		t.Fatalf("receive: %d %v", code, m)
	}
	if code, m := h.post(mug+"/reserve", "order-7", `{"reservation_id": "order-7", "qty": 3}`, ryw...); code != 200 || m["read_your_writes"] != true {
		t.Fatalf("reserve: %d %v", code, m)
	}
	wantMug := map[string]any{"warehouse": "ams-1", "sku": "MUG-BLUE", "on_hand": 10.0, "reserved": 3.0, "available": 7.0, "version": 2.0}
	if m := h.get("/v1/warehouses/ams-1/stock", 200); !reflect.DeepEqual(m["items"], []any{wantMug}) || m["next_cursor"] != nil {
		t.Fatalf("warehouse stock: %v", m)
	}
	if m := h.get("/v1/reservations/order-7", 200); !reflect.DeepEqual(m["lines"], []any{map[string]any{"warehouse": "ams-1", "sku": "MUG-BLUE", "qty": 3.0}}) {
		t.Fatalf("reservation: %v", m)
	}
	if m := h.get("/v1/low-stock?below=8", 200); !reflect.DeepEqual(m["items"], []any{wantMug}) {
		t.Fatalf("low stock below 8: %v", m)
	}
	if m := h.get("/v1/low-stock?below=7", 200); !reflect.DeepEqual(m["items"], []any{}) {
		t.Fatalf("low stock below 7: %v", m)
	}
	// A retry of the reserve: the stored outcome, after waiting for its
	// (first send's) events.
	if code, m := h.post(mug+"/reserve", "order-7", `{"reservation_id": "order-7", "qty": 3}`, ryw...); code != 200 || m["duplicate"] != true || m["read_your_writes"] != true {
		t.Fatalf("reserve retry: %d %v", code, m)
	}

	// Shipped: the reservation leaves the read model.
	if code, m := h.post(mug+"/ship", "ship-7", `{"reservation_id": "order-7"}`, ryw...); code != 200 {
		t.Fatalf("ship: %d %v", code, m)
	}
	if m := h.get("/v1/reservations/order-7", 404); m["code"] != "reservation_not_found" || !strings.Contains(m["error"].(string), `no open reservation "order-7"`) {
		t.Fatalf("shipped reservation: %v", m)
	}
	if m := h.get("/v1/warehouses/ams-1/stock", 200); m["items"].([]any)[0].(map[string]any)["on_hand"] != 7.0 {
		t.Fatalf("after shipping: %v", m)
	}

	// A bad header value: 400 before anything is sent.
	if code, m := h.post(mug+"/receive", "recv-bad", `{"qty": 1}`, "Read-Your-Writes", "yes"); code != 400 || m["field"] != "Read-Your-Writes" {
		t.Fatalf("Read-Your-Writes: yes: %d %v", code, m)
	}
	if m := h.get(mug, 200); m["version"] != 3.0 {
		t.Fatalf("the refused request changed the stock: %v", m)
	}

	// More SKUs than one page, spread over the partitions: each command
	// waits for its own partition's position.
	var want []string
	for i := range 7 {
		sku := fmt.Sprintf("SKU-%02d", i)
		want = append(want, sku)
		if code, m := h.post("/v1/stock/ber-2/"+sku+"/receive", "r-"+sku, fmt.Sprintf(`{"qty": %d}`, i+1), ryw...); code != 200 {
			t.Fatalf("receive %s: %d %v", sku, code, m)
		}
	}
	var got []string
	var sizes []int
	next := ""
	for {
		path := "/v1/warehouses/ber-2/stock?limit=3"
		if next != "" {
			path += "&cursor=" + url.QueryEscape(next)
		}
		m := h.get(path, 200)
		items := m["items"].([]any)
		sizes = append(sizes, len(items))
		for _, it := range items {
			got = append(got, it.(map[string]any)["sku"].(string))
		}
		n, ok := m["next_cursor"].(string)
		if !ok {
			break
		}
		if len(sizes) > 10 {
			t.Fatalf("pagination does not end: %v", got)
		}
		next = n
	}
	if !slices.Equal(got, want) || !slices.Equal(sizes, []int{3, 3, 1}) {
		t.Fatalf("pages of 3: %v in pages of %v, want %v", got, sizes, want)
	}
	if m := h.get("/v1/warehouses/ber-2/stock?cursor=not-a-cursor", 400); m["field"] != "cursor" {
		t.Fatalf("bad cursor: %v", m)
	}
	if m := h.get("/v1/low-stock?below=3&limit=1", 200); len(m["items"].([]any)) != 1 || m["items"].([]any)[0].(map[string]any)["sku"] != "SKU-00" {
		t.Fatalf("lowest stock first: %v", m)
	}
}

// httpClient talks to the service like a client.
type httpClient struct {
	t    *testing.T
	ctx  context.Context
	base string
}

// post sends a command with header pairs and, like a well-behaved client,
// retries a 504 outcome_unknown with the same Idempotency-Key.
func (h *httpClient) post(path, key, body string, header ...string) (int, map[string]any) {
	h.t.Helper()
	for {
		req, _ := http.NewRequestWithContext(h.ctx, http.MethodPost, h.base+path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Idempotency-Key", key)
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Add(header[i], header[i+1])
		}
		code, m, err := do(req)
		if err != nil {
			h.t.Fatalf("POST %s: %v", path, err)
		}
		if code != http.StatusGatewayTimeout || m["code"] != "outcome_unknown" {
			return code, m
		}
		h.t.Logf("504, retrying %s with the same key", key)
	}
}

// get reads path and fails the test unless the status is want.
func (h *httpClient) get(path string, want int) map[string]any {
	h.t.Helper()
	req, _ := http.NewRequestWithContext(h.ctx, http.MethodGet, h.base+path, nil)
	code, m, err := do(req)
	if err != nil || code != want {
		h.t.Fatalf("GET %s: %d %v %v, want %d", path, code, m, err, want)
	}
	return m
}
