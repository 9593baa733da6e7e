package testkit

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

	"github.com/onceflow/onceflow/txn"
)

// Environment variables read by New. An option given in code wins over its
// variable.
const (
	EnvMode          = "ONCEFLOW_TESTENV"             // docker, local or auto
	EnvPostgresImage = "ONCEFLOW_TEST_POSTGRES_IMAGE" // default DefaultPostgresImage
	EnvKafkaImage    = "ONCEFLOW_TEST_KAFKA_IMAGE"    // default DefaultKafkaImage
	EnvDatabaseURL   = "ONCEFLOW_TEST_DATABASE_URL"   // an existing Postgres server to use
)

// Default images: the official ones.
const (
	DefaultPostgresImage = "postgres:15"
	DefaultKafkaImage    = "apache/kafka:3.9.1"
)

// Mode selects how the environment is provided.
type Mode string

const (
	// ModeAuto uses Docker if an engine answers, the local fallback otherwise.
	ModeAuto Mode = "auto"
	// ModeDocker runs containers and fails if Docker is not available.
	ModeDocker Mode = "docker"
	// ModeLocal runs an in-process broker and a private Postgres cluster.
	ModeLocal Mode = "local"
)

// Option configures New and Start.
type Option func(*config)

type config struct {
	mode                    Mode
	postgresImage           string
	kafkaImage              string
	postgresURL             string
	postgresPort, kafkaPort int
	startTimeout            time.Duration
	pullTimeout             time.Duration
	waitTimeout             time.Duration
	log                     *slog.Logger
	logf                    func(format string, args ...any)
	set                     map[string]bool // options given in code
	dockerProbeTimeout      time.Duration
}

// WithMode chooses docker, local or auto; default from ONCEFLOW_TESTENV, else auto.
func WithMode(m Mode) Option { return func(c *config) { c.mode = m; c.set["mode"] = true } }

// WithPostgresImage sets the Postgres image (docker mode). It must honour the
// official image's POSTGRES_USER, POSTGRES_PASSWORD and POSTGRES_DB.
func WithPostgresImage(image string) Option {
	return func(c *config) { c.postgresImage = image; c.set["pgimage"] = true }
}

// WithKafkaImage sets the Kafka image (docker mode): apache/kafka (or an
// image built like it), or one labelled org.onceflow.kafka-flavor=devbroker.
func WithKafkaImage(image string) Option {
	return func(c *config) { c.kafkaImage = image; c.set["kafkaimage"] = true }
}

// WithPostgresURL uses an existing Postgres server instead of starting one:
// the Env gets a fresh database on it (dropped on Close). The URL's user must
// be allowed to CREATE DATABASE.
func WithPostgresURL(url string) Option {
	return func(c *config) { c.postgresURL = url; c.set["pgurl"] = true }
}

// WithPostgresPort publishes Postgres on this fixed host port (default 0: a
// free port), for example to look at it with psql while a test is paused.
func WithPostgresPort(port int) Option { return func(c *config) { c.postgresPort = port } }

// WithKafkaPort publishes Kafka on this fixed host port (default 0: a free
// port).
func WithKafkaPort(port int) Option { return func(c *config) { c.kafkaPort = port } }

// WithStartTimeout bounds starting the environment, image pulls excluded.
// Default 3 minutes.
func WithStartTimeout(d time.Duration) Option { return func(c *config) { c.startTimeout = d } }

// WithPullTimeout bounds pulling each missing image. Default 5 minutes.
func WithPullTimeout(d time.Duration) Option { return func(c *config) { c.pullTimeout = d } }

// WithWaitTimeout is how long WaitOutcome, WaitPosition and WaitFor wait
// before failing the test. Default 30 seconds.
func WithWaitTimeout(d time.Duration) Option { return func(c *config) { c.waitTimeout = d } }

// WithLogger receives progress messages (New only; Start logs with t.Logf).
// Default: discarded.
func WithLogger(l *slog.Logger) Option { return func(c *config) { c.log = l } }

// Env is a running test environment: a Kafka bootstrap address and a
// Postgres database with the onceflow schema migrated. Its methods are safe
// for concurrent use.
type Env struct {
	mode        Mode
	brokers     string
	kafkaConfig map[string]string
	dsn         string
	adminDSN    string // a database on the same server, for FreshDatabase
	withDB      func(db string) string
	pool        *pgxpool.Pool
	store       *txn.Store
	waitTimeout time.Duration
	logf        func(format string, args ...any)

	closeOnce sync.Once
	closeMu   sync.Mutex                        // guards closers: containers start concurrently
	closers   []func(ctx context.Context) error // run in reverse order
	closeErr  error
}

// Mode reports which environment runs: ModeDocker or ModeLocal.
func (e *Env) Mode() Mode { return e.mode }

// Brokers returns the Kafka bootstrap servers (host:port) reachable from the
// test process.
func (e *Env) Brokers() string { return e.brokers }

// KafkaConfig returns librdkafka properties to add to every client of this
// environment (actor.WithKafkaConfig). A copy: callers may change it.
func (e *Env) KafkaConfig() map[string]string {
	m := make(map[string]string, len(e.kafkaConfig))
	for k, v := range e.kafkaConfig {
		m[k] = v
	}
	return m
}

// DSN returns the URL of the environment's database, with txn.Migrate
// applied.
func (e *Env) DSN() string { return e.dsn }

// Pool returns a pool on DSN, closed by Close.
func (e *Env) Pool() *pgxpool.Pool { return e.pool }

// Store returns a txn.Store on Pool, to read command results and dead
// letters.
func (e *Env) Store() *txn.Store { return e.store }

// Start starts an environment for t and closes it when t and its subtests
// end. A failure to start fails t with the cause and the fix.
func Start(t testing.TB, opts ...Option) *Env {
	t.Helper()
	opts = append([]Option{func(c *config) { c.logf = t.Logf }}, opts...)
	ctx := context.Background()
	if d, ok := t.(interface{ Deadline() (time.Time, bool) }); ok {
		if dl, ok := d.Deadline(); ok {
			var cancel context.CancelFunc
			ctx, cancel = context.WithDeadline(ctx, dl)
			defer cancel()
		}
	}
	env, err := New(ctx, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := env.Close(); err != nil {
			t.Errorf("testkit: close: %v", err)
		}
	})
	return env
}

// New starts an environment; ctx bounds the start-up (and WithStartTimeout
// bounds it further). The caller must Close it. Use Start in tests; New is
// for TestMain, where there is no t.
func New(ctx context.Context, opts ...Option) (*Env, error) {
	c, err := newConfig(opts)
	if err != nil {
		return nil, err
	}
	mode := c.mode
	if mode == ModeAuto {
		if err := probeDocker(ctx, c.dockerProbeTimeout); err != nil {
			c.logf("testkit: using the local environment (in-process Kafka broker, private Postgres): %s. Set %s=docker to require Docker.", causeOf(err), EnvMode)
			mode = ModeLocal
		} else {
			mode = ModeDocker
		}
	}
	sctx, cancel := context.WithTimeout(ctx, c.startTimeout)
	defer cancel()
	e, err := start(ctx, sctx, c, mode)
	// Auto mode takes the best environment available: an engine without
	// the images (no registry, images not built) is not available. An
	// explicit ONCEFLOW_TESTENV=docker gets the error instead.
	if mode == ModeDocker && c.mode == ModeAuto && errors.Is(err, ErrImageUnavailable) {
		c.logf("testkit: using the local environment (in-process Kafka broker, private Postgres): Docker answers, but %s. Set %s=docker to require Docker.", causeOf(err), EnvMode)
		mode = ModeLocal
		e, err = start(ctx, sctx, c, mode)
	}
	if err != nil {
		return nil, err
	}
	c.logf("testkit: %s environment ready: kafka %s, postgres %s", mode, e.brokers, redact(e.dsn))
	return e, nil
}

// start starts one environment of the given mode; on failure it removes
// whatever it had started.
func start(ctx, sctx context.Context, c *config, mode Mode) (*Env, error) {
	e := &Env{mode: mode, waitTimeout: c.waitTimeout, logf: c.logf}
	var err error
	if mode == ModeDocker {
		err = e.startDocker(ctx, sctx, c)
	} else {
		err = e.startLocal(sctx, c)
	}
	if err == nil {
		err = e.openDatabase(sctx, c)
	}
	if err != nil {
		if cerr := e.Close(); cerr != nil {
			c.logf("testkit: cleaning up after a failed start: %v", cerr)
		}
		return nil, err
	}
	return e, nil
}

func newConfig(opts []Option) (*config, error) {
	c := &config{
		mode:               ModeAuto,
		postgresImage:      DefaultPostgresImage,
		kafkaImage:         DefaultKafkaImage,
		startTimeout:       3 * time.Minute,
		pullTimeout:        5 * time.Minute,
		waitTimeout:        30 * time.Second,
		dockerProbeTimeout: 5 * time.Second,
		set:                map[string]bool{},
	}
	for _, o := range opts {
		o(c)
	}
	if c.logf == nil {
		l := c.log
		if l == nil {
			l = slog.New(slog.DiscardHandler)
		}
		c.logf = func(format string, args ...any) { l.Info(fmt.Sprintf(format, args...)) }
	}
	var errs []error
	if !c.set["mode"] {
		switch v := strings.TrimSpace(os.Getenv(EnvMode)); v {
		case "", "auto":
		case "docker", "local":
			c.mode = Mode(v)
		default:
			errs = append(errs, fmt.Errorf("%s=%q: want docker, local or auto", EnvMode, v))
		}
	}
	if c.mode != ModeAuto && c.mode != ModeDocker && c.mode != ModeLocal {
		errs = append(errs, fmt.Errorf("mode %q: want docker, local or auto", c.mode))
	}
	if v := strings.TrimSpace(os.Getenv(EnvPostgresImage)); v != "" && !c.set["pgimage"] {
		c.postgresImage = v
	}
	if v := strings.TrimSpace(os.Getenv(EnvKafkaImage)); v != "" && !c.set["kafkaimage"] {
		c.kafkaImage = v
	}
	if v := strings.TrimSpace(os.Getenv(EnvDatabaseURL)); v != "" && !c.set["pgurl"] {
		c.postgresURL = v
	}
	if c.postgresImage == "" || c.kafkaImage == "" {
		errs = append(errs, errors.New("image names must not be empty"))
	}
	for _, p := range []struct {
		name string
		v    int
	}{{"postgres port", c.postgresPort}, {"kafka port", c.kafkaPort}} {
		if p.v < 0 || p.v > 65535 {
			errs = append(errs, fmt.Errorf("%s must be in [0, 65535], got %d", p.name, p.v))
		}
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"start timeout", c.startTimeout}, {"pull timeout", c.pullTimeout}, {"wait timeout", c.waitTimeout}} {
		if d.v <= 0 {
			errs = append(errs, fmt.Errorf("%s must be positive, got %v", d.name, d.v))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, envErr(ErrInvalidConfig, err, "correct the option or environment variable named above", "bad configuration")
	}
	return c, nil
}

// Close stops and removes everything the environment started (containers,
// broker, cluster, temporary directories, a database on a shared server).
// Safe to call more than once.
func (e *Env) Close() error {
	e.closeOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		var errs []error
		e.closeMu.Lock()
		closers := e.closers
		e.closers = nil
		e.closeMu.Unlock()
		for i := len(closers) - 1; i >= 0; i-- {
			if err := closers[i](ctx); err != nil {
				errs = append(errs, err)
			}
		}
		e.closeErr = errors.Join(errs...)
	})
	return e.closeErr
}

func (e *Env) onClose(f func(ctx context.Context) error) {
	e.closeMu.Lock()
	e.closers = append(e.closers, f)
	e.closeMu.Unlock()
}

// causeOf returns an error's message without an EnvError's fix line.
func causeOf(err error) string {
	var ee *EnvError
	if errors.As(err, &ee) {
		if ee.Err != nil {
			return ee.Cause + ": " + ee.Err.Error()
		}
		return ee.Cause
	}
	return err.Error()
}

// redact hides a password in a URL for logs.
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
