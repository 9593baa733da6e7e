package chaos

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"
	"github.com/jackc/pgx/v5"

	"github.com/onceflow/onceflow/samples/inventory/stock"
)

const group = "onceflow.inventory.stock" // the sample's consumer group (onceflow. + aggregate type)

// collectPostgres reads the tables the checker needs.
func collectPostgres(ctx context.Context, dsn string, d *Data) error {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	rows, _ := conn.Query(ctx, `SELECT command_id, partition, "offset", aggregate_id, outcome, first_version, last_version, first_seq, last_seq, reason
		FROM onceflow.command_results WHERE topic = $1`, commandTopic)
	d.Results, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (Result, error) {
		var x Result
		err := r.Scan(&x.CommandID, &x.Partition, &x.Offset, &x.AggregateID, &x.Outcome, &x.FirstVersion, &x.LastVersion, &x.FirstSeq, &x.LastSeq, &x.Reason)
		return x, err
	})
	if err != nil {
		return fmt.Errorf("command_results: %w", err)
	}
	rows, _ = conn.Query(ctx, `SELECT partition, seq, aggregate_id, version, type, data, command_id FROM onceflow.events WHERE topic = $1`, commandTopic)
	d.Events, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (Event, error) {
		var x Event
		err := r.Scan(&x.Partition, &x.Seq, &x.AggregateID, &x.Version, &x.Type, &x.Data, &x.CommandID)
		return x, err
	})
	if err != nil {
		return fmt.Errorf("events: %w", err)
	}
	rows, _ = conn.Query(ctx, `SELECT partition, "offset", command_id, error FROM onceflow.dead_letters WHERE topic = $1`, commandTopic)
	d.DeadLetters, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (DeadLetter, error) {
		var x DeadLetter
		err := r.Scan(&x.Partition, &x.Offset, &x.CommandID, &x.Error)
		return x, err
	})
	if err != nil {
		return fmt.Errorf("dead_letters: %w", err)
	}
	d.Claims, err = readClaims(ctx, conn)
	if err != nil {
		return err
	}
	if d.ReadModels, err = readReadModels(ctx, conn); err != nil {
		return err
	}
	rows, _ = conn.Query(ctx, `SELECT aggregate_id, version, state FROM onceflow.snapshots`)
	d.Snapshots, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (Snapshot, error) {
		var x Snapshot
		err := r.Scan(&x.AggregateID, &x.Version, &x.State)
		return x, err
	})
	if err != nil {
		return fmt.Errorf("snapshots: %w", err)
	}
	return nil
}

func readClaims(ctx context.Context, q interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}) ([]Claim, error) {
	rows, _ := q.Query(ctx, `SELECT partition, next_offset, next_seq, epoch, published_seq FROM onceflow.partition_claims WHERE group_id = $1 AND topic = $2`, group, commandTopic)
	claims, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Claim, error) {
		var x Claim
		err := r.Scan(&x.Partition, &x.NextOffset, &x.NextSeq, &x.Epoch, &x.PublishedSeq)
		return x, err
	})
	if err != nil {
		return nil, fmt.Errorf("partition_claims: %w", err)
	}
	return claims, nil
}

// highWater returns the end offset of every partition of the command topic.
func highWater(brokers string, partitions int) (map[int32]int64, error) {
	c, err := kafka.NewConsumer(&kafka.ConfigMap{"bootstrap.servers": brokers, "group.id": "chaos-checker", "enable.metrics.push": false, "enable.auto.commit": false})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	out := map[int32]int64{}
	for p := range int32(partitions) {
		_, hi, err := c.QueryWatermarkOffsets(commandTopic, p, 10000)
		if err != nil {
			return nil, fmt.Errorf("watermarks of partition %d: %w", p, err)
		}
		out[p] = hi
	}
	return out, nil
}

// collectKafka reads every record of the command topic up to hw.
func collectKafka(ctx context.Context, brokers string, hw map[int32]int64, d *Data) error {
	c, err := kafka.NewConsumer(&kafka.ConfigMap{"bootstrap.servers": brokers, "group.id": "chaos-checker", "enable.metrics.push": false,
		"enable.auto.commit": false, "enable.partition.eof": false})
	if err != nil {
		return err
	}
	defer c.Close()
	topic := commandTopic
	var tps []kafka.TopicPartition
	left := 0
	for p, end := range hw {
		if end > 0 {
			tps = append(tps, kafka.TopicPartition{Topic: &topic, Partition: p, Offset: kafka.OffsetBeginning})
			left++
		}
	}
	if err := c.Assign(tps); err != nil {
		return err
	}
	done := map[int32]bool{}
	for left > 0 {
		if ctx.Err() != nil {
			return fmt.Errorf("reading the command topic: %w (%d partitions not read to the end)", ctx.Err(), left)
		}
		ev := c.Poll(200)
		m, ok := ev.(*kafka.Message)
		if !ok {
			if e, ok := ev.(kafka.Error); ok && e.IsFatal() {
				return e
			}
			continue
		}
		p, off := m.TopicPartition.Partition, int64(m.TopicPartition.Offset)
		if done[p] || off >= hw[p] {
			continue
		}
		r := Record{Partition: p, Offset: off, Key: m.Key, Value: m.Value}
		for i := len(m.Headers) - 1; i >= 0; i-- { // the runtime reads the last value of a header
			h := m.Headers[i]
			if h.Key == "onceflow-command-id" && r.CommandID == "" {
				r.CommandID = string(h.Value)
				r.HasID = usableID(r.CommandID)
			}
			if h.Key == "onceflow-command-type" && r.Type == "" {
				r.Type = string(h.Value)
			}
		}
		d.Records = append(d.Records, r)
		if off == hw[p]-1 {
			done[p] = true
			left--
		}
	}
	return nil
}

func readAttempts(path string) ([]Attempt, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []Attempt
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		var a Attempt
		if err := json.Unmarshal(sc.Bytes(), &a); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		out = append(out, a)
	}
	return out, sc.Err()
}

// LogStats counts what the instances logged about ownership changes.
type LogStats struct {
	Claims        int `json:"partition_claims"`      // partitions claimed (assign, reclaim)
	Revocations   int `json:"partition_revocations"` // partitions revoked or lost: the rebalances seen
	Lost          int `json:"partitions_lost"`       // of which lost (session expired)
	FencedCommits int `json:"fenced_commits"`        // batch commits rejected by the fence
	SelfFenced    int `json:"self_fenced_commits"`   // commits whose acknowledgement was lost and that had landed
	Halts         int `json:"partition_halts"`       // partitions halted on an unrecoverable error
	Retries       int `json:"transient_retries"`     // retried transient errors (Postgres down, cut)
	Incarnations  int `json:"instance_incarnations"` // instance processes started
}

func scanLogs(paths []string) (LogStats, error) {
	var s LogStats
	for _, p := range paths {
		s.Incarnations++
		f, err := os.Open(p)
		if err != nil {
			return s, err
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 1<<20), 1<<24)
		for sc.Scan() {
			line := sc.Bytes()
			if len(line) == 0 || line[0] != '{' {
				continue
			}
			var m struct {
				Msg  string `json:"msg"`
				Lost bool   `json:"lost"`
			}
			if json.Unmarshal(line, &m) != nil {
				continue
			}
			switch {
			case m.Msg == "partition claimed":
				s.Claims++
			case m.Msg == "partition revoked":
				s.Revocations++
				if m.Lost {
					s.Lost++
				}
			case strings.HasPrefix(m.Msg, "commit fenced:"):
				s.FencedCommits++
			case strings.HasPrefix(m.Msg, "commit found the claim already advanced"):
				s.SelfFenced++
			case strings.HasPrefix(m.Msg, "partition halted"):
				s.Halts++
			case m.Msg == "retrying" || m.Msg == "commit failed, retrying":
				s.Retries++
			}
		}
		f.Close()
		if err := sc.Err(); err != nil {
			return s, fmt.Errorf("%s: %w", p, err)
		}
	}
	return s, nil
}

// waitDrained waits until every partition's claim is at the end of the
// command topic, or ctx ends.
func waitDrained(ctx context.Context, dsn, brokers string, partitions int) error {
	var last string
	for {
		hw, err := highWater(brokers, partitions)
		if err == nil {
			var claims []Claim
			if claims, err = readClaimsDSN(ctx, dsn); err == nil {
				at := map[int32]int64{}
				var behind []string
				for _, c := range claims {
					at[c.Partition] = c.NextOffset
					if c.PublishedSeq != c.NextSeq-1 {
						behind = append(behind, fmt.Sprintf("%d:published %d/%d", c.Partition, c.PublishedSeq, c.NextSeq-1))
					}
				}
				for p, end := range hw {
					if end > 0 && at[p] != end {
						behind = append(behind, fmt.Sprintf("%d:%d/%d", p, at[p], end))
					}
				}
				if len(behind) == 0 {
					return nil
				}
				last = "behind: " + strings.Join(behind, " ")
			}
		}
		if err != nil {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("partitions not drained: %s", last)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func readClaimsDSN(ctx context.Context, dsn string) ([]Claim, error) {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(cctx, dsn)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.Background())
	return readClaims(cctx, conn)
}

// collectTopic reads a history or state topic from the beginning
// (read_committed) until it is idle for quiet: records of aborted
// transactions are never returned, and transaction markers take offsets, so
// "the end" is when nothing more arrives.
func collectTopic(ctx context.Context, brokers, topic string, partitions int, quiet time.Duration) ([]TopicRecord, error) {
	c, err := kafka.NewConsumer(&kafka.ConfigMap{"bootstrap.servers": brokers, "group.id": "chaos-checker", "enable.metrics.push": false,
		"enable.auto.commit": false, "enable.partition.eof": false, "isolation.level": "read_committed"})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	var tps []kafka.TopicPartition
	for p := range int32(partitions) {
		tps = append(tps, kafka.TopicPartition{Topic: &topic, Partition: p, Offset: kafka.OffsetBeginning})
	}
	if err := c.Assign(tps); err != nil {
		return nil, err
	}
	var out []TopicRecord
	last := time.Now()
	for time.Since(last) < quiet {
		if ctx.Err() != nil {
			return out, fmt.Errorf("reading %s: %w", topic, ctx.Err())
		}
		m, ok := c.Poll(200).(*kafka.Message)
		if !ok {
			continue
		}
		last = time.Now()
		r := TopicRecord{Partition: m.TopicPartition.Partition, Offset: int64(m.TopicPartition.Offset), Key: string(m.Key), Value: m.Value, Headers: map[string]string{}}
		for _, h := range m.Headers {
			r.Headers[h.Key] = string(h.Value)
		}
		out = append(out, r)
	}
	return out, nil
}

// The inventory sample's projections (samples/inventory/readmodel).
var inventoryProjections = []string{"inventory_stock", "inventory_reservations"}

// readReadModels reads the active versions of the inventory sample's
// projections: their positions per partition of the command topic and
// their rows. nil when the service runs no projection.
func readReadModels(ctx context.Context, conn *pgx.Conn) (*ReadModels, error) {
	positions, versions, err := readProjectionPositions(ctx, conn)
	if err != nil || positions == nil {
		return nil, err
	}
	rm := &ReadModels{Positions: positions}
	rows, _ := conn.Query(ctx, fmt.Sprintf(`SELECT warehouse, sku, on_hand, reserved, version FROM inventory_stock_v%d`, versions["inventory_stock"]))
	rm.Stock, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (StockRow, error) {
		var w, sku string
		var x StockRow
		err := r.Scan(&w, &sku, &x.OnHand, &x.Reserved, &x.Version)
		x.AggregateID = stock.AggregateID(w, sku)
		return x, err
	})
	if err != nil {
		return nil, fmt.Errorf("stock read model: %w", err)
	}
	rows, _ = conn.Query(ctx, fmt.Sprintf(`SELECT warehouse, sku, reservation_id, qty FROM inventory_reservations_v%d`, versions["inventory_reservations"]))
	rm.Reservations, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (ReservationRow, error) {
		var w, sku string
		var x ReservationRow
		err := r.Scan(&w, &sku, &x.ReservationID, &x.Qty)
		x.AggregateID = stock.AggregateID(w, sku)
		return x, err
	})
	if err != nil {
		return nil, fmt.Errorf("reservations read model: %w", err)
	}
	return rm, nil
}

// readProjectionPositions reads the active versions of the inventory
// sample's projections and their positions per partition of the command
// topic; nil when the service runs no projection.
func readProjectionPositions(ctx context.Context, conn *pgx.Conn) ([]ProjectionPosition, map[string]int, error) {
	var exists bool
	if err := conn.QueryRow(ctx, `SELECT to_regclass('onceflow.projections') IS NOT NULL`).Scan(&exists); err != nil || !exists {
		return nil, nil, err
	}
	var positions []ProjectionPosition
	versions := map[string]int{}
	for _, name := range inventoryProjections {
		var v int
		err := conn.QueryRow(ctx, `SELECT version FROM onceflow.projections WHERE name = $1 AND state = 'active'`, name).Scan(&v)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil, nil, nil // the service runs no projection
		}
		if err != nil {
			return nil, nil, fmt.Errorf("projection %s: %w", name, err)
		}
		versions[name] = v
		rows, _ := conn.Query(ctx, `
			SELECT src.partition, coalesce(c.next_seq, 1) - 1, CASE WHEN c.halted_at IS NULL THEN '' ELSE coalesce(nullif(c.halt_reason, ''), 'halted') END
			FROM (SELECT DISTINCT partition FROM onceflow.partition_claims WHERE topic = $1) src
			LEFT JOIN onceflow.projections p ON p.name = $2 AND p.version = $3
			LEFT JOIN onceflow.partition_claims c ON c.group_id = p.group_id AND c.topic = p.history_topic AND c.partition = src.partition
			ORDER BY 1`, commandTopic, name, v)
		ps, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (ProjectionPosition, error) {
			x := ProjectionPosition{Name: name, Version: v}
			err := r.Scan(&x.Partition, &x.Position, &x.Halted)
			return x, err
		})
		if err != nil {
			return nil, nil, fmt.Errorf("projection %s positions: %w", name, err)
		}
		positions = append(positions, ps...)
	}
	return positions, versions, nil
}

// waitProjections waits until the active versions of the inventory
// sample's projections have applied every stored event (it polls their
// positions only, not the read models' rows) (or ctx ends; the
// checker then reports the projections behind).
func waitProjections(ctx context.Context, dsn string) error {
	var last string
	for {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		conn, err := pgx.Connect(cctx, dsn)
		if err == nil {
			var positions []ProjectionPosition
			positions, _, err = readProjectionPositions(cctx, conn)
			var lastSeq map[int32]int64
			if err == nil && positions != nil {
				lastSeq = map[int32]int64{}
				rows, _ := conn.Query(cctx, `SELECT partition, max(seq) FROM onceflow.events WHERE topic = $1 GROUP BY partition`, commandTopic)
				var p int32
				var seq int64
				_, err = pgx.ForEachRow(rows, []any{&p, &seq}, func() error { lastSeq[p] = seq; return nil })
			}
			conn.Close(context.WithoutCancel(cctx))
			if err == nil {
				if positions == nil {
					cancel()
					return nil
				}
				var behind []string
				for _, p := range positions {
					if p.Position != lastSeq[p.Partition] {
						behind = append(behind, fmt.Sprintf("%s:%d:%d/%d", p.Name, p.Partition, p.Position, lastSeq[p.Partition]))
					}
				}
				if len(behind) == 0 {
					cancel()
					return nil
				}
				last = "behind: " + strings.Join(behind, " ")
			}
		}
		cancel()
		if err != nil {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("projections not caught up: %s", last)
		case <-time.After(500 * time.Millisecond):
		}
	}
}
