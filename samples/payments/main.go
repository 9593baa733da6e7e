// Command payments is the onceflow payments sample: a double-entry ledger
// in the style of TigerBeetle (accounts with debits/credits pending and
// posted, single- and two-phase transfers, card authorize/capture/void/
// refund) behind an HTTP JSON API. Accounts and transfers are two
// aggregates on two command topics; a process manager moves the money
// between accounts on different partitions exactly once; projections feed
// the balances, statements and pending-transfer read models. See README.md.
//
// With no configuration it runs self-contained for development: an
// embedded Kafka-protocol broker persisted under ./.onceflow/payments/kafka
// and a private Postgres cluster under ./.onceflow/payments/pg:
//
//	go run ./samples/payments     (make demo-payments)
//
// Configuration (a flag wins over its environment variable):
//
//	-kafka-brokers  KAFKA_BROKERS   bootstrap servers; empty: embedded broker
//	-database-url   DATABASE_URL    Postgres URL; empty: private cluster
//	-http-addr      HTTP_ADDR       API listen address (127.0.0.1:8082)
//	-instance-id    INSTANCE_ID     name in partition claims and logs
//	-partitions     PARTITIONS      partitions of the topics when created (12)
//	-data-dir       ONCEFLOW_DATA_DIR  embedded state (./.onceflow/payments)
//	-embedded-kafka-port EMBEDDED_KAFKA_PORT  (9094)
//	-log-format     LOG_FORMAT      text or json (text)
//	-log-level      LOG_LEVEL       debug, info, warn, error (info)
//	-retry-after    RETRY_AFTER     the transfer process resends a step's commands (same ids) when no answer came within it (10s)
//	-kafka-config   ONCEFLOW_KAFKA_CONFIG  extra librdkafka properties "k=v,k=v"
//
// Several instances can serve the same topics and database: they share the
// partitions of every runtime through the consumer groups and the fenced
// claims. GET /metrics serves the runtimes' Prometheus metrics.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/onceflow/onceflow/actor"
	"github.com/onceflow/onceflow/devenv"
	"github.com/onceflow/onceflow/eventsource"
	"github.com/onceflow/onceflow/projection"
	"github.com/onceflow/onceflow/samples/payments/api"
	"github.com/onceflow/onceflow/samples/payments/ledger"
	"github.com/onceflow/onceflow/samples/payments/readmodel"
	"github.com/onceflow/onceflow/txn"
)

func main() {
	cfg, err := parseConfig(os.Args[1:], os.Getenv, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "payments:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, stop, cfg, os.Stderr, nil); err != nil {
		fmt.Fprintln(os.Stderr, "payments:", err)
		os.Exit(1)
	}
}

type config struct {
	brokers      string
	databaseURL  string
	httpAddr     string
	instanceID   string
	partitions   int
	dataDir      string
	embeddedPort int
	logFormat    string
	logLevel     slog.Level
	kafkaConfig  string
	retryAfter   time.Duration
}

func parseConfig(args []string, getenv func(string) string, stderr io.Writer) (config, error) {
	env := func(k, def string) string {
		if v := strings.TrimSpace(getenv(k)); v != "" {
			return v
		}
		return def
	}
	envInt := func(k string, def int) (int, error) {
		v := strings.TrimSpace(getenv(k))
		if v == "" {
			return def, nil
		}
		n, err := strconv.Atoi(v)
		if err != nil {
			return 0, fmt.Errorf("%s=%q: not an integer", k, v)
		}
		return n, nil
	}
	partitions, err1 := envInt("PARTITIONS", 12)
	port, err2 := envInt("EMBEDDED_KAFKA_PORT", 9094)
	retry, err3 := time.ParseDuration(env("RETRY_AFTER", "10s"))
	if err3 != nil {
		err3 = fmt.Errorf("RETRY_AFTER: %w", err3)
	}
	if err := errors.Join(err1, err2, err3); err != nil {
		return config{}, err
	}
	var c config
	var level string
	fs := flag.NewFlagSet("payments", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.brokers, "kafka-brokers", env("KAFKA_BROKERS", ""), "Kafka bootstrap servers `host:port,...` (env KAFKA_BROKERS); empty starts an embedded broker")
	fs.StringVar(&c.databaseURL, "database-url", env("DATABASE_URL", ""), "Postgres `URL` (env DATABASE_URL); empty starts a private cluster")
	fs.StringVar(&c.httpAddr, "http-addr", env("HTTP_ADDR", "127.0.0.1:8082"), "API listen `address` (env HTTP_ADDR)")
	fs.StringVar(&c.instanceID, "instance-id", env("INSTANCE_ID", ""), "instance name in claims and logs (env INSTANCE_ID)")
	fs.IntVar(&c.partitions, "partitions", partitions, "partitions of the topics when they are created (env PARTITIONS)")
	fs.StringVar(&c.dataDir, "data-dir", env("ONCEFLOW_DATA_DIR", filepath.Join(".onceflow", "payments")), "`dir`ectory of the embedded broker and database (env ONCEFLOW_DATA_DIR)")
	fs.IntVar(&c.embeddedPort, "embedded-kafka-port", port, "port of the embedded broker (env EMBEDDED_KAFKA_PORT)")
	fs.StringVar(&c.logFormat, "log-format", env("LOG_FORMAT", "text"), "log format: text or json (env LOG_FORMAT)")
	fs.StringVar(&level, "log-level", env("LOG_LEVEL", "info"), "log level: debug, info, warn or error (env LOG_LEVEL)")
	fs.DurationVar(&c.retryAfter, "retry-after", retry, "the transfer process resends a step's commands, with the same ids, when no answer came within this `duration` (env RETRY_AFTER)")
	fs.StringVar(&c.kafkaConfig, "kafka-config", env("ONCEFLOW_KAFKA_CONFIG", ""), "extra librdkafka properties `k=v,k=v` (env ONCEFLOW_KAFKA_CONFIG)")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: payments [flags]\n\nThe onceflow payments sample: a TigerBeetle-style ledger. With no configuration it\nstarts an embedded Kafka broker and a private Postgres under -data-dir.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return config{}, err
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return config{}, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	var errs []error
	if err := c.logLevel.UnmarshalText([]byte(level)); err != nil {
		errs = append(errs, fmt.Errorf("log level %q: want debug, info, warn or error", level))
	}
	if c.logFormat != "text" && c.logFormat != "json" {
		errs = append(errs, fmt.Errorf("log format %q: want text or json", c.logFormat))
	}
	if _, _, err := net.SplitHostPort(c.httpAddr); err != nil {
		errs = append(errs, fmt.Errorf("http address %q: %w", c.httpAddr, err))
	}
	if c.partitions < 1 || c.partitions > 10_000 {
		errs = append(errs, fmt.Errorf("partitions must be in [1, 10000], got %d", c.partitions))
	}
	if c.embeddedPort < 0 || c.embeddedPort > 65535 {
		errs = append(errs, fmt.Errorf("embedded kafka port must be in [0, 65535], got %d", c.embeddedPort))
	}
	if c.retryAfter < 100*time.Millisecond {
		errs = append(errs, fmt.Errorf("retry-after must be at least 100ms, got %v", c.retryAfter))
	}
	if _, err := parseKafkaConfig(c.kafkaConfig); err != nil {
		errs = append(errs, err)
	}
	return c, errors.Join(errs...)
}

func parseKafkaConfig(s string) (map[string]string, error) {
	props := map[string]string{}
	for _, kv := range strings.Split(s, ",") {
		if kv = strings.TrimSpace(kv); kv == "" {
			continue
		}
		k, v, ok := strings.Cut(kv, "=")
		if k = strings.TrimSpace(k); !ok || k == "" {
			return nil, fmt.Errorf("kafka config %q: want key=value", kv)
		}
		props[k] = strings.TrimSpace(v)
	}
	return props, nil
}

func newLogger(c config, w io.Writer) *slog.Logger {
	o := &slog.HandlerOptions{Level: c.logLevel}
	if c.logFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, o))
	}
	return slog.New(slog.NewTextHandler(w, o))
}

// topics are every topic the service uses, created up front.
func topics() []string {
	var ts []string
	for _, t := range []string{ledger.AccountsTopic, ledger.TransfersTopic} {
		ts = append(ts, t, t+".replies", t+".events", t+".state")
	}
	return ts
}

// runtimes runs a set of actor runtimes and stops them together.
type runtimes struct {
	mu      sync.Mutex
	cancel  context.CancelFunc
	ctx     context.Context
	wg      sync.WaitGroup
	failed  chan error
	names   []string
	running []*actor.Runtime
}

func newRuntimes(ctx context.Context) *runtimes {
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	return &runtimes{ctx: rctx, cancel: cancel, failed: make(chan error, 32)}
}

func (rs *runtimes) start(name string, rt *actor.Runtime) {
	rs.mu.Lock()
	rs.names, rs.running = append(rs.names, name), append(rs.running, rt)
	rs.mu.Unlock()
	rs.wg.Add(1)
	go func() {
		defer rs.wg.Done()
		err := rt.Run(rs.ctx)
		if err != nil && !errors.Is(err, context.Canceled) {
			rs.failed <- fmt.Errorf("%s: %w", name, err)
		} else if rs.ctx.Err() == nil {
			rs.failed <- fmt.Errorf("%s stopped", name)
		}
	}()
}

// stop cancels every runtime and waits up to timeout for them.
func (rs *runtimes) stop(log *slog.Logger, timeout time.Duration) {
	rs.cancel()
	done := make(chan struct{})
	go func() { rs.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(timeout):
		log.Error("runtimes did not stop in time; exiting anyway (uncommitted batches are fenced on the next claim)", "timeout", timeout)
	}
}

// run starts everything, serves until ctx is done or a part fails, and
// shuts down in reverse order. ready, if set, gets the API's base URL.
func run(ctx context.Context, stopSignals func(), c config, stderr io.Writer, ready func(apiURL string)) (err error) {
	log := newLogger(c, stderr)
	var closers []func()
	defer func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
	}()

	// Kafka.
	brokers := c.brokers
	kafkaProps := map[string]string{}
	if brokers == "" {
		dir := filepath.Join(c.dataDir, "kafka")
		b, err := devenv.StartBroker(ctx, devenv.BrokerOptions{DataDir: dir, Port: c.embeddedPort, Partitions: c.partitions, Topics: topics(), Logger: log})
		if errors.Is(err, devenv.ErrPortInUse) {
			return fmt.Errorf("%w\nIs another instance running with the embedded broker? Share it with KAFKA_BROKERS=127.0.0.1:%d, or pick another -embedded-kafka-port", err, c.embeddedPort)
		}
		if err != nil {
			return err
		}
		closers = append(closers, b.Close)
		brokers = b.Addr()
		kafkaProps["enable.metrics.push"] = "false" // kfake does not do client telemetry
		log.Info("embedded Kafka broker started", "addr", brokers, "data_dir", dir)
	}
	props, _ := parseKafkaConfig(c.kafkaConfig) // validated by parseConfig
	for k, v := range props {
		kafkaProps[k] = v
	}

	// Postgres.
	dsn := c.databaseURL
	if dsn == "" {
		dir, err := filepath.Abs(filepath.Join(c.dataDir, "pg"))
		if err != nil {
			return err
		}
		pg, err := devenv.StartPostgres(ctx, devenv.PostgresOptions{Dir: dir, Database: "payments", Logger: log})
		if err != nil {
			return err
		}
		closers = append(closers, func() {
			sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := pg.Close(sctx); err != nil {
				log.Error("stop embedded postgres", "err", err)
			}
		})
		dsn = pg.DSN()
		log.Info("embedded Postgres ready", "dsn", dsn, "dir", dir)
	}
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		return fmt.Errorf("database: %w", err)
	}
	closers = append(closers, pool.Close)
	if err := pool.Ping(ctx); err != nil {
		return fmt.Errorf("database %s: %w", redact(dsn), err)
	}
	// Every schema before anything runs: the API reads the read models and
	// the keys table from the first request.
	if _, err := txn.Migrate(ctx, pool); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	pfs, pdir := ledger.ProcessMigrations()
	afs, adir := api.Migrations()
	if _, err := txn.MigrateFS(ctx, pool, ledger.ProcessComponent, pfs, pdir); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	if _, err := txn.MigrateFS(ctx, pool, api.Component, afs, adir); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	pstore := projection.NewStore(pool)
	if err := readmodel.Install(ctx, pool, pstore); err != nil {
		return err
	}

	reg, err := ledger.NewRegistry()
	if err != nil {
		return err
	}
	rts, err := startRuntimes(ctx, c, log, pool, brokers, kafkaProps, reg)
	if err != nil {
		return err
	}
	closers = append(closers, func() { rts.stop(log, 45*time.Second) })

	// Clients: one per command topic.
	client := func(topic string) (*actor.Client, error) {
		cl, err := actor.NewClient(ctx, reg, actor.WithBrokers(brokers), actor.WithTopic(topic), actor.WithLogger(log),
			actor.WithKafkaConfig(kafkaProps), actor.WithCreateTopics(c.partitions), actor.WithResults(txn.NewStore(pool), time.Second))
		if err != nil {
			return nil, fmt.Errorf("client %s: %w", topic, err)
		}
		closers = append(closers, func() {
			if err := cl.Close(); err != nil {
				log.Error("close client", "topic", topic, "err", err)
			}
		})
		return cl, nil
	}
	accounts, err := client(ledger.AccountsTopic)
	if err != nil {
		return err
	}
	transfers, err := client(ledger.TransfersTopic)
	if err != nil {
		return err
	}

	// The API.
	accAgg, _ := ledger.NewAccountAggregate(reg)
	trAgg, _ := ledger.NewTransferAggregate(reg)
	waiter := projection.NewWaiter(pstore)
	closers = append(closers, waiter.Close)
	notifier := api.NewNotifier(pool)
	closers = append(closers, notifier.Close)
	handler, err := api.New(api.Config{
		Accounts: api.ClientSender{Client: accounts}, Transfers: api.ClientSender{Client: transfers},
		Reader:     api.StoreReader{Accounts: accAgg, Transfers: trAgg, Store: eventsource.NewEventStore(pool)},
		Keys:       api.PGKeys{Pool: pool},
		ReadModels: readmodel.NewReader(pool, ""),
		Watcher:    notifier, Waiter: waiter,
		Health: pool.Ping, Logger: log,
	})
	if err != nil {
		return err
	}
	metrics := prometheus.NewRegistry()
	for _, rt := range rts.running {
		if err := metrics.Register(actor.NewCollector(rt)); err != nil {
			return fmt.Errorf("metrics: %w", err)
		}
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(metrics, promhttp.HandlerOpts{}))
	mux.Handle("/", handler)
	ln, err := net.Listen("tcp", c.httpAddr)
	if err != nil {
		return fmt.Errorf("http: %w", err)
	}
	srv := &http.Server{
		Handler: mux, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 30 * time.Second,
		WriteTimeout: api.DefaultSendTimeout + api.MaxWait + 20*time.Second, IdleTimeout: 2 * time.Minute,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	httpDone := make(chan error, 1)
	go func() { httpDone <- srv.Serve(ln) }()
	url := "http://" + ln.Addr().String()
	banner(stderr, url, brokers)
	if ready != nil {
		ready(url)
	}

	var failure error
	select {
	case <-ctx.Done():
		log.Info("shutting down (Ctrl-C again to force)")
	case err := <-rts.failed:
		failure = fmt.Errorf("runtime stopped: %w", err)
	case err := <-httpDone:
		failure = fmt.Errorf("http server: %w", err)
	}
	stopSignals()
	sctx, cancel := context.WithTimeout(context.Background(), api.DefaultSendTimeout+5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("http shutdown", "err", err)
	}
	return failure
}

// startRuntimes starts the service's runtimes: the two aggregates, the
// transfer process over both history topics, and the projections.
func startRuntimes(ctx context.Context, c config, log *slog.Logger, pool *pgxpool.Pool, brokers string, kafkaProps map[string]string, reg *eventsource.Registry) (*runtimes, error) {
	common := []actor.Option{actor.WithBrokers(brokers), actor.WithLogger(log), actor.WithKafkaConfig(kafkaProps)}
	if c.instanceID != "" {
		common = append(common, actor.WithInstanceID(c.instanceID))
	}
	with := func(opts ...actor.Option) []actor.Option {
		return append(append([]actor.Option(nil), common...), opts...)
	}

	accAgg, err := ledger.NewAccountAggregate(reg)
	if err != nil {
		return nil, err
	}
	trAgg, err := ledger.NewTransferAggregate(reg)
	if err != nil {
		return nil, err
	}
	rts := newRuntimes(ctx)
	fail := func(err error) (*runtimes, error) {
		rts.stop(log, 30*time.Second)
		return nil, err
	}
	accRT, err := actor.NewRuntime(accAgg, pool, with(actor.WithTopic(ledger.AccountsTopic), actor.WithCreateTopics(c.partitions))...)
	if err != nil {
		return fail(fmt.Errorf("accounts runtime: %w", err))
	}
	trRT, err := actor.NewRuntime(trAgg, pool, with(actor.WithTopic(ledger.TransfersTopic), actor.WithCreateTopics(c.partitions),
		actor.WithInlineProjection(api.NotifyTransfers))...)
	if err != nil {
		return fail(fmt.Errorf("transfers runtime: %w", err))
	}
	rts.start("accounts", accRT)
	rts.start("transfers", trRT)

	pms, err := ledger.Processes(ledger.ProcessOptions{Registry: reg, RetryAfter: c.retryAfter})
	if err != nil {
		return fail(err)
	}
	pfs, pdir := ledger.ProcessMigrations()
	for _, pm := range pms {
		rt, err := actor.NewProcessManager(pm, pool, with(actor.WithMigrations(ledger.ProcessComponent, pfs, pdir), actor.WithFailurePolicy(actor.Halt))...)
		if err != nil {
			return fail(fmt.Errorf("process %s over %s: %w", pm.Name, pm.Source, err))
		}
		rts.start("process "+pm.Name+" over "+pm.Source, rt)
	}
	rfs, rdir := readmodel.Migrations()
	for _, p := range readmodel.Projections(reg) {
		rt, err := actor.NewProjection(p, pool, with(actor.WithMigrations(readmodel.Component, rfs, rdir), actor.WithFailurePolicy(actor.Halt))...)
		if err != nil {
			return fail(fmt.Errorf("projection %s: %w", p.Name, err))
		}
		rts.start(fmt.Sprintf("projection %s v%d", p.Name, p.Version), rt)
	}
	return rts, nil
}

func banner(w io.Writer, url, brokers string) {
	fmt.Fprintf(w, `
  onceflow payments sample
    API     %[1]s
    Kafka   %[2]s  topics %[3]s, %[4]s
    health  %[1]s/healthz   metrics %[1]s/metrics

  Try (every POST needs an Idempotency-Key; amounts are integer cents):
    curl -s -X POST %[1]s/v1/accounts -H 'Content-Type: application/json' -H 'Idempotency-Key: open-bank' -d '{"id": "bank", "ledger": 840, "code": 3}'
    curl -s -X POST %[1]s/v1/accounts -H 'Content-Type: application/json' -H 'Idempotency-Key: open-alice' -d '{"id": "alice", "ledger": 840, "code": 1, "flags": {"debits_must_not_exceed_credits": true}}'
    curl -s -X POST %[1]s/v1/accounts -H 'Content-Type: application/json' -H 'Idempotency-Key: open-shop' -d '{"id": "shop", "ledger": 840, "code": 2}'
    curl -s -X POST %[1]s/v1/transfers -H 'Content-Type: application/json' -H 'Idempotency-Key: fund-1' -H 'Prefer: wait=5' -d '{"id": "fund-1", "debit_account_id": "bank", "credit_account_id": "alice", "amount": 10000, "ledger": 840, "code": 1}'
    curl -s -X POST %[1]s/v1/cards/authorize -H 'Content-Type: application/json' -H 'Idempotency-Key: auth-1' -H 'Prefer: wait=5' -d '{"authorization_id": "auth-1", "card_account_id": "alice", "merchant_account_id": "shop", "amount": 2500, "ledger": 840}'
    curl -s -X POST %[1]s/v1/cards/capture -H 'Content-Type: application/json' -H 'Idempotency-Key: cap-1' -H 'Prefer: wait=5' -d '{"authorization_id": "auth-1", "amount": 2000}'
    curl -s -X POST %[1]s/v1/cards/refund -H 'Content-Type: application/json' -H 'Idempotency-Key: ref-1' -H 'Prefer: wait=5' -d '{"authorization_id": "auth-1", "refund_id": "r1", "amount": 500}'
    curl -s %[1]s/v1/accounts/alice
    curl -s %[1]s/v1/accounts/alice/statement
    curl -s %[1]s/v1/transfers/auth-1

`, url, brokers, ledger.AccountsTopic, ledger.TransfersTopic)
}

// redact hides a password in a database URL.
func redact(dsn string) string {
	at := strings.LastIndex(dsn, "@")
	scheme := strings.Index(dsn, "://")
	if at < 0 || scheme < 0 || at < scheme {
		return dsn
	}
	if user, _, ok := strings.Cut(dsn[scheme+3:at], ":"); ok {
		return dsn[:scheme+3] + user + ":xxxxx" + dsn[at:]
	}
	return dsn
}
