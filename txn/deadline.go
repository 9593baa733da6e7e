package txn

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/onceflow/onceflow/internal/pgschema"
)

// Deadlines are written and fired inside a batch's fenced transaction
// (through the handler's tx), so scheduling, cancelling and firing are
// exactly-once with the rest of the batch.

// ScheduleTx stores (or moves) deadline d in tx.
func ScheduleTx(ctx context.Context, tx pgx.Tx, schema string, d Deadline) error {
	if err := checkID("deadline id", d.ID); err != nil {
		return fmt.Errorf("txn: schedule deadline: %w", err)
	}
	_, err := tx.Exec(ctx, pgschema.Rewrite(schema, `INSERT INTO onceflow.deadlines (process, id, group_id, topic, partition, due_at, payload)
		VALUES ($1, $2, $3, $4, $5, $6, $7)
		ON CONFLICT (process, id) DO UPDATE SET group_id = EXCLUDED.group_id, topic = EXCLUDED.topic, partition = EXCLUDED.partition,
		    due_at = EXCLUDED.due_at, payload = EXCLUDED.payload`),
		d.Process, d.ID, d.Key.Group, d.Key.Topic, d.Key.Partition, d.DueAt, d.Payload)
	if err != nil {
		return fmt.Errorf("txn: schedule deadline %s/%s: %w", d.Process, d.ID, err)
	}
	return nil
}

// CancelTx deletes a deadline in tx; it reports whether one was pending.
func CancelTx(ctx context.Context, tx pgx.Tx, schema, process, id string) (bool, error) {
	tag, err := tx.Exec(ctx, pgschema.Rewrite(schema, `DELETE FROM onceflow.deadlines WHERE process = $1 AND id = $2`), process, id)
	if err != nil {
		return false, fmt.Errorf("txn: cancel deadline %s/%s: %w", process, id, err)
	}
	return tag.RowsAffected() > 0, nil
}

// FireTx deletes the deadlines ids of process that key's owner fires and
// that are due at now, in tx, and returns the ones it deleted, in due
// order: those still pending as read (a concurrent cancel may have won, or
// a reschedule moved one later or to another partition). The caller
// handles exactly these in the same transaction.
func FireTx(ctx context.Context, tx pgx.Tx, schema, process string, key PartitionKey, now time.Time, ids []string) ([]Deadline, error) {
	rows, _ := tx.Query(ctx, pgschema.Rewrite(schema, `DELETE FROM onceflow.deadlines
		WHERE process = $1 AND id = ANY($2) AND group_id = $3 AND topic = $4 AND partition = $5 AND due_at <= $6
		RETURNING process, id, group_id, topic, partition, due_at, payload`), process, ids, key.Group, key.Topic, key.Partition, now)
	ds, err := pgx.CollectRows(rows, scanDeadline)
	if err != nil {
		return nil, fmt.Errorf("txn: fire deadlines of %s: %w", process, err)
	}
	sortDeadlines(ds)
	return ds, nil
}

func scanDeadline(r pgx.CollectableRow) (Deadline, error) {
	var d Deadline
	err := r.Scan(&d.Process, &d.ID, &d.Key.Group, &d.Key.Topic, &d.Key.Partition, &d.DueAt, &d.Payload)
	return d, err
}

func sortDeadlines(ds []Deadline) {
	slices.SortFunc(ds, func(a, b Deadline) int {
		if c := a.DueAt.Compare(b.DueAt); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
}

// DueDeadlines returns up to limit deadlines of process that key's owner
// fires and that are due at now, in due order.
func (s *Store) DueDeadlines(ctx context.Context, process string, key PartitionKey, now time.Time, limit int) ([]Deadline, error) {
	rows, _ := s.pool.Query(ctx, s.sql(`SELECT process, id, group_id, topic, partition, due_at, payload FROM onceflow.deadlines
		WHERE group_id = $1 AND topic = $2 AND partition = $3 AND due_at <= $4 AND process = $5
		ORDER BY due_at, id LIMIT $6`), key.Group, key.Topic, key.Partition, now, process, limit)
	ds, err := pgx.CollectRows(rows, scanDeadline)
	if err != nil {
		return nil, fmt.Errorf("txn: due deadlines of %s %s[%d]: %w", process, key.Topic, key.Partition, err)
	}
	return ds, nil
}
