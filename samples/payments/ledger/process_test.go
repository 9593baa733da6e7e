package ledger_test

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/onceflow/onceflow/samples/payments/ledger"
)

// walk feeds inputs to the process and returns, after each, the commands
// it waits for (as "Type id" strings), its one-shot commands and its
// timeout effects.
func walk(t *testing.T, inputs ...any) (ledger.Process, []string) {
	t.Helper()
	var p ledger.Process
	at := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	var trace []string
	for _, in := range inputs {
		var fx ledger.Effects
		p, fx = ledger.Step(p, in, at)
		var out []string
		for _, s := range ledger.Outstanding(p) {
			out = append(out, fmt.Sprintf("%T %s", s.Cmd, s.ID))
		}
		for _, s := range fx.Once {
			out = append(out, fmt.Sprintf("once %T %s", s.Cmd, s.ID))
		}
		if fx.ScheduleTimeout {
			out = append(out, "schedule timeout "+p.ExpiresAt.Format(time.RFC3339))
		}
		if fx.CancelTimeout {
			out = append(out, "cancel timeout")
		}
		trace = append(trace, fmt.Sprintf("%T -> %s [%s]", in, p.Phase, strings.ReplaceAll(strings.Join(out, "; "), "ledger.", "")))
	}
	return p, trace
}

func expectTrace(t *testing.T, got []string, want ...string) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("trace:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
}

var single = ledger.TransferCreated{ID: "t-1", DebitAccountID: "a", CreditAccountID: "b", Amount: 50, Ledger: 840, Code: 1}
var twoPhase = ledger.TransferCreated{ID: "t-1", DebitAccountID: "a", CreditAccountID: "b", Amount: 50, Ledger: 840, Code: 1, Pending: true, Timeout: 30}

func TestProcessSinglePhase(t *testing.T) {
	p, trace := walk(t, single,
		ledger.DebitReserved{Transfer: "t-1", Amount: 50, Ledger: 840},
		ledger.CreditReserved{Transfer: "t-1", Amount: 50, Ledger: 840},
		ledger.DebitPosted{Transfer: "t-1", Amount: 50, Pending: 50},
		ledger.CreditPosted{Transfer: "t-1", Amount: 50, Pending: 50},
		ledger.TransferPosted{Amount: 50},
	)
	expectTrace(t, trace,
		"ledger.TransferCreated -> reserving_debit [ReserveDebit t-1/reserve-debit]",
		"ledger.DebitReserved -> reserving_credit [ReserveCredit t-1/reserve-credit]",
		"ledger.CreditReserved -> posting [PostDebit t-1/post-debit]",
		"ledger.DebitPosted -> posting [PostCredit t-1/post-credit]",
		"ledger.CreditPosted -> finishing [MarkPosted t-1/mark-posted]",
		"ledger.TransferPosted -> done []",
	)
	if p.Outcome != ledger.StatusPosted || p.PostAmount != 50 {
		t.Fatalf("process %+v", p)
	}
}

func TestProcessTwoPhasePartialPost(t *testing.T) {
	_, trace := walk(t, twoPhase,
		ledger.DebitReserved{Transfer: "t-1", Amount: 50, Ledger: 840},
		ledger.CreditReserved{Transfer: "t-1", Amount: 50, Ledger: 840},
		ledger.TransferPending{},
		ledger.PostRequested{Amount: 20},
		ledger.DebitPosted{Transfer: "t-1", Amount: 20, Pending: 50},
		ledger.CreditPosted{Transfer: "t-1", Amount: 20, Pending: 50},
		ledger.TransferPosted{Amount: 20},
	)
	expectTrace(t, trace,
		"ledger.TransferCreated -> reserving_debit [ReserveDebit t-1/reserve-debit]",
		"ledger.DebitReserved -> reserving_credit [ReserveCredit t-1/reserve-credit]",
		"ledger.CreditReserved -> marking_pending [MarkPending t-1/mark-pending]",
		"ledger.TransferPending -> pending [schedule timeout 2030-01-01T00:00:30Z]",
		"ledger.PostRequested -> posting [PostDebit t-1/post-debit; cancel timeout]",
		"ledger.DebitPosted -> posting [PostCredit t-1/post-credit]",
		"ledger.CreditPosted -> finishing [MarkPosted t-1/mark-posted]",
		"ledger.TransferPosted -> done []",
	)
}

func TestProcessTimeout(t *testing.T) {
	p, trace := walk(t, twoPhase,
		ledger.DebitReserved{Transfer: "t-1", Amount: 50, Ledger: 840},
		ledger.CreditReserved{Transfer: "t-1", Amount: 50, Ledger: 840},
		ledger.TransferPending{},
		ledger.TimeoutFired{},
		ledger.TransferExpiring{},
		ledger.CreditVoided{Transfer: "t-1", Amount: 50},
		ledger.DebitVoided{Transfer: "t-1", Amount: 50},
		ledger.TransferExpired{},
	)
	expectTrace(t, trace,
		"ledger.TransferCreated -> reserving_debit [ReserveDebit t-1/reserve-debit]",
		"ledger.DebitReserved -> reserving_credit [ReserveCredit t-1/reserve-credit]",
		"ledger.CreditReserved -> marking_pending [MarkPending t-1/mark-pending]",
		"ledger.TransferPending -> pending [schedule timeout 2030-01-01T00:00:30Z]",
		"ledger.TimeoutFired -> expire_requested [ExpirePendingTransfer t-1/expire]",
		"ledger.TransferExpiring -> voiding [VoidCredit t-1/void-credit]",
		"ledger.CreditVoided -> voiding [VoidDebit t-1/void-debit]",
		"ledger.DebitVoided -> finishing [MarkExpired t-1/mark-expired]",
		"ledger.TransferExpired -> done []",
	)
	if p.Outcome != ledger.StatusExpired {
		t.Fatalf("process %+v", p)
	}
}

// The timeout fired, but the client's post reached the transfer first:
// the transfer records the post and ignores the expiry, and so does the
// process.
func TestProcessPostWinsOverTimeout(t *testing.T) {
	_, trace := walk(t, twoPhase,
		ledger.DebitReserved{Transfer: "t-1", Amount: 50, Ledger: 840},
		ledger.CreditReserved{Transfer: "t-1", Amount: 50, Ledger: 840},
		ledger.TransferPending{},
		ledger.TimeoutFired{},
		ledger.PostRequested{Amount: 50},
		ledger.TransferExpiring{}, // cannot happen after the post; ignored if it did
	)
	expectTrace(t, trace[4:],
		"ledger.TimeoutFired -> expire_requested [ExpirePendingTransfer t-1/expire]",
		"ledger.PostRequested -> posting [PostDebit t-1/post-debit]",
		"ledger.TransferExpiring -> posting [PostDebit t-1/post-debit]",
	)
}

func TestProcessVoid(t *testing.T) {
	_, trace := walk(t, twoPhase,
		ledger.DebitReserved{Transfer: "t-1", Amount: 50, Ledger: 840},
		ledger.CreditReserved{Transfer: "t-1", Amount: 50, Ledger: 840},
		ledger.TransferPending{},
		ledger.VoidRequested{},
		ledger.CreditVoided{Transfer: "t-1", Amount: 50},
		ledger.DebitVoided{Transfer: "t-1", Amount: 50},
		ledger.TransferVoided{},
	)
	expectTrace(t, trace[4:],
		"ledger.VoidRequested -> voiding [VoidCredit t-1/void-credit; cancel timeout]",
		"ledger.CreditVoided -> voiding [VoidDebit t-1/void-debit]",
		"ledger.DebitVoided -> finishing [MarkVoided t-1/mark-voided]",
		"ledger.TransferVoided -> done []",
	)
}

func TestProcessRefusals(t *testing.T) {
	p, trace := walk(t, single, ledger.DebitRefused{Transfer: "t-1", Code: ledger.ResultExceedsCredits}, ledger.TransferFailed{Code: ledger.ResultExceedsCredits})
	expectTrace(t, trace[1:],
		"ledger.DebitRefused -> finishing [MarkFailed t-1/mark-failed]",
		"ledger.TransferFailed -> done []",
	)
	if p.FailCode != ledger.ResultExceedsCredits {
		t.Fatalf("process %+v", p)
	}
	// The credit refused: the debit reservation is voided before the
	// transfer fails.
	_, trace = walk(t, single,
		ledger.DebitReserved{Transfer: "t-1", Amount: 50, Ledger: 840},
		ledger.CreditRefused{Transfer: "t-1", Code: ledger.ResultCreditAccountNotFound},
		ledger.DebitVoided{Transfer: "t-1", Amount: 50},
		ledger.TransferFailed{Code: ledger.ResultCreditAccountNotFound},
	)
	expectTrace(t, trace[2:],
		"ledger.CreditRefused -> voiding [VoidDebit t-1/void-debit]",
		"ledger.DebitVoided -> finishing [MarkFailed t-1/mark-failed]",
		"ledger.TransferFailed -> done []",
	)
}

// Answers that do not fit the state (repeats, answers already seen) do
// nothing: the process accepts its events in any order across partitions.
func TestProcessIgnoresRepeats(t *testing.T) {
	p, _ := walk(t, single, ledger.DebitReserved{Transfer: "t-1", Amount: 50, Ledger: 840})
	for _, in := range []any{single, ledger.DebitReserved{Transfer: "t-1", Amount: 50}, ledger.DebitRefused{Transfer: "t-1", Code: ledger.ResultExceedsCredits},
		ledger.CreditPosted{Transfer: "t-1"}, ledger.DebitVoided{Transfer: "t-1"}, ledger.TimeoutFired{}, ledger.PostRequested{Amount: 5}, ledger.TransferPosted{}} {
		next, fx := ledger.Step(p, in, time.Time{})
		if !reflect.DeepEqual(next, p) || !reflect.DeepEqual(fx, ledger.Effects{}) {
			t.Errorf("%T changed the process: %+v -> %+v, %+v", in, p, next, fx)
		}
	}
}

func TestProcessRefund(t *testing.T) {
	p, _ := walk(t, single,
		ledger.DebitReserved{Transfer: "t-1", Amount: 50, Ledger: 840},
		ledger.CreditReserved{Transfer: "t-1", Amount: 50, Ledger: 840},
		ledger.DebitPosted{Transfer: "t-1", Amount: 50, Pending: 50},
		ledger.CreditPosted{Transfer: "t-1", Amount: 50, Pending: 50},
		ledger.TransferPosted{Amount: 50},
	)
	_, fx := ledger.Step(p, ledger.RefundRequested{RefundID: "r-1", Amount: 20}, time.Time{})
	want := []ledger.Send{{Topic: ledger.TransfersTopic, ID: "t-1:refund:r-1/create", Cmd: ledger.CreateTransfer{
		ID: "t-1:refund:r-1", DebitAccountID: "b", CreditAccountID: "a", Amount: 20, Ledger: 840, Code: 1, RefundOf: "t-1"}}}
	if !reflect.DeepEqual(fx.Once, want) {
		t.Fatalf("refund sends %+v, want %+v", fx.Once, want)
	}
	// The refund's transfer fails: its amount is released on the original.
	refund := ledger.TransferCreated{ID: "t-1:refund:r-1", DebitAccountID: "b", CreditAccountID: "a", Amount: 20, Ledger: 840, Code: 1, RefundOf: "t-1"}
	rp, _ := walk(t, refund, ledger.DebitRefused{Transfer: "t-1:refund:r-1", Code: ledger.ResultExceedsCredits})
	_, fx = ledger.Step(rp, ledger.TransferFailed{Code: ledger.ResultExceedsCredits}, time.Time{})
	want = []ledger.Send{{Topic: ledger.TransfersTopic, ID: "t-1:refund:r-1/release-refund", Cmd: ledger.ReleaseRefund{ID: "t-1", RefundID: "r-1", Code: ledger.ResultExceedsCredits}}}
	if !reflect.DeepEqual(fx.Once, want) {
		t.Fatalf("release sends %+v, want %+v", fx.Once, want)
	}
}
