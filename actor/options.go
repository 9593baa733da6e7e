package actor

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/onceflow/onceflow/eventsource"
	"github.com/onceflow/onceflow/internal/pgschema"
	"github.com/onceflow/onceflow/txn"
)

// GroupProtocol selects the Kafka consumer group protocol.
type GroupProtocol string

const (
	// ProtocolClassic is the classic group protocol with the
	// cooperative-sticky assignor (incremental rebalances). The default.
	ProtocolClassic GroupProtocol = "classic"
	// ProtocolConsumer is the KIP-848 protocol (group.protocol=consumer),
	// where the broker computes assignments.
	ProtocolConsumer GroupProtocol = "consumer"
)

// FailurePolicy says what happens to a record the runtime cannot handle
// (undecodable, key mismatch, panicking handler).
type FailurePolicy int

const (
	// DeadLetter stores the record in the dead-letter table, in the batch's
	// transaction, and moves on. The default.
	DeadLetter FailurePolicy = iota
	// Halt stops the partition without committing the batch: the record
	// stays at the head of the partition until an operator intervenes
	// (fix the handler and restart). The runtime logs the error and keeps
	// serving other partitions.
	Halt
)

// Hooks observe a Runtime: partitions assigned, revoked or lost, batches
// committed or fenced. They never change what the runtime does. They run on
// the runtime's goroutines (the poll loop for partition events, the
// partition's actor for batch events), so keep them fast and non-blocking:
// count, log, signal a channel.
type Hooks struct {
	// OnAssigned runs when a partition was claimed (epoch is its new
	// epoch) and is about to be consumed.
	OnAssigned func(partition int32, epoch int64)
	// OnRevoked runs when a partition is let go (revoked, lost, or at
	// shutdown); lost is true when Kafka reported the assignment lost
	// (session expired).
	OnRevoked func(partition int32, lost bool)
	// OnCommitted runs after a batch committed, before its replies.
	OnCommitted func(b BatchInfo)
	// OnFenced runs when a commit is rejected as fenced.
	OnFenced func(b BatchInfo, err error)
}

// faultHooks are the fault-injection seams of the tests (crash right after a
// commit, stall before one): not part of the public API. Only
// export_test.go sets them.
type faultHooks struct {
	// BeforeCommit runs after a batch is decided and before its
	// transaction begins; blocking it stalls the partition (a zombie).
	BeforeCommit func(ctx context.Context, b BatchInfo)
	// AfterCommit runs after the transaction committed; an error makes the
	// partition behave as if the process crashed there: no publish
	// hand-off, no replies, reload from Postgres.
	AfterCommit func(ctx context.Context, b BatchInfo) error
	// Outbox, when set, returns outbox records to store with an accepted
	// command (as a handler that emits commands will).
	Outbox func(commandID string) []txn.OutboxRecord
}

// BatchInfo describes a batch to hooks.
type BatchInfo struct {
	Key         txn.PartitionKey
	Epoch       int64
	FirstOffset int64
	NextOffset  int64
	Records     int
	CommandIDs  []string
}

// InlineProjection runs inside a batch's transaction with the events the
// batch stores, before the fenced offset update. Its writes commit or roll
// back with the batch, so the read model is exactly-once with the commands.
type InlineProjection func(ctx context.Context, tx pgx.Tx, events []eventsource.StoredEvent) error

type config struct {
	brokers          string
	topic            string
	group            string
	instanceID       string
	kafka            map[string]string
	log              *slog.Logger
	protocol         GroupProtocol
	maxRecords       int
	maxWait          time.Duration
	passivate        time.Duration
	maxAggregates    int
	onFailure        FailurePolicy
	revokeTimeout    time.Duration
	replyTopic       string
	sendTimeout      time.Duration
	resultPoll       time.Duration
	results          *txn.Store
	hooks            Hooks
	faults           faultHooks
	inline           []InlineProjection
	createTopic      int
	lockTimeout      time.Duration
	partitioner      Partitioner
	noMigrate        bool
	migrations       []componentMigrations
	schema           string
	publish          bool
	publishState     bool
	historyTopic     string
	stateTopic       string
	publishBrokers   string // tests only (export_test.go): the publishers' bootstrap servers
	rebalanceTimeout time.Duration
}

func defaultConfig() config {
	return config{
		kafka:            map[string]string{},
		log:              slog.Default(),
		protocol:         ProtocolClassic,
		maxRecords:       1000,
		maxWait:          10 * time.Millisecond,
		passivate:        2 * time.Minute,
		maxAggregates:    DefaultMaxAggregates,
		revokeTimeout:    10 * time.Second,
		sendTimeout:      30 * time.Second,
		resultPoll:       time.Second,
		lockTimeout:      5 * time.Second,
		partitioner:      Murmur2,
		schema:           pgschema.Default,
		publish:          true,
		publishState:     true,
		rebalanceTimeout: 15 * time.Second,
	}
}

// Option configures a Runtime, a Client, or both. One slice serves both, as
// franz-go's kgo.Opt does:
//
//	opts := []actor.Option{actor.WithBrokers(b), actor.WithTopic("bank.commands"), actor.WithBatch(500, 5*time.Millisecond)}
//	rt, err := actor.NewRuntime(account, pool, opts...)
//	client, err := actor.NewClient(ctx, reg, opts...)
//
// Each option's documentation says whom it applies to; the other ignores it
// (a Client ignores WithBatch, a Runtime ignores WithSendTimeout).
type Option interface{ apply(*config) }

// ClientOption and SharedOption are Option, kept as names for code written
// when the Runtime and the Client had separate option types.
type (
	ClientOption = Option
	SharedOption = Option
)

type option func(*config)

func (o option) apply(c *config) { o(c) }

// WithBrokers sets the Kafka bootstrap servers ("host:port,host:port"). Required.
func WithBrokers(bootstrap string) Option {
	return option(func(c *config) { c.brokers = bootstrap })
}

// WithTopic sets the command topic. Required.
func WithTopic(topic string) Option { return option(func(c *config) { c.topic = topic }) }

// WithReplyTopic sets the topic outcomes are sent to. Default: the command
// topic + ".replies". The runtime replies to the topic named in each
// command's header, so this matters for the Client (and for topic creation).
func WithReplyTopic(topic string) Option {
	return option(func(c *config) { c.replyTopic = topic })
}

// WithKafkaConfig adds librdkafka properties (for example security
// settings). Properties the exactly-once protocol depends on
// (enable.auto.commit, enable.auto.offset.store, group.id, isolation) are
// rejected by validation.
func WithKafkaConfig(props map[string]string) Option {
	return option(func(c *config) { maps.Copy(c.kafka, props) })
}

// WithLogger sets the structured logger (default slog.Default()).
func WithLogger(l *slog.Logger) Option { return option(func(c *config) { c.log = l }) }

// WithCreateTopics makes the Runtime or Client create its topics with
// partitions partitions (replication factor from the broker default) when
// they do not exist. Off by default: production topics are usually created
// by their owners.
func WithCreateTopics(partitions int) Option {
	return option(func(c *config) { c.createTopic = partitions })
}

// WithGroup sets the consumer group id. Default "onceflow." + aggregate type.
// Changing it on a running deployment starts a new set of claims at offset 0:
// every command would be consumed again (and answered from command_results,
// so not applied twice, but slowly).
//
// Runtime only.
func WithGroup(group string) Option { return option(func(c *config) { c.group = group }) }

// WithInstanceID names this instance in claim rows and logs. Default
// hostname-pid-random.
//
// Runtime only.
func WithInstanceID(id string) Option {
	return option(func(c *config) { c.instanceID = id })
}

// WithGroupProtocol selects classic (cooperative-sticky, default) or the
// KIP-848 consumer protocol.
//
// Runtime only.
func WithGroupProtocol(p GroupProtocol) Option {
	return option(func(c *config) { c.protocol = p })
}

// WithBatch sets the most records per batch transaction (default 1000; 5000
// for a projection) and the longest a partition holds a partial batch
// (default 10ms). A batch closes as soon as the partition has no more
// records handed to it, so an idle partition commits a command at once and,
// under load, the records that arrive while a batch commits form the next
// one; maxWait only caps how long a batch may keep growing. maxRecords=1
// gives one transaction per command.
//
// Runtime only.
func WithBatch(maxRecords int, maxWait time.Duration) Option {
	return option(func(c *config) { c.maxRecords, c.maxWait = maxRecords, maxWait })
}

// WithPassivateAfter sets how long an aggregate may stay idle in memory
// before its actor is stopped (default 2m). Its state is reloaded from
// Postgres on its next command. WithMaxAggregates bounds how many stay in
// memory whatever their idle time.
//
// Runtime only.
func WithPassivateAfter(d time.Duration) Option {
	return option(func(c *config) { c.passivate = d })
}

// DefaultMaxAggregates is the default of WithMaxAggregates: 100,000
// aggregates in memory per Runtime. With a small state (the inventory
// sample's) an aggregate holds about 1 KB of live heap, and a Runtime
// touching a million aggregates peaked at about 400 MB RSS at this cap
// (docs/benchmarks.md, "Memory per live aggregate"); GOMEMLIMIT bounds the
// garbage collector's headroom on top of the live heap.
const DefaultMaxAggregates = 100_000

// WithMaxAggregates caps the aggregates a Runtime keeps in memory (default
// DefaultMaxAggregates; 0 for no cap, when WithPassivateAfter alone bounds
// them), like Akka's limit on active entities. The cap is split evenly over
// the partitions the Runtime owns (ceil(n / owned partitions) each, following
// rebalances): after each batch, a partition holding more than its share
// passivates its least recently used aggregates down to 90% of it. A
// passivated aggregate's state is dropped and reloaded from Postgres
// (snapshot + later events) on its next command, exactly as after
// WithPassivateAfter. Correctness never depends on the cap; its cost is
// reloads (Stats.Loads, Stats.Evictions), so set it above the working set of
// aggregates that get commands within a few minutes. While a batch is
// decided, a partition also holds that batch's aggregates, so the ceiling is
// n plus one batch's aggregates per partition.
//
// Runtime only.
func WithMaxAggregates(n int) Option {
	return option(func(c *config) { c.maxAggregates = n })
}

// WithFailurePolicy sets what happens to records that cannot be handled.
//
// Runtime only.
func WithFailurePolicy(p FailurePolicy) Option {
	return option(func(c *config) { c.onFailure = p })
}

// WithRevokeTimeout bounds how long a revoke waits for a partition's
// in-flight batch to commit before letting the partition go (default 10s).
// A batch that commits later is rejected by the fence.
//
// Runtime only.
func WithRevokeTimeout(d time.Duration) Option {
	return option(func(c *config) { c.revokeTimeout = d })
}

// WithClaimLockTimeout bounds how long claiming a partition waits for the
// previous owner's in-flight transaction (default 5s).
//
// Runtime only.
func WithClaimLockTimeout(d time.Duration) Option {
	return option(func(c *config) { c.lockTimeout = d })
}

// WithRebalanceTimeout bounds the work done inside one Kafka rebalance
// callback (default 15s): the partitions of one assignment are claimed in
// Postgres concurrently, and those of one revocation stopped concurrently,
// all under this one deadline whatever the partition count. A partition whose
// claim misses the deadline is claimed again from the poll loop; one whose
// in-flight batch is still running when it passes is abandoned (a late
// commit is rejected by the fence). It is lowered to half of
// max.poll.interval.ms when that is set lower; keep it above
// WithClaimLockTimeout so a claim that waits for a lock can still succeed.
//
// Runtime only.
func WithRebalanceTimeout(d time.Duration) Option {
	return option(func(c *config) { c.rebalanceTimeout = d })
}

// WithAutoMigrate(false) stops Run from applying onceflow's schema
// migrations (txn.Migrate) at start, for teams that migrate in a deploy step
// (`onceflow migrate`). Default true. With it off, Run fails at the first
// statement if the schema is missing or old.
//
// Runtime only.
func WithAutoMigrate(on bool) Option {
	return option(func(c *config) { c.noMigrate = !on })
}

// WithPublishing turns publishing of stored events to Kafka on or off
// (default on): every event to the history topic and every aggregate's
// latest state to the compacted state topic (see WithEventTopics), after
// commit, by the partition's owner.
//
// Runtime only.
func WithPublishing(on bool) Option {
	return option(func(c *config) { c.publish = on })
}

// WithEventTopics names the history topic (every stored event, in seq order
// per partition; default <command topic>.events) and the compacted state
// topic (latest state per aggregate; default <command topic>.state). An
// empty state name turns state publishing off. The runtime creates missing
// ones with the command topic's partition count: the history topic with
// unlimited retention, the state topic compacted.
//
// Runtime only.
func WithEventTopics(history, state string) Option {
	return option(func(c *config) {
		c.historyTopic, c.stateTopic = history, state
		c.publishState = state != ""
	})
}

// WithSchema puts onceflow's tables in the Postgres schema name instead of
// "onceflow" (1-63 characters of [a-z0-9_], not starting with a digit): the
// runtime migrates, claims, commits and reads there. Give a Client's
// WithResults store the same schema (txn.WithSchema). Two services can share
// a database with a schema each.
//
// Runtime only.
func WithSchema(name string) Option { return option(func(c *config) { c.schema = name }) }

// WithMigrations adds a component's migrations (a service's own read-model
// or process tables): the files NNNN_name.sql in dir of fsys, applied by Run
// after onceflow's own schema through txn.MigrateFS (unless
// WithAutoMigrate(false)), recorded under component. Several apply in the
// order given.
//
// Runtime only.
func WithMigrations(component string, fsys fs.FS, dir string) Option {
	return option(func(c *config) { c.migrations = append(c.migrations, componentMigrations{component, fsys, dir}) })
}

type componentMigrations struct {
	component string
	fsys      fs.FS
	dir       string
}

// WithHooks installs observing hooks (instrumentation, tests).
//
// Runtime only.
func WithHooks(h Hooks) Option { return option(func(c *config) { c.hooks = h }) }

// WithInlineProjection adds a projection that runs inside every batch
// transaction. Several run in the order given.
//
// Runtime only.
func WithInlineProjection(p InlineProjection) Option {
	return option(func(c *config) { c.inline = append(c.inline, p) })
}

// WithSendTimeout sets how long Client.Send waits for an outcome when ctx
// has no earlier deadline (default 30s).
//
// Client only.
func WithSendTimeout(d time.Duration) Option {
	return option(func(c *config) { c.sendTimeout = d })
}

// WithResults lets the Client read outcomes from Postgres when a reply is
// slow or lost: after the poll interval (default 1s) without a reply it
// looks the command id up in command_results, and again every interval.
//
// Client only.
func WithResults(store *txn.Store, poll time.Duration) Option {
	return option(func(c *config) {
		c.results = store
		if poll > 0 {
			c.resultPoll = poll
		}
	})
}

// reservedKafkaProps are set by onceflow and must not be overridden.
var reservedKafkaProps = []string{
	"group.id", "enable.auto.commit", "enable.auto.offset.store", "bootstrap.servers",
	"isolation.level", "enable.partition.eof", "go.application.rebalance.enable",
}

func (c *config) validateCommon() error {
	var errs []error
	if strings.TrimSpace(c.brokers) == "" {
		errs = append(errs, errors.New("brokers are required (WithBrokers)"))
	}
	if strings.TrimSpace(c.topic) == "" {
		errs = append(errs, errors.New("command topic is required (WithTopic)"))
	}
	for _, k := range reservedKafkaProps {
		if _, ok := c.kafka[k]; ok {
			errs = append(errs, fmt.Errorf("kafka property %q is managed by onceflow and cannot be set with WithKafkaConfig", k))
		}
	}
	if c.log == nil {
		errs = append(errs, errors.New("logger is nil"))
	}
	if c.createTopic < 0 {
		errs = append(errs, fmt.Errorf("WithCreateTopics: partitions must be > 0, got %d", c.createTopic))
	}
	if c.replyTopic == "" {
		c.replyTopic = c.topic + ".replies"
	}
	if c.historyTopic == "" {
		c.historyTopic = c.topic + ".events"
	}
	if c.stateTopic == "" && c.publishState {
		c.stateTopic = c.topic + ".state"
	}
	if err := c.partitioner.validate(); err != nil {
		errs = append(errs, err)
	}
	if _, ok := c.kafka["partitioner"]; ok {
		errs = append(errs, errors.New(`kafka property "partitioner" is managed by onceflow: use WithPartitioner, so the Runtime checks records against the same mapping`))
	}
	return errors.Join(errs...)
}

func (c *config) validateRuntime() error {
	errs := []error{c.validateCommon()}
	if c.maxRecords < 1 || c.maxRecords > 100_000 {
		errs = append(errs, fmt.Errorf("WithBatch: maxRecords must be in [1, 100000], got %d", c.maxRecords))
	}
	if c.maxWait < 0 || c.maxWait > time.Minute {
		errs = append(errs, fmt.Errorf("WithBatch: maxWait must be in [0, 1m], got %v", c.maxWait))
	}
	if c.passivate <= 0 {
		errs = append(errs, fmt.Errorf("WithPassivateAfter: must be > 0, got %v", c.passivate))
	}
	if c.maxAggregates < 0 {
		errs = append(errs, fmt.Errorf("WithMaxAggregates: must be >= 0 (0: no cap), got %d", c.maxAggregates))
	}
	if c.revokeTimeout <= 0 {
		errs = append(errs, fmt.Errorf("WithRevokeTimeout: must be > 0, got %v", c.revokeTimeout))
	}
	if c.lockTimeout <= 0 {
		errs = append(errs, fmt.Errorf("WithClaimLockTimeout: must be > 0, got %v", c.lockTimeout))
	}
	if err := pgschema.Check(c.schema); err != nil {
		errs = append(errs, fmt.Errorf("WithSchema: %w", err))
	}
	if c.rebalanceTimeout <= 0 {
		errs = append(errs, fmt.Errorf("WithRebalanceTimeout: must be > 0, got %v", c.rebalanceTimeout))
	}
	if mp, ok := c.kafka["max.poll.interval.ms"]; ok {
		// The rebalance callback runs inside Poll: keep its work well
		// inside the poll interval, or this member is evicted.
		if ms, err := strconv.Atoi(mp); err == nil && ms > 0 {
			c.rebalanceTimeout = min(c.rebalanceTimeout, time.Duration(ms)*time.Millisecond/2)
		}
	}
	switch c.protocol {
	case ProtocolClassic, ProtocolConsumer:
	default:
		errs = append(errs, fmt.Errorf("WithGroupProtocol: unknown protocol %q (want %q or %q)", c.protocol, ProtocolClassic, ProtocolConsumer))
	}
	switch c.onFailure {
	case DeadLetter, Halt:
	default:
		errs = append(errs, fmt.Errorf("WithFailurePolicy: unknown policy %d", c.onFailure))
	}
	if c.protocol == ProtocolConsumer {
		for _, k := range []string{"partition.assignment.strategy", "session.timeout.ms", "heartbeat.interval.ms"} {
			if _, ok := c.kafka[k]; ok {
				errs = append(errs, fmt.Errorf("kafka property %q is not allowed with group.protocol=consumer (KIP-848): the broker owns it", k))
			}
		}
	}
	return errors.Join(errs...)
}

func (c *config) validateClient() error {
	errs := []error{c.validateCommon()}
	if c.sendTimeout <= 0 {
		errs = append(errs, fmt.Errorf("WithSendTimeout: must be > 0, got %v", c.sendTimeout))
	}
	return errors.Join(errs...)
}
