package main

// The whole service through testkit (a real Postgres and a Kafka-protocol
// broker; containers when Docker answers, the local fallback otherwise):
// many concurrent clients send single- and two-phase transfers and card
// payments among a few accounts spread over the partitions, over HTTP, to
// two instances of the service; the second instance joins mid-run (every
// runtime rebalances) and the first is stopped mid-run (its context
// cancelled: its partitions move to the second). Afterwards ledger.Check
// must find no violation, every transfer's final state must be what its
// client was told, and the balances read model must equal the event
// store's fold.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/onceflow/onceflow/eventsource"
	"github.com/onceflow/onceflow/samples/payments/ledger"
	"github.com/onceflow/onceflow/testkit"
)

// retryAfter is short, so that under the rebalance and the stop the
// transfer process resends steps whose answers are merely slow: the
// resends (same command ids) must all be duplicates at their targets.
const retryAfter = 250 * time.Millisecond

type instance struct {
	id    string
	base  string
	stop  func()
	alive atomic.Bool
}

func startInstance(t *testing.T, env *testkit.Env, id string) *instance {
	t.Helper()
	var props []string
	for k, v := range env.KafkaConfig() {
		props = append(props, k+"="+v)
	}
	sort.Strings(props)
	cfg, err := parseConfig(nil, envOf(map[string]string{
		"KAFKA_BROKERS": env.Brokers(), "DATABASE_URL": env.DSN(), "HTTP_ADDR": "127.0.0.1:0", "INSTANCE_ID": id,
		"PARTITIONS": "4", "LOG_LEVEL": "error", "RETRY_AFTER": retryAfter.String(), "ONCEFLOW_KAFKA_CONFIG": strings.Join(props, ","),
	}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	urls := make(chan string, 1)
	done := make(chan error, 1)
	go func() { done <- run(ctx, func() {}, cfg, testWriter{t, id}, func(u string) { urls <- u }) }()
	in := &instance{id: id}
	var once sync.Once
	in.stop = func() {
		once.Do(func() {
			in.alive.Store(false)
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("instance %s: %v", id, err)
				}
			case <-time.After(2 * time.Minute):
				t.Errorf("instance %s did not stop within 2 minutes", id)
			}
		})
	}
	t.Cleanup(in.stop)
	select {
	case in.base = <-urls:
		in.alive.Store(true)
		return in
	case err := <-done:
		t.Fatalf("instance %s stopped before it was ready: %v", id, err)
	case <-time.After(3 * time.Minute):
		t.Fatalf("instance %s not ready within 3 minutes", id)
	}
	return nil
}

// testWriter sends an instance's log (errors only) to the test log, but
// not the start-up banner.
type testWriter struct {
	t  *testing.T
	id string
}

func (w testWriter) Write(p []byte) (int, error) {
	if s := strings.TrimSpace(string(p)); strings.Contains(s, "level=ERROR") {
		w.t.Logf("%s: %s", w.id, s)
	}
	return len(p), nil
}

// client talks to whichever instances are alive, and retries a request
// with the same Idempotency-Key after a connection error, a 503 or a 504,
// as a well-behaved client does, until its deadline.
type client struct {
	t         *testing.T
	instances []*instance
	rnd       *rand.Rand
	mu        sync.Mutex
	retries   atomic.Int64
}

func (c *client) pick() *instance {
	c.mu.Lock()
	defer c.mu.Unlock()
	var alive []*instance
	for _, in := range c.instances {
		if in != nil && in.alive.Load() {
			alive = append(alive, in)
		}
	}
	if len(alive) == 0 {
		return nil
	}
	return alive[c.rnd.IntN(len(alive))]
}

func (c *client) add(in *instance) {
	c.mu.Lock()
	c.instances = append(c.instances, in)
	c.mu.Unlock()
}

type answer struct {
	code int
	body map[string]any
}

func (a answer) str(k string) string { s, _ := a.body[k].(string); return s }

func (c *client) do(ctx context.Context, method, path, key, body string) (answer, error) {
	for {
		if err := ctx.Err(); err != nil {
			return answer{}, fmt.Errorf("%s %s (key %s): %w", method, path, key, err)
		}
		in := c.pick()
		if in == nil {
			return answer{}, errors.New("no instance alive")
		}
		req, _ := http.NewRequestWithContext(ctx, method, in.base+path, strings.NewReader(body))
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Prefer", "wait=10")
		}
		if key != "" {
			req.Header.Set("Idempotency-Key", key)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			c.retries.Add(1)
			select { // the instance went away: another one, after a breath
			case <-ctx.Done():
			case <-time.After(50 * time.Millisecond):
			}
			continue
		}
		var m map[string]any
		err = json.NewDecoder(resp.Body).Decode(&m)
		resp.Body.Close()
		if err != nil || resp.StatusCode == http.StatusServiceUnavailable || resp.StatusCode == http.StatusGatewayTimeout {
			c.retries.Add(1)
			continue
		}
		return answer{code: resp.StatusCode, body: m}, nil
	}
}

// settle polls GET /v1/transfers/{id} until done(status), within ctx.
func (c *client) settle(ctx context.Context, id string, done func(ledger.Status) bool) (answer, error) {
	for {
		a, err := c.do(ctx, "GET", "/v1/transfers/"+id, "", "")
		if err != nil {
			return a, err
		}
		if a.code == 200 && done(ledger.Status(a.str("status"))) {
			return a, nil
		}
		select {
		case <-ctx.Done():
			return a, fmt.Errorf("transfer %s did not settle (last %d %v): %w", id, a.code, a.body, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// told records what the service told each client about each transfer.
type told struct {
	mu     sync.Mutex
	status map[string]ledger.Status
	result map[string]ledger.Result
	kinds  map[string]int
}

func (tl *told) set(id string, st ledger.Status, res ledger.Result) {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	tl.status[id], tl.result[id] = st, res
}

func (tl *told) count(kind string) {
	tl.mu.Lock()
	tl.kinds[kind]++
	tl.mu.Unlock()
}

func TestLedgerUnderRebalanceAndStop(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Kafka, Postgres and two instances of the whole service")
	}
	start := time.Now()
	env := testkit.Start(t, testkit.WithWaitTimeout(3*time.Minute))
	for _, topic := range topics() {
		env.CreateTopic(t, topic, 4)
	}
	a := startInstance(t, env, "pay-a")
	t.Logf("environment and instance a ready after %v", time.Since(start).Round(time.Millisecond))
	c := &client{t: t, instances: []*instance{a}, rnd: rand.New(rand.NewPCG(1, 2))}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()

	must := func(a answer, err error, code int, what string) answer {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if a.code != code {
			t.Fatalf("%s: status %d, want %d: %v", what, a.code, code, a.body)
		}
		return a
	}
	// The chart of accounts: a bank that funds, customers that cannot
	// overdraw, merchants, a euro account (another ledger).
	customers := []string{"c-0", "c-1", "c-2", "c-3", "c-4", "c-5"}
	merchants := []string{"m-0", "m-1"}
	for _, id := range []string{"bank"} {
		a, err := c.do(ctx, "POST", "/v1/accounts", "open-"+id, fmt.Sprintf(`{"id": %q, "ledger": 840, "code": 3}`, id))
		must(a, err, 201, "open "+id)
	}
	for _, id := range customers {
		a, err := c.do(ctx, "POST", "/v1/accounts", "open-"+id, fmt.Sprintf(`{"id": %q, "ledger": 840, "code": 1, "flags": {"debits_must_not_exceed_credits": true}}`, id))
		must(a, err, 201, "open "+id)
	}
	for _, id := range merchants {
		a, err := c.do(ctx, "POST", "/v1/accounts", "open-"+id, fmt.Sprintf(`{"id": %q, "ledger": 840, "code": 2}`, id))
		must(a, err, 201, "open "+id)
	}
	{
		a, err := c.do(ctx, "POST", "/v1/accounts", "open-eu", `{"id": "eu", "ledger": 978, "code": 1}`)
		must(a, err, 201, "open eu")
	}
	tl := &told{status: map[string]ledger.Status{}, result: map[string]ledger.Result{}, kinds: map[string]int{}}
	for _, cu := range customers {
		id := "fund-" + cu
		a, err := c.do(ctx, "POST", "/v1/transfers", id, fmt.Sprintf(`{"id": %q, "debit_account_id": "bank", "credit_account_id": %q, "amount": 4000, "ledger": 840, "code": 9}`, id, cu))
		must(a, err, 200, "fund "+cu)
		if a.str("status") != "posted" {
			t.Fatalf("fund %s: %v", cu, a.body)
		}
		tl.set(id, ledger.StatusPosted, ledger.ResultOK)
	}
	t.Logf("accounts opened and funded after %v", time.Since(start).Round(time.Millisecond))

	// The workload: n transfers of nine kinds, by concurrent clients.
	const n = 180
	var wg sync.WaitGroup
	var sent atomic.Int64
	jobs := make(chan int)
	failures := make(chan error, n)
	for w := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rnd := rand.New(rand.NewPCG(uint64(w), 99))
			for i := range jobs {
				if err := transferJob(ctx, c, tl, rnd, i, customers, merchants); err != nil {
					failures <- fmt.Errorf("job %d: %w", i, err)
				}
				sent.Add(1)
			}
		}()
	}
	var b *instance
	for i := range n {
		switch i {
		case n / 3:
			b = startInstance(t, env, "pay-b") // every runtime of b joins its group: rebalances
			c.add(b)
			env.WaitFor(t, "every runtime's partitions split between a and b", func(ctx context.Context) (bool, error) {
				owners, err := claimOwners(ctx, env)
				if err != nil || len(owners) < 7 {
					return false, err
				}
				for _, os := range owners {
					if os["pay-a"] == 0 || os["pay-b"] == 0 {
						return false, nil
					}
				}
				return true, nil
			})
			t.Logf("instance b joined after %d jobs, %v; partitions split", sent.Load(), time.Since(start).Round(time.Millisecond))
		case 2 * n / 3:
			go a.stop() // a's partitions move to b; its in-flight requests are retried on b
			t.Logf("instance a stopping after %d jobs, %v", sent.Load(), time.Since(start).Round(time.Millisecond))
		}
		select {
		case jobs <- i:
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		}
	}
	close(jobs)
	wg.Wait()
	close(failures)
	for err := range failures {
		t.Error(err)
	}
	if t.Failed() {
		t.FailNow()
	}
	a.stop()
	t.Logf("%d jobs done after %v (%d client retries); kinds %v", n, time.Since(start).Round(time.Millisecond), c.retries.Load(), tl.kinds)
	env.WaitFor(t, "instance b owns every partition of every runtime", func(ctx context.Context) (bool, error) {
		owners, err := claimOwners(ctx, env)
		if err != nil {
			return false, err
		}
		for _, os := range owners {
			if len(os) != 1 || os["pay-b"] == 0 {
				return false, nil
			}
		}
		return true, nil
	})

	// Quiescence, then the invariants.
	rep := checkQuiet(ctx, t, env, 3*time.Minute)
	t.Logf("ledger.Check: %s", rep)
	if rep.Transfers != len(tl.status) {
		t.Errorf("%d transfers in the ledger, the clients created %d", rep.Transfers, len(tl.status))
	}

	// Every transfer ended as its client was told.
	reg, _ := ledger.NewRegistry()
	trAgg, _ := ledger.NewTransferAggregate(reg)
	accAgg, _ := ledger.NewAccountAggregate(reg)
	store := eventsource.NewEventStore(env.Pool())
	for id, st := range tl.status {
		tr, _, err := trAgg.Load(ctx, store, id)
		if err != nil {
			t.Fatal(err)
		}
		if tr.Status != st || (st == ledger.StatusFailed && tr.Result != tl.result[id]) {
			t.Errorf("transfer %s is %s (%s); its client was told %s (%s)", id, tr.Status, tr.Result, st, tl.result[id])
		}
	}

	// The balances read model equals the fold of the event store.
	for _, id := range append(append([]string{"bank", "eu"}, customers...), merchants...) {
		acct, _, err := accAgg.Load(ctx, store, id)
		if err != nil {
			t.Fatal(err)
		}
		env.WaitFor(t, "balances read model of "+id, func(ctx context.Context) (bool, error) {
			got, err := c.do(ctx, "GET", "/v1/accounts/"+id, "", "")
			if err != nil || got.code != 200 {
				return false, err
			}
			bal := acct.Balances()
			return got.body["debits_posted"] == float64(bal.DebitsPosted) && got.body["credits_posted"] == float64(bal.CreditsPosted) &&
				got.body["debits_pending"] == float64(bal.DebitsPending) && got.body["credits_pending"] == float64(bal.CreditsPending), nil
		})
	}

	// The statement of each customer: one line per reservation, post, void
	// or refusal, in order, ending on the account's balances; and no
	// pending transfer is left in the pending read model.
	for _, id := range customers {
		acct, version, err := accAgg.Load(ctx, store, id)
		if err != nil {
			t.Fatal(err)
		}
		env.WaitFor(t, "statement of "+id, func(ctx context.Context) (bool, error) {
			got, err := c.do(ctx, "GET", "/v1/accounts/"+id+"/statement?limit=1000", "", "")
			if err != nil || got.code != 200 {
				return false, err
			}
			lines, _ := got.body["lines"].([]any)
			if int64(len(lines)) != version-1 { // every event but AccountOpened
				return false, nil
			}
			for i, l := range lines {
				if v := l.(map[string]any)["version"]; v != float64(i+2) {
					return false, fmt.Errorf("statement of %s: line %d has version %v", id, i, v)
				}
			}
			last := lines[len(lines)-1].(map[string]any)
			bal := acct.Balances()
			if last["debits_posted"] != float64(bal.DebitsPosted) || last["credits_posted"] != float64(bal.CreditsPosted) ||
				last["debits_pending"] != float64(bal.DebitsPending) || last["credits_pending"] != float64(bal.CreditsPending) {
				return false, fmt.Errorf("statement of %s ends on %v, the account is %+v", id, last, bal)
			}
			return true, nil
		})
	}
	env.WaitFor(t, "no pending transfer left", func(ctx context.Context) (bool, error) {
		got, err := c.do(ctx, "GET", "/v1/pending-transfers?within=100000000", "", "")
		if err != nil || got.code != 200 {
			return false, err
		}
		ts, _ := got.body["transfers"].([]any)
		return len(ts) == 0, nil
	})

	// The checker bites: with every instance stopped, a second post of a
	// funding credit written into the event store (what a duplicate
	// delivery without dedupe would do) and a deadline fired twice must be
	// reported, by kind and id.
	b.stop()
	_, err := env.Pool().Exec(ctx, `INSERT INTO onceflow.events (topic, partition, seq, aggregate_type, aggregate_id, version, type, data, command_id)
		SELECT topic, partition, (SELECT max(seq) + 1 FROM onceflow.events e2 WHERE e2.topic = e.topic AND e2.partition = e.partition),
		       aggregate_type, aggregate_id, version + 1, 'payments.CreditPosted', convert_to('{"transfer":"fund-c-0","amount":4000,"pending":4000}', 'UTF8'), 'fund-c-0/post-credit'
		FROM onceflow.events e WHERE aggregate_type = $1 AND aggregate_id = 'c-0' ORDER BY version DESC LIMIT 1`, ledger.AccountType)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := env.Pool().Exec(ctx, `UPDATE payments_deadlines_fired SET fired = 2 WHERE id = (SELECT min(id) FROM payments_deadlines_fired)`); err != nil {
		t.Fatal(err)
	}
	bad, err := ledger.Check(ctx, env.Pool(), "onceflow")
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]string{}
	for _, v := range bad.Violations {
		kinds[v.Kind] = v.ID
	}
	for kind, id := range map[string]string{ledger.VAccountInvariant: "c-0", ledger.VLedgerUnbalanced: "840", ledger.VEffects: "fund-c-0", ledger.VDeadlineTwice: ""} {
		if got, ok := kinds[kind]; !ok || (id != "" && got != id) {
			t.Errorf("Check did not report %s of %q: %s", kind, id, bad)
		}
	}
	t.Logf("done after %v", time.Since(start).Round(time.Millisecond))
}

// checkQuiet runs ledger.Check until it reports no violation (the
// workload's last transfers are settling: their processes not done yet),
// and fails t with the last report if that does not happen within d.
func checkQuiet(ctx context.Context, t *testing.T, env *testkit.Env, d time.Duration) ledger.Report {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		rep, err := ledger.Check(ctx, env.Pool(), "")
		if err != nil {
			t.Fatal(err)
		}
		if rep.OK() {
			return rep
		}
		if time.Now().After(deadline) {
			t.Fatalf("ledger.Check still reports violations after %v: %s", d, rep)
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%v; last report: %s", ctx.Err(), rep)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// claimOwners counts the claimed partitions per consumer group and owner.
func claimOwners(ctx context.Context, env *testkit.Env) (map[string]map[string]int, error) {
	claims, err := env.Store().Claims(ctx, "")
	if err != nil {
		return nil, err
	}
	owners := map[string]map[string]int{}
	for _, c := range claims {
		if owners[c.Group] == nil {
			owners[c.Group] = map[string]int{}
		}
		owners[c.Group][c.Owner]++
	}
	return owners, nil
}

// transferJob runs one client's transfer of kind i%9 and records what the
// service told it.
func transferJob(ctx context.Context, c *client, tl *told, rnd *rand.Rand, i int, customers, merchants []string) error {
	cu := customers[rnd.IntN(len(customers))]
	other := customers[rnd.IntN(len(customers))]
	if other == cu {
		other = merchants[0]
	}
	me := merchants[rnd.IntN(len(merchants))]
	id := fmt.Sprintf("t-%03d", i)
	create := func(debit, credit string, amount int64, pending bool, timeout int) (answer, error) {
		body := fmt.Sprintf(`{"id": %q, "debit_account_id": %q, "credit_account_id": %q, "amount": %d, "ledger": 840, "code": 1, "pending": %t`, id, debit, credit, amount, pending)
		if timeout > 0 {
			body += fmt.Sprintf(`, "timeout_seconds": %d`, timeout)
		}
		return c.do(ctx, "POST", "/v1/transfers", "create-"+id, body+"}")
	}
	// record takes a transfer answer: a settled state is recorded; one the
	// wait did not reach is polled until done.
	record := func(tid string, a answer, done func(ledger.Status) bool) (ledger.Status, error) {
		if a.code != 200 && a.code != 202 {
			return "", fmt.Errorf("transfer %s: status %d: %v", tid, a.code, a.body)
		}
		if !done(ledger.Status(a.str("status"))) {
			var err error
			if a, err = c.settle(ctx, tid, done); err != nil {
				return "", err
			}
		}
		st := ledger.Status(a.str("status"))
		if st.Final() {
			tl.set(tid, st, ledger.Result(a.str("result")))
		}
		return st, nil
	}
	settledOrPending := func(s ledger.Status) bool { return s.Settled() }
	final := func(s ledger.Status) bool { return s.Final() }
	// decide posts or voids a pending transfer; a 409 (the timeout won, or
	// it failed) carries the transfer, which is then followed to its end.
	decide := func(tid, path, body string) error {
		a, err := c.do(ctx, "POST", "/v1/transfers/"+tid+"/"+path, path+"-"+tid, body)
		if err != nil {
			return err
		}
		if a.code == 409 {
			_, err = record(tid, answer{code: 200, body: a.body["transfer"].(map[string]any)}, final)
			return err
		}
		_, err = record(tid, a, final)
		return err
	}

	switch kind := i % 9; kind {
	case 0, 1: // single-phase: to a merchant, to another customer; some overdraw
		tl.count("single")
		credit := me
		if kind == 1 {
			credit = other
		}
		a, err := create(cu, credit, 1+rnd.Int64N(1200), false, 0)
		if err != nil {
			return err
		}
		_, err = record(id, a, final)
		return err
	case 2, 3, 4, 5: // two-phase: post all, post part, void, let it expire
		tl.count("two-phase")
		amount := 1 + rnd.Int64N(900)
		timeout := 30
		if kind == 5 {
			timeout = 2
		}
		a, err := create(cu, me, amount, true, timeout)
		if err != nil {
			return err
		}
		st, err := record(id, a, settledOrPending)
		if err != nil || st != ledger.StatusPending {
			return err // failed (an overdraft): recorded
		}
		switch kind {
		case 2:
			return decide(id, "post", "{}")
		case 3:
			return decide(id, "post", fmt.Sprintf(`{"amount": %d}`, 1+rnd.Int64N(amount)))
		case 4:
			return decide(id, "void", "{}")
		}
		_, err = record(id, answer{code: 202, body: map[string]any{"status": "pending"}}, final)
		return err
	case 6: // an account that does not exist
		tl.count("refused")
		debit, credit := cu, "ghost"
		if rnd.IntN(2) == 0 {
			debit, credit = "ghost", cu
		}
		a, err := create(debit, credit, 10, false, 0)
		if err != nil {
			return err
		}
		_, err = record(id, a, final)
		return err
	case 7: // another ledger
		tl.count("refused")
		a, err := create(cu, "eu", 10, false, 0)
		if err != nil {
			return err
		}
		_, err = record(id, a, final)
		return err
	default: // a card payment: authorize, capture part, refund twice
		tl.count("card")
		auth := fmt.Sprintf(`{"authorization_id": %q, "card_account_id": %q, "merchant_account_id": %q, "amount": %d, "ledger": 840, "timeout_seconds": 30}`,
			id, cu, me, 200+rnd.Int64N(600))
		a, err := c.do(ctx, "POST", "/v1/cards/authorize", "auth-"+id, auth)
		if err != nil {
			return err
		}
		st, err := record(id, a, settledOrPending)
		if err != nil || st != ledger.StatusPending {
			return err
		}
		if err := func() error {
			a, err := c.do(ctx, "POST", "/v1/cards/capture", "capture-"+id, fmt.Sprintf(`{"authorization_id": %q, "amount": 150}`, id))
			if err != nil {
				return err
			}
			_, err = record(id, a, final)
			return err
		}(); err != nil {
			return err
		}
		for r, amount := range []int64{100, 100} { // the second exceeds the 150 captured
			refund := fmt.Sprintf("r-%d", r)
			a, err := c.do(ctx, "POST", "/v1/cards/refund", "refund-"+id+"-"+refund, fmt.Sprintf(`{"authorization_id": %q, "refund_id": %q, "amount": %d}`, id, refund, amount))
			if err != nil {
				return err
			}
			if r == 1 {
				if a.code != 409 || a.str("code") != string(ledger.ResultExceedsRefundableAmount) {
					return fmt.Errorf("refund beyond the capture of %s: %d %v", id, a.code, a.body)
				}
				continue
			}
			if _, err := record(ledger.RefundTransferID(id, refund), a, final); err != nil {
				return err
			}
		}
		return nil
	}
}
