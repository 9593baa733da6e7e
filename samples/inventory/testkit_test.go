package main

// The worked example of testing a service built on onceflow with testkit:
// start the environment, run two instances of the service, talk to them over
// HTTP like a client, and check outcomes and read models. It runs on
// containers when Docker answers (ONCEFLOW_TESTENV=docker to insist) and on
// the local fallback otherwise (ONCEFLOW_TESTENV=local).

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/onceflow/onceflow/samples/inventory/api"
	"github.com/onceflow/onceflow/samples/inventory/stock"
	"github.com/onceflow/onceflow/testkit"
	"github.com/onceflow/onceflow/txn"
)

func TestTwoInstancesWithTestkit(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Kafka, Postgres and two service instances")
	}
	env := testkit.Start(t)
	const topic, partitions = "inventory.commands", 4
	env.CreateTopic(t, topic, partitions)
	env.CreateTopic(t, topic+".replies", partitions)

	a := startInstance(t, env, "inv-a")
	b := startInstance(t, env, "inv-b")

	// Both instances share the partitions: each owns some claims.
	env.WaitFor(t, "both instances own partitions", func(ctx context.Context) (bool, error) {
		claims, err := env.Store().Claims(ctx, "")
		if err != nil {
			return false, err
		}
		owners := map[string]int{}
		for _, c := range claims {
			owners[c.Owner]++
		}
		return owners["inv-a"] > 0 && owners["inv-b"] > 0, nil
	})

	mug := "/v1/stock/ams-1/MUG-BLUE"
	if code, m := a.post(t, mug+"/receive", "recv-1", `{"qty": 10}`); code != 200 || m["last_version"] != 1.0 {
		t.Fatalf("receive via a: %d %v", code, m)
	}
	code, first := b.post(t, mug+"/reserve", "order-7", `{"reservation_id": "order-7", "qty": 3}`)
	if code != 200 || first["duplicate"] == true {
		t.Fatalf("reserve via b: %d %v", code, first)
	}
	// A client retry through the other instance: the same outcome, and
	// (checked below with GET) applied once. The reply may be the retry's
	// own (duplicate: true) or, since both instances read the one reply
	// topic and match replies by command id, the first send's reply.
	if code, m := a.post(t, mug+"/reserve", "order-7", `{"reservation_id": "order-7", "qty": 3}`); code != 200 ||
		m["status"] != "accepted" || m["last_version"] != 2.0 || m["command_id"] != first["command_id"] {
		t.Fatalf("reserve retry via a: %d %v (first %v)", code, m, first)
	}
	if code, m := b.post(t, mug+"/reserve", "order-8", `{"reservation_id": "order-8", "qty": 8}`); code != 409 || m["error"] != "insufficient stock: requested 8, available 7" {
		t.Fatalf("over-reserve via b: %d %v", code, m)
	}
	// More SKUs, spread over the partitions and sent to both instances.
	for i := range 8 {
		inst := []*instance{a, b}[i%2]
		path := fmt.Sprintf("/v1/stock/ams-1/SKU-%d/receive", i)
		if code, m := inst.post(t, path, fmt.Sprintf("r-%d", i), fmt.Sprintf(`{"qty": %d}`, i+1)); code != 200 {
			t.Fatalf("receive SKU-%d: %d %v", i, code, m)
		}
	}

	// Outcomes as stored in Postgres.
	id := func(op, sku, key string) string { return api.CommandID(op, stock.AggregateID("ams-1", sku), key) }
	if r := env.WaitOutcome(t, id("reserve", "MUG-BLUE", "order-8")); r.Outcome != txn.OutcomeRejected || !strings.Contains(r.Reason, "insufficient stock") {
		t.Fatalf("order-8 outcome: %+v", r)
	}
	if r := env.WaitOutcome(t, id("reserve", "MUG-BLUE", "order-7")); r.Outcome != txn.OutcomeAccepted || r.LastVersion != 2 {
		t.Fatalf("order-7 outcome: %+v", r)
	}
	if dls := env.DeadLetters(t, txn.DeadLetterQuery{}); len(dls) != 0 {
		t.Fatalf("dead letters: %+v", dls)
	}

	// Read models, through either instance.
	for _, inst := range []*instance{a, b} {
		if got := inst.get(t, mug); got["on_hand"] != 10.0 || got["reserved"] != 3.0 || got["available"] != 7.0 || got["version"] != 2.0 {
			t.Fatalf("GET %s via %s: %v", mug, inst.id, got)
		}
	}
	for i := range 8 {
		if got := b.get(t, fmt.Sprintf("/v1/stock/ams-1/SKU-%d", i)); got["on_hand"] != float64(i+1) {
			t.Fatalf("SKU-%d: %v", i, got)
		}
	}

	// Read your writes across instances: a command one instance answered
	// with "Read-Your-Writes: true" is in the read models (shared in
	// Postgres) that the other one serves, at once.
	if code, m := a.post(t, mug+"/reserve", "order-9", `{"reservation_id": "order-9", "qty": 2}`, "Read-Your-Writes", "true"); code != 200 || m["read_your_writes"] != true {
		t.Fatalf("reserve order-9 via a: %d %v", code, m)
	}
	if got := b.get(t, "/v1/reservations/order-9"); fmt.Sprint(got["lines"]) != "[map[qty:2 sku:MUG-BLUE warehouse:ams-1]]" {
		t.Fatalf("order-9 via b: %v", got)
	}
	found := false
	for _, it := range b.get(t, "/v1/warehouses/ams-1/stock?limit=1000")["items"].([]any) {
		if it := it.(map[string]any); it["sku"] == "MUG-BLUE" {
			found = true
			if it["on_hand"] != 10.0 || it["reserved"] != 5.0 || it["available"] != 5.0 || it["version"] != 3.0 {
				t.Fatalf("MUG-BLUE in the stock read model via b: %v", it)
			}
		}
	}
	if !found {
		t.Fatal("MUG-BLUE is not in the stock read model")
	}
}

// instance is one running copy of the service.
type instance struct {
	id   string
	base string
	ctx  context.Context
}

// startInstance runs the service's own run function against env, as its
// main would with KAFKA_BROKERS and DATABASE_URL set, and stops it when the
// test ends.
func startInstance(t *testing.T, env *testkit.Env, id string) *instance {
	t.Helper()
	var props []string
	for k, v := range env.KafkaConfig() {
		props = append(props, k+"="+v)
	}
	sort.Strings(props)
	cfg, err := parseConfig(nil, envOf(map[string]string{
		"KAFKA_BROKERS": env.Brokers(), "DATABASE_URL": env.DSN(), "HTTP_ADDR": "127.0.0.1:0",
		"INSTANCE_ID": id, "PARTITIONS": "4", "LOG_LEVEL": "warn",
		"ONCEFLOW_KAFKA_CONFIG": strings.Join(props, ","),
		// A deadline for a slow machine (the first waits include the
		// projections joining their groups), not a delay.
		"READ_YOUR_WRITES_TIMEOUT": "90s",
	}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	urls := make(chan string, 1)
	done := make(chan error, 1)
	go func() { done <- run(ctx, func() {}, cfg, io.Discard, func(u string) { urls <- u }) }()
	t.Cleanup(func() {
		stop()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("instance %s: %v", id, err)
			}
		case <-time.After(time.Minute):
			t.Errorf("instance %s did not stop within a minute", id)
		}
	})
	select {
	case u := <-urls:
		return &instance{id: id, base: u, ctx: context.Background()}
	case err := <-done:
		t.Fatalf("instance %s stopped before it was ready: %v", id, err)
	case <-time.After(2 * time.Minute):
		t.Fatalf("instance %s not ready within 2 minutes", id)
	}
	return nil
}

// post sends a command, with header pairs, and, like a well-behaved
// client, retries a 504 outcome_unknown with the same Idempotency-Key
// (bounded by a deadline).
func (in *instance) post(t *testing.T, path, key, body string, header ...string) (int, map[string]any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(in.ctx, time.Minute)
	defer cancel()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, in.base+path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Idempotency-Key", key)
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Add(header[i], header[i+1])
		}
		code, m, err := do(req)
		if err != nil {
			t.Fatalf("POST %s via %s: %v", path, in.id, err)
		}
		if code != http.StatusGatewayTimeout || m["code"] != "outcome_unknown" {
			return code, m
		}
		t.Logf("504 from %s, retrying %s with the same key", in.id, key)
	}
}

func (in *instance) get(t *testing.T, path string) map[string]any {
	t.Helper()
	ctx, cancel := context.WithTimeout(in.ctx, 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, in.base+path, nil)
	code, m, err := do(req)
	if err != nil || code != http.StatusOK {
		t.Fatalf("GET %s via %s: %d %v %v", path, in.id, code, m, err)
	}
	return m
}

func do(req *http.Request) (int, map[string]any, error) {
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	var m map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
		return resp.StatusCode, nil, errors.Join(fmt.Errorf("status %d", resp.StatusCode), err)
	}
	return resp.StatusCode, m, nil
}
