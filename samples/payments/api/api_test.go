package api_test

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/onceflow/onceflow/samples/payments/api"
)

type harness struct {
	t   *testing.T
	f   *fakeLedger
	w   *fakeWatcher
	srv *api.Server
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	f := newFake()
	w := &fakeWatcher{watching: make(chan string, 16), subs: map[string]chan struct{}{}}
	srv, err := api.New(api.Config{Accounts: fakeSender{f}, Transfers: fakeSender{f}, Reader: f, Keys: &api.MemKeys{},
		ReadModels: fakeReadModels{f}, Watcher: w, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	return &harness{t: t, f: f, w: w, srv: srv}
}

// fakeWatcher reports on watching when a request starts waiting for a
// transfer, and wakes it on notify.
type fakeWatcher struct {
	mu       sync.Mutex
	watching chan string
	subs     map[string]chan struct{}
}

func (w *fakeWatcher) Watch(id string) (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	w.mu.Lock()
	w.subs[id] = ch
	w.mu.Unlock()
	select {
	case w.watching <- id:
	default:
	}
	return ch, func() {
		w.mu.Lock()
		delete(w.subs, id)
		w.mu.Unlock()
	}
}

func (w *fakeWatcher) notify(id string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if ch, ok := w.subs[id]; ok {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

type resp struct {
	code   int
	header http.Header
	body   map[string]any
	raw    string
}

func (h *harness) do(method, path, key, body string, headers ...string) resp {
	h.t.Helper()
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	rec := httptest.NewRecorder()
	h.srv.ServeHTTP(rec, req)
	raw, _ := io.ReadAll(rec.Body)
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		h.t.Fatalf("%s %s: %d, body not a JSON object: %q", method, path, rec.Code, raw)
	}
	return resp{code: rec.Code, header: rec.Header(), body: m, raw: string(raw)}
}

func (h *harness) expect(r resp, code int, fields ...any) {
	h.t.Helper()
	if r.code != code {
		h.t.Fatalf("status %d, want %d: %s", r.code, code, r.raw)
	}
	for i := 0; i+1 < len(fields); i += 2 {
		k := fields[i].(string)
		want := fields[i+1]
		if n, ok := want.(int); ok {
			want = float64(n)
		}
		if got := lookup(r.body, k); got != want {
			h.t.Fatalf("%s = %v (%T), want %v: %s", k, got, got, want, r.raw)
		}
	}
}

// lookup reads "a.b" from nested objects.
func lookup(m map[string]any, path string) any {
	var v any = m
	for _, p := range strings.Split(path, ".") {
		o, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = o[p]
	}
	return v
}

// accounts opens the sample's accounts: alice (no overdraft) funded 1000
// by bank, and shop.
func (h *harness) accounts() {
	h.t.Helper()
	h.expect(h.do("POST", "/v1/accounts", "open-bank", `{"id": "bank", "ledger": 840, "code": 3}`), 201, "id", "bank", "request_result", "ok")
	h.expect(h.do("POST", "/v1/accounts", "open-alice", `{"id": "alice", "ledger": 840, "code": 1, "flags": {"debits_must_not_exceed_credits": true}}`), 201,
		"flags.debits_must_not_exceed_credits", true)
	h.expect(h.do("POST", "/v1/accounts", "open-shop", `{"id": "shop", "ledger": 840, "code": 2}`), 201)
	h.expect(h.do("POST", "/v1/transfers", "fund-alice", `{"id": "fund-alice", "debit_account_id": "bank", "credit_account_id": "alice", "amount": 1000, "ledger": 840, "code": 9}`,
		"Prefer", "wait=5"), 200, "status", "posted", "result", "ok")
}

func TestOpenAccountAndExists(t *testing.T) {
	h := newHarness(t)
	h.accounts()
	h.expect(h.do("GET", "/v1/accounts/alice", "", ""), 200, "credits_posted", 1000, "debits_posted", 0, "ledger", 840)
	// The same account under a new key: TigerBeetle's "exists", not an error.
	h.expect(h.do("POST", "/v1/accounts", "open-alice-2", `{"id": "alice", "ledger": 840, "code": 1, "flags": {"debits_must_not_exceed_credits": true}}`), 200,
		"request_result", "exists", "credits_posted", 1000)
	h.expect(h.do("POST", "/v1/accounts", "open-alice-3", `{"id": "alice", "ledger": 978, "code": 1, "flags": {"debits_must_not_exceed_credits": true}}`), 409,
		"code", "exists_with_different_ledger", "account.ledger", 840)
	h.expect(h.do("POST", "/v1/accounts", "open-alice-4", `{"id": "alice", "ledger": 840, "code": 1}`), 409, "code", "exists_with_different_flags")
	h.expect(h.do("GET", "/v1/accounts/nobody", "", ""), 404, "code", "account_not_found")
	// Close: refused while a transfer is pending on it.
	h.expect(h.do("POST", "/v1/transfers", "p1", `{"id": "p1", "debit_account_id": "alice", "credit_account_id": "shop", "amount": 10, "ledger": 840, "code": 1, "pending": true}`,
		"Prefer", "wait=5"), 200, "status", "pending")
	h.expect(h.do("POST", "/v1/accounts/alice/close", "close-1", ""), 409, "code", "account_has_pending_transfers")
	h.expect(h.do("POST", "/v1/transfers/p1/void", "void-p1", "", "Prefer", "wait=5"), 200, "status", "voided")
	h.expect(h.do("POST", "/v1/accounts/alice/close", "close-2", "{}"), 200, "closed", true)
	h.expect(h.do("POST", "/v1/accounts/alice/close", "close-3", ""), 409, "code", "account_already_closed")
	h.expect(h.do("POST", "/v1/accounts/nobody/close", "close-4", ""), 404, "code", "account_not_found")
	// A closed account refuses new transfers: the transfer fails with the code.
	h.expect(h.do("POST", "/v1/transfers", "t-closed", `{"id": "t-closed", "debit_account_id": "alice", "credit_account_id": "shop", "amount": 10, "ledger": 840, "code": 1}`,
		"Prefer", "wait=5"), 200, "status", "failed", "result", "debit_account_already_closed", "final", true)
}

func TestIdempotencyKey(t *testing.T) {
	h := newHarness(t)
	h.accounts()
	body := `{"id": "t-1", "debit_account_id": "alice", "credit_account_id": "shop", "amount": 300, "ledger": 840, "code": 1}`
	first := h.do("POST", "/v1/transfers", "k-1", body, "Prefer", "wait=5")
	h.expect(first, 200, "status", "posted", "duplicate", false, "idempotency_key", "k-1")
	sent := h.f.sent
	// The same key and body (spacing aside): the stored answer, nothing applied.
	again := h.do("POST", "/v1/transfers", "k-1", strings.ReplaceAll(body, " ", ""), "Prefer", "wait=5")
	h.expect(again, 200, "status", "posted", "duplicate", true, "command_id", first.body["command_id"])
	if h.f.sent != sent {
		t.Fatalf("a retry handled %d more commands", h.f.sent-sent)
	}
	// The same key with another body: 422, not applied.
	r := h.do("POST", "/v1/transfers", "k-1", strings.Replace(body, "300", "301", 1))
	h.expect(r, 422, "code", "idempotency_key_reused", "field", "Idempotency-Key")
	if !strings.Contains(r.body["error"].(string), `"k-1"`) || !strings.Contains(r.body["error"].(string), "POST /v1/transfers") {
		t.Fatalf("the 422 must name the key and the first request: %s", r.raw)
	}
	// ... or another transfer id (another aggregate).
	h.expect(h.do("POST", "/v1/transfers", "k-1", strings.Replace(body, "t-1", "t-2", 1)), 422, "code", "idempotency_key_reused")
	if h.f.sent != sent {
		t.Fatalf("a reused key applied %d commands", h.f.sent-sent)
	}
	// The same key on another operation is another request scope.
	h.expect(h.do("POST", "/v1/accounts", "k-1", `{"id": "carol", "ledger": 840, "code": 1}`), 201)
	// ... but on the same operation and another path it is reused.
	h.expect(h.do("POST", "/v1/accounts/carol/close", "c-1", ""), 200)
	h.expect(h.do("POST", "/v1/accounts/shop/close", "c-1", ""), 422, "code", "idempotency_key_reused")
	// A missing key on POST: 400 naming the header.
	h.expect(h.do("POST", "/v1/transfers", "", body), 400, "code", "missing_idempotency_key", "field", "Idempotency-Key")
	h.expect(h.do("POST", "/v1/transfers", "has space", body), 400, "code", "invalid_idempotency_key")
	h.expect(h.do("POST", "/v1/transfers", strings.Repeat("k", 129), body), 400, "code", "invalid_idempotency_key")
	// A new key for the same transfer: "exists" with the stored state.
	h.expect(h.do("POST", "/v1/transfers", "k-2", body), 200, "request_result", "exists", "status", "posted", "duplicate", false)
	h.expect(h.do("POST", "/v1/transfers", "k-3", strings.Replace(body, "300", "301", 1)), 409,
		"code", "exists_with_different_amount", "transfer.amount", 300, "transfer.status", "posted")
	h.expect(h.do("GET", "/v1/accounts/alice", "", ""), 200, "debits_posted", 300, "credits_posted", 1000)
}

func TestValidationNamesTheField(t *testing.T) {
	h := newHarness(t)
	base := map[string]string{
		"id": `"t-1"`, "debit_account_id": `"a"`, "credit_account_id": `"b"`, "amount": `10`, "ledger": `840`, "code": `1`,
	}
	body := func(field, value string) string {
		parts := []string{}
		for _, k := range []string{"id", "debit_account_id", "credit_account_id", "amount", "ledger", "code"} {
			v := base[k]
			if k == field {
				if value == "" {
					continue
				}
				v = value
			}
			parts = append(parts, `"`+k+`": `+v)
		}
		if field != "" && base[field] == "" {
			parts = append(parts, `"`+field+`": `+value)
		}
		return "{" + strings.Join(parts, ", ") + "}"
	}
	for _, tc := range []struct {
		field, value, wantCode, wantField string
	}{
		{"amount", "", "missing_field", "amount"},
		{"amount", "0", "invalid_field", "amount"},
		{"amount", "-5", "invalid_field", "amount"},
		{"amount", "1.5", "invalid_field", "amount"},
		{"amount", `"10"`, "invalid_field", "amount"},
		{"amount", "9223372036854775808", "invalid_field", "amount"},
		{"amount", "1e3", "invalid_field", "amount"},
		{"ledger", "0", "invalid_field", "ledger"},
		{"ledger", "4294967296", "invalid_field", "ledger"},
		{"ledger", "", "missing_field", "ledger"},
		{"code", "70000", "invalid_field", "code"},
		{"code", "0", "invalid_field", "code"},
		{"id", `"t 1"`, "invalid_field", "id"},
		{"id", `"t:refund:x"`, "invalid_field", "id"},
		{"id", "", "missing_field", "id"},
		{"debit_account_id", `""`, "invalid_field", "debit_account_id"},
		{"credit_account_id", `"a"`, "invalid_field", "credit_account_id"},
		{"timeout_seconds", "30", "invalid_field", "timeout_seconds"},
		{"pending", `"yes"`, "invalid_field", "pending"},
		{"colour", `"red"`, "unknown_field", "colour"},
	} {
		r := h.do("POST", "/v1/transfers", "key-"+tc.field+tc.value, body(tc.field, tc.value))
		if r.code != 400 || r.body["code"] != tc.wantCode || r.body["field"] != tc.wantField {
			t.Errorf("%s=%s: %d %s, want 400 %s naming %s", tc.field, tc.value, r.code, r.raw, tc.wantCode, tc.wantField)
		}
	}
	if h.f.sent != 0 {
		t.Fatalf("invalid requests sent %d commands", h.f.sent)
	}
	// The amount's message says what is allowed.
	r := h.do("POST", "/v1/transfers", "k", body("amount", "0"))
	if !strings.Contains(r.body["error"].(string), "between 1 and 9223372036854775807") {
		t.Fatalf("amount message: %s", r.raw)
	}
	// Bodies that are not one JSON object.
	h.expect(h.do("POST", "/v1/transfers", "k", `{"id": `), 400, "code", "invalid_json")
	h.expect(h.do("POST", "/v1/transfers", "k", `[1]`), 400, "code", "invalid_json")
	h.expect(h.do("POST", "/v1/transfers", "k", body("", "")+` {}`), 400, "code", "trailing_data")
	h.expect(h.do("POST", "/v1/transfers", "k", body("", ""), "Content-Type", "text/plain"), 415, "code", "unsupported_media_type")
	h.expect(h.do("POST", "/v1/transfers", "k", `{"id": "`+strings.Repeat("x", api.MaxBodyBytes)+`"}`), 413, "code", "body_too_large")
	h.expect(h.do("POST", "/v1/transfers", "k", body("", ""), "Prefer", "wait=soon"), 400, "field", "Prefer")
	h.expect(h.do("POST", "/v1/accounts", "k", `{"id": "a", "ledger": 840, "code": 1, "flags": {"debits_must_not_exceed_credits": true, "credits_must_not_exceed_debits": true}}`),
		400, "field", "flags")
	h.expect(h.do("POST", "/v1/accounts", "k", `{"id": "a", "ledger": 840, "code": 1, "flags": 3}`), 400, "field", "flags")
	h.expect(h.do("POST", "/v1/transfers/t%201/post", "k", ""), 400, "field", "id")
	h.expect(h.do("POST", "/v1/transfers/t-1/post", "k", `{"amount": 0}`), 400, "field", "amount")
	h.expect(h.do("GET", "/v1/accounts/a/statement?limit=0", "", ""), 400, "field", "limit")
	h.expect(h.do("GET", "/v1/accounts/a/statement?page=2", "", ""), 400, "code", "unknown_parameter")
	h.expect(h.do("DELETE", "/v1/transfers/t-1", "", ""), 405, "code", "method_not_allowed")
	h.expect(h.do("GET", "/v2/nothing", "", ""), 404, "code", "not_found")
	h.expect(h.do("POST", "/v1/cards/authorize", "k", `{"authorization_id": "a1", "card_account_id": "c", "merchant_account_id": "m", "amount": 5}`), 400, "code", "missing_field", "field", "ledger")
	if h.f.sent != 0 {
		t.Fatalf("invalid requests sent %d commands", h.f.sent)
	}
}

func TestTransfersAsynchronous(t *testing.T) {
	h := newHarness(t)
	h.accounts()
	h.f.manual = true
	// No wait: 202 with the state as it is.
	r := h.do("POST", "/v1/transfers", "k-1", `{"id": "t-1", "debit_account_id": "alice", "credit_account_id": "shop", "amount": 100, "ledger": 840, "code": 1, "pending": true, "timeout_seconds": 60}`)
	h.expect(r, 202, "status", "reserving", "final", false)
	if r.header.Get("Location") != "/v1/transfers/t-1" {
		t.Fatalf("Location %q", r.header.Get("Location"))
	}
	// A post before the reservations are made: transfer_in_flight, retry later.
	r = h.do("POST", "/v1/transfers/t-1/post", "post-early", "")
	h.expect(r, 409, "code", "transfer_in_flight", "transfer.status", "reserving")
	if r.header.Get("Retry-After") == "" {
		t.Fatal("no Retry-After on transfer_in_flight")
	}
	// A wait ends when the process moves the transfer along: once the
	// request waits, the process runs and the watcher wakes it.
	for len(h.w.watching) > 0 {
		<-h.w.watching
	}
	go func() {
		<-h.w.watching
		h.f.drain()
		h.w.notify("t-1")
	}()
	h.expect(h.do("POST", "/v1/transfers", "k-1", `{"id": "t-1", "debit_account_id": "alice", "credit_account_id": "shop", "amount": 100, "ledger": 840, "code": 1, "pending": true, "timeout_seconds": 60}`,
		"Prefer", "wait=10"), 200, "status", "pending", "duplicate", true)
	h.expect(h.do("GET", "/v1/accounts/alice", "", ""), 200, "debits_pending", 100)
	// A wait that runs out: 202.
	h.expect(h.do("POST", "/v1/transfers/t-1/post", "post-1", `{"amount": 40}`, "Prefer", "wait=1"), 202, "status", "posting", "posted_amount", 40)
	h.f.drain()
	h.expect(h.do("GET", "/v1/transfers/t-1", "", ""), 200, "status", "posted", "posted_amount", 40, "final", true, "result", "ok")
	h.expect(h.do("GET", "/v1/accounts/alice", "", ""), 200, "debits_pending", 0, "debits_posted", 40)
	h.expect(h.do("GET", "/v1/accounts/shop", "", ""), 200, "credits_pending", 0, "credits_posted", 40)
	h.expect(h.do("GET", "/v1/transfers/nope", "", ""), 404, "code", "transfer_not_found")
}

func TestTwoPhaseResultCodes(t *testing.T) {
	h := newHarness(t)
	h.accounts()
	create := func(id, amount string) resp {
		return h.do("POST", "/v1/transfers", "c-"+id, `{"id": "`+id+`", "debit_account_id": "alice", "credit_account_id": "shop", "amount": `+amount+`, "ledger": 840, "code": 1, "pending": true, "timeout_seconds": 30}`,
			"Prefer", "wait=5")
	}
	h.expect(create("p-1", "500"), 200, "status", "pending")
	h.expect(h.do("POST", "/v1/transfers/p-1/post", "post-1", `{"amount": 501}`), 409, "code", "exceeds_pending_transfer_amount", "transfer.status", "pending")
	h.expect(h.do("POST", "/v1/transfers/p-1/post", "post-2", ``, "Prefer", "wait=5"), 200, "status", "posted", "posted_amount", 500)
	h.expect(h.do("POST", "/v1/transfers/p-1/post", "post-3", ``), 409, "code", "pending_transfer_already_posted")
	h.expect(h.do("POST", "/v1/transfers/p-1/void", "void-1", ``), 409, "code", "pending_transfer_already_posted")
	h.expect(h.do("POST", "/v1/transfers/nope/void", "void-2", ``), 404, "code", "pending_transfer_not_found")
	// Overdraft: the 600 left cannot cover 700; the transfer fails with the code.
	h.expect(create("p-2", "700"), 200, "status", "failed", "result", "exceeds_credits", "final", true)
	h.expect(h.do("POST", "/v1/transfers/p-2/post", "post-4", ``), 409, "code", "pending_transfer_failed")
	// Expiry.
	h.expect(create("p-3", "100"), 200, "status", "pending")
	r := h.do("GET", "/v1/pending-transfers?within=60", "", "")
	if ts := r.body["transfers"].([]any); len(ts) != 1 || ts[0].(map[string]any)["id"] != "p-3" {
		t.Fatalf("expiring: %s", r.raw)
	}
	h.f.expireAll()
	h.expect(h.do("GET", "/v1/transfers/p-3", "", ""), 200, "status", "expired", "final", true)
	h.expect(h.do("POST", "/v1/transfers/p-3/void", "void-3", ``), 409, "code", "pending_transfer_expired")
	h.expect(h.do("GET", "/v1/accounts/alice", "", ""), 200, "debits_pending", 0, "debits_posted", 500)
	// Single-phase transfers cannot be posted.
	h.expect(h.do("POST", "/v1/transfers/fund-alice/post", "post-5", ``), 409, "code", "pending_transfer_not_pending")
}

func TestCardFlow(t *testing.T) {
	h := newHarness(t)
	h.accounts()
	auth := `{"authorization_id": "auth-1", "card_account_id": "alice", "merchant_account_id": "shop", "amount": 800, "ledger": 840}`
	r := h.do("POST", "/v1/cards/authorize", "a-1", auth, "Prefer", "wait=5")
	h.expect(r, 200, "id", "auth-1", "status", "pending", "pending", true, "timeout_seconds", api.DefaultAuthorizationTimeout, "code", api.DefaultCardCode)
	h.expect(h.do("POST", "/v1/cards/refund", "r-0", `{"authorization_id": "auth-1", "refund_id": "r-0", "amount": 1}`), 409, "code", "transfer_not_posted")
	h.expect(h.do("POST", "/v1/cards/capture", "cap-1", `{"authorization_id": "auth-1", "amount": 600}`, "Prefer", "wait=5"), 200, "status", "posted", "posted_amount", 600)
	h.expect(h.do("POST", "/v1/cards/refund", "r-1", `{"authorization_id": "auth-1", "refund_id": "r-1", "amount": 250}`, "Prefer", "wait=5"), 200,
		"id", "auth-1:refund:r-1", "status", "posted", "refund_of", "auth-1", "debit_account_id", "shop", "credit_account_id", "alice")
	h.expect(h.do("POST", "/v1/cards/refund", "r-2", `{"authorization_id": "auth-1", "refund_id": "r-2", "amount": 351}`), 409,
		"code", "exceeds_refundable_amount", "transfer.refunded", 250)
	h.expect(h.do("POST", "/v1/cards/refund", "r-3", `{"authorization_id": "auth-1", "refund_id": "r-2", "amount": 350}`, "Prefer", "wait=5"), 200, "status", "posted")
	h.expect(h.do("POST", "/v1/cards/refund", "r-4", `{"authorization_id": "auth-1", "refund_id": "r-2", "amount": 350}`), 200, "request_result", "exists")
	h.expect(h.do("POST", "/v1/cards/refund", "r-5", `{"authorization_id": "nope", "refund_id": "r-1", "amount": 1}`), 404, "code", "transfer_not_found")
	h.expect(h.do("GET", "/v1/transfers/auth-1:refund:r-1", "", ""), 200, "status", "posted")
	// Alice: 1000 in, 600 captured, 600 refunded.
	h.expect(h.do("GET", "/v1/accounts/alice", "", ""), 200, "debits_posted", 600, "credits_posted", 1600, "debits_pending", 0)
	h.expect(h.do("GET", "/v1/transfers/auth-1", "", ""), 200, "refunded", 600, "refunds.r-1.transfer_id", "auth-1:refund:r-1")
	// Void of a captured authorization.
	h.expect(h.do("POST", "/v1/cards/void", "v-1", `{"authorization_id": "auth-1"}`), 409, "code", "pending_transfer_already_posted")
	h.expect(h.do("POST", "/v1/cards/authorize", "a-2", strings.Replace(auth, "auth-1", "auth-2", 1), "Prefer", "wait=5"), 200, "status", "pending")
	h.expect(h.do("POST", "/v1/cards/void", "v-2", `{"authorization_id": "auth-2"}`, "Prefer", "wait=5"), 200, "status", "voided")
}

func TestOutcomeUnknownIs504(t *testing.T) {
	h := newHarness(t)
	h.f.unknown = true
	r := h.do("POST", "/v1/accounts", "k-9", `{"id": "bank", "ledger": 840, "code": 3}`)
	h.expect(r, 504, "code", "outcome_unknown", "idempotency_key", "k-9")
	if !strings.Contains(r.body["error"].(string), `Idempotency-Key: k-9`) {
		t.Fatalf("the 504 must say how to retry: %s", r.raw)
	}
}

func TestPreferWaitCapped(t *testing.T) {
	h := newHarness(t)
	h.accounts()
	start := time.Now()
	h.expect(h.do("POST", "/v1/transfers", "k", `{"id": "t-9", "debit_account_id": "alice", "credit_account_id": "shop", "amount": 1, "ledger": 840, "code": 1}`,
		"Prefer", "respond-async, wait=100000"), 200, "status", "posted")
	if time.Since(start) > 10*time.Second {
		t.Fatal("a settled transfer must not wait")
	}
}
