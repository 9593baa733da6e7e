package api

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/onceflow/onceflow/samples/payments/ledger"
)

type refundBody struct {
	Amount     int64  `json:"amount"`
	Released   bool   `json:"released,omitempty"`
	TransferID string `json:"transfer_id"`
}

// transferBody is a transfer as the API shows it.
type transferBody struct {
	ID              string `json:"id"`
	DebitAccountID  string `json:"debit_account_id"`
	CreditAccountID string `json:"credit_account_id"`
	Amount          int64  `json:"amount"`
	Ledger          uint32 `json:"ledger"`
	Code            uint16 `json:"code"`
	Pending         bool   `json:"pending"`
	TimeoutSeconds  int64  `json:"timeout_seconds,omitempty"`
	RefundOf        string `json:"refund_of,omitempty"`
	// Status: reserving, pending, posting, voiding, expiring, posted,
	// voided, expired, failed ("requested" for a refund whose transfer is
	// not created yet).
	Status ledger.Status `json:"status"`
	// Final is true for posted, voided, expired and failed.
	Final bool `json:"final"`
	// Result is the transfer's result code: "ok", or why it failed.
	Result       ledger.Result         `json:"result"`
	PostedAmount int64                 `json:"posted_amount,omitempty"` // posting or posted
	ExpiresAt    *time.Time            `json:"expires_at,omitempty"`
	Refunded     int64                 `json:"refunded,omitempty"`
	Refunds      map[string]refundBody `json:"refunds,omitempty"`
	Version      int64                 `json:"version"`
}

// transferResponse answers a command about a transfer.
type transferResponse struct {
	transferBody
	// RequestResult is what the request did: "ok", or "exists" for a
	// create of an existing transfer with the same fields.
	RequestResult  string `json:"request_result"`
	CommandID      string `json:"command_id"`
	IdempotencyKey string `json:"idempotency_key"`
	Duplicate      bool   `json:"duplicate"`
}

func transferOf(t ledger.Transfer, version int64) transferBody {
	b := transferBody{ID: t.ID, DebitAccountID: t.DebitAccountID, CreditAccountID: t.CreditAccountID, Amount: t.Amount, Ledger: t.Ledger,
		Code: t.Code, Pending: t.Pending, TimeoutSeconds: t.Timeout, RefundOf: t.RefundOf, Status: t.Status, Final: t.Status.Final(),
		Result: ledger.ResultOK, Refunded: t.Refunded, Version: version}
	if t.Status == ledger.StatusFailed {
		b.Result = t.Result
	}
	if t.Status == ledger.StatusPosting || t.Status == ledger.StatusPosted {
		b.PostedAmount = t.PostAmount
	}
	if !t.ExpiresAt.IsZero() {
		e := t.ExpiresAt
		b.ExpiresAt = &e
	}
	for id, r := range t.Refunds {
		if b.Refunds == nil {
			b.Refunds = map[string]refundBody{}
		}
		b.Refunds[id] = refundBody{Amount: r.Amount, Released: r.Released, TransferID: ledger.RefundTransferID(t.ID, id)}
	}
	return b
}

// ---- Waiting: Prefer: wait=N ----

// preferWait reads "Prefer: wait=N" (RFC 7240): how long the request may
// wait for the transfer to settle; 0 when absent. N above MaxWait is
// capped.
func preferWait(r *http.Request) (time.Duration, *apiError) {
	var wait time.Duration
	for _, h := range r.Header.Values("Prefer") {
		for _, pref := range strings.Split(h, ",") {
			tok, _, _ := strings.Cut(pref, ";")
			name, val, hasVal := strings.Cut(strings.TrimSpace(tok), "=")
			if !strings.EqualFold(strings.TrimSpace(name), "wait") {
				continue // other preferences are not ours to refuse
			}
			n, err := strconv.Atoi(strings.Trim(strings.TrimSpace(val), `"`))
			if !hasVal || err != nil || n < 0 {
				return 0, &apiError{status: http.StatusBadRequest, Code: "invalid_header", Field: "Prefer",
					Message: fmt.Sprintf("Prefer: wait must be a number of seconds (wait=5), got %q", strings.TrimSpace(tok))}
			}
			wait = min(time.Duration(n)*time.Second, MaxWait)
		}
	}
	return wait, nil
}

// waitTransfer reads transfer id until done(state) or for d, woken by the
// Watcher (or polling without one). It returns the last state read.
func (s *Server) waitTransfer(ctx context.Context, id string, d time.Duration, done func(ledger.Transfer) bool) (ledger.Transfer, int64, error) {
	var wake <-chan struct{}
	recheck := 100 * time.Millisecond
	if s.cfg.Watcher != nil {
		ch, stop := s.cfg.Watcher.Watch(id)
		defer stop()
		wake, recheck = ch, time.Second // the recheck covers a lost connection
	}
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	for {
		t, v, err := s.cfg.Reader.Transfer(ctx, id)
		if err != nil || done(t) || d <= 0 {
			return t, v, err
		}
		select {
		case <-wake:
		case <-time.After(recheck):
		case <-deadline.C:
			return s.cfg.Reader.Transfer(ctx, id)
		case <-ctx.Done():
			return t, v, ctx.Err()
		}
	}
}

func settled(t ledger.Transfer) bool { return t.Status.Settled() }
func final(t ledger.Transfer) bool   { return t.Status.Final() }

// answerTransfer waits as the request prefers, then answers with the
// transfer: 200 once done, 202 while it is not.
func (s *Server) answerTransfer(w http.ResponseWriter, r *http.Request, id string, wait time.Duration, done func(ledger.Transfer) bool, result string, sn *sent) {
	t, v, err := s.waitTransfer(r.Context(), id, wait, done)
	if err != nil {
		s.internal(w, r, sn.id, err)
		return
	}
	body := transferOf(t, v)
	status := http.StatusOK
	if v == 0 {
		// A refund whose transfer the process has not created yet.
		body = transferBody{ID: id, Status: "requested", Result: ledger.ResultOK}
	}
	if v == 0 || !done(t) {
		status = http.StatusAccepted
	}
	w.Header().Set("Location", "/v1/transfers/"+id)
	writeJSON(w, status, transferResponse{transferBody: body, RequestResult: result, CommandID: sn.id, IdempotencyKey: sn.key, Duplicate: sn.out.Duplicate})
}

// refuseTransfer answers a rejected command about transfer id, with the
// transfer as it is.
func (s *Server) refuseTransfer(w http.ResponseWriter, r *http.Request, id string, sn *sent, code ledger.Result, detail string) {
	e := refusal(sn, code, detail)
	if t, v, err := s.cfg.Reader.Transfer(r.Context(), id); err == nil && v > 0 {
		body := transferOf(t, v)
		e.Transfer = &body
	}
	if code == ledger.ResultTransferInFlight {
		w.Header().Set("Retry-After", "1")
	}
	writeError(w, e)
}

// ---- Transfers ----

// createTransfer is POST /v1/transfers and POST /v1/cards/authorize.
func (s *Server) create(w http.ResponseWriter, r *http.Request, scope string, cmd ledger.CreateTransfer, req any) {
	wait, e := preferWait(r)
	if e != nil {
		writeError(w, e)
		return
	}
	sn := s.send(w, r, scope, s.cfg.Transfers, cmd, req)
	if sn == nil {
		return
	}
	code, detail, rejected, done := s.failed(w, r, sn)
	switch {
	case done:
	case !rejected:
		s.answerTransfer(w, r, cmd.ID, wait, settled, "ok", sn)
	case code == ledger.ResultExists:
		s.answerTransfer(w, r, cmd.ID, wait, settled, string(ledger.ResultExists), sn)
	default:
		s.refuseTransfer(w, r, cmd.ID, sn, code, detail)
	}
}

// POST /v1/transfers
func (s *Server) createTransfer(w http.ResponseWriter, r *http.Request) {
	var req createTransferRequest
	if e := decodeJSON(w, r, &req, "id, debit_account_id, credit_account_id, amount, ledger, code, pending, timeout_seconds", false); e != nil {
		writeError(w, e)
		return
	}
	var c ledger.CreateTransfer
	var e *apiError
	if c.ID, e = id("id", req.ID); e == nil {
		if c.DebitAccountID, e = id("debit_account_id", req.DebitAccountID); e == nil {
			if c.CreditAccountID, e = id("credit_account_id", req.CreditAccountID); e == nil && c.DebitAccountID == c.CreditAccountID {
				e = invalid("credit_account_id", "credit_account_id must differ from debit_account_id (accounts_must_be_different)")
			}
		}
	}
	if e == nil {
		c.Amount, e = amount("amount", req.Amount)
	}
	if e == nil {
		c.Ledger, e = ledgerField(req.Ledger)
	}
	if e == nil {
		c.Code, e = codeField(req.Code, 0)
	}
	if e == nil {
		c.Pending = req.Pending != nil && *req.Pending
		c.Timeout, e = timeoutField(req.TimeoutSeconds, c.Pending)
	}
	if e != nil {
		writeError(w, e)
		return
	}
	s.create(w, r, "transfers.create", c, req)
}

// GET /v1/transfers/{id}
func (s *Server) getTransfer(w http.ResponseWriter, r *http.Request) {
	tid, e := transferPath(r)
	if e == nil {
		_, e = queryParams(r)
	}
	if e != nil {
		writeError(w, e)
		return
	}
	t, v, err := s.cfg.Reader.Transfer(r.Context(), tid)
	if err != nil {
		s.internal(w, r, "", err)
		return
	}
	if v == 0 {
		writeError(w, &apiError{status: http.StatusNotFound, Code: string(ledger.ResultTransferNotFound), Message: fmt.Sprintf("no transfer %q", tid)})
		return
	}
	writeJSON(w, http.StatusOK, transferOf(t, v))
}

// transferPath reads {id}: a client's transfer id or a refund's.
func transferPath(r *http.Request) (string, *apiError) {
	tid := r.PathValue("id")
	if _, _, ok := ledger.ParseRefundTransferID(tid); ok {
		return tid, nil
	}
	if err := ledger.ValidateID("transfer id", tid); err != nil {
		return "", &apiError{status: http.StatusBadRequest, Code: "invalid_path", Field: "id", Message: err.Error()}
	}
	return tid, nil
}

// decide sends a post or void of pending transfer tid.
func (s *Server) decide(w http.ResponseWriter, r *http.Request, scope, tid string, cmd ledger.TransferCommand, req any) {
	wait, e := preferWait(r)
	if e != nil {
		writeError(w, e)
		return
	}
	sn := s.send(w, r, scope, s.cfg.Transfers, cmd, req)
	if sn == nil {
		return
	}
	code, detail, rejected, done := s.failed(w, r, sn)
	switch {
	case done:
	case rejected:
		s.refuseTransfer(w, r, tid, sn, code, detail)
	default:
		s.answerTransfer(w, r, tid, wait, final, "ok", sn)
	}
}

// POST /v1/transfers/{id}/post {"amount": N}: N omitted posts the full
// pending amount.
func (s *Server) postTransfer(w http.ResponseWriter, r *http.Request) {
	tid, e := transferPath(r)
	if e != nil {
		writeError(w, e)
		return
	}
	var req postRequest
	if e := decodeJSON(w, r, &req, "amount", true); e != nil {
		writeError(w, e)
		return
	}
	var amt int64
	if req.Amount != nil {
		if amt, e = amount("amount", req.Amount); e != nil {
			writeError(w, e)
			return
		}
	}
	s.decide(w, r, "transfers.post", tid, ledger.PostPendingTransfer{ID: tid, Amount: amt}, req)
}

// POST /v1/transfers/{id}/void
func (s *Server) voidTransfer(w http.ResponseWriter, r *http.Request) {
	tid, e := transferPath(r)
	if e != nil {
		writeError(w, e)
		return
	}
	var req emptyRequest
	if e := decodeJSON(w, r, &req, "no fields", true); e != nil {
		writeError(w, e)
		return
	}
	s.decide(w, r, "transfers.void", tid, ledger.VoidPendingTransfer{ID: tid}, req)
}

// ---- Cards ----

// POST /v1/cards/authorize: a pending transfer from the card's account to
// the merchant's.
func (s *Server) cardAuthorize(w http.ResponseWriter, r *http.Request) {
	var req authorizeRequest
	if e := decodeJSON(w, r, &req, "authorization_id, card_account_id, merchant_account_id, amount, ledger, code, timeout_seconds", false); e != nil {
		writeError(w, e)
		return
	}
	c := ledger.CreateTransfer{Pending: true, Timeout: DefaultAuthorizationTimeout}
	var e *apiError
	if c.ID, e = id("authorization_id", req.AuthorizationID); e == nil {
		if c.DebitAccountID, e = id("card_account_id", req.CardAccountID); e == nil {
			if c.CreditAccountID, e = id("merchant_account_id", req.MerchantAccountID); e == nil && c.DebitAccountID == c.CreditAccountID {
				e = invalid("merchant_account_id", "merchant_account_id must differ from card_account_id")
			}
		}
	}
	if e == nil {
		c.Amount, e = amount("amount", req.Amount)
	}
	if e == nil {
		c.Ledger, e = ledgerField(req.Ledger)
	}
	if e == nil {
		c.Code, e = codeField(req.Code, DefaultCardCode)
	}
	if e == nil && req.TimeoutSeconds != nil {
		c.Timeout, e = timeoutField(req.TimeoutSeconds, true)
	}
	if e != nil {
		writeError(w, e)
		return
	}
	s.create(w, r, "cards.authorize", c, req)
}

// POST /v1/cards/capture {"authorization_id", "amount"?}: post all or part
// of the authorization.
func (s *Server) cardCapture(w http.ResponseWriter, r *http.Request) {
	var req captureRequest
	if e := decodeJSON(w, r, &req, "authorization_id, amount", false); e != nil {
		writeError(w, e)
		return
	}
	auth, e := id("authorization_id", req.AuthorizationID)
	var amt int64
	if e == nil && req.Amount != nil {
		amt, e = amount("amount", req.Amount)
	}
	if e != nil {
		writeError(w, e)
		return
	}
	s.decide(w, r, "cards.capture", auth, ledger.PostPendingTransfer{ID: auth, Amount: amt}, req)
}

// POST /v1/cards/void {"authorization_id"}
func (s *Server) cardVoid(w http.ResponseWriter, r *http.Request) {
	var req cardVoidRequest
	if e := decodeJSON(w, r, &req, "authorization_id", false); e != nil {
		writeError(w, e)
		return
	}
	auth, e := id("authorization_id", req.AuthorizationID)
	if e != nil {
		writeError(w, e)
		return
	}
	s.decide(w, r, "cards.void", auth, ledger.VoidPendingTransfer{ID: auth}, req)
}

// POST /v1/cards/refund {"authorization_id", "refund_id", "amount"}: a
// reversing transfer of part of what was captured; the refunds of an
// authorization never exceed its capture. The answer is the refund's
// transfer (id "<authorization_id>:refund:<refund_id>").
func (s *Server) cardRefund(w http.ResponseWriter, r *http.Request) {
	var req refundRequest
	if e := decodeJSON(w, r, &req, "authorization_id, refund_id, amount", false); e != nil {
		writeError(w, e)
		return
	}
	auth, e := id("authorization_id", req.AuthorizationID)
	var refund string
	var amt int64
	if e == nil {
		refund, e = id("refund_id", req.RefundID)
	}
	if e == nil {
		amt, e = amount("amount", req.Amount)
	}
	if e != nil {
		writeError(w, e)
		return
	}
	wait, e := preferWait(r)
	if e != nil {
		writeError(w, e)
		return
	}
	sn := s.send(w, r, "cards.refund", s.cfg.Transfers, ledger.RefundTransfer{ID: auth, RefundID: refund, Amount: amt}, req)
	if sn == nil {
		return
	}
	code, detail, rejected, done := s.failed(w, r, sn)
	rid := ledger.RefundTransferID(auth, refund)
	switch {
	case done:
	case !rejected:
		s.answerTransfer(w, r, rid, wait, final, "ok", sn)
	case code == ledger.ResultExists:
		s.answerTransfer(w, r, rid, wait, final, string(ledger.ResultExists), sn)
	default:
		s.refuseTransfer(w, r, auth, sn, code, detail)
	}
}
