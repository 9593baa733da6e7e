// Command inventory is the onceflow sample service: stock per SKU per
// warehouse, behind an HTTP JSON API, with every command handled exactly
// once (Kafka partition -> aggregate actor -> one fenced Postgres
// transaction per batch).
//
// With no configuration it runs self-contained for development: an embedded
// Kafka-protocol broker (kfake) persisted under ./.onceflow/kafka and a
// private Postgres cluster under ./.onceflow/pg, so state survives restarts:
//
//	go run ./samples/inventory
//
// Configuration (a flag wins over its environment variable):
//
//	-kafka-brokers  KAFKA_BROKERS   bootstrap servers; empty: embedded broker
//	-database-url   DATABASE_URL    Postgres URL; empty: private cluster
//	-http-addr      HTTP_ADDR       API listen address (127.0.0.1:8080)
//	-instance-id    INSTANCE_ID     name in partition claims and logs
//	-topic          TOPIC           command topic (inventory.commands)
//	-partitions     PARTITIONS      partitions when the topic is created (12)
//	-data-dir       ONCEFLOW_DATA_DIR  embedded state (./.onceflow)
//	-embedded-kafka-port EMBEDDED_KAFKA_PORT  (9092)
//	-log-format     LOG_FORMAT      text or json (text)
//	-log-level      LOG_LEVEL       debug, info, warn, error (info)
//	-passivate-after PASSIVATE_AFTER idle time before an aggregate leaves memory (2m)
//	-read-your-writes-timeout READ_YOUR_WRITES_TIMEOUT  how long a command
//	                                with "Read-Your-Writes: true" waits for the
//	                                read models (5s)
//	-kafka-config   ONCEFLOW_KAFKA_CONFIG  extra librdkafka properties "k=v,k=v"
//	                                (e.g. session.timeout.ms=3000); onceflow's
//	                                own properties are refused at start-up
//
// Beside the aggregate's runtime it runs the runtimes of the two
// projections of package readmodel (stock per warehouse, open
// reservations), in the same lifecycle: they start together, and the first
// one to stop stops the service. GET /metrics serves the Prometheus
// metrics of all three (actor.NewCollector) on the API address.
//
// Several instances can serve the same topic and database: they share the
// partitions through the consumer group and the fenced claims. Run the first
// one with the embedded broker and database, and point the others at them
// with KAFKA_BROKERS and DATABASE_URL (both printed at start-up) and another
// HTTP_ADDR and INSTANCE_ID. Embedded services stop with the instance that
// started them, so for a longer-lived setup run `onceflow dev-broker` and a
// Postgres of your own.
package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"

	"github.com/onceflow/onceflow/actor"
	"github.com/onceflow/onceflow/devenv"
	"github.com/onceflow/onceflow/eventsource"
	"github.com/onceflow/onceflow/projection"
	"github.com/onceflow/onceflow/samples/inventory/api"
	"github.com/onceflow/onceflow/samples/inventory/readmodel"
	"github.com/onceflow/onceflow/samples/inventory/stock"
	"github.com/onceflow/onceflow/txn"
)

func main() {
	cfg, err := parseConfig(os.Args[1:], os.Getenv, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "inventory:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, stop, cfg, os.Stderr, nil); err != nil {
		fmt.Fprintln(os.Stderr, "inventory:", err)
		os.Exit(1)
	}
}

type config struct {
	brokers      string
	databaseURL  string
	httpAddr     string
	instanceID   string
	topic        string
	partitions   int
	dataDir      string
	embeddedPort int
	logFormat    string
	logLevel     slog.Level
	kafkaConfig  string // extra librdkafka properties "k=v,k=v", validated
	passivate    time.Duration
	rywTimeout   time.Duration // Read-Your-Writes: true waits at most this long
}

// parseConfig reads flags, falling back to environment variables, then to
// defaults.
func parseConfig(args []string, getenv func(string) string, stderr io.Writer) (config, error) {
	env := func(k, def string) string {
		if v := strings.TrimSpace(getenv(k)); v != "" {
			return v
		}
		return def
	}
	envInt := func(k string, def int) (int, error) {
		v := getenv(k)
		if strings.TrimSpace(v) == "" {
			return def, nil
		}
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil {
			return 0, fmt.Errorf("%s=%q: not an integer", k, v)
		}
		return n, nil
	}
	partitions, err1 := envInt("PARTITIONS", 12)
	port, err2 := envInt("EMBEDDED_KAFKA_PORT", 9092)
	if err := errors.Join(err1, err2); err != nil {
		return config{}, err
	}

	var c config
	var level string
	fs := flag.NewFlagSet("inventory", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.brokers, "kafka-brokers", env("KAFKA_BROKERS", ""), "Kafka bootstrap servers `host:port,...` (env KAFKA_BROKERS); empty starts an embedded broker")
	fs.StringVar(&c.databaseURL, "database-url", env("DATABASE_URL", ""), "Postgres `URL` (env DATABASE_URL); empty starts a private cluster")
	fs.StringVar(&c.httpAddr, "http-addr", env("HTTP_ADDR", "127.0.0.1:8080"), "API listen `address` (env HTTP_ADDR)")
	fs.StringVar(&c.instanceID, "instance-id", env("INSTANCE_ID", ""), "instance name in claims and logs (env INSTANCE_ID); default host-pid-random")
	fs.StringVar(&c.topic, "topic", env("TOPIC", "inventory.commands"), "command topic (env TOPIC)")
	fs.IntVar(&c.partitions, "partitions", partitions, "partitions of the topics when they are created (env PARTITIONS)")
	fs.StringVar(&c.dataDir, "data-dir", env("ONCEFLOW_DATA_DIR", ".onceflow"), "`dir`ectory of the embedded broker and database state (env ONCEFLOW_DATA_DIR)")
	fs.IntVar(&c.embeddedPort, "embedded-kafka-port", port, "port of the embedded broker (env EMBEDDED_KAFKA_PORT)")
	fs.StringVar(&c.logFormat, "log-format", env("LOG_FORMAT", "text"), "log format: text or json (env LOG_FORMAT)")
	fs.StringVar(&level, "log-level", env("LOG_LEVEL", "info"), "log level: debug, info, warn or error (env LOG_LEVEL)")
	passivate, err3 := time.ParseDuration(env("PASSIVATE_AFTER", "2m"))
	if err3 != nil {
		return config{}, fmt.Errorf("PASSIVATE_AFTER: %w", err3)
	}
	fs.DurationVar(&c.passivate, "passivate-after", passivate, "idle `duration` before an aggregate is passivated (env PASSIVATE_AFTER)")
	ryw, err4 := time.ParseDuration(env("READ_YOUR_WRITES_TIMEOUT", api.DefaultReadYourWritesTimeout.String()))
	if err4 != nil {
		return config{}, fmt.Errorf("READ_YOUR_WRITES_TIMEOUT: %w", err4)
	}
	fs.DurationVar(&c.rywTimeout, "read-your-writes-timeout", ryw, "how long a command with \"Read-Your-Writes: true\" waits for the read models before answering 504 (env READ_YOUR_WRITES_TIMEOUT)")
	fs.StringVar(&c.kafkaConfig, "kafka-config", env("ONCEFLOW_KAFKA_CONFIG", ""), "extra librdkafka properties `k=v,k=v` (env ONCEFLOW_KAFKA_CONFIG), e.g. session.timeout.ms=3000")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: inventory [flags]\n\nThe onceflow inventory sample service. With no configuration it starts an\nembedded Kafka broker and a private Postgres under -data-dir.\n\nFlags:\n")
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
	if strings.TrimSpace(c.topic) == "" {
		errs = append(errs, errors.New("topic is empty"))
	}
	if c.rywTimeout <= 0 {
		errs = append(errs, fmt.Errorf("read-your-writes timeout must be > 0, got %v", c.rywTimeout))
	}
	if _, err := parseKafkaConfig(c.kafkaConfig); err != nil {
		errs = append(errs, err)
	}
	return c, errors.Join(errs...)
}

// parseKafkaConfig parses "k=v,k=v" into librdkafka properties. Values
// cannot contain commas; that covers the timeouts and sizes it is meant for.
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

// run starts everything, serves until ctx is done or a part fails, and shuts
// down in the reverse order. stopSignals is called on the first signal so
// that a second Ctrl-C kills the process the default way. ready, if not nil,
// is called with the API's base URL once it accepts requests.
func run(ctx context.Context, stopSignals func(), c config, stderr io.Writer, ready func(apiURL string)) (err error) {
	log := newLogger(c, stderr)
	slog.SetDefault(log)

	// cleanup runs the registered closers in reverse order on the way out.
	var closers []func()
	defer func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
	}()

	// Kafka.
	brokers := c.brokers
	var kafkaProps map[string]string
	if brokers == "" {
		dir := filepath.Join(c.dataDir, "kafka")
		b, err := devenv.StartBroker(ctx, devenv.BrokerOptions{
			DataDir: dir, Port: c.embeddedPort, Partitions: c.partitions,
			Topics: []string{c.topic, c.topic + ".replies"}, Logger: log,
		})
		if errors.Is(err, devenv.ErrPortInUse) {
			return fmt.Errorf("%w\nIs another instance running with the embedded broker? Share it with KAFKA_BROKERS=127.0.0.1:%d, or pick another -embedded-kafka-port", err, c.embeddedPort)
		}
		if err != nil {
			return err
		}
		closers = append(closers, b.Close)
		brokers = b.Addr()
		// kfake does not do client telemetry; without this every
		// librdkafka client logs about it.
		kafkaProps = map[string]string{"enable.metrics.push": "false"}
		log.Info("embedded Kafka broker started", "addr", brokers, "data_dir", dir)
	}

	// Postgres.
	dsn := c.databaseURL
	if dsn == "" {
		dir, err := filepath.Abs(filepath.Join(c.dataDir, "pg"))
		if err != nil {
			return err
		}
		pg, err := devenv.StartPostgres(ctx, devenv.PostgresOptions{Dir: dir, Database: "inventory", Logger: log})
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
		log.Info("embedded Postgres ready", "dsn", dsn, "dir", dir, "adopted", pg.Adopted())
	}
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		return fmt.Errorf("database: %w", err)
	}
	closers = append(closers, pool.Close)
	if err := pool.Ping(ctx); err != nil {
		return fmt.Errorf("database %s: %w", redact(dsn), err)
	}
	applied, err := txn.Migrate(ctx, pool)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	log.Info("schema migrated", "applied", applied)

	// The read models' tables and registry rows, before anything serves:
	// readers and read-your-writes waits find an active version from the
	// first request on (the projection runtimes do the same at Run).
	projStore := projection.NewStore(pool)
	if err := readmodel.Install(ctx, pool, projStore, c.topic); err != nil {
		return err
	}

	// The aggregate, the runtimes serving it and its read models, and the
	// client sending to it.
	agg, err := stock.NewAggregate()
	if err != nil {
		return err
	}
	// The options of every runtime (the aggregate's and the projections')
	// and of the client: the same brokers, Kafka properties, logger and
	// instance name (and schema: the default, the projection store's).
	common := []actor.Option{actor.WithBrokers(brokers), actor.WithLogger(log)}
	if kafkaProps != nil {
		common = append(common, actor.WithKafkaConfig(kafkaProps))
	}
	if props, _ := parseKafkaConfig(c.kafkaConfig); len(props) > 0 { // validated by parseConfig
		kafkaProps = mergeProps(kafkaProps, props)
		common = append(common, actor.WithKafkaConfig(props))
	}
	if c.instanceID != "" {
		common = append(common, actor.WithInstanceID(c.instanceID))
	}
	// The aggregate's runtime and the client's: its command topic.
	shared := slices.Concat([]actor.Option{actor.WithTopic(c.topic), actor.WithCreateTopics(c.partitions)}, common)
	rt, err := actor.NewRuntime(agg, pool, slices.Concat(shared, []actor.Option{actor.WithPassivateAfter(c.passivate)})...)
	if err != nil {
		return fmt.Errorf("runtime: %w", err)
	}
	// The projections read the history topic, which the aggregate's runtime
	// creates when it starts. Created here first, so that they do not
	// subscribe to a missing topic (Kafka clients notice a new topic only
	// at their next metadata refresh, minutes later).
	if err := ensureHistoryTopic(ctx, brokers, kafkaProps, c.topic+".events", c.partitions); err != nil {
		return err
	}
	runtimes := newRuntimeGroup(ctx, log)
	closers = append(closers, func() { runtimes.stop(30 * time.Second) })
	runtimes.start("runtime", rt.Run)
	metrics := prometheus.NewRegistry()
	if err := metrics.Register(actor.NewCollector(rt)); err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	for _, p := range readmodel.Projections(c.topic, agg.Registry) {
		fsys, dir := readmodel.Migrations()
		// Halt, not dead-letter: a read model that skipped an event is
		// wrong from then on; a halted partition is visible (503 on
		// read-your-writes, onceflow projections list) until fixed.
		prt, err := actor.NewProjection(p, pool, slices.Concat(common, []actor.Option{
			actor.WithMigrations(readmodel.Component, fsys, dir), actor.WithFailurePolicy(actor.Halt)})...)
		if err != nil {
			return fmt.Errorf("projection %s: %w", p.Name, err)
		}
		runtimes.start("projection "+p.Name, prt.Run)
		if err := metrics.Register(actor.NewCollector(prt)); err != nil {
			return fmt.Errorf("metrics: %w", err)
		}
	}

	client, err := actor.NewClient(ctx, agg.Registry, slices.Concat(shared, []actor.Option{actor.WithResults(txn.NewStore(pool), time.Second)})...)
	if err != nil {
		return fmt.Errorf("client: %w", err)
	}
	closers = append(closers, func() {
		if err := client.Close(); err != nil {
			log.Error("close client", "err", err)
		}
	})
	waiter := projection.NewWaiter(projStore)
	closers = append(closers, waiter.Close)

	// The API.
	handler, err := api.New(api.Config{
		Sender:                client,
		Reader:                api.NewStoreReader(agg, eventsource.NewEventStore(pool)),
		ReadModels:            readmodel.NewReader(pool, ""),
		Waiter:                waiter,
		Projections:           readmodel.Names(),
		ReadYourWritesTimeout: c.rywTimeout,
		Health:                pool.Ping,
		Logger:                log,
	})
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(metrics, promhttp.HandlerOpts{}))
	mux.Handle("/", handler)
	ln, err := net.Listen("tcp", c.httpAddr)
	if err != nil {
		return fmt.Errorf("http: %w", err)
	}
	// A command request waits for its outcome, then perhaps for the read
	// models.
	requestTime := api.DefaultSendTimeout + c.rywTimeout
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      requestTime + 20*time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	httpDone := make(chan error, 1)
	go func() { httpDone <- srv.Serve(ln) }()
	banner(stderr, "http://"+ln.Addr().String(), brokers, c)
	if ready != nil {
		ready("http://" + ln.Addr().String())
	}

	// Serve until a signal or a failure.
	var failure error
	select {
	case <-ctx.Done():
		log.Info("shutting down (Ctrl-C again to force)")
	case ex := <-runtimes.exited:
		runtimes.received++
		failure = fmt.Errorf("%s stopped: %w", ex.name, cmp.Or(ex.err, errors.New("without an error")))
	case err := <-httpDone:
		failure = fmt.Errorf("http server: %w", err)
	}
	stopSignals()

	// In-flight requests wait for outcomes from the runtime and for the
	// read models, so the HTTP server drains first; the closers then stop
	// the waiter, the client, the runtimes, the pool and the embedded
	// services.
	sctx, cancel := context.WithTimeout(context.Background(), requestTime+5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("http shutdown", "err", err)
	}
	return failure
}

// runtimeGroup runs the aggregate's runtime and the projections' runtimes
// in one lifecycle: each runs until the group's context ends, the first to
// return (exited) stops the service, and stop cancels them all and waits.
type runtimeGroup struct {
	ctx      context.Context
	cancel   context.CancelFunc
	log      *slog.Logger
	exited   chan runtimeExit
	started  int
	received int // exits already taken from exited
}

type runtimeExit struct {
	name string
	err  error
}

// newRuntimeGroup returns a group whose runtimes outlive ctx: they stop
// when stop is called, after the HTTP server has drained.
func newRuntimeGroup(ctx context.Context, log *slog.Logger) *runtimeGroup {
	gctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	return &runtimeGroup{ctx: gctx, cancel: cancel, log: log, exited: make(chan runtimeExit, 8)}
}

func (g *runtimeGroup) start(name string, run func(context.Context) error) {
	g.started++
	go func() { g.exited <- runtimeExit{name, run(g.ctx)} }()
}

// stop cancels every runtime and waits for them, at most timeout.
func (g *runtimeGroup) stop(timeout time.Duration) {
	g.cancel()
	deadline := time.After(timeout)
	for ; g.received < g.started; g.received++ {
		select {
		case ex := <-g.exited:
			if ex.err != nil && !errors.Is(ex.err, context.Canceled) {
				g.log.Error(ex.name+" stopped with an error", "err", ex.err)
			}
		case <-deadline:
			g.log.Error("runtimes did not stop in time; exiting anyway (uncommitted batches are fenced on the next claim)",
				"timeout", timeout, "still_running", g.started-g.received)
			return
		}
	}
}

// ensureHistoryTopic creates the history topic when it is missing, as the
// aggregate's runtime does: the command topic's partition count (the
// publisher writes each event to its source partition's number), unlimited
// retention (a projection version rebuilds from the first event).
func ensureHistoryTopic(ctx context.Context, brokers string, props map[string]string, topic string, partitions int) error {
	// As onceflow's own clients: no KIP-714 metrics push. Errors only: the
	// properties are the consumers' too, which an admin client would warn
	// about.
	cm := kafka.ConfigMap{"bootstrap.servers": brokers, "enable.metrics.push": false}
	for k, v := range props {
		cm[k] = v
	}
	cm["log_level"] = 3
	admin, err := kafka.NewAdminClient(&cm)
	if err != nil {
		return fmt.Errorf("kafka admin client: %w", err)
	}
	defer admin.Close()
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	res, err := admin.CreateTopics(cctx, []kafka.TopicSpecification{{Topic: topic, NumPartitions: partitions, ReplicationFactor: -1,
		Config: map[string]string{"retention.ms": "-1", "retention.bytes": "-1"}}})
	if err != nil {
		return fmt.Errorf("create topic %q: %w", topic, err)
	}
	for _, r := range res {
		if c := r.Error.Code(); c != kafka.ErrNoError && c != kafka.ErrTopicAlreadyExists {
			return fmt.Errorf("create topic %q: %w", r.Topic, r.Error)
		}
	}
	return nil
}

func mergeProps(a, b map[string]string) map[string]string {
	out := make(map[string]string, len(a)+len(b))
	maps.Copy(out, a)
	maps.Copy(out, b)
	return out
}

func banner(w io.Writer, url, brokers string, c config) {
	base := url + "/v1/stock/ams-1/MUG-BLUE"
	fmt.Fprintf(w, `
  onceflow inventory sample
    API     %s
    Kafka   %s  topic %s
    health  %s/healthz

  Try:
    curl -s -X POST %s/receive -H 'Content-Type: application/json' -d '{"qty": 10}'
    curl -s -X POST %s/reserve -H 'Content-Type: application/json' -H 'Idempotency-Key: order-7' -H 'Read-Your-Writes: true' -d '{"reservation_id": "order-7", "qty": 3}'
    curl -s %s
    curl -s %s/v1/warehouses/ams-1/stock
    curl -s '%s/v1/low-stock?below=10'
    curl -s %s/v1/reservations/order-7

`, url, brokers, c.topic, url, base, base, base, url, url, url)
}

// redact hides a password in a database URL for logs and errors.
func redact(dsn string) string {
	at := strings.LastIndex(dsn, "@")
	scheme := strings.Index(dsn, "://")
	if at < 0 || scheme < 0 || at < scheme {
		return dsn
	}
	userinfo := dsn[scheme+3 : at]
	if user, _, ok := strings.Cut(userinfo, ":"); ok {
		return dsn[:scheme+3] + user + ":xxxxx" + dsn[at:]
	}
	return dsn
}
