package ledger

import (
	"errors"
	"fmt"
	"strings"
)

// Result is a result code, named and meant as TigerBeetle's create_accounts
// and create_transfers results are (see the README for the mapping). It is
// an error so that a rejection can be matched with errors.Is(err,
// ResultExists); across the runtime only the text of a rejection survives
// (the stored command result's reason), and that text starts with the
// code: "<code>: <detail>" (see ParseResult).
type Result string

// Error implements error.
func (r Result) Error() string { return string(r) }

// Result codes. A client's command that breaks a rule is rejected with one
// of them (Decide returns a *ResultError); a command of the transfer process
// that an account refuses is answered with an EVENT carrying one of them
// (DebitRefused, CreditRefused), so the process sees the answer on the
// history topic.
const (
	// ResultOK is what a transfer or account that was created without a
	// problem reports (never a rejection).
	ResultOK Result = "ok"

	// Creation of an account or transfer with an id that exists.
	ResultExists                          Result = "exists"
	ResultExistsWithDifferentFlags        Result = "exists_with_different_flags"
	ResultExistsWithDifferentLedger       Result = "exists_with_different_ledger"
	ResultExistsWithDifferentCode         Result = "exists_with_different_code"
	ResultExistsWithDifferentDebitAccount Result = "exists_with_different_debit_account_id"
	ResultExistsWithDifferentCreditAcct   Result = "exists_with_different_credit_account_id"
	ResultExistsWithDifferentAmount       Result = "exists_with_different_amount"
	ResultExistsWithDifferentTimeout      Result = "exists_with_different_timeout"

	// Validation of a command's fields.
	ResultIDMustNotBeEmpty              Result = "id_must_not_be_zero"
	ResultIDInvalid                     Result = "id_is_invalid"
	ResultDebitAccountIDMustNotBeEmpty  Result = "debit_account_id_must_not_be_zero"
	ResultCreditAccountIDMustNotBeEmpty Result = "credit_account_id_must_not_be_zero"
	ResultAccountsMustBeDifferent       Result = "accounts_must_be_different"
	ResultAmountMustNotBeZero           Result = "amount_must_not_be_zero"
	ResultAmountMustNotBeNegative       Result = "amount_must_not_be_negative"
	ResultLedgerMustNotBeZero           Result = "ledger_must_not_be_zero"
	ResultCodeMustNotBeZero             Result = "code_must_not_be_zero"
	ResultFlagsAreMutuallyExclusive     Result = "flags_are_mutually_exclusive"
	ResultTimeoutReservedForPending     Result = "timeout_reserved_for_pending_transfer"
	ResultTimeoutMustNotBeNegative      Result = "timeout_must_not_be_negative"
	ResultOverflowsTimeout              Result = "overflows_timeout"
	ResultAccountsMustHaveTheSameLedger Result = "accounts_must_have_the_same_ledger"
	ResultTransferMustHaveTheSameLedger Result = "transfer_must_have_the_same_ledger_as_accounts"
	ResultDebitAccountNotFound          Result = "debit_account_not_found"
	ResultCreditAccountNotFound         Result = "credit_account_not_found"
	ResultDebitAccountAlreadyClosed     Result = "debit_account_already_closed"
	ResultCreditAccountAlreadyClosed    Result = "credit_account_already_closed"
	ResultExceedsCredits                Result = "exceeds_credits"
	ResultExceedsDebits                 Result = "exceeds_debits"
	ResultOverflowsDebitsPending        Result = "overflows_debits_pending"
	ResultOverflowsCreditsPending       Result = "overflows_credits_pending"
	ResultOverflowsDebits               Result = "overflows_debits"
	ResultOverflowsCredits              Result = "overflows_credits"
	// TigerBeetle's overflows_debits_posted and overflows_credits_posted
	// cannot happen here: a post moves at most the reserved amount from
	// pending to posted, and pending + posted was checked when reserving.
	ResultPendingTransferNotFound      Result = "pending_transfer_not_found"
	ResultPendingTransferNotPending    Result = "pending_transfer_not_pending"
	ResultPendingTransferAlreadyPosted Result = "pending_transfer_already_posted"
	ResultPendingTransferAlreadyVoided Result = "pending_transfer_already_voided"
	ResultPendingTransferExpired       Result = "pending_transfer_expired"
	ResultExceedsPendingTransferAmount Result = "exceeds_pending_transfer_amount"

	// Sample-specific codes: TigerBeetle applies a transfer atomically, this
	// service in steps across partitions, so a transfer can be seen in flight,
	// and it keeps failed transfers (TigerBeetle does not store them).
	ResultTransferInFlight          Result = "transfer_in_flight"      // post/void of a pending transfer whose reservations are still being made
	ResultPendingTransferFailed     Result = "pending_transfer_failed" // post/void of a transfer that failed
	ResultAccountNotFound           Result = "account_not_found"       // close of an account never opened
	ResultAccountAlreadyClosed      Result = "account_already_closed"  // close of a closed account
	ResultAccountHasPendingTransfer Result = "account_has_pending_transfers"
	ResultTransferNotPosted         Result = "transfer_not_posted"       // a refund of a transfer that is not posted
	ResultExceedsRefundableAmount   Result = "exceeds_refundable_amount" // refunds beyond what was captured
	ResultTransferNotFound          Result = "transfer_not_found"        // a refund of a transfer never created
	ResultInvalidTransition         Result = "invalid_transition"        // a process command that does not fit the state: a bug
)

// results lists every code, for ParseResult and the tests.
var results = []Result{
	ResultOK, ResultExists, ResultExistsWithDifferentFlags, ResultExistsWithDifferentLedger, ResultExistsWithDifferentCode,
	ResultExistsWithDifferentDebitAccount, ResultExistsWithDifferentCreditAcct, ResultExistsWithDifferentAmount,
	ResultExistsWithDifferentTimeout, ResultIDMustNotBeEmpty, ResultIDInvalid, ResultDebitAccountIDMustNotBeEmpty,
	ResultCreditAccountIDMustNotBeEmpty, ResultAccountsMustBeDifferent, ResultAmountMustNotBeZero, ResultAmountMustNotBeNegative,
	ResultLedgerMustNotBeZero, ResultCodeMustNotBeZero, ResultFlagsAreMutuallyExclusive, ResultTimeoutReservedForPending,
	ResultTimeoutMustNotBeNegative, ResultOverflowsTimeout, ResultAccountsMustHaveTheSameLedger, ResultTransferMustHaveTheSameLedger,
	ResultDebitAccountNotFound, ResultCreditAccountNotFound, ResultDebitAccountAlreadyClosed, ResultCreditAccountAlreadyClosed,
	ResultExceedsCredits, ResultExceedsDebits, ResultOverflowsDebitsPending, ResultOverflowsCreditsPending,
	ResultOverflowsDebits, ResultOverflowsCredits,
	ResultPendingTransferNotFound, ResultPendingTransferNotPending, ResultPendingTransferAlreadyPosted,
	ResultPendingTransferAlreadyVoided, ResultPendingTransferExpired, ResultExceedsPendingTransferAmount,
	ResultTransferInFlight, ResultPendingTransferFailed, ResultAccountNotFound,
	ResultAccountAlreadyClosed, ResultAccountHasPendingTransfer, ResultTransferNotPosted, ResultExceedsRefundableAmount,
	ResultTransferNotFound, ResultInvalidTransition,
}

// Results returns every result code.
func Results() []Result { return append([]Result(nil), results...) }

// ResultError is a rejection by Decide: a result code and what exactly is
// wrong. errors.Is(err, code) matches its code.
type ResultError struct {
	Code   Result
	Detail string
}

// Error is "<code>: <detail>" (or the code alone).
func (e *ResultError) Error() string {
	if e.Detail == "" {
		return string(e.Code)
	}
	return string(e.Code) + ": " + e.Detail
}

// Is matches the code.
func (e *ResultError) Is(target error) bool {
	r, ok := target.(Result)
	return ok && r == e.Code
}

func reject(code Result, format string, args ...any) error {
	return &ResultError{Code: code, Detail: fmt.Sprintf(format, args...)}
}

// ParseResult reads the code back from a rejection's text (the reason of
// an actor.RejectedError or a stored command result): ok is false when the
// text does not start with a known code.
func ParseResult(reason string) (code Result, detail string, ok bool) {
	head, tail, _ := strings.Cut(reason, ": ")
	for _, r := range results {
		if string(r) == head {
			return r, tail, true
		}
	}
	return "", reason, false
}

// CodeOf returns the result code of err: the code of a *ResultError or a
// Result, else "".
func CodeOf(err error) Result {
	var re *ResultError
	if errors.As(err, &re) {
		return re.Code
	}
	var r Result
	if errors.As(err, &r) {
		return r
	}
	return ""
}
