package ledger

import (
	"time"

	"github.com/onceflow/onceflow/actor"
	"github.com/onceflow/onceflow/eventsource"
)

// The transfer process: a pure state machine (Step, Outstanding) over one
// transfer, and its shell (processes.go) that keeps the state in one row
// per transfer and runs it in two actor.ProcessManager runtimes.

// Phase is where the process of one transfer stands.
type Phase string

// Phases.
const (
	PhaseNone            Phase = ""
	PhaseReservingDebit  Phase = "reserving_debit"  // ReserveDebit sent
	PhaseReservingCredit Phase = "reserving_credit" // debit reserved; ReserveCredit sent
	PhaseMarkingPending  Phase = "marking_pending"  // two-phase: both reserved; MarkPending sent
	PhasePending         Phase = "pending"          // the timeout is scheduled; waiting for the client
	PhaseExpireRequested Phase = "expire_requested" // the timeout fired; ExpirePendingTransfer sent
	PhasePosting         Phase = "posting"          // PostDebit and PostCredit sent
	PhaseVoiding         Phase = "voiding"          // the reserved sides' voids sent
	PhaseFinishing       Phase = "finishing"        // the final mark sent to the transfer
	PhaseDone            Phase = "done"             // the transfer recorded its final state
)

// SideState is where one side (account) of a transfer stands, as the
// process knows it.
type SideState string

// Side states. reserving, posting and voiding wait for the account's
// answer.
const (
	SideNone      SideState = ""
	SideReserving SideState = "reserving"
	SideReserved  SideState = "reserved"
	SideRefused   SideState = "refused"
	SidePosting   SideState = "posting"
	SidePosted    SideState = "posted"
	SideVoiding   SideState = "voiding"
	SideVoided    SideState = "voided"
)

// Process is the state of one transfer's process: what it knows of the
// transfer and of each side's account. It is stored as JSON in the process
// table, one row per transfer.
type Process struct {
	Transfer  string    `json:"transfer"`
	Debit     string    `json:"debit"`
	Credit    string    `json:"credit"`
	Amount    int64     `json:"amount"`
	Ledger    uint32    `json:"ledger"`
	Code      uint16    `json:"code"`
	TwoPhase  bool      `json:"two_phase"`
	ExpiresAt time.Time `json:"expires_at,omitzero"` // two-phase with a timeout
	RefundOf  string    `json:"refund_of,omitempty"`

	Phase       Phase     `json:"phase"`
	DebitSide   SideState `json:"debit_side"`
	CreditSide  SideState `json:"credit_side"`
	DebitLedger uint32    `json:"debit_ledger,omitempty"` // the debit account's ledger, from its reservation
	PostAmount  int64     `json:"post_amount,omitempty"`
	Outcome     Status    `json:"outcome,omitempty"` // the final state being recorded
	FailCode    Result    `json:"fail_code,omitempty"`

	// Retry numbers the step-retry deadlines "<transfer>/retry/<n>":
	// the last one scheduled, pending while RetryPending. Attempts counts
	// the resends since the process last moved.
	Retry        int  `json:"retry,omitempty"`
	RetryPending bool `json:"retry_pending,omitempty"`
	Attempts     int  `json:"attempts,omitempty"`
}

// TimeoutFired is the input of Step when the transfer's timeout deadline
// fires.
type TimeoutFired struct{}

// Send is a command the process sends, with its deterministic id.
type Send struct {
	Topic string
	Cmd   eventsource.Command
	ID    string
}

// Effects are what Step asks for besides the commands that Outstanding
// derives from the state.
type Effects struct {
	// Once are commands sent once, whose answer the process does not wait
	// for (a refund's transfer, a refund's release).
	Once []Send
	// ScheduleTimeout schedules the transfer's timeout at ExpiresAt;
	// CancelTimeout cancels it (a post or void came first).
	ScheduleTimeout, CancelTimeout bool
}

// Order of the steps. The debit side moves first when money moves
// (reserve debit, then credit; post debit, then credit), and the credit
// side first when it goes back (void credit, then debit). So the money of
// a transfer in flight is always somewhere: reserved (pending) on the
// debit account before anything is reserved on the credit account, posted
// on the debit account before it is posted (spendable) on the credit
// account, and released on the credit account before it is released on
// the debit account; never in neither. Per ledger, at every moment, the
// credits posted never exceed the debits posted, and the credits pending
// plus posted never exceed the debits pending plus posted, except while a
// partial post is between its two sides (the debit released the rest, the
// credit still holds the full reservation, which nobody can spend).
//
// Step returns the process after input (an event payload of the transfer
// or of one of its accounts, or TimeoutFired). at is when the event was
// recorded (the timeout of a two-phase transfer runs from its creation).
// It is pure, and total over the inputs in any order: an input that does
// not fit the state (a repeat, an answer already seen) changes nothing.
func Step(p Process, input any, at time.Time) (Process, Effects) {
	var fx Effects
	switch e := input.(type) {
	case TransferCreated:
		if p.Phase != PhaseNone {
			break
		}
		p = Process{Transfer: e.ID, Debit: e.DebitAccountID, Credit: e.CreditAccountID, Amount: e.Amount, Ledger: e.Ledger,
			Code: e.Code, TwoPhase: e.Pending, RefundOf: e.RefundOf, Phase: PhaseReservingDebit, DebitSide: SideReserving}
		if e.Pending && e.Timeout > 0 {
			p.ExpiresAt = at.UTC().Truncate(time.Millisecond).Add(time.Duration(e.Timeout) * time.Second)
		}
	case DebitReserved:
		if p.DebitSide == SideReserving {
			p.DebitSide, p.DebitLedger = SideReserved, e.Ledger
			p.Phase, p.CreditSide = PhaseReservingCredit, SideReserving
		}
	case DebitRefused:
		if p.DebitSide == SideReserving {
			p.DebitSide = SideRefused
			p.Phase, p.Outcome, p.FailCode = PhaseFinishing, StatusFailed, e.Code
		}
	case CreditReserved:
		if p.CreditSide == SideReserving {
			p.CreditSide = SideReserved
			if p.TwoPhase {
				p.Phase = PhaseMarkingPending
			} else {
				p.Phase, p.PostAmount, p.DebitSide = PhasePosting, p.Amount, SidePosting
			}
		}
	case CreditRefused:
		if p.CreditSide == SideReserving {
			// Give the debit reservation back before failing the transfer:
			// the money stays pending on the debit account until then.
			p.CreditSide, p.DebitSide = SideRefused, SideVoiding
			p.Phase, p.Outcome, p.FailCode = PhaseVoiding, StatusFailed, e.Code
		}
	case TransferPending:
		if p.Phase == PhaseMarkingPending {
			p.Phase = PhasePending
			fx.ScheduleTimeout = !p.ExpiresAt.IsZero()
		}
	case TimeoutFired:
		if p.Phase == PhasePending {
			p.Phase = PhaseExpireRequested
		}
	case PostRequested:
		if p.Phase == PhasePending || p.Phase == PhaseExpireRequested {
			fx.CancelTimeout = p.Phase == PhasePending && !p.ExpiresAt.IsZero()
			p.Phase, p.PostAmount, p.DebitSide = PhasePosting, e.Amount, SidePosting
		}
	case VoidRequested:
		if p.Phase == PhasePending || p.Phase == PhaseExpireRequested {
			fx.CancelTimeout = p.Phase == PhasePending && !p.ExpiresAt.IsZero()
			p.Phase, p.Outcome, p.CreditSide = PhaseVoiding, StatusVoided, SideVoiding
		}
	case TransferExpiring:
		if p.Phase == PhasePending || p.Phase == PhaseExpireRequested {
			fx.CancelTimeout = p.Phase == PhasePending && !p.ExpiresAt.IsZero()
			p.Phase, p.Outcome, p.CreditSide = PhaseVoiding, StatusExpired, SideVoiding
		}
	case DebitPosted:
		if p.DebitSide == SidePosting {
			p.DebitSide, p.CreditSide = SidePosted, SidePosting
		}
	case CreditPosted:
		if p.CreditSide == SidePosting {
			p.CreditSide = SidePosted
			p = p.settleIfDone()
		}
	case DebitVoided:
		if p.DebitSide == SideVoiding {
			p.DebitSide = SideVoided
			p = p.settleIfDone()
		}
	case CreditVoided:
		if p.CreditSide == SideVoiding {
			p.CreditSide, p.DebitSide = SideVoided, SideVoiding
		}
	case TransferPosted, TransferVoided, TransferExpired:
		if p.Phase == PhaseFinishing {
			p.Phase = PhaseDone
		}
	case TransferFailed:
		if p.Phase == PhaseFinishing {
			p.Phase = PhaseDone
			if auth, refund, ok := ParseRefundTransferID(p.Transfer); ok && p.RefundOf == auth {
				// The refund's transfer failed (the merchant's account
				// refused the debit, say): its amount is refundable again.
				fx.Once = append(fx.Once, Send{Topic: TransfersTopic, Cmd: ReleaseRefund{ID: auth, RefundID: refund, Code: e.Code},
					ID: actor.CommandID(p.Transfer, "release-refund")})
			}
		}
	case RefundRequested:
		if p.Phase == PhaseDone && p.Outcome == StatusPosted {
			// The reversing transfer: from the account that was credited
			// back to the one that was debited, at most what was posted
			// (the transfer aggregate checked the refundable amount).
			id := RefundTransferID(p.Transfer, e.RefundID)
			fx.Once = append(fx.Once, Send{Topic: TransfersTopic, ID: actor.CommandID(id, "create"), Cmd: CreateTransfer{
				ID: id, DebitAccountID: p.Credit, CreditAccountID: p.Debit, Amount: e.Amount, Ledger: p.Ledger, Code: p.Code, RefundOf: p.Transfer}})
		}
	}
	return p, fx
}

// settleIfDone moves to finishing once no side waits for an answer.
func (p Process) settleIfDone() Process {
	if p.DebitSide == SidePosting || p.DebitSide == SideVoiding || p.CreditSide == SidePosting || p.CreditSide == SideVoiding {
		return p
	}
	p.Phase = PhaseFinishing
	if p.Outcome == "" {
		p.Outcome = StatusPosted
	}
	return p
}

// Outstanding returns the commands whose answer the process waits for in
// state p, each with its deterministic id actor.CommandID(transfer, step).
// The shell sends the ones a step adds, and resends all of them, with the
// same ids, when the step-retry deadline fires before the answers came.
func Outstanding(p Process) []Send {
	var out []Send
	id := func(step string) string { return actor.CommandID(p.Transfer, step) }
	acct := func(cmd eventsource.Command, step string) {
		out = append(out, Send{Topic: AccountsTopic, Cmd: cmd, ID: id(step)})
	}
	xfer := func(cmd eventsource.Command, step string) {
		out = append(out, Send{Topic: TransfersTopic, Cmd: cmd, ID: id(step)})
	}
	switch p.DebitSide {
	case SideReserving:
		acct(ReserveDebit{Account: p.Debit, Transfer: p.Transfer, Amount: p.Amount, Ledger: p.Ledger}, "reserve-debit")
	case SidePosting:
		acct(PostDebit{Account: p.Debit, Transfer: p.Transfer, Amount: p.PostAmount}, "post-debit")
	case SideVoiding:
		acct(VoidDebit{Account: p.Debit, Transfer: p.Transfer}, "void-debit")
	}
	switch p.CreditSide {
	case SideReserving:
		acct(ReserveCredit{Account: p.Credit, Transfer: p.Transfer, Amount: p.Amount, Ledger: p.Ledger, DebitLedger: p.DebitLedger}, "reserve-credit")
	case SidePosting:
		acct(PostCredit{Account: p.Credit, Transfer: p.Transfer, Amount: p.PostAmount}, "post-credit")
	case SideVoiding:
		acct(VoidCredit{Account: p.Credit, Transfer: p.Transfer}, "void-credit")
	}
	switch p.Phase {
	case PhaseMarkingPending:
		xfer(MarkPending{ID: p.Transfer, ExpiresAt: p.ExpiresAt}, "mark-pending")
	case PhaseExpireRequested:
		xfer(ExpirePendingTransfer{ID: p.Transfer}, "expire")
	case PhaseFinishing:
		switch p.Outcome {
		case StatusPosted:
			xfer(MarkPosted{ID: p.Transfer, Amount: p.PostAmount}, "mark-posted")
		case StatusVoided:
			xfer(MarkVoided{ID: p.Transfer}, "mark-voided")
		case StatusExpired:
			xfer(MarkExpired{ID: p.Transfer}, "mark-expired")
		case StatusFailed:
			xfer(MarkFailed{ID: p.Transfer, Code: p.FailCode}, "mark-failed")
		}
	}
	return out
}

// processTransfer returns the transfer whose process input is for, or "".
func processTransfer(aggregateID string, input any) string {
	switch e := input.(type) {
	case DebitReserved:
		return e.Transfer
	case CreditReserved:
		return e.Transfer
	case DebitRefused:
		return e.Transfer
	case CreditRefused:
		return e.Transfer
	case DebitPosted:
		return e.Transfer
	case CreditPosted:
		return e.Transfer
	case DebitVoided:
		return e.Transfer
	case CreditVoided:
		return e.Transfer
	case AccountOpened, AccountClosed:
		return ""
	case TransferEvent:
		return aggregateID
	}
	return ""
}
