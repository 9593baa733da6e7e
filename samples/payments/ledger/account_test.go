package ledger_test

import (
	"math"
	"testing"

	"github.com/onceflow/onceflow/eventsource/decidertest"
	"github.com/onceflow/onceflow/samples/payments/ledger"
)

type accountScenario = decidertest.Scenario[ledger.Account, ledger.AccountCommand, ledger.AccountEvent]

const (
	acct  = "acc-1"
	other = "acc-2"
	usd   = 840
	eur   = 978
)

func runAccount(t *testing.T, sc []accountScenario) {
	t.Helper()
	reg, err := ledger.NewRegistry()
	if err != nil {
		t.Fatal(err)
	}
	decidertest.Run(t, ledger.AccountDecider(), sc, decidertest.WithRegistry(reg), decidertest.WithInvariant(ledger.CheckAccountInvariants))
}

var (
	opened        = ledger.AccountOpened{Ledger: usd, Code: 1}
	openedNoDebit = ledger.AccountOpened{Ledger: usd, Code: 1, Flags: ledger.AccountFlags{DebitsMustNotExceedCredits: true}}
	openedNoCred  = ledger.AccountOpened{Ledger: usd, Code: 2, Flags: ledger.AccountFlags{CreditsMustNotExceedDebits: true}}
)

// funded is an account that forbids overdrafts, credited 100.
func funded() []ledger.AccountEvent {
	return []ledger.AccountEvent{openedNoDebit, ledger.CreditReserved{Transfer: "t-0", Amount: 100, Ledger: usd}, ledger.CreditPosted{Transfer: "t-0", Amount: 100, Pending: 100}}
}

func with(evs []ledger.AccountEvent, more ...ledger.AccountEvent) []ledger.AccountEvent {
	return append(append([]ledger.AccountEvent(nil), evs...), more...)
}

func openScenarios() []accountScenario {
	open := ledger.OpenAccount{ID: acct, Ledger: usd, Code: 1}
	return []accountScenario{
		{Name: "open", When: open, Then: []ledger.AccountEvent{opened}},
		{Name: "open with a flag", When: ledger.OpenAccount{ID: acct, Ledger: usd, Code: 1, Flags: ledger.AccountFlags{DebitsMustNotExceedCredits: true}}, Then: []ledger.AccountEvent{openedNoDebit}},
		{Name: "exists", Given: []ledger.AccountEvent{opened}, When: open, WantErr: ledger.ResultExists, WantMsg: `exists: account "acc-1" exists with the same fields`},
		{Name: "exists when closed", Given: []ledger.AccountEvent{opened, ledger.AccountClosed{}}, When: open, WantErr: ledger.ResultExists},
		{Name: "exists with different flags", Given: []ledger.AccountEvent{opened}, When: ledger.OpenAccount{ID: acct, Ledger: usd, Code: 1, Flags: ledger.AccountFlags{CreditsMustNotExceedDebits: true}}, WantErr: ledger.ResultExistsWithDifferentFlags},
		{Name: "exists with different ledger", Given: []ledger.AccountEvent{opened}, When: ledger.OpenAccount{ID: acct, Ledger: eur, Code: 1}, WantErr: ledger.ResultExistsWithDifferentLedger, WantMsg: `exists_with_different_ledger: account "acc-1" exists on ledger 840`},
		{Name: "exists with different code", Given: []ledger.AccountEvent{opened}, When: ledger.OpenAccount{ID: acct, Ledger: usd, Code: 7}, WantErr: ledger.ResultExistsWithDifferentCode},
		{Name: "empty id", When: ledger.OpenAccount{Ledger: usd, Code: 1}, WantErr: ledger.ResultIDMustNotBeEmpty},
		{Name: "invalid id", When: ledger.OpenAccount{ID: "acc 1", Ledger: usd, Code: 1}, WantErr: ledger.ResultIDInvalid},
		{Name: "id with the refund separator", When: ledger.OpenAccount{ID: "a:refund:b", Ledger: usd, Code: 1}, WantErr: ledger.ResultIDInvalid},
		{Name: "zero ledger", When: ledger.OpenAccount{ID: acct, Code: 1}, WantErr: ledger.ResultLedgerMustNotBeZero},
		{Name: "zero code", When: ledger.OpenAccount{ID: acct, Ledger: usd}, WantErr: ledger.ResultCodeMustNotBeZero},
		{Name: "both flags", When: ledger.OpenAccount{ID: acct, Ledger: usd, Code: 1, Flags: ledger.AccountFlags{DebitsMustNotExceedCredits: true, CreditsMustNotExceedDebits: true}}, WantErr: ledger.ResultFlagsAreMutuallyExclusive},
		{Name: "after a refusal on a never-opened id", Given: []ledger.AccountEvent{ledger.DebitRefused{Transfer: "t-1", Code: ledger.ResultDebitAccountNotFound}}, When: open, Then: []ledger.AccountEvent{opened}},
	}
}

func closeScenarios() []accountScenario {
	close := ledger.CloseAccount{ID: acct}
	return []accountScenario{
		{Name: "close", Given: funded(), When: close, Then: []ledger.AccountEvent{ledger.AccountClosed{}}},
		{Name: "not found", When: close, WantErr: ledger.ResultAccountNotFound},
		{Name: "already closed", Given: []ledger.AccountEvent{opened, ledger.AccountClosed{}}, When: close, WantErr: ledger.ResultAccountAlreadyClosed},
		{Name: "pending transfer", Given: with(funded(), ledger.DebitReserved{Transfer: "t-1", Amount: 5, Ledger: usd}), When: close, WantErr: ledger.ResultAccountHasPendingTransfer,
			WantMsg: `account_has_pending_transfers: 1 transfer(s) are pending on account "acc-1": post or void them first`},
		{Name: "after the pending one was posted", Given: with(funded(), ledger.DebitReserved{Transfer: "t-1", Amount: 5, Ledger: usd}, ledger.DebitPosted{Transfer: "t-1", Amount: 5, Pending: 5}), When: close, Then: []ledger.AccountEvent{ledger.AccountClosed{}}},
		{Name: "invalid id", When: ledger.CloseAccount{ID: "a/b"}, WantErr: ledger.ResultIDInvalid},
	}
}

func reserveDebitScenarios() []accountScenario {
	rd := func(amount int64) ledger.ReserveDebit {
		return ledger.ReserveDebit{Account: acct, Transfer: "t-1", Amount: amount, Ledger: usd}
	}
	refused := func(code ledger.Result) []ledger.AccountEvent {
		return []ledger.AccountEvent{ledger.DebitRefused{Transfer: "t-1", Code: code}}
	}
	big := int64(math.MaxInt64 - 5)
	return []accountScenario{
		{Name: "reserve", Given: funded(), When: rd(60), Then: []ledger.AccountEvent{ledger.DebitReserved{Transfer: "t-1", Amount: 60, Ledger: usd}},
			Check: func(t testing.TB, s ledger.Account) {
				if s.DebitsPending != 60 || s.DebitsPosted != 0 || s.CreditsPosted != 100 {
					t.Fatalf("balances %+v", s.Balances())
				}
			}},
		{Name: "reserve all the credit", Given: funded(), When: rd(100), Then: []ledger.AccountEvent{ledger.DebitReserved{Transfer: "t-1", Amount: 100, Ledger: usd}}},
		{Name: "no flag: overdraft allowed", Given: []ledger.AccountEvent{opened}, When: rd(1_000), Then: []ledger.AccountEvent{ledger.DebitReserved{Transfer: "t-1", Amount: 1_000, Ledger: usd}}},
		{Name: "exceeds credits", Given: funded(), When: rd(101), Then: refused(ledger.ResultExceedsCredits)},
		{Name: "exceeds credits with pending debits", Given: with(funded(), ledger.DebitReserved{Transfer: "t-0b", Amount: 60, Ledger: usd}), When: rd(41), Then: refused(ledger.ResultExceedsCredits)},
		{Name: "exceeds credits with posted debits", Given: with(funded(), ledger.DebitReserved{Transfer: "t-0b", Amount: 60, Ledger: usd}, ledger.DebitPosted{Transfer: "t-0b", Amount: 30, Pending: 60}), When: rd(71), Then: refused(ledger.ResultExceedsCredits)},
		{Name: "pending credits do not count", Given: with(funded(), ledger.CreditReserved{Transfer: "t-0c", Amount: 50, Ledger: usd}), When: rd(101), Then: refused(ledger.ResultExceedsCredits)},
		{Name: "not found", When: rd(1), Then: refused(ledger.ResultDebitAccountNotFound)},
		{Name: "closed", Given: []ledger.AccountEvent{opened, ledger.AccountClosed{}}, When: rd(1), Then: refused(ledger.ResultDebitAccountAlreadyClosed)},
		{Name: "other ledger", Given: []ledger.AccountEvent{opened}, When: ledger.ReserveDebit{Account: acct, Transfer: "t-1", Amount: 1, Ledger: eur}, Then: refused(ledger.ResultTransferMustHaveTheSameLedger)},
		{Name: "overflows debits pending", Given: []ledger.AccountEvent{opened, ledger.DebitReserved{Transfer: "t-0", Amount: big, Ledger: usd}}, When: rd(6), Then: refused(ledger.ResultOverflowsDebitsPending)},
		{Name: "at the limit of debits pending", Given: []ledger.AccountEvent{opened, ledger.DebitReserved{Transfer: "t-0", Amount: big, Ledger: usd}}, When: rd(5), Then: []ledger.AccountEvent{ledger.DebitReserved{Transfer: "t-1", Amount: 5, Ledger: usd}}},
		{Name: "overflows debits", Given: []ledger.AccountEvent{opened, ledger.DebitReserved{Transfer: "t-0", Amount: big, Ledger: usd}, ledger.DebitPosted{Transfer: "t-0", Amount: big, Pending: big}}, When: rd(6), Then: refused(ledger.ResultOverflowsDebits)},
		{Name: "replay of a reservation does nothing", Given: with(funded(), ledger.DebitReserved{Transfer: "t-1", Amount: 60, Ledger: usd}), When: rd(60)},
		{Name: "replay after post does nothing", Given: with(funded(), ledger.DebitReserved{Transfer: "t-1", Amount: 60, Ledger: usd}, ledger.DebitPosted{Transfer: "t-1", Amount: 60, Pending: 60}), When: rd(60)},
		{Name: "replay after a refusal does nothing", Given: []ledger.AccountEvent{ledger.DebitRefused{Transfer: "t-1", Code: ledger.ResultDebitAccountNotFound}, opened}, When: rd(1)},
		{Name: "zero amount", Given: funded(), When: rd(0), WantErr: ledger.ResultAmountMustNotBeZero},
		{Name: "negative amount", Given: funded(), When: rd(-1), WantErr: ledger.ResultAmountMustNotBeNegative},
		{Name: "no transfer", Given: funded(), When: ledger.ReserveDebit{Account: acct, Amount: 1, Ledger: usd}, WantErr: ledger.ResultIDMustNotBeEmpty},
	}
}

func reserveCreditScenarios() []accountScenario {
	rc := func(amount int64) ledger.ReserveCredit {
		return ledger.ReserveCredit{Account: acct, Transfer: "t-1", Amount: amount, Ledger: usd, DebitLedger: usd}
	}
	refused := func(code ledger.Result) []ledger.AccountEvent {
		return []ledger.AccountEvent{ledger.CreditRefused{Transfer: "t-1", Code: code}}
	}
	big := int64(math.MaxInt64 - 5)
	// A credit line: debited 100 (drawn), so it may be credited 100.
	line := []ledger.AccountEvent{openedNoCred, ledger.DebitReserved{Transfer: "t-0", Amount: 100, Ledger: usd}, ledger.DebitPosted{Transfer: "t-0", Amount: 100, Pending: 100}}
	return []accountScenario{
		{Name: "reserve", Given: []ledger.AccountEvent{opened}, When: rc(5), Then: []ledger.AccountEvent{ledger.CreditReserved{Transfer: "t-1", Amount: 5, Ledger: usd}}},
		{Name: "credit line repaid in full", Given: line, When: rc(100), Then: []ledger.AccountEvent{ledger.CreditReserved{Transfer: "t-1", Amount: 100, Ledger: usd}}},
		{Name: "exceeds debits", Given: line, When: rc(101), Then: refused(ledger.ResultExceedsDebits)},
		{Name: "exceeds debits with pending credits", Given: with(line, ledger.CreditReserved{Transfer: "t-0b", Amount: 50, Ledger: usd}), When: rc(51), Then: refused(ledger.ResultExceedsDebits)},
		{Name: "not found", When: rc(1), Then: refused(ledger.ResultCreditAccountNotFound)},
		{Name: "closed", Given: []ledger.AccountEvent{opened, ledger.AccountClosed{}}, When: rc(1), Then: refused(ledger.ResultCreditAccountAlreadyClosed)},
		{Name: "debit account on another ledger", Given: []ledger.AccountEvent{opened}, When: ledger.ReserveCredit{Account: acct, Transfer: "t-1", Amount: 1, Ledger: eur, DebitLedger: eur}, Then: refused(ledger.ResultAccountsMustHaveTheSameLedger)},
		{Name: "transfer on another ledger", Given: []ledger.AccountEvent{opened}, When: ledger.ReserveCredit{Account: acct, Transfer: "t-1", Amount: 1, Ledger: eur, DebitLedger: usd}, Then: refused(ledger.ResultTransferMustHaveTheSameLedger)},
		{Name: "overflows credits pending", Given: []ledger.AccountEvent{opened, ledger.CreditReserved{Transfer: "t-0", Amount: big, Ledger: usd}}, When: rc(6), Then: refused(ledger.ResultOverflowsCreditsPending)},
		{Name: "overflows credits", Given: []ledger.AccountEvent{opened, ledger.CreditReserved{Transfer: "t-0", Amount: big, Ledger: usd}, ledger.CreditPosted{Transfer: "t-0", Amount: big, Pending: big}}, When: rc(6), Then: refused(ledger.ResultOverflowsCredits)},
		{Name: "replay does nothing", Given: []ledger.AccountEvent{opened, ledger.CreditReserved{Transfer: "t-1", Amount: 5, Ledger: usd}}, When: rc(5)},
		{Name: "negative amount", Given: []ledger.AccountEvent{opened}, When: rc(-5), WantErr: ledger.ResultAmountMustNotBeNegative},
	}
}

func postVoidScenarios() []accountScenario {
	reserved := with(funded(), ledger.DebitReserved{Transfer: "t-1", Amount: 60, Ledger: usd})
	credited := []ledger.AccountEvent{opened, ledger.CreditReserved{Transfer: "t-1", Amount: 60, Ledger: usd}}
	return []accountScenario{
		{Name: "post debit", Given: reserved, When: ledger.PostDebit{Account: acct, Transfer: "t-1", Amount: 60}, Then: []ledger.AccountEvent{ledger.DebitPosted{Transfer: "t-1", Amount: 60, Pending: 60}},
			Check: func(t testing.TB, s ledger.Account) {
				if s.DebitsPending != 0 || s.DebitsPosted != 60 {
					t.Fatalf("balances %+v", s.Balances())
				}
			}},
		{Name: "post part of a debit", Given: reserved, When: ledger.PostDebit{Account: acct, Transfer: "t-1", Amount: 25}, Then: []ledger.AccountEvent{ledger.DebitPosted{Transfer: "t-1", Amount: 25, Pending: 60}},
			Check: func(t testing.TB, s ledger.Account) {
				if s.DebitsPending != 0 || s.DebitsPosted != 25 {
					t.Fatalf("the rest of the reservation must be released: %+v", s.Balances())
				}
			}},
		{Name: "post credit", Given: credited, When: ledger.PostCredit{Account: acct, Transfer: "t-1", Amount: 60}, Then: []ledger.AccountEvent{ledger.CreditPosted{Transfer: "t-1", Amount: 60, Pending: 60}}},
		{Name: "post more than reserved", Given: reserved, When: ledger.PostDebit{Account: acct, Transfer: "t-1", Amount: 61}, WantErr: ledger.ResultExceedsPendingTransferAmount},
		{Name: "post again does nothing", Given: with(reserved, ledger.DebitPosted{Transfer: "t-1", Amount: 60, Pending: 60}), When: ledger.PostDebit{Account: acct, Transfer: "t-1", Amount: 60}},
		{Name: "post of an unknown transfer", Given: funded(), When: ledger.PostDebit{Account: acct, Transfer: "t-9", Amount: 1}, WantErr: ledger.ResultPendingTransferNotFound},
		{Name: "post after void", Given: with(reserved, ledger.DebitVoided{Transfer: "t-1", Amount: 60}), When: ledger.PostDebit{Account: acct, Transfer: "t-1", Amount: 60}, WantErr: ledger.ResultPendingTransferAlreadyVoided},
		{Name: "post of a refused transfer", Given: with(funded(), ledger.DebitRefused{Transfer: "t-1", Code: ledger.ResultExceedsCredits}), When: ledger.PostDebit{Account: acct, Transfer: "t-1", Amount: 1}, WantErr: ledger.ResultInvalidTransition},
		{Name: "post of the other side", Given: reserved, When: ledger.PostCredit{Account: acct, Transfer: "t-1", Amount: 60}, WantErr: ledger.ResultInvalidTransition},
		{Name: "void debit", Given: reserved, When: ledger.VoidDebit{Account: acct, Transfer: "t-1"}, Then: []ledger.AccountEvent{ledger.DebitVoided{Transfer: "t-1", Amount: 60}},
			Check: func(t testing.TB, s ledger.Account) {
				if s.DebitsPending != 0 || s.DebitsPosted != 0 {
					t.Fatalf("balances %+v", s.Balances())
				}
			}},
		{Name: "void credit", Given: credited, When: ledger.VoidCredit{Account: acct, Transfer: "t-1"}, Then: []ledger.AccountEvent{ledger.CreditVoided{Transfer: "t-1", Amount: 60}}},
		{Name: "void again does nothing", Given: with(reserved, ledger.DebitVoided{Transfer: "t-1", Amount: 60}), When: ledger.VoidDebit{Account: acct, Transfer: "t-1"}},
		{Name: "void after post", Given: with(reserved, ledger.DebitPosted{Transfer: "t-1", Amount: 60, Pending: 60}), When: ledger.VoidDebit{Account: acct, Transfer: "t-1"}, WantErr: ledger.ResultPendingTransferAlreadyPosted},
		{Name: "void of an unknown transfer", Given: funded(), When: ledger.VoidDebit{Account: acct, Transfer: "t-9"}, WantErr: ledger.ResultPendingTransferNotFound},
		{Name: "void of a refused transfer", Given: []ledger.AccountEvent{opened, ledger.CreditRefused{Transfer: "t-1", Code: ledger.ResultExceedsDebits}}, When: ledger.VoidCredit{Account: acct, Transfer: "t-1"}, WantErr: ledger.ResultInvalidTransition},
	}
}

func TestOpenAccount(t *testing.T)     { runAccount(t, openScenarios()) }
func TestCloseAccount(t *testing.T)    { runAccount(t, closeScenarios()) }
func TestReserveDebit(t *testing.T)    { runAccount(t, reserveDebitScenarios()) }
func TestReserveCredit(t *testing.T)   { runAccount(t, reserveCreditScenarios()) }
func TestPostAndVoidSide(t *testing.T) { runAccount(t, postVoidScenarios()) }

// An account's entries are copied, never changed in place: the runtime
// keeps the last committed state to fall back on.
func TestAccountEvolveDoesNotMutate(t *testing.T) {
	d := ledger.AccountDecider()
	base := d.Fold(d.Initial(), funded()...)
	before := len(base.Transfers)
	for _, ev := range []ledger.AccountEvent{
		ledger.DebitReserved{Transfer: "x", Amount: 1, Ledger: usd}, ledger.CreditReserved{Transfer: "y", Amount: 1, Ledger: usd},
		ledger.DebitRefused{Transfer: "z", Code: ledger.ResultExceedsCredits}, ledger.CreditVoided{Transfer: "t-0", Amount: 100},
	} {
		_ = d.Evolve(base, ev)
		if len(base.Transfers) != before || base.Transfers["t-0"].Status != ledger.EntryPosted {
			t.Fatalf("Evolve(%T) mutated its input: %+v", ev, base.Transfers)
		}
	}
	if s := ledger.AccountEvolve(ledger.Account{}, nil); s.Transfers == nil {
		t.Fatal("Evolve of a zero state left a nil map")
	}
}
