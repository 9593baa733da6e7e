// Command onceflow-bench pushes commands through one runtime instance end to
// end (client produce, consume, decide, fenced batch commit, reply to the
// client) and reports commands per second for batch size 1 and for the
// default batch, the batched run with publishing to the history and state
// topics on (the default) and off, and how fast the published events
// follow. Its last line is machine-readable:
//
//	BENCH batched_cmds_per_s=<n> batched_nopublish_cmds_per_s=<n> batch1_cmds_per_s=<n> batch1_nopublish_cmds_per_s=<n> publish_events_per_s=<n> publish_catchup_ms=<n>
//
// The full run goes on with the payments sample's transfers (payments.go):
//
//	BENCH transfers_per_s=<n> transfer_p50_ms=<n> transfer_p99_ms=<n>
//
// and ends with the memory benchmark (memory.go, -only memory): the runtime
// alone in a child process, its RSS with 1,000,000 aggregates touched once
// each (-mem-aggregates) under the default WithMaxAggregates, and the
// throughput with that many aggregates against 2,000:
//
//	BENCH rss_mb_1m_aggregates=<n> rss_mb_before_load=<n> live_aggregates_peak=<n> bytes_per_live_aggregate=<n> heap_bytes_per_live_aggregate=<n> many_aggregates_cmds_per_s=<n> few_aggregates_cmds_per_s=<n> many_few_ratio=<n>
//
// By default it starts an embedded Kafka-protocol broker and a private
// Postgres cluster (fsync on) in a temporary directory; KAFKA_BROKERS and
// DATABASE_URL point it at real infrastructure instead (it creates and drops
// its own databases there).
package main

import (
	"cmp"
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/onceflow/onceflow/actor"
	"github.com/onceflow/onceflow/devenv"
	"github.com/onceflow/onceflow/eventsource"
	"github.com/onceflow/onceflow/internal/baseline"
	"github.com/onceflow/onceflow/internal/pgcluster"
)

type params struct {
	n, n1, aggregates, inflight, partitions, batch int
	wait                                           time.Duration
	verbose                                        bool
	rebuildEvents                                  int
	lagFor                                         time.Duration
	only                                           string
	lagRate                                        float64
	wl                                             workload
	prefill                                        int
	// The payments benchmark (payments.go).
	accounts, transfers, transferInflight, transferConns int
	transferProjections                                  bool
	// The memory benchmark (memory.go).
	memAggregates, memFewN, memMaxAggregates int
	memPassivate                             time.Duration
	memProfile, memCPUProfile, memTrace      string
}

func main() {
	if cfg := os.Getenv(memRoleEnv); cfg != "" {
		os.Exit(memChild(cfg)) // the runtime child of the memory benchmark
	}
	var p params
	flag.IntVar(&p.n, "n", 100_000, "commands for the batched run")
	flag.IntVar(&p.n1, "n1", 2_000, "commands for the batch-size-1 run")
	flag.IntVar(&p.aggregates, "aggregates", 2_000, "distinct aggregates (SKUs) the commands spread over")
	flag.IntVar(&p.inflight, "inflight", 8_000, "commands in flight at once (concurrent Send calls)")
	flag.IntVar(&p.partitions, "partitions", 12, "partitions of the command topic")
	flag.IntVar(&p.batch, "batch", 1000, "max records per batch transaction in the batched run")
	flag.DurationVar(&p.wait, "wait", 10*time.Millisecond, "max wait to fill a batch in the batched run")
	flag.BoolVar(&p.verbose, "v", false, "log the runtime's warnings")
	flag.IntVar(&p.rebuildEvents, "rebuild-events", 1_000_000, "stored events the projection rebuild runs over")
	flag.DurationVar(&p.lagFor, "lag-for", 10*time.Second, "how long the live projection's lag is measured, at half of the batched command rate")
	flag.IntVar(&p.prefill, "prefill", 5_000_000, "-only history: command results and events stored before the run")
	flag.StringVar(&p.only, "only", "", "run one benchmark only: commands, batched (the batched run alone, e.g. with -cpuprofile), history (fresh vs -prefill stored rows), alo or nopub (the at-least-once baseline or exactly-once, publishing off), latency, projections, transfers or memory (the runtime in a process of its own: RSS per live aggregate, many vs few aggregates)")
	flag.IntVar(&p.accounts, "accounts", 1_000, "payments: customer accounts the transfers move money between")
	flag.IntVar(&p.transfers, "transfers", 10_000, "payments: single-phase transfers in the measured run")
	flag.IntVar(&p.transferInflight, "transfer-inflight", 1_000, "payments: transfers in flight at once (from the create's Send to posted)")
	flag.IntVar(&p.transferConns, "transfer-conns", 0, "payments: Postgres connections of the runtimes' pool (0: 4 per partition + 8)")
	flag.BoolVar(&p.transferProjections, "transfer-projections", false, "payments: also run the sample's read-model projections")
	flag.IntVar(&p.memAggregates, "mem-aggregates", 1_000_000, "memory: distinct aggregates touched once each in the many-aggregates phase")
	flag.IntVar(&p.memFewN, "mem-few-n", 200_000, "memory: commands over -aggregates aggregates in the few-aggregates phase")
	flag.IntVar(&p.memMaxAggregates, "mem-max-aggregates", actor.DefaultMaxAggregates, "memory: the runtime's WithMaxAggregates")
	flag.DurationVar(&p.memPassivate, "mem-passivate", 2*time.Minute, "memory: the runtime's WithPassivateAfter")
	flag.StringVar(&p.memProfile, "memprofile", "", "memory: write the runtime child's heap profile at the end of the many-aggregates phase to this file")
	flag.StringVar(&p.memCPUProfile, "mem-cpuprofile", "", "memory: write the runtime child's CPU profile of the many-aggregates phase to this file")
	flag.StringVar(&p.memTrace, "mem-trace", "", "memory: append the runtime child's stats lines with its RSS (CSV) to this file")
	flag.Float64Var(&p.lagRate, "lag-rate", 0, "commands/s for the live lag (0: half of the batched run's rate; 8000 with -only projections)")
	wlName := flag.String("workload", "inventory", "the aggregate the command benchmarks drive (inventory)")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of the whole run (client, broker, runtime) to this file")
	allocProfile := flag.String("allocprofile", "", "write a profile of the whole run's allocations (client, broker, runtime) to this file")
	flag.Parse()
	if *allocProfile != "" {
		defer writeAllocProfile(*allocProfile)
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "onceflow-bench:", err)
			os.Exit(2)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(os.Stderr, "onceflow-bench:", err)
			os.Exit(2)
		}
		defer pprof.StopCPUProfile()
	}
	mk, ok := workloads[*wlName]
	if !ok {
		fmt.Fprintf(os.Stderr, "onceflow-bench: unknown -workload %q\n", *wlName)
		os.Exit(2)
	}
	var err error
	if p.wl, err = mk(); err != nil {
		fmt.Fprintln(os.Stderr, "onceflow-bench:", err)
		os.Exit(1)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, p); err != nil {
		fmt.Fprintln(os.Stderr, "onceflow-bench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, p params) error {
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	if p.verbose {
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	brokers := os.Getenv("KAFKA_BROKERS")
	if brokers == "" {
		b, err := devenv.StartBroker(ctx, devenv.BrokerOptions{Logger: logger})
		if err != nil {
			return err
		}
		defer b.Close()
		brokers = b.Addr()
	}
	adminDSN := os.Getenv("DATABASE_URL")
	if adminDSN == "" {
		dir, err := os.MkdirTemp("", "onceflow-bench-pg-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		c, err := pgcluster.Start(ctx, pgcluster.Options{Dir: dir, Logger: logger})
		if err != nil {
			return err
		}
		defer c.Stop(context.Background())
		adminDSN = c.DSN("postgres")
	}
	fmt.Printf("onceflow-bench: %d cores, GOMAXPROCS %d, brokers %s, %d partitions, %d aggregates, %d in flight\n",
		runtime.NumCPU(), runtime.GOMAXPROCS(0), brokers, p.partitions, p.aggregates, p.inflight)

	if p.only == "history" {
		// The same batched run on a fresh store and on one pre-filled with
		// -prefill command results and events (another topic's history):
		// the cost per command must not grow with the history.
		fresh, err := runOnce(ctx, p, "fresh", brokers, adminDSN, p.n, p.batch, p.wait, true, logger)
		if err != nil {
			return err
		}
		hist, err := runOnce(ctx, p, "history", brokers, adminDSN, p.n, p.batch, p.wait, true, logger)
		if err != nil {
			return err
		}
		fmt.Printf("BENCH fresh_cmds_per_s=%.0f history_cmds_per_s=%.0f history_rows=%d history_ratio=%.2f\n", fresh.cmdsPerS, hist.cmdsPerS, p.prefill, hist.cmdsPerS/fresh.cmdsPerS)
		return nil
	}
	if p.only == "batched" {
		// One batched run, publishing on: what -cpuprofile should see.
		bn, err := runOnce(ctx, p, "batched", brokers, adminDSN, p.n, p.batch, p.wait, true, logger)
		if err != nil {
			return err
		}
		fmt.Printf("BENCH batched_cmds_per_s=%.0f\n", bn.cmdsPerS)
		return nil
	}
	if p.only == "alo" || p.only == "nopub" {
		// One batched run with publishing off, at-least-once (alo) or
		// exactly-once (nopub): the pair the ratio compares, e.g. to
		// profile them apart with -cpuprofile.
		baseline.SetAtLeastOnce(p.only == "alo")
		r, err := runOnce(ctx, p, p.only, brokers, adminDSN, p.n, p.batch, p.wait, false, logger)
		baseline.SetAtLeastOnce(false)
		if err != nil {
			return err
		}
		fmt.Printf("BENCH %s_cmds_per_s=%.0f\n", p.only, r.cmdsPerS)
		return nil
	}
	if p.only == "latency" {
		_, _, err := latency(ctx, p, brokers, adminDSN, cmp.Or(p.lagRate, 8000), logger)
		return err
	}
	if p.only == "projections" {
		return projections(ctx, p, brokers, adminDSN, cmp.Or(p.lagRate, 8000), logger)
	}
	if p.only == "transfers" {
		return transfers(ctx, p, brokers, adminDSN, logger)
	}
	if p.only == "memory" {
		return memory(ctx, p, brokers, adminDSN, logger)
	}
	b1off, err := runOnce(ctx, p, "b1nopub", brokers, adminDSN, p.n1, 1, 0, false, logger)
	if err != nil {
		return fmt.Errorf("batch-size-1 run without publishing: %w", err)
	}
	b1, err := runOnce(ctx, p, "batch1", brokers, adminDSN, p.n1, 1, 0, true, logger)
	if err != nil {
		return fmt.Errorf("batch-size-1 run: %w", err)
	}
	off, err := runOnce(ctx, p, "nopub", brokers, adminDSN, p.n, p.batch, p.wait, false, logger)
	if err != nil {
		return fmt.Errorf("batched run without publishing: %w", err)
	}
	bn, err := runOnce(ctx, p, "batched", brokers, adminDSN, p.n, p.batch, p.wait, true, logger)
	if err != nil {
		return fmt.Errorf("batched run: %w", err)
	}
	// The usual at-least-once design on the same service and load
	// (internal/baseline: no fence, no idempotency records, no lookup),
	// publishing off like "nopub", to show what exactly-once costs.
	baseline.SetAtLeastOnce(true)
	alo, err := runOnce(ctx, p, "alo", brokers, adminDSN, p.n, p.batch, p.wait, false, logger)
	baseline.SetAtLeastOnce(false)
	if err != nil {
		return fmt.Errorf("at-least-once run: %w", err)
	}
	fmt.Printf("exactly-once / at-least-once (publishing off in both): %.2f\n", off.cmdsPerS/alo.cmdsPerS)
	fmt.Printf("BENCH atleastonce_cmds_per_s=%.0f exactly_once_nopublish_cmds_per_s=%.0f exactly_once_ratio=%.2f\n", alo.cmdsPerS, off.cmdsPerS, off.cmdsPerS/alo.cmdsPerS)
	fmt.Printf("speed-up batched/batch1: %.1fx; publishing on/off: %.2f\n", bn.cmdsPerS/b1.cmdsPerS, bn.cmdsPerS/off.cmdsPerS)
	fmt.Printf("BENCH batched_cmds_per_s=%.0f batched_nopublish_cmds_per_s=%.0f batch1_cmds_per_s=%.0f batch1_nopublish_cmds_per_s=%.0f publish_events_per_s=%.0f publish_catchup_ms=%d\n",
		bn.cmdsPerS, off.cmdsPerS, b1.cmdsPerS, b1off.cmdsPerS, bn.publishPerS, bn.catchup.Milliseconds())
	if p.only == "commands" {
		return nil
	}
	low, hi, err := latency(ctx, p, brokers, adminDSN, bn.cmdsPerS/2, logger)
	if err != nil {
		return err
	}
	// The summary line: CPU per command is the whole machine's
	// busy time (bench process, broker, Postgres) over the batched run.
	self, pg, box := bn.cpu.perOp(bn.n)
	fmt.Printf("BENCH batched_cmds_per_s=%.0f batch1_cmds_per_s=%.0f alo_cmds_per_s=%.0f p99_ms_half_load=%.1f p50_ms_200=%.1f cpu_us_per_cmd=%.0f cpu_us_per_cmd_bench_process=%.0f cpu_us_per_cmd_postgres=%.0f\n",
		bn.cmdsPerS, b1.cmdsPerS, alo.cmdsPerS, ms(hi[1]), ms(low[0]), box, self, pg)
	if err := projections(ctx, p, brokers, adminDSN, cmp.Or(p.lagRate, bn.cmdsPerS/2), logger); err != nil {
		return err
	}
	if err := transfers(ctx, p, brokers, adminDSN, logger); err != nil {
		return err
	}
	return memory(ctx, p, brokers, adminDSN, logger)
}

// latency runs the open-loop latency benchmark at 200 commands/s and at
// half, the given rate (half of the batched run's throughput).
// It returns the percentiles (p50, p99, p99.9) of both.
func latency(ctx context.Context, p params, brokers, adminDSN string, half float64, logger *slog.Logger) (low, hi [3]time.Duration, err error) {
	low, err = openLoop(ctx, p, brokers, adminDSN, 200, p.lagFor, logger)
	if err != nil {
		return low, hi, fmt.Errorf("open loop at 200 cmds/s: %w", err)
	}
	hi, err = openLoop(ctx, p, brokers, adminDSN, half, p.lagFor, logger)
	if err != nil {
		return low, hi, fmt.Errorf("open loop at %.0f cmds/s: %w", half, err)
	}
	fmt.Printf("BENCH open_loop_200_p50_ms=%.1f open_loop_200_p99_ms=%.1f open_loop_half_rate=%.0f open_loop_half_p50_ms=%.1f open_loop_half_p99_ms=%.1f open_loop_half_p999_ms=%.1f\n",
		ms(low[0]), ms(low[1]), half, ms(hi[0]), ms(hi[1]), ms(hi[2]))
	return low, hi, nil
}

// ms is a duration in milliseconds.
func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// projections runs the projection benchmarks: the rebuild over
// p.rebuildEvents stored events, and the live lag at rate commands/s.
func projections(ctx context.Context, p params, brokers, adminDSN string, rate float64, logger *slog.Logger) error {
	rb, err := rebuild(ctx, p, brokers, adminDSN, p.rebuildEvents, logger)
	if err != nil {
		return fmt.Errorf("projection rebuild: %w", err)
	}
	p50, p99, err := liveLag(ctx, p, brokers, adminDSN, rate, p.lagFor, logger)
	if err != nil {
		return fmt.Errorf("projection live lag: %w", err)
	}
	fmt.Printf("BENCH rebuild_events_per_s=%.0f live_lag_p50_ms=%.1f live_lag_p99_ms=%.1f live_lag_rate_cmds_per_s=%.0f\n",
		rb, float64(p50.Microseconds())/1000, float64(p99.Microseconds())/1000, rate)
	return nil
}

// result is one run's figures.
type result struct {
	cmdsPerS    float64
	publishPerS float64       // events published per second, from the first send to publish lag 0
	catchup     time.Duration // from the last outcome to publish lag 0
	cpu         cpuSample     // CPU time from the first send to the last outcome
	n           int
}

func runOnce(ctx context.Context, p params, name, brokers, adminDSN string, n, batch int, wait time.Duration, publish bool, logger *slog.Logger) (result, error) {
	pool, done, err := benchDB(ctx, adminDSN, name, int32(p.partitions+4))
	if err != nil {
		return result{}, err
	}
	defer done()

	if name == "history" && p.prefill > 0 {
		if err := prefill(ctx, pool, p.prefill); err != nil {
			return result{}, fmt.Errorf("prefill: %w", err)
		}
	}
	topic := fmt.Sprintf("bench.%s.%d", name, time.Now().UnixNano())
	rt, err := p.wl.runtime(pool,
		actor.WithBrokers(brokers), actor.WithTopic(topic), actor.WithCreateTopics(p.partitions),
		actor.WithBatch(batch, wait), actor.WithLogger(logger), actor.WithInstanceID("bench"), actor.WithPublishing(publish))
	if err != nil {
		return result{}, err
	}
	rctx, cancel := context.WithCancel(ctx)
	runErr := make(chan error, 1)
	go func() { runErr <- rt.Run(rctx) }()
	defer func() {
		cancel()
		<-runErr
	}()
	client, err := actor.NewClient(ctx, p.wl.registry, actor.WithBrokers(brokers), actor.WithTopic(topic),
		actor.WithCreateTopics(p.partitions), actor.WithLogger(logger), actor.WithSendTimeout(5*time.Minute))
	if err != nil {
		return result{}, err
	}
	defer client.Close()

	// Wait until every partition is claimed so the run measures steady state.
	if err := waitOwned(rt, p.partitions, runErr); err != nil {
		return result{}, err
	}

	cpu0 := sampleCPU()
	start := time.Now()
	elapsed, err := sendAll(ctx, client, n, p.inflight, func(i int) (eventsource.Command, string) { return p.wl.command(i, p.aggregates), "" })
	cpu := sampleCPU().sub(cpu0)
	if err != nil {
		return result{}, err
	}
	var events int64
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM onceflow.events WHERE topic = $1`, topic).Scan(&events); err != nil {
		return result{}, err
	}
	if events != int64(n) {
		return result{}, fmt.Errorf("%d events stored for %d accepted commands", events, n)
	}
	res := result{cmdsPerS: float64(n) / elapsed.Seconds(), cpu: cpu, n: n}
	if publish {
		for rt.Stats().PublishLag > 0 {
			if time.Since(start) > 10*time.Minute {
				return result{}, fmt.Errorf("publishing still %d events behind after 10 minutes", rt.Stats().PublishLag)
			}
			time.Sleep(10 * time.Millisecond)
		}
		res.catchup = time.Since(start) - elapsed
		res.publishPerS = float64(events) / time.Since(start).Seconds()
	}
	// Sequential scans on the hot path would make a command's cost grow
	// with the history: show them.
	var scans string
	if err := pool.QueryRow(ctx, `SELECT coalesce(string_agg(relname || ' ' || seq_scan || ' (' || seq_tup_read || ' rows)', ', ' ORDER BY relname), 'none')
		FROM pg_stat_user_tables WHERE schemaname = 'onceflow' AND seq_scan > 0 AND relname <> 'schema_migrations'`).Scan(&scans); err == nil {
		defer fmt.Printf("%-8s sequential scans: %s\n", name, scans)
	}
	st := rt.Stats()
	avgBatch := float64(st.Records) / float64(max(st.Batches, 1))
	self, pg, box := cpu.perOp(n)
	fmt.Printf("%-8s batch=%-5d n=%-7d %8.0f cmds/s  elapsed %-10v batches %-6d avg batch %.1f  commit time %v  published %d in %d transactions (catch-up after the last outcome %v)  CPU per command: bench process %.0f µs, Postgres %.0f µs, whole box %.0f µs\n",
		name, batch, n, res.cmdsPerS, elapsed.Round(time.Millisecond), st.Batches, avgBatch, st.CommitTimeSum.Round(time.Millisecond), st.Published, st.PublishTransactions, res.catchup.Round(time.Millisecond), self, pg, box)
	return res, nil
}

// sendAll sends commands 0..n-1 through client, inflight at once (closed
// loop: a goroutine per Send, like the handlers of an API), and returns the
// time from the first send to the last outcome. command(i) gives the i-th
// command and its command id ("": a new one). Every command must succeed.
func sendAll(ctx context.Context, client *actor.Client, n, inflight int, command func(i int) (eventsource.Command, string)) (time.Duration, error) {
	var failed atomic.Int64
	var firstErr atomic.Value
	sem := make(chan struct{}, inflight)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range n {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			cmd, id := command(i)
			var opts []actor.SendOption
			if id != "" {
				opts = append(opts, actor.WithCommandID(id))
			}
			if _, err := client.Send(ctx, cmd, opts...); err != nil {
				failed.Add(1)
				firstErr.CompareAndSwap(nil, err)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if f := failed.Load(); f > 0 {
		return elapsed, fmt.Errorf("%d of %d commands failed, first: %v", f, n, firstErr.Load())
	}
	return elapsed, nil
}

// prefill stores n command results and n events of another topic (12
// partitions, 100,000 aggregates) in pool's migrated database (benchDB) and
// analyzes the tables, as a service with that much history would have them.
func prefill(ctx context.Context, pool *pgxpool.Pool, n int) error {
	start := time.Now()
	const chunk = 500_000
	for from := 0; from < n; from += chunk {
		to := min(from+chunk, n) - 1
		if _, err := pool.Exec(ctx, `
			INSERT INTO onceflow.events (topic, partition, seq, aggregate_type, aggregate_id, version, type, data, command_id)
			SELECT 'bench.old', s % 12, s / 12 + 1, 'inventory.stock', 'old/SKU-' || (s % 100000), s / 100000 + 1, 'inventory.StockReceived',
			       convert_to('{"warehouse":"old","sku":"x","qty":1}', 'UTF8'), 'old-' || s
			FROM generate_series($1::bigint, $2::bigint) s`, from, to); err != nil {
			return err
		}
		if _, err := pool.Exec(ctx, `
			INSERT INTO onceflow.command_results (command_id, group_id, topic, partition, "offset", aggregate_type, aggregate_id, outcome, first_version, last_version, first_seq, last_seq, request_hash)
			SELECT 'old-' || s, 'bench.old', 'bench.old', s % 12, s / 12, 'inventory.stock', 'old/SKU-' || (s % 100000), 'accepted',
			       s / 100000 + 1, s / 100000 + 1, s / 12 + 1, s / 12 + 1, sha256(convert_to('old-' || s, 'UTF8'))
			FROM generate_series($1::bigint, $2::bigint) s`, from, to); err != nil {
			return err
		}
	}
	if _, err := pool.Exec(ctx, `ANALYZE onceflow.events; ANALYZE onceflow.command_results`); err != nil {
		return err
	}
	fmt.Printf("history: %d command results and %d events stored in %v\n", n, n, time.Since(start).Round(time.Second))
	return nil
}
