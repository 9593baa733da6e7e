package actor_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/onceflow/onceflow/actor"
	"github.com/onceflow/onceflow/eventsource"
	"github.com/onceflow/onceflow/internal/testenv"
	"github.com/onceflow/onceflow/testkit"
)

// kit, when ONCEFLOW_TESTENV is set (docker or local), is the shared testkit
// environment the integration tests run on: through testcontainers, or on
// the local fallback. Otherwise each test gets its own in-process kfake
// broker and a fresh database on a private cluster (internal/testenv).
var kit *testkit.Env

func TestMain(m *testing.M) {
	if os.Getenv(testkit.EnvMode) == "" {
		os.Exit(testenv.Main(m))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	var err error
	kit, err = testkit.New(ctx)
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "actor tests:", err)
		os.Exit(1)
	}
	code := m.Run()
	if err := kit.Close(); err != nil {
		fmt.Fprintln(os.Stderr, "actor tests: closing the test environment:", err)
	}
	os.Exit(code)
}

// --- a small account domain used by the runtime tests ---

type Deposit struct {
	Account string `json:"account"`
	Amount  int64  `json:"amount"`
}
type Withdraw struct {
	Account string `json:"account"`
	Amount  int64  `json:"amount"`
}

// Explode panics in Decide: the command must be dead-lettered.
type Explode struct {
	Account string `json:"account"`
}

func (c Deposit) AggregateID() string  { return c.Account }
func (c Withdraw) AggregateID() string { return c.Account }
func (c Explode) AggregateID() string  { return c.Account }

type Deposited struct {
	Amount int64 `json:"amount"`
}
type Withdrawn struct {
	Amount int64 `json:"amount"`
}

type Account struct {
	Balance int64 `json:"balance"`
}

func newAccountAggregate(t testing.TB, opts ...eventsource.RegistryOption) *eventsource.Aggregate[Account, eventsource.Command, any] {
	t.Helper()
	reg := eventsource.NewRegistry(opts...)
	for _, err := range []error{
		eventsource.Register[Deposit](reg, "test.Deposit"),
		eventsource.Register[Withdraw](reg, "test.Withdraw"),
		eventsource.Register[Explode](reg, "test.Explode"),
		eventsource.Register[Deposited](reg, "test.Deposited"),
		eventsource.Register[Withdrawn](reg, "test.Withdrawn"),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	return &eventsource.Aggregate[Account, eventsource.Command, any]{
		Type:          "test.account",
		Registry:      reg,
		SnapshotEvery: 5,
		Decider: eventsource.Decider[Account, eventsource.Command, any]{
			Initial: func() Account { return Account{} },
			Decide: func(s Account, c eventsource.Command) ([]any, error) {
				switch c := c.(type) {
				case Deposit:
					if c.Amount <= 0 {
						return nil, fmt.Errorf("amount must be positive, got %d", c.Amount)
					}
					return []any{Deposited{Amount: c.Amount}}, nil
				case Withdraw:
					if c.Amount > s.Balance {
						return nil, fmt.Errorf("insufficient funds: balance %d, requested %d", s.Balance, c.Amount)
					}
					return []any{Withdrawn{Amount: c.Amount}}, nil
				case Explode:
					panic("boom")
				}
				return nil, fmt.Errorf("unknown command %T", c)
			},
			Evolve: func(s Account, e any) Account {
				switch e := e.(type) {
				case Deposited:
					s.Balance += e.Amount
				case Withdrawn:
					s.Balance -= e.Amount
				}
				return s
			},
		},
	}
}

// --- environment ---

type env struct {
	t       *testing.T
	brokers string
	kafka   map[string]string // extra client properties from testkit
	topic   string
	group   string
	pool    *pgxpool.Pool
	agg     *eventsource.Aggregate[Account, eventsource.Command, any]
}

const testPartitions = 4

func newEnv(t *testing.T) *env {
	t.Helper()
	if kit != nil {
		// One shared broker: every test has its own topics, group and database.
		name := strings.ToLower(strings.NewReplacer("/", ".", "_", "-").Replace(t.Name()))
		topic := "accounts." + name
		kit.CreateTopic(t, topic, testPartitions)
		kit.CreateTopic(t, topic+".replies", testPartitions)
		cfg, err := pgxpool.ParseConfig(kit.FreshDatabase(t))
		if err != nil {
			t.Fatal(err)
		}
		cfg.MaxConns = 8
		pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(pool.Close)
		return &env{t: t, brokers: kit.Brokers(), kafka: kit.KafkaConfig(), topic: topic, group: "onceflow.test." + name, pool: pool, agg: newAccountAggregate(t)}
	}
	topic := "accounts.commands"
	c, err := kfake.NewCluster(
		kfake.NumBrokers(1),
		kfake.SeedTopics(testPartitions, topic, topic+".replies"),
		kfake.GroupMinSessionTimeout(100*time.Millisecond),
	)
	if err != nil {
		t.Fatalf("kfake: %v", err)
	}
	t.Cleanup(c.Close)
	return &env{t: t, brokers: c.ListenAddrs()[0], topic: topic, group: "onceflow.test.account", pool: testenv.Pool(t), agg: newAccountAggregate(t)}
}

func testLogger(t testing.TB) *slog.Logger {
	level := slog.LevelWarn
	if os.Getenv("ONCEFLOW_TEST_LOG") != "" {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})).With("test", t.Name())
}

// fastGroup makes rebalances quick in tests.
var fastGroup = map[string]string{
	"session.timeout.ms":    "3000",
	"heartbeat.interval.ms": "200",
	"max.poll.interval.ms":  "5000",
}

type running struct {
	rt     *actor.Runtime
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

// stop cancels the runtime and waits for Run to return. Idempotent.
func (r *running) stop(t *testing.T) {
	t.Helper()
	r.once.Do(func() {
		r.cancel()
		select {
		case err := <-r.done:
			if err != nil {
				t.Errorf("runtime %s: %v", r.rt.InstanceID(), err)
			}
		case <-time.After(60 * time.Second):
			t.Errorf("runtime %s did not stop within 60s", r.rt.InstanceID())
		}
	})
}

func (e *env) start(id string, opts ...actor.Option) *running {
	e.t.Helper()
	return e.startWith(id, fastGroup, opts...)
}

// startWith starts a runtime with the given librdkafka properties.
func (e *env) startWith(id string, kafkaProps map[string]string, opts ...actor.Option) *running {
	e.t.Helper()
	base := []actor.Option{
		actor.WithBrokers(e.brokers), actor.WithTopic(e.topic), actor.WithInstanceID(id), actor.WithGroup(e.group),
		actor.WithLogger(testLogger(e.t)), actor.WithKafkaConfig(e.kafka), actor.WithKafkaConfig(kafkaProps),
		actor.WithBatch(100, 5*time.Millisecond),
	}
	rt, err := actor.NewRuntime(e.agg, e.pool, append(base, opts...)...)
	if err != nil {
		e.t.Fatalf("NewRuntime: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{rt: rt, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- rt.Run(ctx) }()
	e.t.Cleanup(func() { r.stop(e.t) })
	return r
}

func (e *env) client(opts ...actor.ClientOption) *actor.Client {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	base := []actor.ClientOption{actor.WithBrokers(e.brokers), actor.WithTopic(e.topic), actor.WithLogger(testLogger(e.t)), actor.WithKafkaConfig(e.kafka)}
	c, err := actor.NewClient(ctx, e.agg.Registry, append(base, opts...)...)
	if err != nil {
		e.t.Fatalf("NewClient: %v", err)
	}
	e.t.Cleanup(func() { c.Close() })
	return c
}

// runBackground runs rt until the test ends, and checks that Run returned
// cleanly.
func runBackground(t *testing.T, rt *actor.Runtime) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- rt.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("runtime %s: %v", rt.InstanceID(), err)
		}
	})
}

// eventually polls cond until it returns nil or the deadline passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		if err = cond(); err == nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("timed out after %v waiting for %s: %v", timeout, what, err)
}

var errNotYet = errors.New("not yet")
