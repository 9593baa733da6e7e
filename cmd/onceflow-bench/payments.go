package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/onceflow/onceflow/actor"
	"github.com/onceflow/onceflow/eventsource"
	"github.com/onceflow/onceflow/projection"
	"github.com/onceflow/onceflow/samples/payments/api"
	"github.com/onceflow/onceflow/samples/payments/ledger"
	"github.com/onceflow/onceflow/samples/payments/readmodel"
	"github.com/onceflow/onceflow/txn"
)

// The payments benchmark (-only transfers): completed two-account
// transfers per second, end to end, between accounts on different
// partitions, and the latency from a transfer's request to its being
// posted.
//
// It runs the payments sample's runtimes in-process with the sample's
// options (samples/payments/main.go startRuntimes): the account and the
// transfer aggregates (the transfer runtime with the api.NotifyTransfers
// inline projection) and the transfer process manager "transfers", one
// runtime per source topic, with the process's migrations and the Halt
// failure policy. The read-model projections are not on the path from a
// request to "posted" and run only with -transfer-projections.
//
// A single-phase transfer costs six commands, one after the other (the
// client's CreateTransfer, then the process's ReserveDebit, ReserveCredit,
// PostDebit, PostCredit and MarkPosted), and six events through the
// process (TransferCreated, DebitReserved, CreditReserved, DebitPosted,
// CreditPosted, TransferPosted): twelve handled records, each a row in a
// fenced batch transaction, and five hops from an aggregate's commit
// through its history topic to the process and through the process's
// outbox to the next aggregate.
//
// "Posted" is observed on the transfers' history topic
// (payments.transfers.events): one consumer over every partition records
// when each transfer's TransferPosted event arrives, the moment any
// consumer of the transfers (the process itself, a projection) can see it.
// Nothing polls Postgres per transfer.

// paymentsTopics are the topics the sample uses (its main.go topics()).
func paymentsTopics() []string {
	var ts []string
	for _, t := range []string{ledger.AccountsTopic, ledger.TransfersTopic} {
		ts = append(ts, t, t+".replies", t+".events", t+".state")
	}
	return ts
}

// Funding: every account is a customer (debits must not exceed credits),
// funded by one single-phase transfer from the settlement account.
const (
	payLedger      = 840
	payBank        = "bank"
	payFundAmount  = 1_000_000_000
	payMaxTransfer = 100
)

// transferObserver follows the transfers' history topic and records when
// each transfer posted or failed.
type transferObserver struct {
	base   time.Time
	sent   []atomic.Int64 // ns since base of each bench transfer's Send; 0: not sent
	done   []atomic.Int64 // ns since base when it posted; -1: failed
	fund   atomic.Int64   // funding transfers posted
	posted atomic.Int64   // bench transfers posted
	failed atomic.Int64   // transfers (funding or bench) failed
	last   atomic.Int64   // ns since base of the last bench transfer posted
	free   chan struct{}  // one receive per finished bench transfer: the in-flight bound
	errs   chan error
}

func (o *transferObserver) run(ctx context.Context, c *kafka.Consumer) {
	posted, failed := []byte("payments.TransferPosted"), []byte("payments.TransferFailed")
	for ctx.Err() == nil {
		ev := c.Poll(50)
		switch e := ev.(type) {
		case *kafka.Message:
			var typ []byte
			for _, h := range e.Headers {
				if h.Key == actor.HeaderEventType {
					typ = h.Value
				}
			}
			isPosted, isFailed := string(typ) == string(posted), string(typ) == string(failed)
			if !isPosted && !isFailed {
				continue
			}
			at := time.Since(o.base).Nanoseconds()
			id := string(e.Key)
			if isFailed {
				o.failed.Add(1)
			}
			if n, ok := strings.CutPrefix(id, "t-"); ok {
				i, err := strconv.Atoi(n)
				if err != nil || i < 0 || i >= len(o.done) {
					continue
				}
				v := at
				if isFailed {
					v = -1
				}
				// A repeat of the record (a publisher's resend after a
				// crash) finds it done already.
				if o.done[i].CompareAndSwap(0, v) {
					if isPosted {
						o.posted.Add(1)
						for {
							l := o.last.Load()
							if at <= l || o.last.CompareAndSwap(l, at) {
								break
							}
						}
					}
					o.free <- struct{}{}
				}
			} else if isPosted && strings.HasPrefix(id, "fund-") {
				o.fund.Add(1)
			}
		case kafka.Error:
			if e.IsFatal() {
				select {
				case o.errs <- fmt.Errorf("history consumer: %w", e):
				default:
				}
				return
			}
		}
	}
}

type transfersResult struct {
	perS          float64
	p50, p99, max time.Duration
}

// transfers runs the payments benchmark and prints its BENCH line.
func transfers(ctx context.Context, p params, brokers, adminDSN string, logger *slog.Logger) error {
	r, err := transfersRun(ctx, p, brokers, adminDSN, logger)
	if err != nil {
		return fmt.Errorf("payments transfers: %w", err)
	}
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	fmt.Printf("BENCH transfers_per_s=%.0f transfer_p50_ms=%.1f transfer_p99_ms=%.1f\n", r.perS, ms(r.p50), ms(r.p99))
	return nil
}

func transfersRun(ctx context.Context, p params, brokers, adminDSN string, logger *slog.Logger) (transfersResult, error) {
	var res transfersResult
	if p.accounts < 2 || p.transfers < 1 || p.transferInflight < 1 {
		return res, fmt.Errorf("want -accounts >= 2, -transfers >= 1, -transfer-inflight >= 1")
	}
	// The sample's topic names are fixed (ledger.AccountsTopic, ...): on a
	// broker of our own they are new; on KAFKA_BROKERS they must not exist
	// yet, or a fresh database would consume an earlier run's records.
	if err := freshTopics(brokers, paymentsTopics()); err != nil {
		return res, err
	}
	conns := p.transferConns
	if conns <= 0 {
		conns = 4*p.partitions + 8
	}
	pool, done, err := benchDB(ctx, adminDSN, "payments", int32(conns))
	if err != nil {
		return res, err
	}
	defer done()
	var dbName string
	if err := pool.QueryRow(ctx, `SELECT current_database()`).Scan(&dbName); err != nil {
		return res, err
	}
	// The migrations the sample applies before anything runs (its run()).
	pfs, pdir := ledger.ProcessMigrations()
	if _, err := txn.MigrateFS(ctx, pool, ledger.ProcessComponent, pfs, pdir); err != nil {
		return res, err
	}
	if p.transferProjections {
		if err := readmodel.Install(ctx, pool, projection.NewStore(pool)); err != nil {
			return res, err
		}
	}
	reg, err := ledger.NewRegistry()
	if err != nil {
		return res, err
	}

	// The runtimes, as the sample's startRuntimes starts them.
	common := []actor.Option{actor.WithBrokers(brokers), actor.WithLogger(logger), actor.WithInstanceID("bench")}
	with := func(opts ...actor.Option) []actor.Option { return append(slices.Clone(common), opts...) }
	accAgg, err := ledger.NewAccountAggregate(reg)
	if err != nil {
		return res, err
	}
	trAgg, err := ledger.NewTransferAggregate(reg)
	if err != nil {
		return res, err
	}
	rctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	runErr := make(chan error, 16)
	type named struct {
		name string
		rt   *actor.Runtime
	}
	var rts []named
	start := func(name string, rt *actor.Runtime) {
		rts = append(rts, named{name, rt})
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := rt.Run(rctx); err != nil && rctx.Err() == nil {
				runErr <- fmt.Errorf("%s: %w", name, err)
			} else if rctx.Err() == nil {
				runErr <- fmt.Errorf("%s stopped", name)
			}
		}()
	}
	accRT, err := actor.NewRuntime(accAgg, pool, with(actor.WithTopic(ledger.AccountsTopic), actor.WithCreateTopics(p.partitions))...)
	if err != nil {
		return res, fmt.Errorf("accounts runtime: %w", err)
	}
	trRT, err := actor.NewRuntime(trAgg, pool, with(actor.WithTopic(ledger.TransfersTopic), actor.WithCreateTopics(p.partitions),
		actor.WithInlineProjection(api.NotifyTransfers))...)
	if err != nil {
		return res, fmt.Errorf("transfers runtime: %w", err)
	}
	start("accounts", accRT)
	start("transfers", trRT)
	// The process managers read the history topics the aggregates create.
	for _, rt := range []*actor.Runtime{accRT, trRT} {
		if err := waitOwned(rt, p.partitions, runErr); err != nil {
			return res, err
		}
	}
	pms, err := ledger.Processes(ledger.ProcessOptions{Registry: reg})
	if err != nil {
		return res, err
	}
	for _, pm := range pms {
		rt, err := actor.NewProcessManager(pm, pool, with(actor.WithMigrations(ledger.ProcessComponent, pfs, pdir), actor.WithFailurePolicy(actor.Halt))...)
		if err != nil {
			return res, fmt.Errorf("process %s over %s: %w", pm.Name, pm.Source, err)
		}
		start("process over "+pm.Source, rt)
	}
	if p.transferProjections {
		rfs, rdir := readmodel.Migrations()
		for _, pr := range readmodel.Projections(reg) {
			rt, err := actor.NewProjection(pr, pool, with(actor.WithMigrations(readmodel.Component, rfs, rdir), actor.WithFailurePolicy(actor.Halt))...)
			if err != nil {
				return res, fmt.Errorf("projection %s: %w", pr.Name, err)
			}
			start("projection "+pr.Name, rt)
		}
	}
	for _, n := range rts[2:] {
		if err := waitOwned(n.rt, p.partitions, runErr); err != nil {
			return res, err
		}
	}
	projNote := "read-model projections off (not on the path to posted; -transfer-projections runs them)"
	if p.transferProjections {
		projNote = "read-model projections on"
	}
	fmt.Printf("transfers: runtimes up (accounts, transfers + NotifyTransfers, process over %s and over %s; %s), %d partitions, pool of %d connections\n",
		ledger.TransfersTopic, ledger.AccountsTopic, projNote, p.partitions, conns)

	// The clients, one per command topic, as the sample's.
	client := func(topic string) (*actor.Client, error) {
		return actor.NewClient(ctx, reg, actor.WithBrokers(brokers), actor.WithTopic(topic), actor.WithLogger(logger),
			actor.WithCreateTopics(p.partitions), actor.WithResults(txn.NewStore(pool), time.Second), actor.WithSendTimeout(5*time.Minute))
	}
	accounts, err := client(ledger.AccountsTopic)
	if err != nil {
		return res, err
	}
	defer accounts.Close()
	transfersCl, err := client(ledger.TransfersTopic)
	if err != nil {
		return res, err
	}
	defer transfersCl.Close()

	// The observer, from the start of the history topic.
	obs := &transferObserver{base: time.Now(), sent: make([]atomic.Int64, p.transfers), done: make([]atomic.Int64, p.transfers),
		free: make(chan struct{}, p.transfers), errs: make(chan error, 1)}
	cons, err := kafka.NewConsumer(&kafka.ConfigMap{"bootstrap.servers": brokers, "group.id": fmt.Sprintf("bench-observer-%d", time.Now().UnixNano()),
		"enable.auto.commit": false, "enable.partition.eof": false, "enable.metrics.push": false, "isolation.level": "read_committed"})
	if err != nil {
		return res, err
	}
	defer cons.Close()
	history := ledger.TransfersTopic + ".events"
	var parts []kafka.TopicPartition
	for i := range p.partitions {
		parts = append(parts, kafka.TopicPartition{Topic: &history, Partition: int32(i), Offset: kafka.OffsetBeginning})
	}
	if err := cons.Assign(parts); err != nil {
		return res, err
	}
	octx, ocancel := context.WithCancel(ctx)
	var owg sync.WaitGroup
	owg.Add(1)
	go func() { defer owg.Done(); obs.run(octx, cons) }()
	defer owg.Wait()
	defer ocancel()

	// Accounts: the settlement account and the customers, spread over the
	// partitions by their ids.
	setupStart := time.Now()
	acct := func(i int) string { return fmt.Sprintf("acct-%05d", i) }
	if _, err := sendAll(ctx, accounts, p.accounts+1, 500, func(i int) (eventsource.Command, string) {
		if i == p.accounts {
			return ledger.OpenAccount{ID: payBank, Ledger: payLedger, Code: 3}, "open-" + payBank
		}
		return ledger.OpenAccount{ID: acct(i), Ledger: payLedger, Code: 1, Flags: ledger.AccountFlags{DebitsMustNotExceedCredits: true}}, "open-" + acct(i)
	}); err != nil {
		return res, fmt.Errorf("open accounts: %w", err)
	}
	// Funding: one single-phase transfer bank -> customer each, through
	// the same process (also the warm-up).
	if _, err := sendAll(ctx, transfersCl, p.accounts, 500, func(i int) (eventsource.Command, string) {
		id := fmt.Sprintf("fund-%05d", i)
		return ledger.CreateTransfer{ID: id, DebitAccountID: payBank, CreditAccountID: acct(i), Amount: payFundAmount, Ledger: payLedger, Code: 1},
			actor.CommandID(id, "create")
	}); err != nil {
		return res, fmt.Errorf("fund accounts: %w", err)
	}
	if err := waitUntil(ctx, 5*time.Minute, runErr, obs.errs, func() bool { return obs.fund.Load() >= int64(p.accounts) || obs.failed.Load() > 0 }); err != nil {
		return res, fmt.Errorf("funding: %d of %d posted: %w", obs.fund.Load(), p.accounts, err)
	}
	if f := obs.failed.Load(); f > 0 {
		return res, fmt.Errorf("funding: %d transfers failed", f)
	}
	if err := waitUntil(ctx, 2*time.Minute, runErr, nil, processesDone(ctx, pool)); err != nil {
		return res, fmt.Errorf("funding: processes not done: %w", err)
	}
	fmt.Printf("transfers: %d accounts opened and funded (%d funding transfers posted) in %v\n", p.accounts, p.accounts, time.Since(setupStart).Round(time.Millisecond))

	// Stats before the measured run, to report its share.
	before := map[string]actor.Stats{}
	for _, n := range rts {
		before[n.name] = n.rt.Stats()
	}
	var xactBefore int64
	_ = pool.QueryRow(ctx, `SELECT xact_commit FROM pg_stat_database WHERE datname = $1`, dbName).Scan(&xactBefore)
	cpuBefore, pgBefore := procCPU(os.Getpid()), pgCPU(ctx, pool)

	// The pairs: random accounts on different partitions of the accounts
	// topic.
	partOf := make([]int32, p.accounts)
	for i := range partOf {
		partOf[i] = actor.Murmur2.Partition([]byte(acct(i)), int32(p.partitions))
	}
	if p.partitions > 1 && !slices.ContainsFunc(partOf, func(x int32) bool { return x != partOf[0] }) {
		return res, errors.New("every account is on one partition: no pair on different partitions")
	}
	rnd := rand.New(rand.NewPCG(1, 2))
	type pair struct {
		d, c   int
		amount int64
	}
	pairs := make([]pair, p.transfers)
	for i := range pairs {
		d := rnd.IntN(p.accounts)
		c := rnd.IntN(p.accounts)
		for c == d || (p.partitions > 1 && partOf[c] == partOf[d]) {
			c = rnd.IntN(p.accounts)
		}
		pairs[i] = pair{d, c, 1 + rnd.Int64N(payMaxTransfer)}
	}

	// The run: at most -transfer-inflight transfers between their Send and
	// their TransferPosted.
	var sendFailed atomic.Int64
	var firstErr atomic.Value
	var sends sync.WaitGroup
	inflight := 0
	runStart := time.Since(obs.base).Nanoseconds()
	lastProgress, lastPosted := time.Now(), int64(0)
	// waitOne waits until a transfer in flight ends (posted or failed), and
	// fails when the runtime stops, an observer fails, or nothing is
	// posted for 2 minutes.
	waitOne := func() error {
		for {
			select {
			case <-obs.free:
				inflight--
				return nil
			case err := <-runErr:
				return fmt.Errorf("runtime stopped: %w", err)
			case err := <-obs.errs:
				return err
			case <-time.After(time.Second):
				if n := obs.posted.Load(); n != lastPosted {
					lastProgress, lastPosted = time.Now(), n
				} else if time.Since(lastProgress) > 2*time.Minute {
					return fmt.Errorf("no transfer posted for 2 minutes (%d of %d posted, %d in flight)", n, p.transfers, inflight)
				}
			}
		}
	}
	for i := range p.transfers {
		for inflight >= p.transferInflight {
			if err := waitOne(); err != nil {
				return res, err
			}
		}
		inflight++
		sends.Add(1)
		go func() {
			defer sends.Done()
			pr := pairs[i]
			id := "t-" + strconv.Itoa(i)
			obs.sent[i].Store(max(time.Since(obs.base).Nanoseconds(), 1))
			cmd := ledger.CreateTransfer{ID: id, DebitAccountID: acct(pr.d), CreditAccountID: acct(pr.c), Amount: pr.amount, Ledger: payLedger, Code: 1}
			if _, err := transfersCl.Send(ctx, cmd, actor.WithCommandID(actor.CommandID(id, "create"))); err != nil {
				sendFailed.Add(1)
				firstErr.CompareAndSwap(nil, err)
				if obs.done[i].CompareAndSwap(0, -1) {
					obs.free <- struct{}{}
				}
			}
		}()
	}
	for inflight > 0 {
		if err := waitOne(); err != nil {
			return res, err
		}
	}
	sends.Wait()
	if f := sendFailed.Load(); f > 0 {
		return res, fmt.Errorf("%d of %d CreateTransfer commands failed, first: %v", f, p.transfers, firstErr.Load())
	}
	if f := obs.failed.Load(); f > 0 {
		return res, fmt.Errorf("%d of %d transfers failed (an account refused them)", f, p.transfers)
	}
	elapsed := time.Duration(obs.last.Load() - runStart)
	lat := make([]time.Duration, p.transfers)
	for i := range lat {
		lat[i] = time.Duration(obs.done[i].Load() - obs.sent[i].Load())
	}
	slices.Sort(lat)
	pct := func(q float64) time.Duration { return lat[min(int(q*float64(len(lat))), len(lat)-1)] }
	res = transfersResult{perS: float64(p.transfers) / elapsed.Seconds(), p50: pct(0.5), p99: pct(0.99), max: lat[len(lat)-1]}

	// Quiesce: the process finishes each transfer when it sees its
	// TransferPosted (phase done); one cheap count (a partial index) a
	// tick, not a poll per transfer.
	quiesceStart := time.Now()
	if err := waitUntil(ctx, 2*time.Minute, runErr, nil, processesDone(ctx, pool)); err != nil {
		return res, fmt.Errorf("processes not done: %w", err)
	}
	quiesce := time.Since(quiesceStart)
	var xactAfter int64
	_ = pool.QueryRow(ctx, `SELECT xact_commit FROM pg_stat_database WHERE datname = $1`, dbName).Scan(&xactAfter)
	cpuAfter, pgAfter := procCPU(os.Getpid()), pgCPU(ctx, pool)

	fmt.Printf("transfers: %d transfers (%d in flight at most, amounts 1-%d between %d accounts on different partitions) posted in %v: %.0f transfers/s; Send -> posted p50 %v p99 %v max %v (processes done %v after the last)\n",
		p.transfers, p.transferInflight, payMaxTransfer, p.accounts, elapsed.Round(time.Millisecond), res.perS,
		res.p50.Round(100*time.Microsecond), res.p99.Round(100*time.Microsecond), res.max.Round(100*time.Microsecond), quiesce.Round(time.Millisecond))
	// Where the time goes: per runtime, the run's batches, records and
	// commit time.
	var batches, records int64
	var commit time.Duration
	for _, n := range rts {
		a, b := n.rt.Stats(), before[n.name]
		nb, nr := a.Batches-b.Batches, a.Records-b.Records
		ct := a.CommitTimeSum - b.CommitTimeSum
		batches, records, commit = batches+nb, records+nr, commit+ct
		fmt.Printf("transfers:   %-40s %7d records (%.2f/transfer) in %6d batches (avg %5.1f records, avg commit %v), commit time %v, %d published in %d Kafka transactions, %d outbox sent, %d duplicates, %d deadlines fired\n",
			n.name, nr, float64(nr)/float64(p.transfers), nb, float64(nr)/float64(max(nb, 1)), (ct / time.Duration(max(nb, 1))).Round(10*time.Microsecond),
			ct.Round(time.Millisecond), a.Published-b.Published, a.PublishTransactions-b.PublishTransactions, a.PublishedOutbox-b.PublishedOutbox,
			a.Duplicates-b.Duplicates, a.DeadlinesFired-b.DeadlinesFired)
	}
	fmt.Printf("transfers: all runtimes: %d records (%.2f per transfer) in %d batch transactions (%.2f per transfer), commit time %v (%.1f s of commit per wall-clock s); Postgres transactions in the database ~%d (%.1f per transfer; pg_stat_database xact_commit, read-only statements included, approximate)\n",
		records, float64(records)/float64(p.transfers), batches, float64(batches)/float64(p.transfers), commit.Round(time.Millisecond),
		commit.Seconds()/elapsed.Seconds(), xactAfter-xactBefore, float64(xactAfter-xactBefore)/float64(p.transfers))

	// CPU: this process (the runtimes, the embedded broker, the clients)
	// and the Postgres server's processes, over the run and the quiesce.
	if cpuBefore >= 0 && cpuAfter >= 0 {
		wall := elapsed + quiesce
		perT := func(d time.Duration) string {
			return strconv.FormatFloat(float64(d.Microseconds())/1000/float64(p.transfers), 'f', 2, 64) + "ms"
		}
		pgPart := "Postgres: not on this host"
		pgd := time.Duration(0)
		if pgBefore != nil && pgAfter != nil {
			for pid, c := range pgAfter {
				pgd += c - pgBefore[pid] // a backend started during the run counts from 0
			}
			pgPart = fmt.Sprintf("Postgres server processes %v (%s per transfer)", pgd.Round(time.Millisecond), perT(pgd))
		}
		bd := cpuAfter - cpuBefore
		fmt.Printf("transfers: CPU over %v: this process (runtimes, embedded broker, clients) %v (%s per transfer), %s; together %.2f of %d cores\n",
			wall.Round(time.Millisecond), bd.Round(time.Millisecond), perT(bd), pgPart, (bd+pgd).Seconds()/wall.Seconds(), runtime.NumCPU())
	}
	if err := transferHops(ctx, pool, obs); err != nil {
		return res, fmt.Errorf("hop breakdown: %w", err)
	}

	// The ledger's invariants: a violation fails the benchmark.
	checkStart := time.Now()
	rep, err := ledger.Check(ctx, pool, "")
	if err != nil {
		return res, fmt.Errorf("ledger check: %w", err)
	}
	if !rep.OK() {
		return res, fmt.Errorf("ledger check: %s", rep)
	}
	if rep.ByStatus[ledger.StatusPosted] != p.transfers+p.accounts {
		return res, fmt.Errorf("ledger check: %d transfers posted, want %d: %s", rep.ByStatus[ledger.StatusPosted], p.transfers+p.accounts, rep)
	}
	fmt.Printf("transfers: ledger.Check clean in %v: %s\n", time.Since(checkStart).Round(time.Millisecond), rep)
	return res, nil
}

// processesDone reports whether every transfer's process is done (one
// count over the partial index of the open ones).
func processesDone(ctx context.Context, pool *pgxpool.Pool) func() bool {
	return func() bool {
		var open int64
		err := pool.QueryRow(ctx, `SELECT count(*) FROM payments_transfer_process WHERE phase <> 'done'`).Scan(&open)
		return err == nil && open == 0
	}
}

// waitUntil checks cond every 50ms until it holds, a runtime stops, the
// observer fails, or d passes.
func waitUntil(ctx context.Context, d time.Duration, runErr, obsErr <-chan error, cond func() bool) error {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("not within %v", d)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-runErr:
			return fmt.Errorf("runtime stopped: %w", err)
		case err := <-obsErr:
			return err
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil
}

// freshTopics fails if any of topics exists on brokers.
func freshTopics(brokers string, topics []string) error {
	ac, err := kafka.NewAdminClient(&kafka.ConfigMap{"bootstrap.servers": brokers, "enable.metrics.push": false})
	if err != nil {
		return err
	}
	defer ac.Close()
	md, err := ac.GetMetadata(nil, true, 10_000)
	if err != nil {
		return fmt.Errorf("broker metadata: %w", err)
	}
	var found []string
	for _, t := range topics {
		if m, ok := md.Topics[t]; ok && m.Error.Code() == kafka.ErrNoError {
			found = append(found, t)
		}
	}
	if len(found) > 0 {
		return fmt.Errorf("the payments topics exist already on %s (%s): the benchmark needs them new (their names are the sample's); delete them, or leave KAFKA_BROKERS unset for an embedded broker", brokers, strings.Join(found, ", "))
	}
	return nil
}

// transferHops prints where a transfer's time goes, from what Postgres
// holds after the run (one query each, no polling): every step's command
// id is actor.CommandID(transfer, step), the process's outbox row of a
// step is recorded at the start of the process's batch transaction that
// sent it, and the step's event at the start of the aggregate's batch
// transaction that applied it (recorded_at is now(): the transaction's
// start). So for each step, "to process" is the previous event's
// transaction start to the process's (the aggregate's commit, publishing
// to the history topic, the process consuming it, its queueing), and "to
// aggregate" the process's transaction start to the step's event (the
// process's commit, the outbox sent to the command topic, the aggregate
// consuming it, its queueing).
func transferHops(ctx context.Context, pool *pgxpool.Pool, obs *transferObserver) error {
	rows, err := pool.Query(ctx, `
		WITH o AS (SELECT headers->>$1 AS cid, min(recorded_at) AS at FROM onceflow.outbox WHERE headers->>$1 LIKE 't-%' GROUP BY 1),
		     e AS (SELECT command_id AS cid, min(recorded_at) AS at FROM onceflow.events WHERE command_id LIKE 't-%' GROUP BY 1),
		     steps(n, step, prev) AS (VALUES (1, 'reserve-debit', 'create'), (2, 'reserve-credit', 'reserve-debit'),
		                                     (3, 'post-debit', 'reserve-credit'), (4, 'post-credit', 'post-debit'), (5, 'mark-posted', 'post-credit')),
		     h AS (SELECT s.n, s.step, extract(epoch FROM o.at - pe.at) AS to_process, extract(epoch FROM se.at - o.at) AS to_aggregate
		           FROM e pe JOIN steps s ON pe.cid LIKE '%/' || s.prev
		           JOIN o ON o.cid = split_part(pe.cid, '/', 1) || '/' || s.step
		           JOIN e se ON se.cid = o.cid)
		SELECT step, count(*),
		       percentile_cont(0.5) WITHIN GROUP (ORDER BY to_process), percentile_cont(0.99) WITHIN GROUP (ORDER BY to_process),
		       percentile_cont(0.5) WITHIN GROUP (ORDER BY to_aggregate), percentile_cont(0.99) WITHIN GROUP (ORDER BY to_aggregate)
		FROM h GROUP BY n, step ORDER BY n`, actor.HeaderCommandID)
	if err != nil {
		return err
	}
	type hop struct {
		Step                   string
		N                      int64
		P50a, P99a, P50b, P99b float64
	}
	hops, err := pgx.CollectRows(rows, pgx.RowToStructByPos[hop])
	if err != nil {
		return err
	}
	ms := func(s float64) string { return strconv.FormatFloat(s*1000, 'f', 0, 64) + "ms" }
	var sumA, sumB float64
	for _, h := range hops {
		sumA, sumB = sumA+h.P50a, sumB+h.P50b
		fmt.Printf("transfers:   step %-14s (%d): previous event's tx -> process tx p50 %s p99 %s; process tx -> this step's event tx p50 %s p99 %s\n",
			h.Step, h.N, ms(h.P50a), ms(h.P99a), ms(h.P50b), ms(h.P99b))
	}
	// The ends, in Go: Send -> the create's transaction, and the posting
	// transaction -> TransferPosted read from the history topic.
	rows, err = pool.Query(ctx, `SELECT aggregate_id, type, recorded_at FROM onceflow.events
		WHERE aggregate_type = $1 AND aggregate_id LIKE 't-%' AND type IN ('payments.TransferCreated', 'payments.TransferPosted')`, ledger.TransferType)
	if err != nil {
		return err
	}
	var first, last []time.Duration
	for rows.Next() {
		var id, typ string
		var at time.Time
		if err := rows.Scan(&id, &typ, &at); err != nil {
			rows.Close()
			return err
		}
		i, err := strconv.Atoi(strings.TrimPrefix(id, "t-"))
		if err != nil || i < 0 || i >= len(obs.sent) {
			continue
		}
		if typ == "payments.TransferCreated" {
			first = append(first, at.Sub(obs.base.Add(time.Duration(obs.sent[i].Load()))))
		} else if d := obs.done[i].Load(); d > 0 {
			last = append(last, obs.base.Add(time.Duration(d)).Sub(at))
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	p := func(ds []time.Duration, q float64) string {
		if len(ds) == 0 {
			return "-"
		}
		slices.Sort(ds)
		return ds[min(int(q*float64(len(ds))), len(ds)-1)].Round(time.Millisecond).String()
	}
	fmt.Printf("transfers:   Send -> the create's tx p50 %s p99 %s; TransferPosted's tx -> read from the history topic p50 %s p99 %s; the five steps' p50s sum to %s (to process) + %s (to aggregate)\n",
		p(first, 0.5), p(first, 0.99), p(last, 0.5), p(last, 0.99), ms(sumA), ms(sumB))
	return nil
}

// procCPU returns the user + system CPU time of process pid from
// /proc/<pid>/stat, or -1 where there is no such file.
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return -1
	}
	// Fields after the command name (which may hold spaces): state is
	// field 3, utime 14, stime 15, in clock ticks (USER_HZ, 100 on Linux).
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return -1
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return -1
	}
	return time.Duration(u+st) * (time.Second / 100)
}

// pgCPU returns the CPU time of every Postgres server process
// (pg_stat_activity lists the backends and the auxiliary processes), by
// pid, or nil when Postgres is not on this host.
func pgCPU(ctx context.Context, pool *pgxpool.Pool) map[int]time.Duration {
	rows, err := pool.Query(ctx, `SELECT pid FROM pg_stat_activity`)
	if err != nil {
		return nil
	}
	pids, err := pgx.CollectRows(rows, pgx.RowTo[int32])
	if err != nil {
		return nil
	}
	m := map[int]time.Duration{}
	for _, pid := range pids {
		if c := procCPU(int(pid)); c >= 0 {
			m[int(pid)] = c
		}
	}
	if len(m) == 0 {
		return nil
	}
	return m
}
