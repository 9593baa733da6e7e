package ledger_test

import (
	"strings"
	"testing"
	"time"

	"github.com/onceflow/onceflow/eventsource/decidertest"
	"github.com/onceflow/onceflow/samples/payments/ledger"
)

type transferScenario = decidertest.Scenario[ledger.Transfer, ledger.TransferCommand, ledger.TransferEvent]

func runTransfer(t *testing.T, sc []transferScenario) {
	t.Helper()
	reg, err := ledger.NewRegistry()
	if err != nil {
		t.Fatal(err)
	}
	decidertest.Run(t, ledger.TransferDecider(), sc, decidertest.WithRegistry(reg), decidertest.WithInvariant(ledger.CheckTransferInvariants))
}

const xfer = "t-1"

var expires = time.Date(2030, 1, 2, 3, 4, 5, 6_000_000, time.UTC)

func create() ledger.CreateTransfer {
	return ledger.CreateTransfer{ID: xfer, DebitAccountID: acct, CreditAccountID: other, Amount: 500, Ledger: usd, Code: 1}
}

func createPending() ledger.CreateTransfer {
	c := create()
	c.Pending, c.Timeout = true, 60
	return c
}

func created(c ledger.CreateTransfer) ledger.TransferCreated {
	return ledger.TransferCreated{ID: c.ID, DebitAccountID: c.DebitAccountID, CreditAccountID: c.CreditAccountID, Amount: c.Amount,
		Ledger: c.Ledger, Code: c.Code, Pending: c.Pending, Timeout: c.Timeout, RefundOf: c.RefundOf}
}

func pendingTransfer(more ...ledger.TransferEvent) []ledger.TransferEvent {
	return append([]ledger.TransferEvent{created(createPending()), ledger.TransferPending{ExpiresAt: expires}}, more...)
}

func postedTransfer(more ...ledger.TransferEvent) []ledger.TransferEvent {
	return append([]ledger.TransferEvent{created(create()), ledger.TransferPosted{Amount: 500}}, more...)
}

func createScenarios() []transferScenario {
	mod := func(f func(*ledger.CreateTransfer)) ledger.CreateTransfer {
		c := create()
		f(&c)
		return c
	}
	existing := []ledger.TransferEvent{created(create())}
	return []transferScenario{
		{Name: "single-phase", When: create(), Then: []ledger.TransferEvent{created(create())}, Check: func(t testing.TB, s ledger.Transfer) {
			if s.Status != ledger.StatusReserving || s.Amount != 500 {
				t.Fatalf("state %+v", s)
			}
		}},
		{Name: "two-phase with a timeout", When: createPending(), Then: []ledger.TransferEvent{created(createPending())}},
		{Name: "two-phase without a timeout", When: mod(func(c *ledger.CreateTransfer) { c.Pending = true }), Then: []ledger.TransferEvent{created(mod(func(c *ledger.CreateTransfer) { c.Pending = true }))}},
		{Name: "largest amount", When: mod(func(c *ledger.CreateTransfer) { c.Amount = 1<<63 - 1 }), Then: []ledger.TransferEvent{created(mod(func(c *ledger.CreateTransfer) { c.Amount = 1<<63 - 1 }))}},
		{Name: "empty id", When: mod(func(c *ledger.CreateTransfer) { c.ID = "" }), WantErr: ledger.ResultIDMustNotBeEmpty},
		{Name: "invalid id", When: mod(func(c *ledger.CreateTransfer) { c.ID = "t 1" }), WantErr: ledger.ResultIDInvalid},
		{Name: "a refund id from a client", When: mod(func(c *ledger.CreateTransfer) { c.ID = "t-0:refund:r-1" }), WantErr: ledger.ResultIDInvalid},
		{Name: "empty debit account", When: mod(func(c *ledger.CreateTransfer) { c.DebitAccountID = "" }), WantErr: ledger.ResultDebitAccountIDMustNotBeEmpty},
		{Name: "empty credit account", When: mod(func(c *ledger.CreateTransfer) { c.CreditAccountID = "" }), WantErr: ledger.ResultCreditAccountIDMustNotBeEmpty},
		{Name: "invalid debit account", When: mod(func(c *ledger.CreateTransfer) { c.DebitAccountID = strings.Repeat("a", 65) }), WantErr: ledger.ResultIDInvalid},
		{Name: "same accounts", When: mod(func(c *ledger.CreateTransfer) { c.CreditAccountID = acct }), WantErr: ledger.ResultAccountsMustBeDifferent,
			WantMsg: `accounts_must_be_different: debit and credit account are both "acc-1"`},
		{Name: "zero amount", When: mod(func(c *ledger.CreateTransfer) { c.Amount = 0 }), WantErr: ledger.ResultAmountMustNotBeZero},
		{Name: "negative amount", When: mod(func(c *ledger.CreateTransfer) { c.Amount = -5 }), WantErr: ledger.ResultAmountMustNotBeNegative},
		{Name: "zero ledger", When: mod(func(c *ledger.CreateTransfer) { c.Ledger = 0 }), WantErr: ledger.ResultLedgerMustNotBeZero},
		{Name: "zero code", When: mod(func(c *ledger.CreateTransfer) { c.Code = 0 }), WantErr: ledger.ResultCodeMustNotBeZero},
		{Name: "timeout on single-phase", When: mod(func(c *ledger.CreateTransfer) { c.Timeout = 5 }), WantErr: ledger.ResultTimeoutReservedForPending},
		{Name: "negative timeout", When: mod(func(c *ledger.CreateTransfer) { c.Pending, c.Timeout = true, -1 }), WantErr: ledger.ResultTimeoutMustNotBeNegative},
		{Name: "timeout beyond u32 seconds", When: mod(func(c *ledger.CreateTransfer) { c.Pending, c.Timeout = true, ledger.MaxTimeout+1 }), WantErr: ledger.ResultOverflowsTimeout},
		{Name: "largest timeout", When: mod(func(c *ledger.CreateTransfer) { c.Pending, c.Timeout = true, ledger.MaxTimeout }),
			Then: []ledger.TransferEvent{created(mod(func(c *ledger.CreateTransfer) { c.Pending, c.Timeout = true, ledger.MaxTimeout }))}},
		{Name: "exists", Given: existing, When: create(), WantErr: ledger.ResultExists, WantMsg: `exists: transfer "t-1" exists with the same fields (status reserving)`},
		{Name: "exists after it failed", Given: append(existing, ledger.TransferFailed{Code: ledger.ResultExceedsCredits}), When: create(), WantErr: ledger.ResultExists},
		{Name: "exists with different flags", Given: existing, When: mod(func(c *ledger.CreateTransfer) { c.Pending = true }), WantErr: ledger.ResultExistsWithDifferentFlags},
		{Name: "exists with different timeout", Given: []ledger.TransferEvent{created(createPending())}, When: func() ledger.CreateTransfer { c := createPending(); c.Timeout = 61; return c }(), WantErr: ledger.ResultExistsWithDifferentTimeout},
		{Name: "exists with different debit account", Given: existing, When: mod(func(c *ledger.CreateTransfer) { c.DebitAccountID = "acc-3" }), WantErr: ledger.ResultExistsWithDifferentDebitAccount},
		{Name: "exists with different credit account", Given: existing, When: mod(func(c *ledger.CreateTransfer) { c.CreditAccountID = "acc-3" }), WantErr: ledger.ResultExistsWithDifferentCreditAcct},
		{Name: "exists with different amount", Given: existing, When: mod(func(c *ledger.CreateTransfer) { c.Amount = 501 }), WantErr: ledger.ResultExistsWithDifferentAmount,
			WantMsg: `exists_with_different_amount: transfer "t-1" exists with amount 500`},
		{Name: "exists with different ledger", Given: existing, When: mod(func(c *ledger.CreateTransfer) { c.Ledger = eur }), WantErr: ledger.ResultExistsWithDifferentLedger},
		{Name: "exists with different code", Given: existing, When: mod(func(c *ledger.CreateTransfer) { c.Code = 2 }), WantErr: ledger.ResultExistsWithDifferentCode},
		{Name: "validation comes before existence", Given: existing, When: mod(func(c *ledger.CreateTransfer) { c.Amount = 0 }), WantErr: ledger.ResultAmountMustNotBeZero},
		{Name: "a refund's transfer", When: ledger.CreateTransfer{ID: "t-0:refund:r-1", DebitAccountID: other, CreditAccountID: acct, Amount: 5, Ledger: usd, Code: 1, RefundOf: "t-0"},
			Then: []ledger.TransferEvent{ledger.TransferCreated{ID: "t-0:refund:r-1", DebitAccountID: other, CreditAccountID: acct, Amount: 5, Ledger: usd, Code: 1, RefundOf: "t-0"}}},
		{Name: "a refund's transfer of another transfer", When: ledger.CreateTransfer{ID: "t-9:refund:r-1", DebitAccountID: other, CreditAccountID: acct, Amount: 5, Ledger: usd, Code: 1, RefundOf: "t-0"}, WantErr: ledger.ResultIDInvalid},
	}
}

// decisionScenarios covers post and void of a pending transfer: the same
// checks, then each its own event.
func decisionScenarios() []transferScenario {
	post := func(amount int64) ledger.PostPendingTransfer {
		return ledger.PostPendingTransfer{ID: xfer, Amount: amount}
	}
	void := ledger.VoidPendingTransfer{ID: xfer}
	var sc []transferScenario
	for _, cmd := range []ledger.TransferCommand{post(0), void} {
		name := "post"
		if cmd == ledger.TransferCommand(void) {
			name = "void"
		}
		for _, c := range []struct {
			what  string
			given []ledger.TransferEvent
			code  ledger.Result
		}{
			{"unknown transfer", nil, ledger.ResultPendingTransferNotFound},
			{"single-phase transfer", []ledger.TransferEvent{created(create())}, ledger.ResultPendingTransferNotPending},
			{"still reserving", []ledger.TransferEvent{created(createPending())}, ledger.ResultTransferInFlight},
			{"failed", []ledger.TransferEvent{created(createPending()), ledger.TransferFailed{Code: ledger.ResultExceedsCredits}}, ledger.ResultPendingTransferFailed},
			{"posting", pendingTransfer(ledger.PostRequested{Amount: 500}), ledger.ResultPendingTransferAlreadyPosted},
			{"posted", pendingTransfer(ledger.PostRequested{Amount: 200}, ledger.TransferPosted{Amount: 200}), ledger.ResultPendingTransferAlreadyPosted},
			{"voiding", pendingTransfer(ledger.VoidRequested{}), ledger.ResultPendingTransferAlreadyVoided},
			{"voided", pendingTransfer(ledger.VoidRequested{}, ledger.TransferVoided{}), ledger.ResultPendingTransferAlreadyVoided},
			{"expiring", pendingTransfer(ledger.TransferExpiring{}), ledger.ResultPendingTransferExpired},
			{"expired", pendingTransfer(ledger.TransferExpiring{}, ledger.TransferExpired{}), ledger.ResultPendingTransferExpired},
		} {
			sc = append(sc, transferScenario{Name: name + " " + c.what, Given: c.given, When: cmd, WantErr: c.code})
		}
	}
	return append(sc,
		transferScenario{Name: "post in full", Given: pendingTransfer(), When: post(0), Then: []ledger.TransferEvent{ledger.PostRequested{Amount: 500}}},
		transferScenario{Name: "post in full, amount given", Given: pendingTransfer(), When: post(500), Then: []ledger.TransferEvent{ledger.PostRequested{Amount: 500}}},
		transferScenario{Name: "post partially", Given: pendingTransfer(), When: post(120), Then: []ledger.TransferEvent{ledger.PostRequested{Amount: 120}}, Check: func(t testing.TB, s ledger.Transfer) {
			if s.Status != ledger.StatusPosting || s.PostAmount != 120 {
				t.Fatalf("state %+v", s)
			}
		}},
		transferScenario{Name: "post more than pending", Given: pendingTransfer(), When: post(501), WantErr: ledger.ResultExceedsPendingTransferAmount,
			WantMsg: "exceeds_pending_transfer_amount: post of 501, the pending amount is 500"},
		transferScenario{Name: "post a negative amount", Given: pendingTransfer(), When: post(-1), WantErr: ledger.ResultAmountMustNotBeNegative},
		transferScenario{Name: "void", Given: pendingTransfer(), When: void, Then: []ledger.TransferEvent{ledger.VoidRequested{}}},
	)
}

func refundScenarios() []transferScenario {
	refund := func(id string, amount int64) ledger.RefundTransfer {
		return ledger.RefundTransfer{ID: xfer, RefundID: id, Amount: amount}
	}
	return []transferScenario{
		{Name: "refund part", Given: postedTransfer(), When: refund("r-1", 200), Then: []ledger.TransferEvent{ledger.RefundRequested{RefundID: "r-1", Amount: 200}}},
		{Name: "refund the rest", Given: postedTransfer(ledger.RefundRequested{RefundID: "r-1", Amount: 200}), When: refund("r-2", 300), Then: []ledger.TransferEvent{ledger.RefundRequested{RefundID: "r-2", Amount: 300}}},
		{Name: "refund more than captured", Given: postedTransfer(ledger.RefundRequested{RefundID: "r-1", Amount: 200}), When: refund("r-2", 301), WantErr: ledger.ResultExceedsRefundableAmount,
			WantMsg: "exceeds_refundable_amount: refund of 301, 300 of the 500 posted is left to refund"},
		{Name: "refund of a partial capture", Given: pendingTransfer(ledger.PostRequested{Amount: 120}, ledger.TransferPosted{Amount: 120}), When: refund("r-1", 121), WantErr: ledger.ResultExceedsRefundableAmount},
		{Name: "refundable again after a failed refund", Given: postedTransfer(ledger.RefundRequested{RefundID: "r-1", Amount: 500}, ledger.RefundReleased{RefundID: "r-1", Amount: 500, Code: ledger.ResultExceedsCredits}),
			When: refund("r-2", 500), Then: []ledger.TransferEvent{ledger.RefundRequested{RefundID: "r-2", Amount: 500}}},
		{Name: "refund exists", Given: postedTransfer(ledger.RefundRequested{RefundID: "r-1", Amount: 200}), When: refund("r-1", 200), WantErr: ledger.ResultExists},
		{Name: "refund exists with different amount", Given: postedTransfer(ledger.RefundRequested{RefundID: "r-1", Amount: 200}), When: refund("r-1", 201), WantErr: ledger.ResultExistsWithDifferentAmount},
		{Name: "refund of an unknown transfer", When: refund("r-1", 1), WantErr: ledger.ResultTransferNotFound},
		{Name: "refund of a pending transfer", Given: pendingTransfer(), When: refund("r-1", 1), WantErr: ledger.ResultTransferNotPosted},
		{Name: "refund of a voided transfer", Given: pendingTransfer(ledger.VoidRequested{}, ledger.TransferVoided{}), When: refund("r-1", 1), WantErr: ledger.ResultTransferNotPosted},
		{Name: "refund zero", Given: postedTransfer(), When: refund("r-1", 0), WantErr: ledger.ResultAmountMustNotBeZero},
		{Name: "refund negative", Given: postedTransfer(), When: refund("r-1", -1), WantErr: ledger.ResultAmountMustNotBeNegative},
		{Name: "refund with an invalid id", Given: postedTransfer(), When: refund("r 1", 1), WantErr: ledger.ResultIDInvalid},
	}
}

func processCommandScenarios() []transferScenario {
	reserving := []ledger.TransferEvent{created(create())}
	reservingPending := []ledger.TransferEvent{created(createPending())}
	return []transferScenario{
		{Name: "mark pending", Given: reservingPending, When: ledger.MarkPending{ID: xfer, ExpiresAt: expires}, Then: []ledger.TransferEvent{ledger.TransferPending{ExpiresAt: expires}}},
		{Name: "mark pending again", Given: pendingTransfer(), When: ledger.MarkPending{ID: xfer, ExpiresAt: expires}},
		{Name: "mark pending after the post", Given: pendingTransfer(ledger.PostRequested{Amount: 500}), When: ledger.MarkPending{ID: xfer, ExpiresAt: expires}},
		{Name: "mark pending a single-phase transfer", Given: reserving, When: ledger.MarkPending{ID: xfer}, WantErr: ledger.ResultInvalidTransition},
		{Name: "expire", Given: pendingTransfer(), When: ledger.ExpirePendingTransfer{ID: xfer}, Then: []ledger.TransferEvent{ledger.TransferExpiring{}}},
		{Name: "expire after the post won", Given: pendingTransfer(ledger.PostRequested{Amount: 500}), When: ledger.ExpirePendingTransfer{ID: xfer}},
		{Name: "expire after the void won", Given: pendingTransfer(ledger.VoidRequested{}, ledger.TransferVoided{}), When: ledger.ExpirePendingTransfer{ID: xfer}},
		{Name: "expire while reserving", Given: reservingPending, When: ledger.ExpirePendingTransfer{ID: xfer}, WantErr: ledger.ResultInvalidTransition},
		{Name: "mark posted single-phase", Given: reserving, When: ledger.MarkPosted{ID: xfer, Amount: 500}, Then: []ledger.TransferEvent{ledger.TransferPosted{Amount: 500}}},
		{Name: "mark posted partial", Given: pendingTransfer(ledger.PostRequested{Amount: 120}), When: ledger.MarkPosted{ID: xfer, Amount: 120}, Then: []ledger.TransferEvent{ledger.TransferPosted{Amount: 120}}},
		{Name: "mark posted again", Given: postedTransfer(), When: ledger.MarkPosted{ID: xfer, Amount: 500}},
		{Name: "mark posted with another amount", Given: pendingTransfer(ledger.PostRequested{Amount: 120}), When: ledger.MarkPosted{ID: xfer, Amount: 500}, WantErr: ledger.ResultInvalidTransition},
		{Name: "mark posted a pending transfer", Given: pendingTransfer(), When: ledger.MarkPosted{ID: xfer, Amount: 500}, WantErr: ledger.ResultInvalidTransition},
		{Name: "mark voided", Given: pendingTransfer(ledger.VoidRequested{}), When: ledger.MarkVoided{ID: xfer}, Then: []ledger.TransferEvent{ledger.TransferVoided{}}},
		{Name: "mark voided again", Given: pendingTransfer(ledger.VoidRequested{}, ledger.TransferVoided{}), When: ledger.MarkVoided{ID: xfer}},
		{Name: "mark voided a posting transfer", Given: pendingTransfer(ledger.PostRequested{Amount: 1}), When: ledger.MarkVoided{ID: xfer}, WantErr: ledger.ResultInvalidTransition},
		{Name: "mark expired", Given: pendingTransfer(ledger.TransferExpiring{}), When: ledger.MarkExpired{ID: xfer}, Then: []ledger.TransferEvent{ledger.TransferExpired{}}},
		{Name: "mark expired again", Given: pendingTransfer(ledger.TransferExpiring{}, ledger.TransferExpired{}), When: ledger.MarkExpired{ID: xfer}},
		{Name: "mark expired a pending transfer", Given: pendingTransfer(), When: ledger.MarkExpired{ID: xfer}, WantErr: ledger.ResultInvalidTransition},
		{Name: "mark failed", Given: reserving, When: ledger.MarkFailed{ID: xfer, Code: ledger.ResultExceedsCredits}, Then: []ledger.TransferEvent{ledger.TransferFailed{Code: ledger.ResultExceedsCredits}},
			Check: func(t testing.TB, s ledger.Transfer) {
				if s.Status != ledger.StatusFailed || s.Result != ledger.ResultExceedsCredits {
					t.Fatalf("state %+v", s)
				}
			}},
		{Name: "mark failed again", Given: append(reserving, ledger.TransferFailed{Code: ledger.ResultExceedsCredits}), When: ledger.MarkFailed{ID: xfer, Code: ledger.ResultExceedsCredits}},
		{Name: "mark failed without a code", Given: reserving, When: ledger.MarkFailed{ID: xfer}, WantErr: ledger.ResultInvalidTransition},
		{Name: "mark failed a posted transfer", Given: postedTransfer(), When: ledger.MarkFailed{ID: xfer, Code: ledger.ResultExceedsCredits}, WantErr: ledger.ResultInvalidTransition},
		{Name: "release a refund", Given: postedTransfer(ledger.RefundRequested{RefundID: "r-1", Amount: 200}), When: ledger.ReleaseRefund{ID: xfer, RefundID: "r-1", Code: ledger.ResultExceedsCredits},
			Then: []ledger.TransferEvent{ledger.RefundReleased{RefundID: "r-1", Amount: 200, Code: ledger.ResultExceedsCredits}}},
		{Name: "release a refund again", Given: postedTransfer(ledger.RefundRequested{RefundID: "r-1", Amount: 200}, ledger.RefundReleased{RefundID: "r-1", Amount: 200}), When: ledger.ReleaseRefund{ID: xfer, RefundID: "r-1"}},
		{Name: "release an unknown refund", Given: postedTransfer(), When: ledger.ReleaseRefund{ID: xfer, RefundID: "r-1"}, WantErr: ledger.ResultInvalidTransition},
	}
}

func TestCreateTransfer(t *testing.T)            { runTransfer(t, createScenarios()) }
func TestPostAndVoidPending(t *testing.T)        { runTransfer(t, decisionScenarios()) }
func TestRefund(t *testing.T)                    { runTransfer(t, refundScenarios()) }
func TestProcessCommandsOnTransfer(t *testing.T) { runTransfer(t, processCommandScenarios()) }

// Every result code the deciders can produce is exercised above, as a
// rejection or as the code of a refusal event: a new code needs a test.
func TestEveryResultCodeIsTested(t *testing.T) {
	seen := map[ledger.Result]bool{}
	note := func(err error, evs ...any) {
		if c := ledger.CodeOf(err); c != "" {
			seen[c] = true
		}
		for _, e := range evs {
			switch e := e.(type) {
			case ledger.DebitRefused:
				seen[e.Code] = true
			case ledger.CreditRefused:
				seen[e.Code] = true
			}
		}
	}
	for _, sets := range [][]accountScenario{openScenarios(), closeScenarios(), reserveDebitScenarios(), reserveCreditScenarios(), postVoidScenarios()} {
		for _, sc := range sets {
			evs := make([]any, len(sc.Then))
			for i, e := range sc.Then {
				evs[i] = e
			}
			note(sc.WantErr, evs...)
		}
	}
	for _, sets := range [][]transferScenario{createScenarios(), decisionScenarios(), refundScenarios(), processCommandScenarios()} {
		for _, sc := range sets {
			note(sc.WantErr)
		}
	}
	for _, r := range ledger.Results() {
		if r != ledger.ResultOK && !seen[r] {
			t.Errorf("result code %s has no decider test", r)
		}
	}
}

func TestParseResult(t *testing.T) {
	_, err := ledger.TransferDecide(ledger.InitialTransfer(), ledger.PostPendingTransfer{ID: "nope"})
	code, detail, ok := ledger.ParseResult(err.Error())
	if !ok || code != ledger.ResultPendingTransferNotFound || detail != `no transfer "nope"` {
		t.Fatalf("ParseResult(%q) = %q, %q, %t", err, code, detail, ok)
	}
	if _, _, ok := ledger.ParseResult("insufficient stock: 3"); ok {
		t.Fatal("parsed an unknown code")
	}
	if code, _, ok := ledger.ParseResult("exists"); !ok || code != ledger.ResultExists {
		t.Fatal("a bare code")
	}
}
