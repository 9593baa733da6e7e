package actor

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/onceflow/onceflow/eventsource"
	"github.com/onceflow/onceflow/projection"
	"github.com/onceflow/onceflow/txn"
)

// Projection is a read model fed exactly once by the events of one command
// topic: a handler kind of the same partition pipeline that runs
// aggregates. Its runtime (NewProjection) consumes the topic's history
// topic in the version's own consumer group ("onceflow.projection.<name>.v<version>"),
// and each batch's read-model writes (Apply) and the version's position on
// the source partition (the next source seq it applies) commit in ONE
// Postgres transaction fenced by the claim's epoch, like a command batch.
//
// Guarantees, per source partition: Apply sees every stored event exactly
// once, in seq order; a record repeated by the publisher is skipped by seq;
// events missing from the topic (retention deleted them, or a gap) are read
// from the Postgres event store, in order, and the switch back to the topic
// is at the exact seq (a gap is logged and counted, never skipped). Batches
// of different source partitions run concurrently, each on its own
// transaction. On rebalance a partition moves to its new owner, which
// continues from the committed position.
//
// Versions: bump Version to rebuild the read model into new tables while the
// old version keeps serving (blue/green). The first version of a name is
// active at once; a later one builds, and once it has applied at least as
// far as the active version on every partition (checked in the switch's
// transaction, projection.Store.SwitchWhenCaughtUp) its runtime switches
// readers to it in one transaction, in which Drop drops the old version's
// tables. Readers find the active version with projection.ActiveTx in the
// transaction that reads its tables.
type Projection struct {
	// Name: 1-63 characters of [a-z0-9_-].
	Name string
	// Version, from 1. A version is immutable once registered.
	Version int
	// Source is the command topic whose events it reads.
	Source string
	// HistoryTopic is Source's history topic; default Source + ".events".
	HistoryTopic string
	// Registry, when set, decodes each event's payload into Event.Payload.
	// An event it cannot decode is a poison event (see Apply).
	Registry *eventsource.Registry
	// Apply writes what the events mean to the read model, in tx: events
	// of one source partition, in seq order, a batch at a time. It runs
	// again with the same events when the transaction rolls back (a retry,
	// a fence), never after it committed, so it must only write through
	// tx. An error (or panic) rolls the batch back; the runtime then
	// applies the batch's events one by one to find the poison event,
	// which the failure policy (WithFailurePolicy) dead-letters (with the
	// event and the error; the position moves past it) or halts on.
	Apply func(ctx context.Context, tx pgx.Tx, events []Event) error
	// Drop, when set, drops the tables of a version this one replaces,
	// in the switch's transaction.
	Drop projection.DropFunc
}

// Event is a stored event as a projection receives it.
type Event struct {
	eventsource.StoredEvent
	// Payload is the decoded event when Projection.Registry is set.
	Payload any
}

// consumerKind is a Runtime's event-consumer handler: a projection or a
// process manager. Both run the same consumer pipeline (consume.go); they
// differ in what a batch does inside its transaction.
type consumerKind struct {
	what     string // "projection balances v1", "process manager transfers"
	source   string // the command topic whose events it reads
	registry *eventsource.Registry
	// handle applies events in tx and returns the outbox records they
	// produced (the commands a process manager sends).
	handle func(ctx context.Context, tx pgx.Tx, key txn.PartitionKey, evs []Event) ([]txn.OutboxRecord, error)

	proj *projectionState // projections only
	pm   *pmState         // process managers only
	pg   *txn.Store       // the Postgres store (consumers need Postgres)
}

// projectionState is what a projection adds: its registry row.
type projectionState struct {
	def   projection.Def
	p     Projection
	store *projection.Store

	switching atomic.Bool
	state     atomic.Pointer[projection.Info]
	checkAt   atomic.Int64 // unix nanos of the next switch check
}

// NewProjection validates p and the options and returns the Runtime that
// feeds it. It does not connect to anything: Run does, and registers the
// version (projection.Store.Register) after migrating the schema, the
// registry and the service's migrations (WithMigrations: the read-model
// tables).
//
// Options that apply: WithKafkaConfig/WithBrokers, WithBatch (default
// 5,000 records or 10ms),
// WithFailurePolicy, WithSchema, WithLogger, WithHooks, WithMigrations,
// WithAutoMigrate, WithGroupProtocol, WithRebalanceTimeout,
// WithRevokeTimeout, WithClaimLockTimeout, WithInstanceID, WithMetrics.
// The topic and group come from p; a projection publishes nothing.
func NewProjection(p Projection, pool *pgxpool.Pool, opts ...Option) (*Runtime, error) {
	if pool == nil {
		return nil, errors.New("onceflow: NewProjection: pool is nil")
	}
	def := projection.Def{Name: p.Name, Version: p.Version, SourceTopic: p.Source, HistoryTopic: p.HistoryTopic}
	var errs []error
	if err := def.Validate(); err != nil {
		errs = append(errs, err)
	}
	if p.Apply == nil {
		errs = append(errs, fmt.Errorf("projection %q: Apply is nil", p.Name))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("onceflow: invalid projection: %w", err)
	}
	cfg := defaultConfig()
	// Larger batches than commands by default: a rebuild applies millions
	// of events, and a batch's cost is mostly per transaction (measured:
	// 43k events/s at 1,000 per batch, 115k at 5,000; docs/benchmarks.md).
	cfg.maxRecords = defaultProjectionBatch
	for _, o := range opts {
		o.apply(&cfg)
	}
	cfg.topic, cfg.group = def.HistoryTopic, def.Group()
	cfg.publish, cfg.publishState, cfg.createTopic = false, false, 0
	fsys, dir := projection.Migrations()
	cfg.migrations = append([]componentMigrations{{projection.Component, fsys, dir}}, cfg.migrations...)
	r, err := newRuntimeFromConfig(cfg, nil, pool, nil, nil)
	if err != nil {
		return nil, err
	}
	ps := &projectionState{def: def, p: p, store: projection.NewStore(pool, projection.WithSchema(r.cfg.schema))}
	r.cons = &consumerKind{
		what: fmt.Sprintf("projection %s v%d", def.Name, def.Version), source: def.SourceTopic, registry: p.Registry, proj: ps,
		pg: txn.NewStore(pool, txn.WithSchema(r.cfg.schema)),
		handle: func(ctx context.Context, tx pgx.Tx, _ txn.PartitionKey, evs []Event) ([]txn.OutboxRecord, error) {
			return nil, p.Apply(ctx, tx, evs)
		},
	}
	return r, nil
}

// defaultProjectionBatch is a projection's default WithBatch maxRecords.
const defaultProjectionBatch = 5000

// register records the version in the registry (at Run).
func (k *projectionState) register(ctx context.Context) error {
	info, err := k.store.Register(ctx, k.def)
	if err != nil {
		return fmt.Errorf("onceflow: %w", err)
	}
	k.state.Store(&info)
	return nil
}

// switchCheckEvery is how often a building version checks whether it has
// caught up.
const switchCheckEvery = 2 * time.Second

// switchRetry is how soon a version within a batch of the head tries the
// switch again.
const switchRetry = 100 * time.Millisecond

// tickProjection lets a building version switch readers to itself once it
// has caught up on every partition (in the background).
func (r *Runtime) tickProjection(now time.Time) {
	if r.cons == nil || r.cons.proj == nil {
		return
	}
	k := r.cons.proj
	if now.UnixNano() < k.checkAt.Load() || !k.switching.CompareAndSwap(false, true) {
		return
	}
	k.checkAt.Store(now.Add(switchCheckEvery).UnixNano())
	go func() {
		defer k.switching.Store(false)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		st, err := k.store.Get(ctx, k.def.Name, k.def.Version)
		if err != nil {
			r.cfg.log.Warn("projection: reading its status failed", "err", err)
			return
		}
		k.state.Store(&st.Info)
		if st.State != projection.Building || st.Paused || len(st.Partitions) == 0 {
			return
		}
		for _, p := range st.Partitions {
			// Caught up: at most one batch behind on every partition (under
			// a steady stream a version is never exactly at the head).
			if p.Halted != "" || p.Lag > int64(r.cfg.maxRecords) {
				return
			}
		}
		switch err := k.store.SwitchWhenCaughtUp(ctx, k.def.Name, k.def.Version, k.p.Drop); {
		case errors.Is(err, projection.ErrBehind):
			// Within a batch of the head, not yet as far as the active
			// version on every partition: look again soon.
			k.checkAt.Store(time.Now().Add(switchRetry).UnixNano())
			r.cfg.log.Debug("projection: not switching yet", "err", err)
			return
		case err != nil:
			r.cfg.log.Error("projection: switching readers to this version failed; retrying", "err", err)
			return
		}
		r.cfg.log.Info("projection: caught up on every partition; readers switched to this version", "name", k.def.Name, "version", k.def.Version)
	}()
}
