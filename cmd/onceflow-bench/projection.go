package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing/fstest"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/onceflow/onceflow/actor"
	"github.com/onceflow/onceflow/internal/pgcluster"
	"github.com/onceflow/onceflow/txn"
)

// Projection benchmarks: how fast a projection rebuilds over stored events
// (read from its history topic), and how far a live projection lags behind
// the commands at a fixed command rate.

// benchDB creates a database for one run and returns its migrated pool and
// a cleanup.
func benchDB(ctx context.Context, adminDSN, name string, conns int32) (*pgxpool.Pool, func(), error) {
	db := fmt.Sprintf("onceflow_bench_%s_%d", name, time.Now().UnixNano())
	if err := pgcluster.CreateDatabase(ctx, adminDSN, db); err != nil {
		return nil, nil, err
	}
	cfg, err := pgxpool.ParseConfig(adminDSN)
	if err != nil {
		return nil, nil, fmt.Errorf("DATABASE_URL: %w", err)
	}
	cfg.ConnConfig.Database = db
	cfg.MaxConns = conns
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, nil, err
	}
	if _, err := txn.Migrate(ctx, pool); err != nil {
		pool.Close()
		return nil, nil, err
	}
	return pool, func() { pool.Close(); pgcluster.DropDatabase(context.Background(), adminDSN, db) }, nil
}

var benchReadModel = `
	CREATE TABLE IF NOT EXISTS bench_stock (sku text PRIMARY KEY, on_hand bigint NOT NULL, events bigint NOT NULL);
	CREATE TABLE IF NOT EXISTS bench_applied (topic text, partition int, seq bigint, applied_at timestamptz NOT NULL, published_at timestamptz, PRIMARY KEY (topic, partition, seq));`

// stockProjection keeps on_hand per SKU from StockReceived events, one
// statement per batch (rows summed per SKU in Go first). With record, it
// also writes when each event was applied (for the lag).
func stockProjection(source string, record bool) actor.Projection {
	return actor.Projection{
		Name: "bench_stock", Version: 1, Source: source,
		Apply: func(ctx context.Context, tx pgx.Tx, evs []actor.Event) error {
			sum := map[string]int64{}
			n := map[string]int64{}
			for _, ev := range evs {
				var r struct {
					Qty int64 `json:"qty"`
				}
				if err := json.Unmarshal(ev.Data, &r); err != nil {
					return fmt.Errorf("event seq %d: %w", ev.Seq, err)
				}
				sum[ev.AggregateID] += r.Qty
				n[ev.AggregateID]++
			}
			skus := make([]string, 0, len(sum))
			qty := make([]int64, 0, len(sum))
			cnt := make([]int64, 0, len(sum))
			for k, v := range sum {
				skus, qty, cnt = append(skus, k), append(qty, v), append(cnt, n[k])
			}
			if _, err := tx.Exec(ctx, `INSERT INTO bench_stock SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[])
				ON CONFLICT (sku) DO UPDATE SET on_hand = bench_stock.on_hand + EXCLUDED.on_hand, events = bench_stock.events + EXCLUDED.events`, skus, qty, cnt); err != nil {
				return err
			}
			if record {
				seqs := make([]int64, len(evs))
				pub := make([]time.Time, len(evs))
				for i, ev := range evs {
					seqs[i], pub[i] = ev.Seq, ev.RecordedAt
				}
				if _, err := tx.Exec(ctx, `INSERT INTO bench_applied SELECT $1, $2, s, clock_timestamp(), p FROM unnest($3::bigint[], $4::timestamptz[]) AS u(s, p)`, evs[0].Topic, evs[0].Partition, seqs, pub); err != nil {
					return err
				}
			}
			return nil
		},
	}
}

func benchMigrations() actor.Option {
	return actor.WithMigrations("bench-readmodel", fstest.MapFS{"m/0001_bench.sql": &fstest.MapFile{Data: []byte(benchReadModel)}}, "m")
}

// rebuild stores n events over the partitions (in Postgres, as a command
// runtime would have), publishes them to the history topic the way the
// publisher does, and measures how fast a new projection applies them all.
func rebuild(ctx context.Context, p params, brokers, adminDSN string, n int, logger *slog.Logger) (float64, error) {
	pool, done, err := benchDB(ctx, adminDSN, "rebuild", int32(p.partitions+4))
	if err != nil {
		return 0, err
	}
	defer done()
	source := fmt.Sprintf("bench.rebuild.%d", time.Now().UnixNano())
	history := source + ".events"
	per := n / p.partitions
	n = per * p.partitions

	// The event store: per partition seq 1..per, over 1,000 SKUs a partition.
	fillStart := time.Now()
	for part := range p.partitions {
		if _, err := pool.Exec(ctx, `
			INSERT INTO onceflow.events (topic, partition, seq, aggregate_type, aggregate_id, version, type, data, command_id)
			SELECT $1, $2::int, s, 'inventory.stock', 'bench/SKU-' || $2::int || '-' || (s % 1000), s / 1000 + 1, 'inventory.StockReceived',
			       convert_to('{"warehouse":"bench","sku":"SKU-' || $2::int || '-' || (s % 1000) || '","qty":1}', 'UTF8'), 'cmd-' || $2::int || '-' || s
			FROM generate_series(1, $3::bigint) s`, source, part, per); err != nil {
			return 0, fmt.Errorf("fill the event store: %w", err)
		}
		if _, err := pool.Exec(ctx, `INSERT INTO onceflow.partition_claims (group_id, topic, partition, epoch, owner, next_seq, published_seq)
			VALUES ('bench.source', $1, $2, 1, 'bench', $3 + 1, $3)`, source, part, per); err != nil {
			return 0, err
		}
	}
	// The history topic, as the publisher writes it.
	if err := createTopics(ctx, brokers, p.partitions, history); err != nil {
		return 0, err
	}
	prod, err := kafka.NewProducer(&kafka.ConfigMap{"bootstrap.servers": brokers, "enable.idempotence": true, "linger.ms": 20,
		"batch.size": 1 << 20, "go.delivery.reports": false, "enable.metrics.push": false})
	if err != nil {
		return 0, err
	}
	for part := range p.partitions {
		partB := []byte(strconv.Itoa(part))
		for s := 1; s <= per; s++ {
			id := fmt.Sprintf("bench/SKU-%d-%d", part, s%1000)
			m := &kafka.Message{
				TopicPartition: kafka.TopicPartition{Topic: &history, Partition: int32(part)},
				Key:            []byte(id),
				Value:          []byte(fmt.Sprintf(`{"warehouse":"bench","sku":"SKU-%d-%d","qty":1}`, part, s%1000)),
				Headers: []kafka.Header{
					{Key: actor.HeaderSourceTopic, Value: []byte(source)}, {Key: actor.HeaderSourcePartition, Value: partB},
					{Key: actor.HeaderSeq, Value: strconv.AppendInt(nil, int64(s), 10)}, {Key: actor.HeaderAggregateType, Value: []byte("inventory.stock")},
					{Key: actor.HeaderVersion, Value: strconv.AppendInt(nil, int64(s/1000+1), 10)}, {Key: actor.HeaderEventType, Value: []byte("inventory.StockReceived")},
					{Key: actor.HeaderCommandID, Value: []byte(fmt.Sprintf("cmd-%d-%d", part, s))},
				},
			}
			for {
				err := prod.Produce(m, nil)
				if err == nil {
					break
				}
				if ke, ok := err.(kafka.Error); !ok || ke.Code() != kafka.ErrQueueFull {
					prod.Close()
					return 0, err
				}
				prod.Flush(100)
			}
		}
	}
	for prod.Flush(1000) > 0 {
	}
	prod.Close()
	fmt.Printf("rebuild: %d events stored and published over %d partitions in %v\n", n, p.partitions, time.Since(fillStart).Round(time.Millisecond))

	rt, err := actor.NewProjection(stockProjection(source, false), pool,
		actor.WithBrokers(brokers), actor.WithLogger(logger), actor.WithInstanceID("bench"), benchMigrations())
	if err != nil {
		return 0, err
	}
	rctx, cancel := context.WithCancel(ctx)
	runErr := make(chan error, 1)
	go func() { runErr <- rt.Run(rctx) }()
	defer func() { cancel(); <-runErr }()
	if err := waitOwned(rt, p.partitions, runErr); err != nil {
		return 0, err
	}
	start, from := time.Now(), rt.Stats().Applied
	for rt.Stats().Applied < int64(n) {
		select {
		case err := <-runErr:
			return 0, fmt.Errorf("projection stopped: %w", err)
		case <-time.After(5 * time.Millisecond):
		}
		if time.Since(start) > 10*time.Minute {
			return 0, fmt.Errorf("rebuild applied %d of %d events after 10 minutes", rt.Stats().Applied, n)
		}
	}
	elapsed := time.Since(start)
	st := rt.Stats()
	var total, skus int64
	if err := pool.QueryRow(ctx, `SELECT coalesce(sum(events), 0), count(*) FROM bench_stock`).Scan(&total, &skus); err != nil {
		return 0, err
	}
	if total != int64(n) || st.GapFilled != 0 {
		return 0, fmt.Errorf("rebuild: read model holds %d events of %d (read from Postgres: %d)", total, n, st.GapFilled)
	}
	rate := float64(int64(n)-from) / elapsed.Seconds()
	fmt.Printf("rebuild: %d events applied in %v (%d before every partition was claimed): %.0f events/s, %d batches (avg %.0f events), commit time %v, %d SKUs\n",
		n, elapsed.Round(time.Millisecond), from, rate, st.Batches, float64(st.Applied)/float64(max(st.Batches, 1)), st.CommitTimeSum.Round(time.Millisecond), skus)
	return rate, nil
}

// liveLag (the inventory workload: its projection reads StockReceived
// events) runs commands at rate per second for d through an aggregate
// runtime (publishing on) while a projection follows its history topic,
// and returns the lag percentiles from each event's command transaction
// (events.recorded_at) to the projection's transaction that applied it.
func liveLag(ctx context.Context, p params, brokers, adminDSN string, rate float64, d time.Duration, logger *slog.Logger) (p50, p99 time.Duration, err error) {
	pool, done, err := benchDB(ctx, adminDSN, "lag", int32(2*p.partitions+6))
	if err != nil {
		return 0, 0, err
	}
	defer done()
	topic := fmt.Sprintf("bench.lag.%d", time.Now().UnixNano())
	rt, err := p.wl.runtime(pool, actor.WithBrokers(brokers), actor.WithTopic(topic), actor.WithCreateTopics(p.partitions),
		actor.WithBatch(p.batch, p.wait), actor.WithLogger(logger), actor.WithInstanceID("bench"))
	if err != nil {
		return 0, 0, err
	}
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	runErr := make(chan error, 2)
	wg.Add(1)
	go func() { defer wg.Done(); runErr <- rt.Run(rctx) }()
	defer wg.Wait()
	defer cancel()
	if err := waitOwned(rt, p.partitions, runErr); err != nil {
		return 0, 0, err
	}
	proj, err := actor.NewProjection(stockProjection(topic, true), pool,
		actor.WithBrokers(brokers), actor.WithLogger(logger), actor.WithInstanceID("bench-proj"), benchMigrations())
	if err != nil {
		return 0, 0, err
	}
	wg.Add(1)
	go func() { defer wg.Done(); runErr <- proj.Run(rctx) }()
	if err := waitOwned(proj, p.partitions, runErr); err != nil {
		return 0, 0, err
	}
	client, err := actor.NewClient(ctx, p.wl.registry, actor.WithBrokers(brokers), actor.WithTopic(topic), actor.WithLogger(logger), actor.WithSendTimeout(time.Minute))
	if err != nil {
		return 0, 0, err
	}
	defer client.Close()

	// Open loop: command i is due at start + i/rate, whatever happened to
	// the ones before it.
	n := int(rate * d.Seconds())
	var failed atomic.Int64
	var sends sync.WaitGroup
	start := time.Now()
	for i := range n {
		if wait := time.Until(start.Add(time.Duration(float64(i) / rate * float64(time.Second)))); wait > 0 {
			time.Sleep(wait)
		}
		sends.Add(1)
		go func() {
			defer sends.Done()
			if _, err := client.Send(ctx, p.wl.command(i, p.aggregates)); err != nil {
				failed.Add(1)
			}
		}()
	}
	sends.Wait()
	if f := failed.Load(); f > 0 {
		return 0, 0, fmt.Errorf("%d of %d commands failed", f, n)
	}
	for proj.Stats().Applied < int64(n) {
		if time.Since(start) > d+5*time.Minute {
			return 0, 0, fmt.Errorf("projection applied %d of %d events", proj.Stats().Applied, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
	rows, err := pool.Query(ctx, `SELECT extract(epoch FROM a.applied_at - e.recorded_at) FROM bench_applied a
		JOIN onceflow.events e ON e.topic = a.topic AND e.partition = a.partition AND e.seq = a.seq`)
	if err != nil {
		return 0, 0, err
	}
	lags, err := pgx.CollectRows(rows, pgx.RowTo[float64])
	if err != nil {
		return 0, 0, err
	}
	if len(lags) != n {
		return 0, 0, fmt.Errorf("%d lags for %d events", len(lags), n)
	}
	slices.Sort(lags)
	pct := func(q float64) time.Duration {
		return time.Duration(lags[min(int(q*float64(len(lags))), len(lags)-1)] * float64(time.Second))
	}
	var pubP50, pubP99, appP50, appP99 float64
	if err := pool.QueryRow(ctx, `SELECT
		percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM a.published_at - e.recorded_at)),
		percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM a.published_at - e.recorded_at)),
		percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM a.applied_at - a.published_at)),
		percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM a.applied_at - a.published_at))
		FROM bench_applied a JOIN onceflow.events e ON e.topic = a.topic AND e.partition = a.partition AND e.seq = a.seq`).Scan(&pubP50, &pubP99, &appP50, &appP99); err != nil {
		return 0, 0, err
	}
	cs, ps := rt.Stats(), proj.Stats()
	fmt.Printf("live lag: commands %d batches (avg %.1f records, avg commit %v); projection %d batches (avg %.1f events, avg commit %v)\n",
		cs.Batches, float64(cs.Records)/float64(max(cs.Batches, 1)), cs.CommitTimeSum/time.Duration(max(cs.Batches, 1)),
		ps.Batches, float64(ps.Applied)/float64(max(ps.Batches, 1)), ps.CommitTimeSum/time.Duration(max(ps.Batches, 1)))
	fmt.Printf("live lag split: command transaction -> history record produced p50 %.1fms p99 %.1fms; produced -> applied p50 %.1fms p99 %.1fms\n", pubP50*1000, pubP99*1000, appP50*1000, appP99*1000)
	fmt.Printf("live lag at %.0f cmds/s for %v (%d events): p50 %v p99 %v max %v (from the command's transaction to the projection's)\n",
		rate, d, n, pct(0.5).Round(100*time.Microsecond), pct(0.99).Round(100*time.Microsecond), pct(1).Round(100*time.Microsecond))
	return pct(0.5), pct(0.99), nil
}

func waitOwned(rt *actor.Runtime, n int, runErr <-chan error) error {
	deadline := time.Now().Add(60 * time.Second)
	for rt.Stats().OwnedPartitions < n {
		if time.Now().After(deadline) {
			return fmt.Errorf("%s owns %d of %d partitions after 60s", rt.Group(), rt.Stats().OwnedPartitions, n)
		}
		select {
		case err := <-runErr:
			return fmt.Errorf("runtime stopped: %w", err)
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}

func createTopics(ctx context.Context, brokers string, partitions int, topics ...string) error {
	ac, err := kafka.NewAdminClient(&kafka.ConfigMap{"bootstrap.servers": brokers, "enable.metrics.push": false})
	if err != nil {
		return err
	}
	defer ac.Close()
	var specs []kafka.TopicSpecification
	for _, t := range topics {
		specs = append(specs, kafka.TopicSpecification{Topic: t, NumPartitions: partitions, ReplicationFactor: -1})
	}
	res, err := ac.CreateTopics(ctx, specs)
	if err != nil {
		return err
	}
	for _, r := range res {
		if r.Error.Code() != kafka.ErrNoError && r.Error.Code() != kafka.ErrTopicAlreadyExists {
			return fmt.Errorf("create topic %s: %w", r.Topic, r.Error)
		}
	}
	return nil
}

// openLoop sends commands at a fixed rate for d (open loop: command i is
// due at start + i/rate whatever happened before, and its latency counts
// from that due time, so a stall is not hidden by the sender slowing down)
// and returns the Send->outcome latency percentiles p50, p99, p99.9.
func openLoop(ctx context.Context, p params, brokers, adminDSN string, rate float64, d time.Duration, logger *slog.Logger) ([3]time.Duration, error) {
	var out [3]time.Duration
	pool, done, err := benchDB(ctx, adminDSN, "openloop", int32(p.partitions+4))
	if err != nil {
		return out, err
	}
	defer done()
	topic := fmt.Sprintf("bench.openloop.%d", time.Now().UnixNano())
	rt, err := p.wl.runtime(pool, actor.WithBrokers(brokers), actor.WithTopic(topic), actor.WithCreateTopics(p.partitions),
		actor.WithBatch(p.batch, p.wait), actor.WithLogger(logger), actor.WithInstanceID("bench"))
	if err != nil {
		return out, err
	}
	rctx, cancel := context.WithCancel(ctx)
	runErr := make(chan error, 1)
	go func() { runErr <- rt.Run(rctx) }()
	defer func() { cancel(); <-runErr }()
	if err := waitOwned(rt, p.partitions, runErr); err != nil {
		return out, err
	}
	client, err := actor.NewClient(ctx, p.wl.registry, actor.WithBrokers(brokers), actor.WithTopic(topic), actor.WithLogger(logger), actor.WithSendTimeout(time.Minute))
	if err != nil {
		return out, err
	}
	defer client.Close()
	// Warm up (connections, metadata, first loads) outside the measurement.
	for i := range 200 {
		if _, err := client.Send(ctx, p.wl.command(i, p.aggregates)); err != nil {
			return out, err
		}
	}
	n := int(rate * d.Seconds())
	lat := make([]time.Duration, n)
	var failed atomic.Int64
	var sends sync.WaitGroup
	start := time.Now()
	for i := range n {
		due := start.Add(time.Duration(float64(i) / rate * float64(time.Second)))
		if wait := time.Until(due); wait > 0 {
			time.Sleep(wait)
		}
		sends.Add(1)
		go func() {
			defer sends.Done()
			if _, err := client.Send(ctx, p.wl.command(i, p.aggregates)); err != nil {
				failed.Add(1)
			}
			lat[i] = time.Since(due)
		}()
	}
	sends.Wait()
	if f := failed.Load(); f > 0 {
		return out, fmt.Errorf("%d of %d commands failed", f, n)
	}
	slices.Sort(lat)
	for i, q := range []float64{0.5, 0.99, 0.999} {
		out[i] = lat[min(int(q*float64(n)), n-1)]
	}
	st := rt.Stats()
	fmt.Printf("open loop %6.0f cmds/s for %v: p50 %v p99 %v p99.9 %v max %v; %d batches (avg %.1f records, avg commit %v)\n",
		rate, d, out[0].Round(100*time.Microsecond), out[1].Round(100*time.Microsecond), out[2].Round(100*time.Microsecond), lat[n-1].Round(100*time.Microsecond),
		st.Batches, float64(st.Records)/float64(max(st.Batches, 1)), st.CommitTimeSum/time.Duration(max(st.Batches, 1)))
	return out, nil
}
