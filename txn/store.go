package txn

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/onceflow/onceflow/eventsource"
	"github.com/onceflow/onceflow/internal/baseline"
	"github.com/onceflow/onceflow/internal/pgschema"
)

// Store runs the protocol's statements on a pgx pool. It is safe for
// concurrent use.
type Store struct {
	pool        *pgxpool.Pool
	lockTimeout time.Duration
	log         *slog.Logger
	schema      string
}

// Option configures a Store.
type Option func(*Store)

// WithLockTimeout bounds how long Claim waits for the previous owner's
// in-flight transaction to release the claim row (SET LOCAL lock_timeout).
// Default 5s. Claim runs inside the Kafka rebalance callback, so this bounds
// how long a rebalance can be held up. Values below 1ms are raised to 1ms:
// Claim never waits without bound.
func WithLockTimeout(d time.Duration) Option { return func(s *Store) { s.lockTimeout = d } }

// WithSchema sets the Postgres schema of onceflow's tables (default
// "onceflow"): 1-63 characters of [a-z0-9_], not starting with a digit.
// Migrate the same schema with Migrate(ctx, pool, InSchema(name)). The name
// is always quoted as an identifier in the SQL.
func WithSchema(name string) Option { return func(s *Store) { s.schema = name } }

// WithLogger sets the logger (default slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(s *Store) { s.log = l } }

// NewStore returns a Store on pool. Call Migrate first.
func NewStore(pool *pgxpool.Pool, opts ...Option) *Store {
	s := &Store{pool: pool, lockTimeout: 5 * time.Second, log: slog.Default(), schema: pgschema.Default}
	for _, o := range opts {
		o(s)
	}
	return s
}

// sql points q at the store's schema.
func (s *Store) sql(q string) string { return pgschema.Rewrite(s.schema, q) }

// Schema returns the Postgres schema of the store's tables.
func (s *Store) Schema() string { return s.schema }

// Pool returns the underlying pool.
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// querier is what the read helpers need: a pool or a transaction.
type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

const claimColumns = `group_id, topic, partition, epoch, owner, next_offset, next_seq, claimed_at, halted_at, halt_reason,
	published_seq, next_outbox_seq, published_outbox_seq`

func scanClaim(row pgx.Row, c *Claim) error {
	return row.Scan(&c.Group, &c.Topic, &c.Partition, &c.Epoch, &c.Owner, &c.NextOffset, &c.NextSeq, &c.ClaimedAt, &c.HaltedAt, &c.HaltReason,
		&c.PublishedSeq, &c.NextOutboxSeq, &c.PublishedOutboxSeq)
}

// Claim takes ownership of a partition for owner: it inserts the claim row if
// missing, increments its epoch and returns the new claim. The row lock waits
// (at most the lock timeout) for a previous owner's in-flight batch
// transaction, so the returned NextOffset includes everything that committed.
//
// From the moment Claim returns, every Commit carrying an older epoch fails
// with ErrFenced. A lock timeout returns an error wrapping
// ErrClaimLockTimeout; nothing changed and IsRetryable reports true. ctx
// bounds the call.
func (s *Store) Claim(ctx context.Context, key PartitionKey, owner string) (Claim, error) {
	if err := pgschema.Check(s.schema); err != nil {
		return Claim{}, fmt.Errorf("txn: claim: %w", err)
	}
	if err := checkKey(key); err != nil {
		return Claim{}, fmt.Errorf("txn: claim: %w", err)
	}
	c := Claim{PartitionKey: key}
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		// lock_timeout bounds only the wait for the row lock; SET LOCAL
		// (is_local = true) scopes it to this transaction so the pooled
		// connection keeps its default. 0 would mean "wait forever".
		timeout := max(s.lockTimeout.Milliseconds(), 1)
		if _, err := tx.Exec(ctx, "SELECT set_config('lock_timeout', $1, true)", strconv.FormatInt(timeout, 10)+"ms"); err != nil {
			return err
		}
		// ON CONFLICT DO UPDATE waits for the row lock of an in-flight
		// Commit and then updates the row version that Commit wrote, so
		// RETURNING includes its next_offset.
		//
		// A new claim row (first claim, or a renamed group on a topic
		// that already has events) continues the partition's seq after
		// the events already stored, so (topic, partition, seq) stays
		// gap-free and unique.
		return scanClaim(tx.QueryRow(ctx, s.sql(`
			INSERT INTO onceflow.partition_claims AS c (group_id, topic, partition, epoch, owner, claimed_at, next_seq, next_outbox_seq)
			VALUES ($1, $2, $3, 1, $4, now(),
			        coalesce((SELECT max(seq) + 1 FROM onceflow.events WHERE topic = $2 AND partition = $3), 1),
			        coalesce((SELECT max(seq) + 1 FROM onceflow.outbox WHERE group_id = $1 AND topic = $2 AND partition = $3), 1))
			ON CONFLICT (group_id, topic, partition) DO UPDATE
			SET epoch = c.epoch + 1, owner = EXCLUDED.owner, claimed_at = EXCLUDED.claimed_at,
			    halted_at = NULL, halt_reason = ''
			RETURNING `)+claimColumns, key.Group, key.Topic, key.Partition, owner), &c)
	})
	if err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "55P03" {
			return Claim{}, fmt.Errorf("%w: %s[%d] group %q: the claim row stayed locked longer than %s, most likely by the previous owner's batch transaction (stuck or slow; see pg_stat_activity): %w",
				ErrClaimLockTimeout, key.Topic, key.Partition, key.Group, s.lockTimeout, err)
		}
		return Claim{}, fmt.Errorf("txn: claim %s[%d] group %q: %w", key.Topic, key.Partition, key.Group, err)
	}
	s.log.LogAttrs(ctx, slog.LevelDebug, "txn: claimed partition",
		slog.String("group", key.Group), slog.String("topic", key.Topic), slog.Int("partition", int(key.Partition)),
		slog.Int64("epoch", c.Epoch), slog.Int64("next_offset", c.NextOffset), slog.String("owner", owner))
	return c, nil
}

// ReadClaim returns a partition's claim row, or ErrNotFound.
func (s *Store) ReadClaim(ctx context.Context, key PartitionKey) (Claim, error) {
	return readClaim(ctx, s.pool, s.schema, key)
}

func readClaim(ctx context.Context, q querier, schema string, key PartitionKey) (Claim, error) {
	var c Claim
	err := scanClaim(q.QueryRow(ctx, pgschema.Rewrite(schema, `SELECT `+claimColumns+` FROM onceflow.partition_claims
		WHERE group_id = $1 AND topic = $2 AND partition = $3`), key.Group, key.Topic, key.Partition), &c)
	if errors.Is(err, pgx.ErrNoRows) {
		return Claim{}, fmt.Errorf("%w: claim %s[%d] group %q", ErrNotFound, key.Topic, key.Partition, key.Group)
	}
	if err != nil {
		return Claim{}, fmt.Errorf("txn: read claim %s[%d] group %q: %w", key.Topic, key.Partition, key.Group, err)
	}
	return c, nil
}

// Claims lists the claim rows of a group ("" for all), ordered by topic and partition.
func (s *Store) Claims(ctx context.Context, group string) ([]Claim, error) {
	rows, _ := s.pool.Query(ctx, s.sql(`SELECT `+claimColumns+` FROM onceflow.partition_claims
		WHERE $1 = '' OR group_id = $1
		ORDER BY topic, partition, group_id`), group)
	claims, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Claim, error) {
		var c Claim
		err := scanClaim(r, &c)
		return c, err
	})
	if err != nil {
		return nil, fmt.Errorf("txn: list claims: %w", err)
	}
	return claims, nil
}

// Commit writes a batch in one transaction and moves the claim's next_offset
// to b.NextOffset and next_seq past the batch's events, fenced on the claim's
// epoch, next_offset and next_seq. On a fence it rolls back and returns a
// *FencedError (errors.Is(err, ErrFenced)). Any other error also means nothing
// was written, unless the error is ambiguous (the connection broke during
// COMMIT): a retry of the same batch then fails as fenced with SelfFenced()
// true, which is the signal to reload from Postgres.
//
// A malformed batch fails with ErrInvalidBatch before anything is sent. A
// result whose command id already has a stored result fails with
// ErrDuplicateCommand; an event whose aggregate version is taken fails with
// eventsource.ErrConcurrencyConflict. IsRetryable classifies the rest.
//
// Commit is safe for concurrent use, but the protocol has one writer per
// partition: batches of one partition must be committed one after another.
// ctx bounds the whole transaction.
func (s *Store) Commit(ctx context.Context, b *Batch) (Committed, error) {
	if err := validateBatch(b); err != nil {
		return Committed{}, err
	}
	if err := pgschema.Check(s.schema); err != nil {
		return Committed{}, fmt.Errorf("txn: commit: %w", err)
	}
	key := b.Claim.PartitionKey
	next := Committed{NextOffset: b.NextOffset, NextSeq: b.NextSeqAfter(), NextOutboxSeq: b.Claim.NextOutboxSeq + int64(len(b.Outbox))}

	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return Committed{}, fmt.Errorf("txn: commit %s[%d]: begin: %w", key.Topic, key.Partition, err)
	}
	// A no-op after a successful Commit. WithoutCancel: a cancelled ctx must
	// still release the connection cleanly (pgx closes it if it cannot).
	// (A closure: the unsafe test build below may replace tx.)
	defer func() { tx.Rollback(context.WithoutCancel(ctx)) }() //nolint:errcheck

	// The fenced compare-and-set runs FIRST, not last:
	//  - it takes the claim row lock at the start, so the rest of the
	//    transaction runs as the partition's proven single writer; a
	//    concurrent Claim by a new owner waits for our commit (and then
	//    returns our next_offset), and a Claim that got there first makes
	//    us fail here, after one statement, before we ship any COPY data;
	//  - a zombie writer never reaches the event inserts, so it cannot
	//    block on, or collide with, the new owner's uncommitted rows in the
	//    (partition, seq) and (aggregate, version) indexes, which would
	//    surface as a misleading concurrency conflict instead of a fence.
	// The cost is holding the row lock for the whole batch transaction,
	// which only delays a Claim of this same partition: exactly what the
	// protocol wants. The updated row is invisible to others until commit
	// and vanishes on rollback, so moving next_offset early is harmless.
	baselineRun := baseline.AtLeastOnce()
	if baselineRun && (len(b.DeadLetters) > 0 || len(b.Outbox) > 0 || b.InTx != nil || b.Emit != nil || b.NextSeq != 0 || b.Timer) {
		// The benchmark's at-least-once baseline (internal/baseline): no
		// fence and no idempotency records, for plain command batches only.
		return Committed{}, fmt.Errorf("%w: the at-least-once baseline commits events and snapshots only", ErrInvalidBatch)
	}
	if !baselineRun {
		tag, err := tx.Exec(ctx, s.sql(`
			UPDATE onceflow.partition_claims
			SET next_offset = $1, next_seq = $2, next_outbox_seq = $9, committed_at = now()
			WHERE group_id = $3 AND topic = $4 AND partition = $5
			  AND epoch = $6 AND next_offset = $7 AND next_seq = $8 AND next_outbox_seq = $10`),
			next.NextOffset, next.NextSeq, key.Group, key.Topic, key.Partition,
			b.Claim.Epoch, b.Claim.NextOffset, b.Claim.NextSeq, next.NextOutboxSeq, b.Claim.NextOutboxSeq)
		if err != nil {
			return Committed{}, fmt.Errorf("txn: commit %s[%d]: fenced update: %w", key.Topic, key.Partition, err)
		}
		if tag.RowsAffected() == 0 {
			// READ COMMITTED: this statement sees the latest committed claim.
			cur, err := readClaim(ctx, tx, s.schema, key)
			if err != nil && !errors.Is(err, ErrNotFound) {
				return Committed{}, fmt.Errorf("txn: commit %s[%d]: fenced, and reading the claim failed: %w", key.Topic, key.Partition, err)
			}
			cur.PartitionKey = key
			fe := &FencedError{Key: key, Epoch: b.Claim.Epoch, ExpectedOffset: b.Claim.NextOffset, ExpectedSeq: b.Claim.NextSeq, Current: cur}
			s.log.LogAttrs(ctx, slog.LevelInfo, "txn: commit fenced", slog.String("error", fe.Error()), slog.Bool("self_fenced", fe.SelfFenced()))
			return Committed{}, fe
		}
		if unsafeOffsetFirst {
			// Only in builds with the onceflow_unsafe_offset_first tag, which
			// break the protocol on purpose so the chaos checker can show it
			// catches the break (see unsafe_on.go). A constant false otherwise:
			// the compiler drops this branch.
			if tx, err = unsafeCommitOffsetFirst(ctx, s.pool, tx); err != nil {
				return Committed{}, fmt.Errorf("txn: commit %s[%d]: %w", key.Topic, key.Partition, err)
			}
		}
	}

	if err := eventsource.AppendTxIn(ctx, tx, s.schema, b.Events); err != nil {
		return Committed{}, fmt.Errorf("txn: commit %s[%d]: %w", key.Topic, key.Partition, err)
	}
	if err := eventsource.PutSnapshotsTxIn(ctx, tx, s.schema, b.Snapshots); err != nil {
		return Committed{}, fmt.Errorf("txn: commit %s[%d]: %w", key.Topic, key.Partition, err)
	}
	if err := copyResults(ctx, tx, s.schema, key, b.Results); err != nil {
		return Committed{}, fmt.Errorf("txn: commit %s[%d]: %w", key.Topic, key.Partition, err)
	}
	if err := copyDeadLetters(ctx, tx, s.schema, key, b.DeadLetters); err != nil {
		return Committed{}, fmt.Errorf("txn: commit %s[%d]: %w", key.Topic, key.Partition, err)
	}
	if err := copyOutbox(ctx, tx, s.schema, key, b.Outbox); err != nil {
		return Committed{}, fmt.Errorf("txn: commit %s[%d]: %w", key.Topic, key.Partition, err)
	}
	if b.InTx != nil {
		if err := b.InTx(ctx, tx); err != nil {
			return Committed{}, fmt.Errorf("txn: commit %s[%d]: InTx: %w", key.Topic, key.Partition, err)
		}
	}
	if b.Emit != nil {
		recs, err := b.Emit(ctx, tx)
		if err != nil {
			return Committed{}, fmt.Errorf("txn: commit %s[%d]: Emit: %w", key.Topic, key.Partition, err)
		}
		if len(recs) > 0 {
			for i := range recs {
				recs[i].Seq = next.NextOutboxSeq + int64(i)
			}
			if err := copyOutbox(ctx, tx, s.schema, key, recs); err != nil {
				return Committed{}, fmt.Errorf("txn: commit %s[%d]: %w", key.Topic, key.Partition, err)
			}
			next.NextOutboxSeq += int64(len(recs))
			// The row is ours since the fenced update above.
			if _, err := tx.Exec(ctx, s.sql(`UPDATE onceflow.partition_claims SET next_outbox_seq = $1
				WHERE group_id = $2 AND topic = $3 AND partition = $4`), next.NextOutboxSeq, key.Group, key.Topic, key.Partition); err != nil {
				return Committed{}, fmt.Errorf("txn: commit %s[%d]: move next_outbox_seq: %w", key.Topic, key.Partition, err)
			}
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return Committed{}, fmt.Errorf("txn: commit %s[%d]: commit: %w", key.Topic, key.Partition, err)
	}
	return next, nil
}

const resultColumns = `command_id, group_id, topic, partition, "offset", aggregate_type, aggregate_id, outcome,
	first_version, last_version, first_seq, last_seq, reason, request_hash, recorded_at`

func copyResults(ctx context.Context, tx pgx.Tx, schema string, key PartitionKey, rs []CommandResult) error {
	if len(rs) == 0 {
		return nil
	}
	src := pgx.CopyFromSlice(len(rs), func(i int) ([]any, error) {
		r := &rs[i]
		return []any{r.CommandID, key.Group, key.Topic, key.Partition, r.Offset, r.AggregateType, r.AggregateID,
			string(r.Outcome), r.FirstVersion, r.LastVersion, r.FirstSeq, r.LastSeq, cleanText(r.Reason), r.RequestHash}, nil
	})
	_, err := tx.CopyFrom(ctx, pgx.Identifier{schema, "command_results"},
		[]string{"command_id", "group_id", "topic", "partition", "offset", "aggregate_type", "aggregate_id",
			"outcome", "first_version", "last_version", "first_seq", "last_seq", "reason", "request_hash"}, src)
	if err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "23505" && pgErr.ConstraintName == "command_results_pkey" {
			return fmt.Errorf("%w (%s): %w", ErrDuplicateCommand, pgErr.Detail, err)
		}
		return fmt.Errorf("store command results: %w", err)
	}
	return nil
}

func copyDeadLetters(ctx context.Context, tx pgx.Tx, schema string, key PartitionKey, dls []DeadLetter) error {
	if len(dls) == 0 {
		return nil
	}
	n := len(dls)
	offsets, ids, keys, values, headers, errs := make([]int64, n), make([]string, n), make([][]byte, n), make([][]byte, n), make([]map[string]string, n), make([]string, n)
	for i := range dls {
		d := &dls[i]
		// jsonb cannot hold invalid UTF-8 or \u0000, and a dead letter must
		// never fail to store: such bytes in headers are replaced (the raw
		// key and value are bytea and kept exactly).
		h := make(map[string]string, len(d.Headers))
		for k, v := range d.Headers {
			h[cleanText(k)] = cleanText(v)
		}
		offsets[i], ids[i], keys[i], values[i], headers[i], errs[i] = d.Offset, cleanText(d.CommandID), d.Key, d.Value, h, cleanText(d.Error)
	}
	// ON CONFLICT DO NOTHING: a consumer replaying its topic after an
	// operator's reset meets the records it dead-lettered before; the dead
	// letter of that offset is already recorded (the same record). Under
	// the fence a command partition never consumes an offset twice.
	_, err := tx.Exec(ctx, pgschema.Rewrite(schema, `INSERT INTO onceflow.dead_letters (group_id, topic, partition, "offset", command_id, key, value, headers, error)
		SELECT $1, $2, $3, u.o, u.c, u.k, u.v, u.h, u.e
		FROM unnest($4::bigint[], $5::text[], $6::bytea[], $7::bytea[], $8::jsonb[], $9::text[]) AS u(o, c, k, v, h, e)
		ON CONFLICT (group_id, topic, partition, "offset") DO NOTHING`),
		key.Group, key.Topic, key.Partition, offsets, ids, keys, values, headers, errs)
	if err != nil {
		return fmt.Errorf("store dead letters: %w", err)
	}
	return nil
}

func copyOutbox(ctx context.Context, tx pgx.Tx, schema string, key PartitionKey, recs []OutboxRecord) error {
	if len(recs) == 0 {
		return nil
	}
	src := pgx.CopyFromSlice(len(recs), func(i int) ([]any, error) {
		r := &recs[i]
		h := make(map[string]string, len(r.Headers))
		for k, v := range r.Headers {
			h[cleanText(k)] = cleanText(v)
		}
		return []any{key.Group, key.Topic, key.Partition, r.Seq, r.Topic, r.Key, r.Value, h}, nil
	})
	_, err := tx.CopyFrom(ctx, pgx.Identifier{schema, "outbox"},
		[]string{"group_id", "topic", "partition", "seq", "dest_topic", "key", "value", "headers"}, src)
	if err != nil {
		return fmt.Errorf("store outbox records: %w", err)
	}
	return nil
}

// ReadOutbox returns up to limit outbox records written under a claim key
// (group, topic, partition) with seq >= fromSeq, in seq order. limit <= 0
// means 1000.
func (s *Store) ReadOutbox(ctx context.Context, key PartitionKey, fromSeq int64, limit int) ([]OutboxRecord, error) {
	if limit <= 0 {
		limit = 1000
	}
	rows, _ := s.pool.Query(ctx, s.sql(`SELECT topic, partition, seq, dest_topic, key, value, headers, recorded_at FROM onceflow.outbox
		WHERE group_id = $1 AND topic = $2 AND partition = $3 AND seq >= $4 ORDER BY seq LIMIT $5`), key.Group, key.Topic, key.Partition, fromSeq, limit)
	recs, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (OutboxRecord, error) {
		var r OutboxRecord
		err := row.Scan(&r.SourceTopic, &r.SourcePartition, &r.Seq, &r.Topic, &r.Key, &r.Value, &r.Headers, &r.RecordedAt)
		return r, err
	})
	if err != nil {
		return nil, fmt.Errorf("txn: read outbox %s[%d] group %q: %w", key.Topic, key.Partition, key.Group, err)
	}
	return recs, nil
}

// cleanText makes s storable in a text or jsonb column: Postgres rejects
// NUL and invalid UTF-8. Used only for descriptive fields (reasons, errors,
// headers), never for identifiers.
func cleanText(s string) string {
	if utf8.ValidString(s) && !strings.ContainsRune(s, 0) {
		return s
	}
	return strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "\uFFFD")
}

// LookupResults returns the stored results of those ids that have one for
// aggregateType: command ids are scoped to the aggregate type, so the same id
// sent to two aggregate types is two commands. One index-backed query
// whatever the number of ids.
func (s *Store) LookupResults(ctx context.Context, aggregateType string, ids []string) (map[string]CommandResult, error) {
	out := make(map[string]CommandResult, len(ids))
	if len(ids) == 0 {
		return out, nil
	}
	// QueryExecModeCacheDescribe: an unnamed statement, planned at each
	// execution with the actual ids and the table's current size. A named
	// prepared statement would settle on a generic plan built while the
	// table was small (a sequential scan) and keep it per connection.
	rows, _ := s.pool.Query(ctx, s.sql(`SELECT `+resultColumns+` FROM onceflow.command_results
		WHERE command_id = ANY($1) AND aggregate_type = $2`), pgx.QueryExecModeCacheDescribe, ids, aggregateType)
	var r CommandResult
	_, err := pgx.ForEachRow(rows, resultDest(&r), func() error {
		out[r.CommandID] = r
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("txn: lookup results of %q: %w", aggregateType, err)
	}
	return out, nil
}

func resultDest(r *CommandResult) []any {
	return []any{&r.CommandID, &r.Group, &r.Topic, &r.Partition, &r.Offset, &r.AggregateType, &r.AggregateID, &r.Outcome,
		&r.FirstVersion, &r.LastVersion, &r.FirstSeq, &r.LastSeq, &r.Reason, &r.RequestHash, &r.RecordedAt}
}

// Result returns the stored result of command commandID for aggregateType,
// or ErrNotFound.
func (s *Store) Result(ctx context.Context, aggregateType, commandID string) (CommandResult, error) {
	return resultIn(ctx, s.pool, s.schema, aggregateType, commandID)
}

// ResultTx is Result read inside tx (a handler's transaction), in schema.
func ResultTx(ctx context.Context, tx pgx.Tx, schema, aggregateType, commandID string) (CommandResult, error) {
	return resultIn(ctx, tx, schema, aggregateType, commandID)
}

func resultIn(ctx context.Context, q querier, schema, aggregateType, commandID string) (CommandResult, error) {
	var r CommandResult
	err := q.QueryRow(ctx, pgschema.Rewrite(schema, `SELECT `+resultColumns+` FROM onceflow.command_results
		WHERE command_id = $1 AND aggregate_type = $2`), commandID, aggregateType).Scan(resultDest(&r)...)
	if errors.Is(err, pgx.ErrNoRows) {
		return CommandResult{}, fmt.Errorf("%w: command %q of aggregate type %q", ErrNotFound, commandID, aggregateType)
	}
	if err != nil {
		return CommandResult{}, fmt.Errorf("txn: result of command %q of aggregate type %q: %w", commandID, aggregateType, err)
	}
	return r, nil
}

// ResultsByCommandID returns every stored result of command id commandID,
// whatever its aggregate type, oldest first (none: an empty slice). For
// tools and clients that know a command's topic but not its aggregate type.
func (s *Store) ResultsByCommandID(ctx context.Context, commandID string) ([]CommandResult, error) {
	rows, _ := s.pool.Query(ctx, s.sql(`SELECT `+resultColumns+` FROM onceflow.command_results
		WHERE command_id = $1 ORDER BY recorded_at, aggregate_type`), commandID)
	rs, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (CommandResult, error) {
		var r CommandResult
		err := row.Scan(resultDest(&r)...)
		return r, err
	})
	if err != nil {
		return nil, fmt.Errorf("txn: results of command %q: %w", commandID, err)
	}
	return rs, nil
}

// TopicResult returns the stored result of command commandID consumed from
// topic, or ErrNotFound. It is what a client that produced the command to
// topic reads (it does not know the aggregate type). If several aggregate
// types on one topic stored a result under the same id, the oldest is
// returned.
func (s *Store) TopicResult(ctx context.Context, topic, commandID string) (CommandResult, error) {
	rs, err := s.ResultsByCommandID(ctx, commandID)
	if err != nil {
		return CommandResult{}, err
	}
	for _, r := range rs {
		if r.Topic == topic {
			return r, nil
		}
	}
	return CommandResult{}, fmt.Errorf("%w: command %q on topic %q", ErrNotFound, commandID, topic)
}

// DeadLetters lists dead letters in id order.
func (s *Store) DeadLetters(ctx context.Context, q DeadLetterQuery) ([]DeadLetter, error) {
	limit := q.Limit
	if limit <= 0 {
		limit = 100
	}
	rows, _ := s.pool.Query(ctx, s.sql(`
		SELECT id, group_id, topic, partition, "offset", command_id, key, value, headers, error, recorded_at
		FROM onceflow.dead_letters
		WHERE ($1 = '' OR group_id = $1) AND ($2 = '' OR topic = $2) AND id > $3
		ORDER BY id LIMIT $4`), q.Group, q.Topic, q.AfterID, limit)
	dls, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (DeadLetter, error) {
		var d DeadLetter
		err := r.Scan(&d.ID, &d.Group, &d.Topic, &d.Partition, &d.Offset, &d.CommandID, &d.Key, &d.Value, &d.Headers, &d.Error, &d.RecordedAt)
		return d, err
	})
	if err != nil {
		return nil, fmt.Errorf("txn: list dead letters: %w", err)
	}
	return dls, nil
}

// Halt records on the claim row that the partition halted, and why, as long
// as epoch still owns it (a stale owner changes nothing and gets ErrFenced).
// A halted partition consumes nothing until it is resumed: Resume clears the
// mark, and the owner, which watches the row, claims the partition again.
func (s *Store) Halt(ctx context.Context, key PartitionKey, epoch int64, reason string) error {
	tag, err := s.pool.Exec(ctx, s.sql(`UPDATE onceflow.partition_claims SET halted_at = now(), halt_reason = $1
		WHERE group_id = $2 AND topic = $3 AND partition = $4 AND epoch = $5`),
		cleanText(reason), key.Group, key.Topic, key.Partition, epoch)
	if err != nil {
		return fmt.Errorf("txn: record halt of %s[%d] group %q: %w", key.Topic, key.Partition, key.Group, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("%w: record halt of %s[%d] group %q: epoch %d no longer owns it", ErrFenced, key.Topic, key.Partition, key.Group, epoch)
	}
	return nil
}

// Resume clears the halt mark of a partition so its owner resumes it. It
// reports whether the partition was halted; ErrNotFound when it has no claim
// row. Safe to call from any process (the CLI does).
func (s *Store) Resume(ctx context.Context, key PartitionKey) (wasHalted bool, err error) {
	var halted bool
	err = s.pool.QueryRow(ctx, s.sql(`
		UPDATE onceflow.partition_claims c SET halted_at = NULL, halt_reason = ''
		FROM (SELECT group_id, topic, partition, halted_at IS NOT NULL AS halted FROM onceflow.partition_claims
		      WHERE group_id = $1 AND topic = $2 AND partition = $3 FOR UPDATE) old
		WHERE c.group_id = old.group_id AND c.topic = old.topic AND c.partition = old.partition
		RETURNING old.halted`), key.Group, key.Topic, key.Partition).Scan(&halted)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, fmt.Errorf("%w: claim %s[%d] group %q", ErrNotFound, key.Topic, key.Partition, key.Group)
	}
	if err != nil {
		return false, fmt.Errorf("txn: resume %s[%d] group %q: %w", key.Topic, key.Partition, key.Group, err)
	}
	return halted, nil
}

// MarkPublished records that every event of the partition up to seq, and
// every outbox record up to outboxSeq, has been published to Kafka, as long as epoch still owns the partition (otherwise
// ErrFenced: the new owner publishes from its own position). The position
// never moves back.
//
// It commits with synchronous_commit off: losing the last updates in a
// Postgres crash only makes the next owner publish those events again (a
// repeat of an earlier seq, which readers dedupe), never skip one, so the
// update does not need to wait for a WAL flush.
func (s *Store) MarkPublished(ctx context.Context, key PartitionKey, epoch, seq, outboxSeq int64) error {
	var n int64
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SET LOCAL synchronous_commit = off"); err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, s.sql(`UPDATE onceflow.partition_claims
			SET published_seq = greatest(published_seq, $1), published_outbox_seq = greatest(published_outbox_seq, $6)
			WHERE group_id = $2 AND topic = $3 AND partition = $4 AND epoch = $5`),
			seq, key.Group, key.Topic, key.Partition, epoch, outboxSeq)
		n = tag.RowsAffected()
		return err
	})
	if err != nil {
		return fmt.Errorf("txn: mark %s[%d] published to seq %d: %w", key.Topic, key.Partition, seq, err)
	}
	if n == 0 {
		return fmt.Errorf("%w: mark %s[%d] group %q published: epoch %d no longer owns it", ErrFenced, key.Topic, key.Partition, key.Group, epoch)
	}
	return nil
}

// PublishedSeq returns how far the events of a source partition have been
// published to its history topic (the highest published_seq of its claim
// rows; 0 when none). Consumers of the history topic that see no record
// catch up from the event store up to it.
func (s *Store) PublishedSeq(ctx context.Context, topic string, partition int32) (int64, error) {
	var seq int64
	err := s.pool.QueryRow(ctx, s.sql(`SELECT coalesce(max(published_seq), 0) FROM onceflow.partition_claims WHERE topic = $1 AND partition = $2`), topic, partition).Scan(&seq)
	if err != nil {
		return 0, fmt.Errorf("txn: published seq of %s[%d]: %w", topic, partition, err)
	}
	return seq, nil
}

// Backend is what the runtime's partition pipeline needs from its store:
// claims with epochs, the fenced batch commit with its sinks, command
// results, halts and publish positions. *Store implements it on Postgres;
// txn/txnmem implements it in memory, with the same fencing and uniqueness
// rules, for fast tests. A Backend is safe for concurrent use.
type Backend interface {
	Claim(ctx context.Context, key PartitionKey, owner string) (Claim, error)
	ReadClaim(ctx context.Context, key PartitionKey) (Claim, error)
	Commit(ctx context.Context, b *Batch) (Committed, error)
	LookupResults(ctx context.Context, aggregateType string, ids []string) (map[string]CommandResult, error)
	Halt(ctx context.Context, key PartitionKey, epoch int64, reason string) error
	Resume(ctx context.Context, key PartitionKey) (bool, error)
	MarkPublished(ctx context.Context, key PartitionKey, epoch, seq, outboxSeq int64) error
	ReadOutbox(ctx context.Context, key PartitionKey, fromSeq int64, limit int) ([]OutboxRecord, error)
}

var _ Backend = (*Store)(nil)
