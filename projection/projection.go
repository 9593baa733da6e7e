package projection

import (
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"regexp"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/onceflow/onceflow/internal/pgschema"
	"github.com/onceflow/onceflow/txn"
)

// Component is the name the registry's migrations are recorded under
// (txn.MigrateFS).
const Component = "projections"

//go:embed migrations/*.sql
var migrationFS embed.FS

// Migrations returns the registry's migrations for txn.MigrateFS (or
// actor.WithMigrations): the file system and its directory.
func Migrations() (fs.FS, string) { return migrationFS, "migrations" }

// Migrate applies the registry's migrations (and the core schema first).
func Migrate(ctx context.Context, pool *pgxpool.Pool, opts ...txn.MigrateOption) error {
	fsys, dir := Migrations()
	if _, err := txn.MigrateFS(ctx, pool, Component, fsys, dir, opts...); err != nil {
		return fmt.Errorf("projection: migrate: %w", err)
	}
	return nil
}

// State is where a projection version is in its life.
type State string

const (
	// Building: the version fills its own tables; readers use another one.
	Building State = "building"
	// Active: the version readers use (at most one per name).
	Active State = "active"
	// Retired: replaced by a newer version; its runtime stops.
	Retired State = "retired"
)

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)

// Def names a projection version and what it reads.
type Def struct {
	Name         string // 1-63 characters of [a-z0-9_-], starting with a letter or digit
	Version      int    // from 1; a new version rebuilds into its own tables (blue/green)
	SourceTopic  string // the command topic whose events it reads
	HistoryTopic string // that topic's history topic (default SourceTopic + ".events")
}

// Group is the consumer group (and claim group) of the version.
func (d Def) Group() string { return fmt.Sprintf("onceflow.projection.%s.v%d", d.Name, d.Version) }

// Validate reports what is wrong with d, naming the field.
func (d *Def) Validate() error {
	var errs []error
	if !nameRE.MatchString(d.Name) {
		errs = append(errs, fmt.Errorf("projection name %q: want 1-63 characters of [a-z0-9_-] starting with a letter or digit", d.Name))
	}
	if d.Version < 1 {
		errs = append(errs, fmt.Errorf("projection %q: version %d: versions start at 1", d.Name, d.Version))
	}
	if d.SourceTopic == "" {
		errs = append(errs, fmt.Errorf("projection %q: source topic is empty (the command topic whose events it reads)", d.Name))
	}
	if d.HistoryTopic == "" {
		d.HistoryTopic = d.SourceTopic + ".events"
	}
	return errors.Join(errs...)
}

// Key is the claim key of one partition of the version.
func (d Def) Key(partition int32) txn.PartitionKey {
	return txn.PartitionKey{Group: d.Group(), Topic: d.HistoryTopic, Partition: partition}
}

// Position is a place in a source partition's event sequence: an Outcome's
// partition and last seq.
type Position struct {
	Partition int32
	Seq       int64
}

// Info is a version's registry row.
type Info struct {
	Def
	State       State
	Paused      bool
	PauseReason string
	CreatedAt   time.Time
	ActivatedAt *time.Time
}

// PartitionStatus is a version's progress on one source partition.
type PartitionStatus struct {
	Partition int32
	Position  int64 // last source seq applied (0: none)
	Last      int64 // last seq the source has committed
	Lag       int64 // Last - Position
	Owner     string
	Epoch     int64
	Halted    string // why, when halted
}

// Status is a version with its progress.
type Status struct {
	Info
	Partitions []PartitionStatus
	Lag        int64 // sum over partitions
}

// CaughtUp reports whether the version has applied every event the source
// had committed when its status was read.
func (s Status) CaughtUp() bool { return s.Lag == 0 }

var (
	// ErrNotFound: no such projection or version.
	ErrNotFound = errors.New("projection not found")
	// ErrPaused matches a batch refused because its version is paused.
	ErrPaused = errors.New("projection paused")
	// ErrRetired matches a batch refused because its version is retired.
	ErrRetired = errors.New("projection retired")
	// ErrNotPaused: the operation needs the version paused (or halted) first.
	ErrNotPaused = errors.New("projection not paused")
)

// Store is the registry in Postgres.
type Store struct {
	pool   *pgxpool.Pool
	schema string
}

// Option configures a Store.
type Option func(*Store)

// WithSchema sets the schema (default "onceflow").
func WithSchema(name string) Option { return func(s *Store) { s.schema = name } }

// NewStore returns the registry on pool.
func NewStore(pool *pgxpool.Pool, opts ...Option) *Store {
	s := &Store{pool: pool, schema: pgschema.Default}
	for _, o := range opts {
		o(s)
	}
	return s
}

func (s *Store) sql(q string) string { return pgschema.Rewrite(s.schema, q) }

// Channel is the LISTEN/NOTIFY channel positions are announced on (one per
// schema). A projection batch notifies "group|partition|next_seq" on it in
// its transaction, so the notification is delivered exactly when the
// position is visible.
func Channel(schema string) string {
	if c := schema + "_positions"; len(c) <= 63 {
		return c
	}
	// Postgres truncates identifiers to 63 bytes in LISTEN, and pg_notify
	// refuses longer channel names: a long schema name gets a digest.
	sum := sha256.Sum256([]byte(schema))
	return "onceflow_" + hex.EncodeToString(sum[:12]) + "_positions"
}

// Register inserts the version's row when it is missing and returns it. The
// first version of a name is active at once; a later one starts building.
// Registering a known version with another source fails (a version is
// immutable: bump the version).
func (s *Store) Register(ctx context.Context, d Def) (Info, error) {
	if err := d.Validate(); err != nil {
		return Info{}, err
	}
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		// Serialise registrations of one name (first-version activation).
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock(hashtext($1))", s.schema+".projection."+d.Name); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, s.sql(`
			INSERT INTO onceflow.projections (name, version, source_topic, history_topic, group_id, state, activated_at)
			SELECT $1, $2, $3, $4, $5,
			       CASE WHEN EXISTS (SELECT 1 FROM onceflow.projections WHERE name = $1 AND state = 'active') THEN 'building' ELSE 'active' END,
			       CASE WHEN EXISTS (SELECT 1 FROM onceflow.projections WHERE name = $1 AND state = 'active') THEN NULL ELSE now() END
			ON CONFLICT (name, version) DO NOTHING`), d.Name, d.Version, d.SourceTopic, d.HistoryTopic, d.Group())
		return err
	})
	if err != nil {
		return Info{}, fmt.Errorf("projection: register %s v%d: %w", d.Name, d.Version, err)
	}
	info, err := s.Version(ctx, d.Name, d.Version)
	if err != nil {
		return Info{}, err
	}
	if info.SourceTopic != d.SourceTopic || info.HistoryTopic != d.HistoryTopic {
		return Info{}, fmt.Errorf("projection %s v%d is registered with source %q (history %q), not %q (%q): a version is immutable; give the changed projection a new version",
			d.Name, d.Version, info.SourceTopic, info.HistoryTopic, d.SourceTopic, d.HistoryTopic)
	}
	return info, nil
}

const infoColumns = `name, version, source_topic, history_topic, state, paused, pause_reason, created_at, activated_at`

func scanInfo(row pgx.Row) (Info, error) {
	var i Info
	err := row.Scan(&i.Name, &i.Version, &i.SourceTopic, &i.HistoryTopic, &i.State, &i.Paused, &i.PauseReason, &i.CreatedAt, &i.ActivatedAt)
	return i, err
}

// Version returns one version's row, or ErrNotFound.
func (s *Store) Version(ctx context.Context, name string, version int) (Info, error) {
	i, err := scanInfo(s.pool.QueryRow(ctx, s.sql(`SELECT `+infoColumns+` FROM onceflow.projections WHERE name = $1 AND version = $2`), name, version))
	if errors.Is(err, pgx.ErrNoRows) {
		return Info{}, fmt.Errorf("%w: %s v%d", ErrNotFound, name, version)
	}
	if err != nil {
		return Info{}, fmt.Errorf("projection: read %s v%d: %w", name, version, err)
	}
	return i, nil
}

// Active returns the active version of name, or ErrNotFound. Readers that
// query the version's tables use ActiveTx in their transaction instead.
func (s *Store) Active(ctx context.Context, name string) (Info, error) {
	i, err := scanInfo(s.pool.QueryRow(ctx, s.sql(`SELECT `+infoColumns+` FROM onceflow.projections WHERE name = $1 AND state = 'active'`), name))
	return activeResult(name, i, err)
}

// activeResult maps the read of an active version to Active's errors.
func activeResult(name string, i Info, err error) (Info, error) {
	if errors.Is(err, pgx.ErrNoRows) {
		return Info{}, fmt.Errorf("%w: no active version of %q", ErrNotFound, name)
	}
	if err != nil {
		return Info{}, fmt.Errorf("projection: read active %s: %w", name, err)
	}
	return i, nil
}

// ActiveTx returns the active version of name inside the reader's
// transaction tx, locking its registry row FOR SHARE: a Switch (and the
// drop of the old version's tables) waits until tx ends, so the tables of
// the version read stay there, whole, for the whole transaction. Readers
// that pick tables by version call it first in the transaction that
// queries them.
func ActiveTx(ctx context.Context, tx pgx.Tx, schema, name string) (Info, error) {
	q := pgschema.Rewrite(schema, `SELECT `+infoColumns+` FROM onceflow.projections WHERE name = $1 AND state = 'active' FOR SHARE`)
	i, err := scanInfo(tx.QueryRow(ctx, q, name))
	if errors.Is(err, pgx.ErrNoRows) {
		// A Switch committed while we waited for the old row's lock: the
		// re-checked old row is retired and the new active row was not in
		// this statement's snapshot. The next statement sees it (READ
		// COMMITTED).
		i, err = scanInfo(tx.QueryRow(ctx, q, name))
	}
	return activeResult(name, i, err)
}

// List returns every version of every projection ("" for all) with its
// progress per source partition, ordered by name and version.
func (s *Store) List(ctx context.Context, name string) ([]Status, error) {
	rows, _ := s.pool.Query(ctx, s.sql(`SELECT `+infoColumns+` FROM onceflow.projections WHERE $1 = '' OR name = $1 ORDER BY name, version`), name)
	infos, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Info, error) { return scanInfo(r) })
	if err != nil {
		return nil, fmt.Errorf("projection: list: %w", err)
	}
	out := make([]Status, 0, len(infos))
	for _, i := range infos {
		st, err := s.progress(ctx, i)
		if err != nil {
			return nil, err
		}
		out = append(out, st)
	}
	return out, nil
}

// Get returns one version with its progress.
func (s *Store) Get(ctx context.Context, name string, version int) (Status, error) {
	i, err := s.Version(ctx, name, version)
	if err != nil {
		return Status{}, err
	}
	return s.progress(ctx, i)
}

// progress reads the version's claim rows against the source's: the
// source's claims say how far each partition has committed (next_seq - 1),
// without scanning the events table.
func (s *Store) progress(ctx context.Context, i Info) (Status, error) {
	rows, _ := s.pool.Query(ctx, s.sql(`
		WITH src AS (SELECT partition, max(next_seq) - 1 AS last FROM onceflow.partition_claims WHERE topic = $1 GROUP BY partition),
		     mine AS (SELECT partition, next_seq - 1 AS pos, owner, epoch, coalesce(halt_reason, '') AS halted, halted_at
		              FROM onceflow.partition_claims WHERE group_id = $2 AND topic = $3)
		SELECT coalesce(src.partition, mine.partition), coalesce(mine.pos, 0), coalesce(src.last, 0),
		       coalesce(mine.owner, ''), coalesce(mine.epoch, 0), CASE WHEN mine.halted_at IS NULL THEN '' ELSE mine.halted END
		FROM src FULL JOIN mine ON mine.partition = src.partition
		ORDER BY 1`), i.SourceTopic, i.Group(), i.HistoryTopic)
	st := Status{Info: i}
	var p PartitionStatus
	_, err := pgx.ForEachRow(rows, []any{&p.Partition, &p.Position, &p.Last, &p.Owner, &p.Epoch, &p.Halted}, func() error {
		p.Lag = max(p.Last-p.Position, 0)
		st.Lag += p.Lag
		st.Partitions = append(st.Partitions, p)
		return nil
	})
	if err != nil {
		return Status{}, fmt.Errorf("projection: progress of %s v%d: %w", i.Name, i.Version, err)
	}
	return st, nil
}

// Pause stops a version at its next batch, persistently: its partitions
// halt with the reason, also after a restart or rebalance, until Resume.
func (s *Store) Pause(ctx context.Context, name string, version int, reason string) error {
	if reason == "" {
		reason = "paused by an operator"
	}
	tag, err := s.pool.Exec(ctx, s.sql(`UPDATE onceflow.projections SET paused = true, pause_reason = $3 WHERE name = $1 AND version = $2`), name, version, reason)
	if err != nil {
		return fmt.Errorf("projection: pause %s v%d: %w", name, version, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("%w: %s v%d", ErrNotFound, name, version)
	}
	return nil
}

// Resume clears a pause and every halt of the version's partitions (a
// poison event under the Halt policy, say): their owners resume them within
// a few seconds.
func (s *Store) Resume(ctx context.Context, name string, version int) error {
	i, err := s.Version(ctx, name, version)
	if err != nil {
		return err
	}
	if _, err := s.pool.Exec(ctx, s.sql(`UPDATE onceflow.projections SET paused = false, pause_reason = '' WHERE name = $1 AND version = $2`), name, version); err != nil {
		return fmt.Errorf("projection: resume %s v%d: %w", name, version, err)
	}
	if _, err := s.pool.Exec(ctx, s.sql(`UPDATE onceflow.partition_claims SET halted_at = NULL, halt_reason = '' WHERE group_id = $1 AND halted_at IS NOT NULL`), i.Group()); err != nil {
		return fmt.Errorf("projection: resume %s v%d: clear halts: %w", name, version, err)
	}
	return nil
}

// Reset moves a version's position on one source partition to seq (the
// next event it applies is seq+1; 0 replays from the first event) and its
// Kafka offset to the topic's start (records below the position are
// skipped by seq). The version must be paused, or the partition halted,
// first (ErrNotPaused): the owner must not be mid-batch. Reset does not undo
// what the read model already holds: replaying needs a read model that
// tolerates it, or a rebuild (a new version). Skip is Reset past one event.
func (s *Store) Reset(ctx context.Context, name string, version int, partition int32, seq int64) error {
	if seq < 0 {
		return fmt.Errorf("projection: reset %s v%d partition %d: seq %d is negative", name, version, partition, seq)
	}
	i, err := s.Version(ctx, name, version)
	if err != nil {
		return err
	}
	key := i.Key(partition)
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var halted bool
		err := tx.QueryRow(ctx, s.sql(`SELECT halted_at IS NOT NULL FROM onceflow.partition_claims WHERE group_id = $1 AND topic = $2 AND partition = $3 FOR UPDATE`),
			key.Group, key.Topic, key.Partition).Scan(&halted)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("%w: %s v%d has no claim on partition %d yet (start its runtime first)", ErrNotFound, name, version, partition)
		}
		if err != nil {
			return fmt.Errorf("projection: reset %s v%d partition %d: %w", name, version, partition, err)
		}
		if !i.Paused && !halted {
			return fmt.Errorf("%w: %s v%d partition %d is running: pause it first (onceflow projections pause)", ErrNotPaused, name, version, partition)
		}
		// No batch commits meanwhile: a paused version's batches roll back
		// (CheckInTx), a halted partition consumes nothing. An owner whose
		// in-memory claim is now stale is fenced at its next commit and
		// reclaims, reading this position.
		_, err = tx.Exec(ctx, s.sql(`UPDATE onceflow.partition_claims SET next_seq = $4, next_offset = 0
			WHERE group_id = $1 AND topic = $2 AND partition = $3`), key.Group, key.Topic, key.Partition, seq+1)
		if err != nil {
			return fmt.Errorf("projection: reset %s v%d partition %d: %w", name, version, partition, err)
		}
		return nil
	})
}

// Skip moves a halted or paused version past the event at seq on one
// partition (a poison event), without applying it. seq must be the next
// event the version would apply.
func (s *Store) Skip(ctx context.Context, name string, version int, partition int32, seq int64) error {
	st, err := s.Get(ctx, name, version)
	if err != nil {
		return err
	}
	for _, p := range st.Partitions {
		if p.Partition == partition {
			if p.Position+1 != seq {
				return fmt.Errorf("projection: skip %s v%d partition %d seq %d: the next event it applies is seq %d", name, version, partition, seq, p.Position+1)
			}
			return s.Reset(ctx, name, version, partition, seq)
		}
	}
	return fmt.Errorf("%w: %s v%d has no partition %d", ErrNotFound, name, version, partition)
}

// DropFunc drops the tables of a retired version, inside the switch's
// transaction.
type DropFunc func(ctx context.Context, tx pgx.Tx, version int) error

// Switch makes version the active one of name and retires the active one,
// in one transaction, in which drop (when not nil) drops the retired
// version's tables. It waits for an in-flight batch of the retired version
// (batches hold their registry row FOR SHARE and check it first), so after
// Switch returns no batch of the retired version writes anything.
func (s *Store) Switch(ctx context.Context, name string, version int, drop DropFunc) error {
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error { return s.switchTx(ctx, tx, name, version, drop) })
	if err != nil {
		return fmt.Errorf("projection: switch %s to v%d: %w", name, version, err)
	}
	return nil
}

func (s *Store) switchTx(ctx context.Context, tx pgx.Tx, name string, version int, drop DropFunc) error {
	rows, _ := tx.Query(ctx, s.sql(`UPDATE onceflow.projections SET state = 'retired' WHERE name = $1 AND version <> $2 AND state = 'active' RETURNING version`), name, version)
	retired, err := pgx.CollectRows(rows, pgx.RowTo[int])
	if err != nil {
		return err
	}
	tag, err := tx.Exec(ctx, s.sql(`UPDATE onceflow.projections SET state = 'active', activated_at = now() WHERE name = $1 AND version = $2`), name, version)
	if err != nil {
		return err
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("%w: %s v%d", ErrNotFound, name, version)
	}
	for _, v := range retired {
		if drop != nil {
			if err := drop(ctx, tx, v); err != nil {
				return fmt.Errorf("drop v%d: %w", v, err)
			}
		}
	}
	return nil
}

// ErrBehind: a version is not caught up with the active one yet.
var ErrBehind = errors.New("projection version behind the active one")

// SwitchWhenCaughtUp is Switch for a rebuild: it makes version active only
// if, on every partition of the source that has events, version has
// applied at least as far as the active version, checked inside the
// switch's transaction while the active version's row is locked (its
// batches wait), so readers never see the view go back. It returns an
// error wrapping ErrBehind, changing nothing, when version is behind or has
// not claimed a partition yet.
func (s *Store) SwitchWhenCaughtUp(ctx context.Context, name string, version int, drop DropFunc) error {
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var activeGroup, history, source, mine string
		err := tx.QueryRow(ctx, s.sql(`SELECT group_id, history_topic, source_topic FROM onceflow.projections WHERE name = $1 AND version = $2`), name, version).Scan(&mine, &history, &source)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("%w: %s v%d", ErrNotFound, name, version)
		}
		if err != nil {
			return err
		}
		err = tx.QueryRow(ctx, s.sql(`SELECT group_id FROM onceflow.projections WHERE name = $1 AND state = 'active' AND version <> $2 FOR UPDATE`), name, version).Scan(&activeGroup)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		rows, _ := tx.Query(ctx, s.sql(`
			SELECT src.partition, coalesce(m.next_seq, 0), coalesce(a.next_seq, 1), m.halted_at IS NOT NULL
			FROM (SELECT partition FROM onceflow.partition_claims WHERE topic = $1 GROUP BY partition HAVING max(next_seq) > 1) src
			LEFT JOIN onceflow.partition_claims m ON m.group_id = $2 AND m.topic = $3 AND m.partition = src.partition
			LEFT JOIN onceflow.partition_claims a ON a.group_id = $4 AND a.topic = $3 AND a.partition = src.partition
			ORDER BY 1`), source, mine, history, activeGroup)
		var behind []string
		var p int32
		var next, activeNext int64
		var halted bool
		_, err = pgx.ForEachRow(rows, []any{&p, &next, &activeNext, &halted}, func() error {
			switch {
			case next == 0:
				behind = append(behind, fmt.Sprintf("partition %d not claimed yet", p))
			case halted:
				behind = append(behind, fmt.Sprintf("partition %d halted", p))
			case next < activeNext:
				behind = append(behind, fmt.Sprintf("partition %d at seq %d, the active version at %d", p, next-1, activeNext-1))
			}
			return nil
		})
		if err != nil {
			return err
		}
		if len(behind) > 0 {
			return fmt.Errorf("%w: %s v%d: %s", ErrBehind, name, version, strings.Join(behind, "; "))
		}
		return s.switchTx(ctx, tx, name, version, drop)
	})
	if err != nil && !errors.Is(err, ErrBehind) {
		return fmt.Errorf("projection: switch %s to v%d: %w", name, version, err)
	}
	return err
}

// CheckInTx is what every projection batch runs in its fenced
// transaction: it locks the version's row FOR SHARE (a Switch or Pause
// waits for the batch), refuses the batch when the version is paused or
// retired (ErrPaused, ErrRetired; the transaction then rolls back), and
// announces the new position on Channel, delivered at commit.
func CheckInTx(ctx context.Context, tx pgx.Tx, schema string, d Def, partition int32, nextSeq int64) error {
	var state State
	var paused bool
	var reason string
	err := tx.QueryRow(ctx, pgschema.Rewrite(schema, `SELECT state, paused, pause_reason, pg_notify($3, $4)::text
		FROM onceflow.projections WHERE name = $1 AND version = $2 FOR SHARE`),
		d.Name, d.Version, Channel(schema), fmt.Sprintf("%s|%d|%d", d.Group(), partition, nextSeq)).Scan(&state, &paused, &reason, new(string))
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("%w: %s v%d is not registered (its runtime registers it at start)", ErrNotFound, d.Name, d.Version)
	}
	if err != nil {
		return fmt.Errorf("projection %s v%d: check registry: %w", d.Name, d.Version, err)
	}
	switch {
	case state == Retired:
		return fmt.Errorf("%w: %s v%d was replaced by a newer version", ErrRetired, d.Name, d.Version)
	case paused:
		return fmt.Errorf("%w: %s v%d: %s (onceflow projections resume)", ErrPaused, d.Name, d.Version, reason)
	}
	return nil
}
