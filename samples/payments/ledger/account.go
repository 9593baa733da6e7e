package ledger

import (
	"fmt"
	"maps"
	"math"

	"github.com/onceflow/onceflow/eventsource"
)

// AccountType is the stable aggregate type name of accounts.
const AccountType = "payments.account"

// Side is the side of an account a transfer touches.
type Side string

// Sides.
const (
	Debit  Side = "debit"
	Credit Side = "credit"
)

// EntryStatus is where one transfer stands on one account.
type EntryStatus string

// Entry statuses.
const (
	EntryReserved EntryStatus = "reserved" // Amount is pending
	EntryPosted   EntryStatus = "posted"   // Posted moved; the reservation is gone
	EntryVoided   EntryStatus = "voided"   // the reservation was released
	EntryRefused  EntryStatus = "refused"  // never reserved; Code says why
)

// Entry is one transfer on one account. Entries are kept for every transfer
// the account ever answered, so that a command for a transfer it has
// already handled does nothing (see AccountDecide): the process's commands
// are deduplicated by command id first, this is the second line.
type Entry struct {
	Side   Side        `json:"side"`
	Status EntryStatus `json:"status"`
	Amount int64       `json:"amount"`           // reserved
	Posted int64       `json:"posted,omitempty"` // when posted
	Code   Result      `json:"code,omitempty"`   // when refused
}

// Account is an account's state. Balances are in minor units of the
// ledger's currency. Invariants kept by AccountDecide (see
// CheckAccountInvariants): every balance is >= 0; the pending balances are
// the sums of the reserved entries; with DebitsMustNotExceedCredits,
// DebitsPending + DebitsPosted <= CreditsPosted; with
// CreditsMustNotExceedDebits, CreditsPending + CreditsPosted <=
// DebitsPosted.
type Account struct {
	Opened         bool             `json:"opened"`
	Closed         bool             `json:"closed"`
	Ledger         uint32           `json:"ledger"`
	Code           uint16           `json:"code"`
	Flags          AccountFlags     `json:"flags"`
	DebitsPending  int64            `json:"debits_pending"`
	DebitsPosted   int64            `json:"debits_posted"`
	CreditsPending int64            `json:"credits_pending"`
	CreditsPosted  int64            `json:"credits_posted"`
	Transfers      map[string]Entry `json:"transfers"`
}

// InitialAccount is the state of an account never seen.
func InitialAccount() Account { return Account{Transfers: map[string]Entry{}} }

// AccountDecider returns the account decider.
func AccountDecider() eventsource.Decider[Account, AccountCommand, AccountEvent] {
	return eventsource.Decider[Account, AccountCommand, AccountEvent]{Initial: InitialAccount, Decide: AccountDecide, Evolve: AccountEvolve}
}

// AccountDecide decides an account command. Client commands (open, close)
// that break a rule are rejected with a *ResultError. The transfer
// process's reservations are answered with an event either way: the
// reservation, or a refusal carrying the code. A reservation, post or void
// for a transfer the account has already answered returns no events.
// Post and void of a transfer that is not reserved here are rejected: the
// process never sends them, so they are a bug to be seen, not an answer.
func AccountDecide(s Account, cmd AccountCommand) ([]AccountEvent, error) {
	switch c := cmd.(type) {
	case OpenAccount:
		return decideOpen(s, c)
	case CloseAccount:
		if err := validID(ResultIDInvalid, "account id", c.ID); err != nil {
			return nil, err
		}
		switch {
		case !s.Opened:
			return nil, reject(ResultAccountNotFound, "account %q was never opened", c.ID)
		case s.Closed:
			return nil, reject(ResultAccountAlreadyClosed, "account %q is closed", c.ID)
		}
		if n := s.pendingCount(); n > 0 {
			return nil, reject(ResultAccountHasPendingTransfer, "%d transfer(s) are pending on account %q: post or void them first", n, c.ID)
		}
		return []AccountEvent{AccountClosed{}}, nil
	case ReserveDebit:
		return decideReserve(s, Debit, c.Account, c.Transfer, c.Amount, c.Ledger, c.Ledger)
	case ReserveCredit:
		return decideReserve(s, Credit, c.Account, c.Transfer, c.Amount, c.Ledger, c.DebitLedger)
	case PostDebit:
		return decidePost(s, Debit, c.Transfer, c.Amount)
	case PostCredit:
		return decidePost(s, Credit, c.Transfer, c.Amount)
	case VoidDebit:
		return decideVoid(s, Debit, c.Transfer)
	case VoidCredit:
		return decideVoid(s, Credit, c.Transfer)
	}
	return nil, reject(ResultInvalidTransition, "unsupported account command %T", cmd)
}

func decideOpen(s Account, c OpenAccount) ([]AccountEvent, error) {
	if err := validID(ResultIDInvalid, "account id", c.ID); err != nil {
		return nil, err
	}
	switch {
	case c.Ledger == 0:
		return nil, reject(ResultLedgerMustNotBeZero, "ledger must be 1 or more (the currency's ledger number)")
	case c.Code == 0:
		return nil, reject(ResultCodeMustNotBeZero, "code must be 1 or more (the account's kind in the chart of accounts)")
	case c.Flags.DebitsMustNotExceedCredits && c.Flags.CreditsMustNotExceedDebits:
		return nil, reject(ResultFlagsAreMutuallyExclusive, "debits_must_not_exceed_credits and credits_must_not_exceed_debits cannot both be set")
	}
	if s.Opened {
		switch {
		case s.Flags != c.Flags:
			return nil, reject(ResultExistsWithDifferentFlags, "account %q exists with flags %+v", c.ID, s.Flags)
		case s.Ledger != c.Ledger:
			return nil, reject(ResultExistsWithDifferentLedger, "account %q exists on ledger %d", c.ID, s.Ledger)
		case s.Code != c.Code:
			return nil, reject(ResultExistsWithDifferentCode, "account %q exists with code %d", c.ID, s.Code)
		}
		return nil, reject(ResultExists, "account %q exists with the same fields", c.ID)
	}
	return []AccountEvent{AccountOpened{Ledger: c.Ledger, Code: c.Code, Flags: c.Flags}}, nil
}

func decideReserve(s Account, side Side, account, transfer string, amount int64, ledger, debitLedger uint32) ([]AccountEvent, error) {
	if err := validProcessCommand(account, transfer, amount); err != nil {
		return nil, err
	}
	if _, ok := s.Transfers[transfer]; ok {
		return nil, nil // answered before: a replay does nothing
	}
	refuse := func(code Result) ([]AccountEvent, error) {
		if side == Debit {
			return []AccountEvent{DebitRefused{Transfer: transfer, Code: code}}, nil
		}
		return []AccountEvent{CreditRefused{Transfer: transfer, Code: code}}, nil
	}
	if side == Debit {
		switch {
		case !s.Opened:
			return refuse(ResultDebitAccountNotFound)
		case s.Closed:
			return refuse(ResultDebitAccountAlreadyClosed)
		case s.Ledger != ledger:
			return refuse(ResultTransferMustHaveTheSameLedger)
		case overflows(s.DebitsPending, amount):
			return refuse(ResultOverflowsDebitsPending)
		case overflows(s.DebitsPending, s.DebitsPosted, amount):
			return refuse(ResultOverflowsDebits)
		case s.Flags.DebitsMustNotExceedCredits && s.DebitsPending+s.DebitsPosted+amount > s.CreditsPosted:
			return refuse(ResultExceedsCredits)
		}
		return []AccountEvent{DebitReserved{Transfer: transfer, Amount: amount, Ledger: s.Ledger}}, nil
	}
	switch {
	case !s.Opened:
		return refuse(ResultCreditAccountNotFound)
	case s.Closed:
		return refuse(ResultCreditAccountAlreadyClosed)
	case debitLedger != s.Ledger:
		return refuse(ResultAccountsMustHaveTheSameLedger)
	case s.Ledger != ledger:
		return refuse(ResultTransferMustHaveTheSameLedger)
	case overflows(s.CreditsPending, amount):
		return refuse(ResultOverflowsCreditsPending)
	case overflows(s.CreditsPending, s.CreditsPosted, amount):
		return refuse(ResultOverflowsCredits)
	case s.Flags.CreditsMustNotExceedDebits && s.CreditsPending+s.CreditsPosted+amount > s.DebitsPosted:
		return refuse(ResultExceedsDebits)
	}
	return []AccountEvent{CreditReserved{Transfer: transfer, Amount: amount, Ledger: s.Ledger}}, nil
}

func decidePost(s Account, side Side, transfer string, amount int64) ([]AccountEvent, error) {
	if err := validProcessCommand("-", transfer, amount); err != nil {
		return nil, err
	}
	e, err := reservation(s, side, transfer)
	if err != nil || e.Status == EntryPosted {
		return nil, err
	}
	switch {
	case e.Status == EntryVoided:
		return nil, reject(ResultPendingTransferAlreadyVoided, "the %s of transfer %q was voided", side, transfer)
	case e.Status != EntryReserved:
		return nil, reject(ResultInvalidTransition, "the %s of transfer %q is %s, not reserved", side, transfer, e.Status)
	case amount > e.Amount:
		return nil, reject(ResultExceedsPendingTransferAmount, "post of %d, %d reserved for transfer %q", amount, e.Amount, transfer)
	}
	if side == Debit {
		return []AccountEvent{DebitPosted{Transfer: transfer, Amount: amount, Pending: e.Amount}}, nil
	}
	return []AccountEvent{CreditPosted{Transfer: transfer, Amount: amount, Pending: e.Amount}}, nil
}

func decideVoid(s Account, side Side, transfer string) ([]AccountEvent, error) {
	if err := validProcessCommand("-", transfer, 1); err != nil {
		return nil, err
	}
	e, err := reservation(s, side, transfer)
	if err != nil || e.Status == EntryVoided {
		return nil, err
	}
	switch {
	case e.Status == EntryPosted:
		return nil, reject(ResultPendingTransferAlreadyPosted, "the %s of transfer %q was posted", side, transfer)
	case e.Status != EntryReserved:
		return nil, reject(ResultInvalidTransition, "the %s of transfer %q is %s, not reserved", side, transfer, e.Status)
	}
	if side == Debit {
		return []AccountEvent{DebitVoided{Transfer: transfer, Amount: e.Amount}}, nil
	}
	return []AccountEvent{CreditVoided{Transfer: transfer, Amount: e.Amount}}, nil
}

// reservation returns the entry of transfer on side.
func reservation(s Account, side Side, transfer string) (Entry, error) {
	e, ok := s.Transfers[transfer]
	switch {
	case !ok:
		return e, reject(ResultPendingTransferNotFound, "transfer %q has no %s reservation on this account", transfer, side)
	case e.Side != side:
		return e, reject(ResultInvalidTransition, "transfer %q is a %s on this account, not a %s", transfer, e.Side, side)
	}
	return e, nil
}

func validProcessCommand(account, transfer string, amount int64) error {
	switch {
	case account == "":
		return reject(ResultIDMustNotBeEmpty, "account is empty")
	case transfer == "":
		return reject(ResultIDMustNotBeEmpty, "transfer is empty")
	case amount < 0:
		return reject(ResultAmountMustNotBeNegative, "amount %d", amount)
	case amount == 0:
		return reject(ResultAmountMustNotBeZero, "amount is zero")
	}
	return nil
}

// overflows reports whether the sum of non-negative values exceeds MaxInt64.
func overflows(vs ...int64) bool {
	var sum int64
	for _, v := range vs {
		if v > math.MaxInt64-sum {
			return true
		}
		sum += v
	}
	return false
}

func (s Account) pendingCount() int {
	n := 0
	for _, e := range s.Transfers {
		if e.Status == EntryReserved {
			n++
		}
	}
	return n
}

// AccountEvolve applies one account event. It never mutates s (the entry
// map is copied). Unknown events leave the state as it is.
func AccountEvolve(s Account, ev AccountEvent) Account {
	put := func(id string, e Entry) {
		m := make(map[string]Entry, len(s.Transfers)+1)
		maps.Copy(m, s.Transfers)
		m[id] = e
		s.Transfers = m
	}
	switch e := ev.(type) {
	case AccountOpened:
		s.Opened, s.Ledger, s.Code, s.Flags = true, e.Ledger, e.Code, e.Flags
	case AccountClosed:
		s.Closed = true
	case DebitReserved:
		s.DebitsPending += e.Amount
		put(e.Transfer, Entry{Side: Debit, Status: EntryReserved, Amount: e.Amount})
	case CreditReserved:
		s.CreditsPending += e.Amount
		put(e.Transfer, Entry{Side: Credit, Status: EntryReserved, Amount: e.Amount})
	case DebitRefused:
		put(e.Transfer, Entry{Side: Debit, Status: EntryRefused, Code: e.Code})
	case CreditRefused:
		put(e.Transfer, Entry{Side: Credit, Status: EntryRefused, Code: e.Code})
	case DebitPosted:
		s.DebitsPending -= e.Pending
		s.DebitsPosted += e.Amount
		put(e.Transfer, Entry{Side: Debit, Status: EntryPosted, Amount: e.Pending, Posted: e.Amount})
	case CreditPosted:
		s.CreditsPending -= e.Pending
		s.CreditsPosted += e.Amount
		put(e.Transfer, Entry{Side: Credit, Status: EntryPosted, Amount: e.Pending, Posted: e.Amount})
	case DebitVoided:
		s.DebitsPending -= e.Amount
		put(e.Transfer, Entry{Side: Debit, Status: EntryVoided, Amount: e.Amount})
	case CreditVoided:
		s.CreditsPending -= e.Amount
		put(e.Transfer, Entry{Side: Credit, Status: EntryVoided, Amount: e.Amount})
	}
	if s.Transfers == nil {
		s.Transfers = map[string]Entry{}
	}
	return s
}

// CheckAccountInvariants reports the first broken invariant of s (see
// Account), or nil.
func CheckAccountInvariants(s Account) error {
	var dp, cp int64
	for id, e := range s.Transfers {
		if e.Status == EntryReserved {
			if e.Side == Debit {
				dp += e.Amount
			} else {
				cp += e.Amount
			}
		}
		if e.Amount < 0 || e.Posted < 0 || e.Posted > e.Amount {
			return fmt.Errorf("transfer %q: entry %+v", id, e)
		}
	}
	switch {
	case s.DebitsPending < 0 || s.DebitsPosted < 0 || s.CreditsPending < 0 || s.CreditsPosted < 0:
		return fmt.Errorf("a negative balance: %+v", s.balances())
	case dp != s.DebitsPending || cp != s.CreditsPending:
		return fmt.Errorf("pending balances %d/%d, reserved entries sum to %d/%d", s.DebitsPending, s.CreditsPending, dp, cp)
	case s.Flags.DebitsMustNotExceedCredits && s.DebitsPending+s.DebitsPosted > s.CreditsPosted:
		return fmt.Errorf("debits exceed credits on an account that forbids it: %+v", s.balances())
	case s.Flags.CreditsMustNotExceedDebits && s.CreditsPending+s.CreditsPosted > s.DebitsPosted:
		return fmt.Errorf("credits exceed debits on an account that forbids it: %+v", s.balances())
	}
	return nil
}

// Balances are an account's four balances.
type Balances struct {
	DebitsPending  int64 `json:"debits_pending"`
	DebitsPosted   int64 `json:"debits_posted"`
	CreditsPending int64 `json:"credits_pending"`
	CreditsPosted  int64 `json:"credits_posted"`
}

func (s Account) balances() Balances {
	return Balances{s.DebitsPending, s.DebitsPosted, s.CreditsPending, s.CreditsPosted}
}

// Balances returns the account's balances.
func (s Account) Balances() Balances { return s.balances() }

func validID(code Result, what, id string) error {
	if id == "" {
		return reject(ResultIDMustNotBeEmpty, "%s is empty", what)
	}
	if err := ValidateID(what, id); err != nil {
		return &ResultError{Code: code, Detail: err.Error()}
	}
	return nil
}
