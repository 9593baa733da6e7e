package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/onceflow/onceflow/samples/payments/ledger"
)

// The services the harness can run.
const (
	ServiceInventory = "inventory"
	ServicePayments  = "payments"
)

// Violation kinds of the payments run.
const (
	VLedger        = "ledger"           // ledger.Check found a broken ledger invariant (kind in the detail)
	VTold          = "told_mismatch"    // a transfer's final state differs from what its client was told
	VNeverSettled  = "never_settled"    // a transfer never reached a final state
	VNeverAccepted = "never_accepted"   // a transfer the client created has no definite answer and no state
	VSetup         = "setup_incomplete" // the accounts could not be opened and funded
)

// The payments load: a bank account (no balance flag) funds payer
// accounts that must not go below zero; then single-phase transfers,
// two-phase transfers (posted in full or in part, voided, or left to
// expire) and transfers that exceed the payer's funds, between random
// accounts, at the configured rate, through random instances, with
// retries that reuse the Idempotency-Key.
const (
	payLedger   = 1
	payAccounts = 8
	payFunding  = 1_000_000
)

// payAttempt is one HTTP request of the payments load (payload.jsonl).
type payAttempt struct {
	Key      string    `json:"key"`
	Path     string    `json:"path"`
	Body     string    `json:"body"`
	N        int       `json:"attempt"`
	Slot     int       `json:"slot"`
	Start    time.Time `json:"start"`
	Millis   int64     `json:"ms"`
	HTTP     int       `json:"http,omitempty"`
	Code     string    `json:"code,omitempty"`
	Transfer string    `json:"transfer,omitempty"`
	Status   string    `json:"status,omitempty"`
	Final    bool      `json:"final,omitempty"`
	Result   string    `json:"result,omitempty"`
	Posted   int64     `json:"posted_amount,omitempty"`
	Err      string    `json:"err,omitempty"`
}

type payTold struct {
	status, result string
	posted         int64
}

type payLoad struct {
	d      *deployment
	client *http.Client
	log    *jsonLog

	mu         sync.Mutex
	rng        *rand.Rand
	n          int
	transfers  []string            // every transfer id the client created
	told       map[string]payTold  // the final state each transfer's client was told (last definite answer)
	pending    map[string]struct{} // two-phase transfers that may still be posted or voided
	unresolved []payReq            // requests without a definite answer when the load stopped
	attempts   int
	retries    int
	unknown    int
	dropped    int
}

func newPayLoad(d *deployment, seed int64) (*payLoad, error) {
	log, err := createJSONLog(filepath.Join(d.dir, "payload.jsonl"))
	if err != nil {
		return nil, err
	}
	return &payLoad{d: d, client: &http.Client{}, log: log,
		rng: rand.New(rand.NewPCG(uint64(seed), 0x9a7)), told: map[string]payTold{}, pending: map[string]struct{}{}}, nil
}

func account(i int) string { return fmt.Sprintf("acc-%d", i) }

// send posts body to path with key until a definite answer (at most max
// attempts, or until ctx ends) and returns the last answer.
func (l *payLoad) send(ctx context.Context, path, key, body string, max int) (payAttempt, bool) {
	last := -1
	var a payAttempt
	for n := 1; n <= max; n++ {
		if n > 1 {
			l.mu.Lock()
			l.retries++
			l.mu.Unlock()
			select {
			case <-ctx.Done():
				return a, false
			case <-time.After(time.Duration(200*n) * time.Millisecond):
			}
		}
		ts := l.d.targets()
		if len(ts) == 0 {
			continue
		}
		l.mu.Lock()
		t := ts[l.rng.IntN(len(ts))]
		if t.slot == last && len(ts) > 1 {
			t = ts[l.rng.IntN(len(ts))]
		}
		l.mu.Unlock()
		last = t.slot
		a = l.attempt(ctx, t, path, key, body, n)
		switch {
		case a.HTTP == 200 || a.HTTP == 202 || a.HTTP == 201:
			return a, true
		case a.HTTP >= 400 && a.HTTP < 500 && a.HTTP != 408 && a.HTTP != 429:
			// Definite, also transfer_in_flight (a post or void before the
			// transfer was pending): the ledger refused it, and the same key
			// returns that stored answer forever.
			return a, true
		}
	}
	l.mu.Lock()
	l.unknown++
	l.mu.Unlock()
	return a, false
}

func (l *payLoad) attempt(ctx context.Context, t targetURL, path, key, body string, n int) payAttempt {
	a := payAttempt{Key: key, Path: path, Body: body, N: n, Slot: t.slot, Start: time.Now()}
	l.mu.Lock()
	l.attempts++
	l.mu.Unlock()
	var m struct {
		Code   string `json:"code"`
		ID     string `json:"id"`
		Status string `json:"status"`
		Final  bool   `json:"final"`
		Result string `json:"result"`
		Posted int64  `json:"posted_amount"`
	}
	a.HTTP, a.Err = postJSON(ctx, l.client, t.url+path, key, body, 15*time.Second, &m, "Prefer", "wait=5")
	if a.HTTP != 0 {
		a.Code, a.Transfer, a.Status, a.Final, a.Result, a.Posted = m.Code, m.ID, m.Status, m.Final, m.Result, m.Posted
	}
	a.Millis = time.Since(a.Start).Milliseconds()
	l.log.write(a)
	return a
}

// learn records what a transfer's client was told, when it is final.
func (l *payLoad) learn(a payAttempt) {
	if a.Transfer == "" || !a.Final || (a.HTTP != 200 && a.HTTP != 201) {
		return
	}
	l.mu.Lock()
	l.told[a.Transfer] = payTold{status: a.Status, result: a.Result, posted: a.Posted}
	delete(l.pending, a.Transfer)
	l.mu.Unlock()
}

// setup opens the accounts and funds the payers from the bank.
func (l *payLoad) setup(ctx context.Context) error {
	bodies := []string{`{"id":"bank","ledger":1,"code":1}`}
	for i := range payAccounts {
		bodies = append(bodies, fmt.Sprintf(`{"id":%q,"ledger":1,"code":1,"flags":{"debits_must_not_exceed_credits":true}}`, account(i)))
	}
	for i, b := range bodies {
		if a, ok := l.send(ctx, "/v1/accounts", fmt.Sprintf("open-%d", i), b, 20); !ok || a.HTTP >= 300 {
			return fmt.Errorf("open account %s: %+v", b, a)
		}
	}
	for i := range payAccounts {
		id := fmt.Sprintf("fund-%d", i)
		body := fmt.Sprintf(`{"id":%q,"debit_account_id":"bank","credit_account_id":%q,"amount":%d,"ledger":1,"code":1}`, id, account(i), payFunding)
		l.mu.Lock()
		l.transfers = append(l.transfers, id)
		l.mu.Unlock()
		a, ok := l.send(ctx, "/v1/transfers", "create-"+id, body, 20)
		if !ok || a.HTTP >= 300 {
			return fmt.Errorf("fund %s: %+v", account(i), a)
		}
		l.learn(a)
	}
	return nil
}

// payReq is one request of the load: path, Idempotency-Key, body, and the
// transfer it creates ("" for a post or void) and whether it is pending.
type payReq struct {
	path, key, body string
	creates         string
	pending         bool
}

// next makes the next request.
func (l *payLoad) next() payReq {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.n++
	n := l.n
	if len(l.pending) > 0 && l.rng.IntN(3) == 0 {
		// Settle a pending transfer: post in full or in part, or void
		// (the rest expire).
		ids := make([]string, 0, len(l.pending))
		for id := range l.pending {
			ids = append(ids, id)
		}
		slices.Sort(ids)
		id := ids[l.rng.IntN(len(ids))]
		delete(l.pending, id)
		switch l.rng.IntN(4) {
		case 0:
			return payReq{path: "/v1/transfers/" + id + "/void", key: "void-" + id, body: `{}`}
		case 1:
			return payReq{path: "/v1/transfers/" + id + "/post", key: "post-" + id, body: fmt.Sprintf(`{"amount":%d}`, 1+l.rng.IntN(5))}
		default:
			return payReq{path: "/v1/transfers/" + id + "/post", key: "post-" + id, body: `{}`}
		}
	}
	from, to := l.rng.IntN(payAccounts), l.rng.IntN(payAccounts-1)
	if to >= from {
		to++
	}
	amount := 1 + l.rng.IntN(500)
	id := fmt.Sprintf("t-%d", n)
	pending := ""
	switch r := l.rng.IntN(20); {
	case r < 6:
		id = fmt.Sprintf("p-%d", n)
		pending = fmt.Sprintf(`,"pending":true,"timeout_seconds":%d`, 1+l.rng.IntN(4))
	case r < 8:
		amount = payFunding * 2 // exceeds the payer's credits: fails
	}
	return payReq{path: "/v1/transfers", key: "create-" + id, creates: id, pending: pending != "",
		body: fmt.Sprintf(`{"id":%q,"debit_account_id":%q,"credit_account_id":%q,"amount":%d,"ledger":1,"code":1%s}`,
			id, account(from), account(to), amount, pending)}
}

// sent registers a request handed to a worker (before it is sent): the
// transfer it creates is one the client asked for.
func (l *payLoad) sent(r payReq) {
	if r.creates == "" {
		return
	}
	l.mu.Lock()
	l.transfers = append(l.transfers, r.creates)
	if r.pending {
		l.pending[r.creates] = struct{}{}
	}
	l.mu.Unlock()
}

// run sends at rate per second until ctx ends.
func (l *payLoad) run(ctx context.Context, rate, workers int) {
	dropped := runAtRate(ctx, rate, workers, l.next, func(r payReq) {
		l.sent(r)
		if a, ok := l.send(ctx, r.path, r.key, r.body, 4); ok {
			l.learn(a)
		} else {
			l.mu.Lock()
			l.unresolved = append(l.unresolved, r)
			l.mu.Unlock()
		}
	})
	l.mu.Lock()
	l.dropped += int(dropped)
	l.mu.Unlock()
}

// finalStates reads every transfer through the API until each is final
// (pending ones expire) or ctx ends; it returns the final states.
func (l *payLoad) finalStates(ctx context.Context) (map[string]payTold, []string) {
	final := map[string]payTold{}
	var missing []string
	for {
		missing = missing[:0]
		for _, id := range l.transfers {
			if _, ok := final[id]; ok {
				continue
			}
			ts := l.d.targets()
			if len(ts) == 0 {
				missing = append(missing, id)
				continue
			}
			rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			req, _ := http.NewRequestWithContext(rctx, http.MethodGet, ts[0].url+"/v1/transfers/"+id, nil)
			resp, err := l.client.Do(req)
			if err == nil {
				var m struct {
					Status string `json:"status"`
					Final  bool   `json:"final"`
					Result string `json:"result"`
					Posted int64  `json:"posted_amount"`
				}
				if resp.StatusCode == 200 && json.NewDecoder(resp.Body).Decode(&m) == nil && m.Final {
					final[id] = payTold{status: m.Status, result: m.Result, posted: m.Posted}
				}
				resp.Body.Close()
			}
			cancel()
			if _, ok := final[id]; !ok {
				missing = append(missing, id)
			}
		}
		if len(missing) == 0 || ctx.Err() != nil {
			return final, missing
		}
		select {
		case <-ctx.Done():
			return final, missing
		case <-time.After(time.Second):
		}
	}
}

// runPayments runs the payments service under the nemesis and checks the
// ledger (ledger.Check) and every answer its clients got.
func runPayments(ctx context.Context, d *deployment, rep *Report) error {
	cfg, log := d.cfg, d.log
	load, err := newPayLoad(d, cfg.Seed)
	if err != nil {
		return err
	}
	defer load.log.Close()
	res := CheckResult{ViolationsByKind: map[string]int{}, Outcomes: map[string]int{}, Answers: map[string]int{}, Injected: map[string]int{}}
	fail := func(kind, format string, args ...any) {
		res.Violations = append(res.Violations, Violation{Kind: kind, Detail: fmt.Sprintf(format, args...)})
		res.ViolationsByKind[kind]++
	}
	sctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	err = load.setup(sctx)
	cancel()
	if err != nil {
		fail(VSetup, "%v", err)
	}
	log.Info("accounts open and funded", "err", err)

	nem := &nemesis{d: d, rng: rand.New(rand.NewPCG(uint64(cfg.Seed), 0x7e3e)), kinds: cfg.Faults, log: log}
	phase, stopPhase := context.WithTimeout(ctx, cfg.Duration)
	defer stopPhase()
	var wg sync.WaitGroup
	workers := cfg.Workers
	if workers == 0 {
		workers = max(48, cfg.Rate/2)
	}
	wg.Add(2)
	go func() { defer wg.Done(); load.run(phase, cfg.Rate, workers) }()
	go func() { defer wg.Done(); nem.run(phase) }()
	wg.Wait()
	if ctx.Err() != nil {
		return ctx.Err()
	}
	faults := nem.faults()
	for _, f := range faults {
		rep.Faults[f.Kind]++
		if f.Err != "" {
			rep.FaultErrors++
		}
	}
	_ = writeJSON(filepath.Join(d.dir, "faults.json"), faults)
	log.Info("load and faults stopped; healing", "faults", len(faults))
	if err := d.heal(ctx); err != nil {
		return err
	}

	// Every request without a definite answer is resent with its key until
	// it has one (as a client would), then every transfer settles: the
	// process finishes, pending ones expire.
	drain, stopDrain := context.WithTimeout(ctx, cfg.DrainTimeout)
	defer stopDrain()
	for _, r := range load.unresolved {
		if a, ok := load.send(drain, r.path, r.key, r.body, 30); ok {
			load.learn(a)
		} else {
			fail(VNeverAccepted, "request %s %s got no definite answer in 30 attempts after the faults stopped", r.path, r.key)
		}
	}
	final, missing := load.finalStates(drain)
	rep.Unresolved = len(missing)
	for _, id := range missing {
		fail(VNeverSettled, "transfer %s has no final state after the drain", id)
	}
	for _, s := range d.running() {
		wg.Add(1)
		go func() { defer wg.Done(); d.stopInstance(s) }()
	}
	wg.Wait()

	log.Info("checking the ledger")
	cctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	pool, err := pgxpool.New(cctx, d.adminDSN())
	if err != nil {
		return err
	}
	defer pool.Close()
	lrep, err := ledger.Check(cctx, pool, "onceflow")
	if err != nil {
		return fmt.Errorf("ledger check: %w", err)
	}
	for _, v := range lrep.Violations {
		fail(VLedger, "%s: %s", v.Kind, v.Detail)
	}
	// What each client was told is what the ledger holds.
	for id, t := range load.told {
		f, ok := final[id]
		if !ok {
			continue // reported as never settled
		}
		if f.status != t.status || f.result != t.result || (f.status == "posted" && f.posted != t.posted && t.posted != 0) {
			fail(VTold, "transfer %s: its client was told %s (%s, posted %d), the ledger has %s (%s, posted %d)", id, t.status, t.result, t.posted, f.status, f.result, f.posted)
		}
	}
	for _, f := range final {
		res.Outcomes[f.status]++
	}
	res.Commands, res.Attempts, res.Retries, res.Unknown = len(load.transfers), load.attempts, load.retries, load.unknown
	res.Events = lrep.Events
	res.Aggregates = lrep.Accounts + lrep.Transfers
	res.ReadModels = fmt.Sprintf("ledger: %d accounts, %d transfers %v, %d deadlines fired, %d ledger totals checked; %d answers compared with the ledger",
		lrep.Accounts, lrep.Transfers, lrep.ByStatus, lrep.DeadlinesFired, len(lrep.Ledgers), len(load.told))
	rep.CommandsGenerated = load.n
	rep.DroppedTicks = int64(load.dropped)

	return d.finish(rep, res)
}
