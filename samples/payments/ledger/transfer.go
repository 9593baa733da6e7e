package ledger

import (
	"fmt"
	"maps"
	"time"

	"github.com/onceflow/onceflow/eventsource"
)

// TransferType is the stable aggregate type name of transfers.
const TransferType = "payments.transfer"

// Status is where a transfer stands. Posted, voided, expired and failed
// are final; pending is where a two-phase transfer waits for its client.
type Status string

// Transfer statuses.
const (
	StatusNone      Status = ""          // never created
	StatusReserving Status = "reserving" // the process is reserving (and, single-phase, posting)
	StatusPending   Status = "pending"   // two-phase: both sides reserved, waiting for post, void or timeout
	StatusPosting   Status = "posting"   // a post was requested; the process posts both sides
	StatusVoiding   Status = "voiding"   // a void was requested; the process voids both sides
	StatusExpiring  Status = "expiring"  // the timeout won; the process voids both sides
	StatusPosted    Status = "posted"
	StatusVoided    Status = "voided"
	StatusExpired   Status = "expired"
	StatusFailed    Status = "failed"
)

// Final reports whether s is a final status.
func (s Status) Final() bool {
	return s == StatusPosted || s == StatusVoided || s == StatusExpired || s == StatusFailed
}

// Settled reports whether s is a status a client waits for: final, or
// pending (a two-phase transfer whose reservations are made).
func (s Status) Settled() bool { return s.Final() || s == StatusPending }

// Refund is one refund of a posted transfer.
type Refund struct {
	Amount   int64 `json:"amount"`
	Released bool  `json:"released,omitempty"` // its transfer failed; the amount is refundable again
}

// Transfer is a transfer's state. The fields from ID to RefundOf never
// change once created.
type Transfer struct {
	ID              string `json:"id"`
	DebitAccountID  string `json:"debit_account_id"`
	CreditAccountID string `json:"credit_account_id"`
	Amount          int64  `json:"amount"`
	Ledger          uint32 `json:"ledger"`
	Code            uint16 `json:"code"`
	Pending         bool   `json:"pending"`
	Timeout         int64  `json:"timeout"`
	RefundOf        string `json:"refund_of,omitempty"`

	Status    Status    `json:"status"`
	ExpiresAt time.Time `json:"expires_at,omitzero"`
	// PostAmount is the amount being posted (posting) or posted (posted).
	PostAmount int64 `json:"post_amount,omitempty"`
	// Result is the code of a failed transfer.
	Result   Result            `json:"result,omitempty"`
	Refunds  map[string]Refund `json:"refunds,omitempty"`
	Refunded int64             `json:"refunded,omitempty"` // sum of the refunds not released
}

// InitialTransfer is the state of a transfer never created.
func InitialTransfer() Transfer { return Transfer{} }

// TransferDecider returns the transfer decider.
func TransferDecider() eventsource.Decider[Transfer, TransferCommand, TransferEvent] {
	return eventsource.Decider[Transfer, TransferCommand, TransferEvent]{Initial: InitialTransfer, Decide: TransferDecide, Evolve: TransferEvolve}
}

// TransferDecide decides a transfer command. A client's command that
// breaks a rule is rejected with a *ResultError. The transfer process's
// commands are idempotent: one the state already reflects returns no
// events; one that does not fit the state at all is rejected with
// invalid_transition (a bug, visible in the command results).
func TransferDecide(s Transfer, cmd TransferCommand) ([]TransferEvent, error) {
	switch c := cmd.(type) {
	case CreateTransfer:
		return decideCreate(s, c)
	case PostPendingTransfer:
		if c.Amount < 0 {
			return nil, reject(ResultAmountMustNotBeNegative, "amount %d (omit it, or 0, to post the full pending amount)", c.Amount)
		}
		if err := pendingDecision(s, c.ID); err != nil {
			return nil, err
		}
		amount := c.Amount
		if amount == 0 {
			amount = s.Amount
		}
		if amount > s.Amount {
			return nil, reject(ResultExceedsPendingTransferAmount, "post of %d, the pending amount is %d", amount, s.Amount)
		}
		return []TransferEvent{PostRequested{Amount: amount}}, nil
	case VoidPendingTransfer:
		if err := pendingDecision(s, c.ID); err != nil {
			return nil, err
		}
		return []TransferEvent{VoidRequested{}}, nil
	case RefundTransfer:
		return decideRefund(s, c)

	case MarkPending:
		switch {
		case s.Status == StatusReserving && s.Pending:
			return []TransferEvent{TransferPending{ExpiresAt: c.ExpiresAt}}, nil
		case s.Pending && s.Status != StatusNone && s.Status != StatusFailed:
			return nil, nil // pending already, or beyond
		}
	case ExpirePendingTransfer:
		switch s.Status {
		case StatusPending:
			return []TransferEvent{TransferExpiring{}}, nil
		case StatusPosting, StatusVoiding, StatusExpiring, StatusPosted, StatusVoided, StatusExpired:
			return nil, nil // a post or void was decided first, or it already expires
		}
	case MarkPosted:
		switch {
		case s.Status == StatusReserving && !s.Pending && c.Amount == s.Amount,
			s.Status == StatusPosting && c.Amount == s.PostAmount:
			return []TransferEvent{TransferPosted{Amount: c.Amount}}, nil
		case s.Status == StatusPosted && c.Amount == s.PostAmount:
			return nil, nil
		}
	case MarkVoided:
		switch s.Status {
		case StatusVoiding:
			return []TransferEvent{TransferVoided{}}, nil
		case StatusVoided:
			return nil, nil
		}
	case MarkExpired:
		switch s.Status {
		case StatusExpiring:
			return []TransferEvent{TransferExpired{}}, nil
		case StatusExpired:
			return nil, nil
		}
	case MarkFailed:
		switch {
		case c.Code == "":
			return nil, reject(ResultInvalidTransition, "MarkFailed without a code")
		case s.Status == StatusReserving:
			return []TransferEvent{TransferFailed{Code: c.Code}}, nil
		case s.Status == StatusFailed:
			return nil, nil
		}
	case ReleaseRefund:
		r, ok := s.Refunds[c.RefundID]
		switch {
		case ok && !r.Released:
			return []TransferEvent{RefundReleased{RefundID: c.RefundID, Amount: r.Amount, Code: c.Code}}, nil
		case ok:
			return nil, nil
		}
		return nil, reject(ResultInvalidTransition, "transfer %q has no refund %q", s.ID, c.RefundID)
	default:
		return nil, reject(ResultInvalidTransition, "unsupported transfer command %T", cmd)
	}
	return nil, reject(ResultInvalidTransition, "%T does not apply to transfer %q in status %q", cmd, s.ID, s.Status)
}

func decideCreate(s Transfer, c CreateTransfer) ([]TransferEvent, error) {
	switch {
	case c.ID == "":
		return nil, reject(ResultIDMustNotBeEmpty, "id is empty")
	case ValidateTransferID(c.ID, c.RefundOf) != nil:
		return nil, &ResultError{Code: ResultIDInvalid, Detail: ValidateTransferID(c.ID, c.RefundOf).Error()}
	case c.DebitAccountID == "":
		return nil, reject(ResultDebitAccountIDMustNotBeEmpty, "debit_account_id is empty")
	case c.CreditAccountID == "":
		return nil, reject(ResultCreditAccountIDMustNotBeEmpty, "credit_account_id is empty")
	}
	if err := validID(ResultIDInvalid, "debit_account_id", c.DebitAccountID); err != nil {
		return nil, err
	}
	if err := validID(ResultIDInvalid, "credit_account_id", c.CreditAccountID); err != nil {
		return nil, err
	}
	switch {
	case c.DebitAccountID == c.CreditAccountID:
		return nil, reject(ResultAccountsMustBeDifferent, "debit and credit account are both %q", c.DebitAccountID)
	case c.Amount < 0:
		return nil, reject(ResultAmountMustNotBeNegative, "amount %d", c.Amount)
	case c.Amount == 0:
		return nil, reject(ResultAmountMustNotBeZero, "amount is zero")
	case c.Ledger == 0:
		return nil, reject(ResultLedgerMustNotBeZero, "ledger must be 1 or more")
	case c.Code == 0:
		return nil, reject(ResultCodeMustNotBeZero, "code must be 1 or more")
	case c.Timeout < 0:
		return nil, reject(ResultTimeoutMustNotBeNegative, "timeout %d", c.Timeout)
	case c.Timeout != 0 && !c.Pending:
		return nil, reject(ResultTimeoutReservedForPending, "a timeout is for pending (two-phase) transfers only")
	case c.Timeout > MaxTimeout:
		return nil, reject(ResultOverflowsTimeout, "timeout %d seconds, at most %d", c.Timeout, int64(MaxTimeout))
	}
	if s.Status != StatusNone {
		// TigerBeetle's order of the exists_with_different_* checks.
		switch {
		case s.Pending != c.Pending || s.RefundOf != c.RefundOf:
			return nil, reject(ResultExistsWithDifferentFlags, "transfer %q exists with pending=%t", s.ID, s.Pending)
		case s.Timeout != c.Timeout:
			return nil, reject(ResultExistsWithDifferentTimeout, "transfer %q exists with timeout %d", s.ID, s.Timeout)
		case s.DebitAccountID != c.DebitAccountID:
			return nil, reject(ResultExistsWithDifferentDebitAccount, "transfer %q exists with debit account %q", s.ID, s.DebitAccountID)
		case s.CreditAccountID != c.CreditAccountID:
			return nil, reject(ResultExistsWithDifferentCreditAcct, "transfer %q exists with credit account %q", s.ID, s.CreditAccountID)
		case s.Amount != c.Amount:
			return nil, reject(ResultExistsWithDifferentAmount, "transfer %q exists with amount %d", s.ID, s.Amount)
		case s.Ledger != c.Ledger:
			return nil, reject(ResultExistsWithDifferentLedger, "transfer %q exists on ledger %d", s.ID, s.Ledger)
		case s.Code != c.Code:
			return nil, reject(ResultExistsWithDifferentCode, "transfer %q exists with code %d", s.ID, s.Code)
		}
		return nil, reject(ResultExists, "transfer %q exists with the same fields (status %s)", s.ID, s.Status)
	}
	return []TransferEvent{TransferCreated{ID: c.ID, DebitAccountID: c.DebitAccountID, CreditAccountID: c.CreditAccountID,
		Amount: c.Amount, Ledger: c.Ledger, Code: c.Code, Pending: c.Pending, Timeout: c.Timeout, RefundOf: c.RefundOf}}, nil
}

// pendingDecision checks that a post or void of transfer id can be
// decided now.
func pendingDecision(s Transfer, id string) error {
	switch s.Status {
	case StatusNone:
		return reject(ResultPendingTransferNotFound, "no transfer %q", id)
	}
	if !s.Pending {
		return reject(ResultPendingTransferNotPending, "transfer %q is single-phase", id)
	}
	switch s.Status {
	case StatusReserving:
		return reject(ResultTransferInFlight, "transfer %q is still reserving its accounts: retry once it is pending", id)
	case StatusFailed:
		return reject(ResultPendingTransferFailed, "transfer %q failed with %s", id, s.Result)
	case StatusPosting, StatusPosted:
		return reject(ResultPendingTransferAlreadyPosted, "transfer %q was posted (%d)", id, s.PostAmount)
	case StatusVoiding, StatusVoided:
		return reject(ResultPendingTransferAlreadyVoided, "transfer %q was voided", id)
	case StatusExpiring, StatusExpired:
		return reject(ResultPendingTransferExpired, "transfer %q expired", id)
	}
	return nil
}

func decideRefund(s Transfer, c RefundTransfer) ([]TransferEvent, error) {
	if err := validID(ResultIDInvalid, "refund_id", c.RefundID); err != nil {
		return nil, err
	}
	switch {
	case c.Amount < 0:
		return nil, reject(ResultAmountMustNotBeNegative, "amount %d", c.Amount)
	case c.Amount == 0:
		return nil, reject(ResultAmountMustNotBeZero, "amount is zero")
	case s.Status == StatusNone:
		return nil, reject(ResultTransferNotFound, "no transfer %q", c.ID)
	}
	if r, ok := s.Refunds[c.RefundID]; ok {
		if r.Amount != c.Amount {
			return nil, reject(ResultExistsWithDifferentAmount, "refund %q of transfer %q exists with amount %d", c.RefundID, c.ID, r.Amount)
		}
		return nil, reject(ResultExists, "refund %q of transfer %q exists with the same amount", c.RefundID, c.ID)
	}
	switch {
	case s.Status != StatusPosted:
		return nil, reject(ResultTransferNotPosted, "transfer %q is %s: only a posted (captured) transfer can be refunded", c.ID, s.Status)
	case c.Amount > s.PostAmount-s.Refunded:
		return nil, reject(ResultExceedsRefundableAmount, "refund of %d, %d of the %d posted is left to refund", c.Amount, s.PostAmount-s.Refunded, s.PostAmount)
	}
	return []TransferEvent{RefundRequested{RefundID: c.RefundID, Amount: c.Amount}}, nil
}

// TransferEvolve applies one transfer event. It never mutates s.
func TransferEvolve(s Transfer, ev TransferEvent) Transfer {
	switch e := ev.(type) {
	case TransferCreated:
		s = Transfer{ID: e.ID, DebitAccountID: e.DebitAccountID, CreditAccountID: e.CreditAccountID, Amount: e.Amount,
			Ledger: e.Ledger, Code: e.Code, Pending: e.Pending, Timeout: e.Timeout, RefundOf: e.RefundOf, Status: StatusReserving}
	case TransferPending:
		s.Status, s.ExpiresAt = StatusPending, e.ExpiresAt
	case PostRequested:
		s.Status, s.PostAmount = StatusPosting, e.Amount
	case VoidRequested:
		s.Status = StatusVoiding
	case TransferExpiring:
		s.Status = StatusExpiring
	case TransferPosted:
		s.Status, s.PostAmount = StatusPosted, e.Amount
	case TransferVoided:
		s.Status = StatusVoided
	case TransferExpired:
		s.Status = StatusExpired
	case TransferFailed:
		s.Status, s.Result = StatusFailed, e.Code
	case RefundRequested:
		m := make(map[string]Refund, len(s.Refunds)+1)
		maps.Copy(m, s.Refunds)
		m[e.RefundID] = Refund{Amount: e.Amount}
		s.Refunds, s.Refunded = m, s.Refunded+e.Amount
	case RefundReleased:
		m := maps.Clone(s.Refunds)
		if m == nil {
			m = map[string]Refund{}
		}
		m[e.RefundID] = Refund{Amount: e.Amount, Released: true}
		s.Refunds, s.Refunded = m, s.Refunded-e.Amount
	}
	return s
}

// CheckTransferInvariants reports the first broken invariant of s, or nil.
func CheckTransferInvariants(s Transfer) error {
	var sum int64
	for id, r := range s.Refunds {
		if r.Amount <= 0 {
			return fmt.Errorf("refund %q has amount %d", id, r.Amount)
		}
		if !r.Released {
			sum += r.Amount
		}
	}
	switch {
	case sum != s.Refunded:
		return fmt.Errorf("refunded %d, refunds sum to %d", s.Refunded, sum)
	case s.Refunded > 0 && (s.Status != StatusPosted || s.Refunded > s.PostAmount):
		return fmt.Errorf("refunded %d of a %s transfer that posted %d", s.Refunded, s.Status, s.PostAmount)
	case s.Status != StatusNone && (s.Amount <= 0 || s.PostAmount < 0 || s.PostAmount > s.Amount):
		return fmt.Errorf("amount %d, post amount %d", s.Amount, s.PostAmount)
	case s.Status == StatusFailed && s.Result == "":
		return fmt.Errorf("failed without a result code")
	}
	return nil
}
