package testkit_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/onceflow/onceflow/actor"
	"github.com/onceflow/onceflow/eventsource"
	"github.com/onceflow/onceflow/samples/inventory/api"
	"github.com/onceflow/onceflow/samples/inventory/stock"
	"github.com/onceflow/onceflow/testkit"
)

// An integration test of a service built on onceflow, the inventory sample:
// two instances share the command topic's partitions; commands go over HTTP
// to either; outcomes and read models are checked. In a test function, use
// env := testkit.Start(t) and env.WaitOutcome(t, id); New and Close are for
// code without a *testing.T, like this example or a TestMain.
func Example() {
	ctx := context.Background()
	env, err := testkit.New(ctx) // containers if Docker answers, else the local fallback
	check(err)
	defer env.Close()

	a, stopA := startInventory(ctx, env, "inv-a")
	defer stopA()
	b, stopB := startInventory(ctx, env, "inv-b")
	defer stopB()

	mug := "/v1/stock/ams-1/MUG-BLUE"
	fmt.Println(post(a+mug+"/receive", "recv-1", `{"qty": 10}`))
	fmt.Println(post(b+mug+"/reserve", "order-1", `{"reservation_id": "order-1", "qty": 12}`))
	fmt.Println(post(b+mug+"/reserve", "order-2", `{"reservation_id": "order-2", "qty": 4}`))

	// The outcome as stored, whatever any client was told.
	res, err := env.Store().Result(ctx, stock.AggregateType, api.CommandID("reserve", stock.AggregateID("ams-1", "MUG-BLUE"), "order-1"))
	check(err)
	fmt.Println("order-1:", res.Outcome, res.Reason)

	// The read model, through the other instance.
	fmt.Println(get(a + mug))
	// Output:
	// 200 accepted version 1
	// 409 insufficient stock: requested 12, available 10
	// 200 accepted version 2
	// order-1: rejected insufficient stock: requested 12, available 10
	// on_hand 10, reserved 4, available 6
}

// startInventory runs one instance of the service, built from its packages
// the way samples/inventory's main builds it, and returns its base URL.
func startInventory(ctx context.Context, env *testkit.Env, id string) (baseURL string, stop func()) {
	quiet := slog.New(slog.DiscardHandler)
	agg, err := stock.NewAggregate()
	check(err)
	shared := []actor.SharedOption{
		actor.WithBrokers(env.Brokers()), actor.WithKafkaConfig(env.KafkaConfig()),
		actor.WithTopic("inventory.commands"), actor.WithCreateTopics(4), actor.WithLogger(quiet),
	}
	var rtOpts []actor.Option
	var clOpts []actor.ClientOption
	for _, o := range shared {
		rtOpts, clOpts = append(rtOpts, o), append(clOpts, o)
	}
	rt, err := actor.NewRuntime(agg, env.Pool(), append(rtOpts, actor.WithInstanceID(id))...)
	check(err)
	rtCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- rt.Run(rtCtx) }()

	client, err := actor.NewClient(ctx, agg.Registry, append(clOpts, actor.WithResults(env.Store(), time.Second))...)
	check(err)
	handler, err := api.New(api.Config{
		Sender: client, Reader: api.NewStoreReader(agg, eventsource.NewEventStore(env.Pool())), Logger: quiet,
	})
	check(err)
	srv := httptest.NewServer(handler)
	return srv.URL, func() {
		srv.Close()
		client.Close()
		cancel()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			log.Print(err)
		}
	}
}

// post sends a command with an Idempotency-Key, retrying a 504 with the
// same key, and summarises the answer.
func post(url, key, body string) string {
	for {
		req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
		check(err)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Idempotency-Key", key)
		code, m := do(req)
		switch {
		case code == http.StatusGatewayTimeout:
			continue // outcome unknown: resend, it is never applied twice
		case code == http.StatusOK:
			return fmt.Sprintf("%d %v version %v", code, m["status"], m["last_version"])
		default:
			return fmt.Sprintf("%d %v", code, m["error"])
		}
	}
}

func get(url string) string {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	check(err)
	_, m := do(req)
	return fmt.Sprintf("on_hand %v, reserved %v, available %v", m["on_hand"], m["reserved"], m["available"])
}

func do(req *http.Request) (int, map[string]any) {
	resp, err := http.DefaultClient.Do(req)
	check(err)
	defer resp.Body.Close()
	var m map[string]any
	check(json.NewDecoder(resp.Body).Decode(&m))
	return resp.StatusCode, m
}

func check(err error) {
	if err != nil {
		log.Fatal(err)
	}
}
