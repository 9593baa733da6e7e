package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"os"
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
	quiet := slog.New(slog.DiscardHandler)
	broker, err := devenv.StartBroker(ctx, devenv.BrokerOptions{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer broker.Close()
	cfg, err := parseConfig(nil, envOf(map[string]string{
		"KAFKA_BROKERS": broker.Addr(), "DATABASE_URL": testenv.Postgres(t), "HTTP_ADDR": "127.0.0.1:0",
		"INSTANCE_ID": "e2e", "PARTITIONS": "4", "LOG_LEVEL": "warn",
	}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}

	runCtx, stop := context.WithCancel(ctx)
	urls := make(chan string, 1)
	done := make(chan error, 1)
	go func() { done <- run(runCtx, func() {}, cfg, io.Discard, func(u string) { urls <- u }) }()
	var base string
	select {
	case base = <-urls:
	case err := <-done:
		t.Fatalf("service stopped before it was ready: %v", err)
	}
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

	stop()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run: %v", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("service did not shut down")
	}
}
