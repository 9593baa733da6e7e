package api

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/onceflow/onceflow/actor"
	"github.com/onceflow/onceflow/eventsource"
	"github.com/onceflow/onceflow/projection"
	"github.com/onceflow/onceflow/samples/payments/ledger"
	"github.com/onceflow/onceflow/samples/payments/readmodel"
	"github.com/onceflow/onceflow/txn"
)

// Sender sends one command under commandID and waits for its outcome,
// reporting it as *actor.Client does (*actor.RejectedError,
// *actor.OutcomeUnknownError, ...). ClientSender adapts an *actor.Client.
type Sender interface {
	Send(ctx context.Context, cmd eventsource.Command, commandID string) (actor.Outcome, error)
}

// ClientSender is the Sender of an *actor.Client.
type ClientSender struct{ Client *actor.Client }

// Send implements Sender.
func (c ClientSender) Send(ctx context.Context, cmd eventsource.Command, commandID string) (actor.Outcome, error) {
	return c.Client.Send(ctx, cmd, actor.WithCommandID(commandID))
}

// Limits of the HTTP layer.
const (
	// MaxBodyBytes is the largest request body accepted (413 beyond).
	MaxBodyBytes = 64 << 10
	// MaxIdempotencyKeyLen is the longest Idempotency-Key accepted.
	MaxIdempotencyKeyLen = 128
	// DefaultSendTimeout bounds waiting for a command's outcome.
	DefaultSendTimeout = 10 * time.Second
	// MaxWait is the longest wait a "Prefer: wait=N" gets.
	MaxWait = 60 * time.Second
	// DefaultAuthorizationTimeout is the timeout of a card authorization
	// that names none: 7 days, as card networks hold authorizations.
	DefaultAuthorizationTimeout = 7 * 24 * 3600
	// DefaultCardCode is the code of card transfers that name none.
	DefaultCardCode = 1
)

// Config configures a Server.
type Config struct {
	// Accounts and Transfers send to the two aggregates' command topics.
	// Required.
	Accounts, Transfers Sender
	// Reader loads transfers and accounts from the event store. Required.
	Reader Reader
	// Keys remembers the Idempotency-Keys (PGKeys in production). Required.
	Keys Keys
	// ReadModels serves the balances, statements and pending transfers;
	// without it those routes answer 503.
	ReadModels ReadModels
	// Watcher wakes a request waiting for a transfer (Notifier); without
	// it the wait polls.
	Watcher Watcher
	// Waiter, when set, makes POST /v1/accounts and close wait (up to
	// ReadYourWritesTimeout) until the balances read model shows the
	// change, so a GET right after sees it.
	Waiter                *projection.Waiter
	ReadYourWritesTimeout time.Duration // default 5s
	// Health is called by GET /healthz.
	Health func(ctx context.Context) error
	// Logger: default slog.Default().
	Logger *slog.Logger
	// SendTimeout: default DefaultSendTimeout.
	SendTimeout time.Duration
}

// Server is the HTTP handler. Safe for concurrent use.
type Server struct {
	cfg Config
	mux *http.ServeMux
	log *slog.Logger
}

// New validates cfg and returns the API handler.
func New(cfg Config) (*Server, error) {
	var errs []error
	if cfg.Accounts == nil || cfg.Transfers == nil {
		errs = append(errs, errors.New("api: Config.Accounts and Config.Transfers are required"))
	}
	if cfg.Reader == nil {
		errs = append(errs, errors.New("api: Config.Reader is nil"))
	}
	if cfg.Keys == nil {
		errs = append(errs, errors.New("api: Config.Keys is nil"))
	}
	if cfg.SendTimeout < 0 || cfg.ReadYourWritesTimeout < 0 {
		errs = append(errs, errors.New("api: timeouts must be >= 0"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if cfg.SendTimeout == 0 {
		cfg.SendTimeout = DefaultSendTimeout
	}
	if cfg.ReadYourWritesTimeout == 0 {
		cfg.ReadYourWritesTimeout = 5 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	s := &Server{cfg: cfg, mux: http.NewServeMux(), log: cfg.Logger}
	post, get := http.MethodPost, []string{http.MethodGet, http.MethodHead}
	s.mux.Handle("/v1/accounts", only(s.openAccount, post))
	s.mux.Handle("/v1/accounts/{id}", only(s.getAccount, get...))
	s.mux.Handle("/v1/accounts/{id}/close", only(s.closeAccount, post))
	s.mux.Handle("/v1/accounts/{id}/statement", only(s.getStatement, get...))
	s.mux.Handle("/v1/transfers", only(s.createTransfer, post))
	s.mux.Handle("/v1/transfers/{id}", only(s.getTransfer, get...))
	s.mux.Handle("/v1/transfers/{id}/post", only(s.postTransfer, post))
	s.mux.Handle("/v1/transfers/{id}/void", only(s.voidTransfer, post))
	s.mux.Handle("/v1/pending-transfers", only(s.getExpiring, get...))
	s.mux.Handle("/v1/cards/authorize", only(s.cardAuthorize, post))
	s.mux.Handle("/v1/cards/capture", only(s.cardCapture, post))
	s.mux.Handle("/v1/cards/void", only(s.cardVoid, post))
	s.mux.Handle("/v1/cards/refund", only(s.cardRefund, post))
	s.mux.Handle("/healthz", only(s.healthz, get...))
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, &apiError{status: http.StatusNotFound, Code: "not_found", Message: fmt.Sprintf("no route for %s %s", r.Method, r.URL.Path)})
	})
	return s, nil
}

// ServeHTTP implements http.Handler and logs one line per request.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
	s.mux.ServeHTTP(rec, r)
	level := slog.LevelDebug
	if rec.status >= 500 {
		level = slog.LevelWarn
	}
	s.log.Log(r.Context(), level, "http request", "method", r.Method, "path", r.URL.Path, "status", rec.status, "duration", time.Since(start).Round(time.Microsecond))
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	r.status = code
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

func only(h http.HandlerFunc, methods ...string) http.Handler {
	allow := strings.Join(methods, ", ")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for _, m := range methods {
			if r.Method == m {
				h(w, r)
				return
			}
		}
		w.Header().Set("Allow", allow)
		writeError(w, &apiError{status: http.StatusMethodNotAllowed, Code: "method_not_allowed",
			Message: fmt.Sprintf("method %s is not allowed on %s (allowed: %s)", r.Method, r.URL.Path, allow)})
	})
}

// ---- Idempotency ----

// CommandID is the command id of a request with Idempotency-Key key on
// operation scope ("transfers.create", ...) of aggregate aggregateID.
func CommandID(scope, aggregateID, key string) string {
	return "payments:" + scope + ":" + aggregateID + ":" + key
}

// idempotencyKey reads the required Idempotency-Key header.
func idempotencyKey(r *http.Request) (string, *apiError) {
	vals := r.Header.Values("Idempotency-Key")
	bad := func(code, msg string) *apiError {
		return &apiError{status: http.StatusBadRequest, Code: code, Field: "Idempotency-Key", Message: msg}
	}
	switch {
	case len(vals) == 0:
		return "", bad("missing_idempotency_key", "the Idempotency-Key header is required on POST: send a unique key per request (a UUID, say) and the same key when you retry it")
	case len(vals) > 1:
		return "", bad("invalid_idempotency_key", "Idempotency-Key header given more than once")
	}
	k := vals[0]
	if k == "" || len(k) > MaxIdempotencyKeyLen {
		return "", bad("invalid_idempotency_key", fmt.Sprintf("Idempotency-Key must be 1-%d characters, got %d", MaxIdempotencyKeyLen, len(k)))
	}
	for i := 0; i < len(k); i++ {
		if c := k[i]; c <= ' ' || c > '~' {
			return "", bad("invalid_idempotency_key", fmt.Sprintf("Idempotency-Key has an invalid character at position %d (want printable ASCII, no spaces)", i+1))
		}
	}
	return k, nil
}

// fingerprint identifies a request: method, path and the validated body.
// Two bodies that differ only in spacing or field order are the same
// request.
func fingerprint(r *http.Request, req any) []byte {
	b, _ := json.Marshal(req) // our own request types: cannot fail
	h := sha256.New()
	fmt.Fprintf(h, "%s %s\n", r.Method, r.URL.Path)
	h.Write(b)
	return h.Sum(nil)
}

// sent is one command request's outcome.
type sent struct {
	id, key string
	out     actor.Outcome
	err     error
}

// send claims the Idempotency-Key for the request, then sends cmd under
// the command id derived from it and waits for the outcome. A nil *sent
// means the answer was written (an error).
func (s *Server) send(w http.ResponseWriter, r *http.Request, scope string, to Sender, cmd eventsource.Command, req any) *sent {
	key, e := idempotencyKey(r)
	if e != nil {
		writeError(w, e)
		return nil
	}
	if err := s.cfg.Keys.Claim(r.Context(), scope, key, fingerprint(r, req), r.Method+" "+r.URL.Path); err != nil {
		if reused, ok := isKeyReused(err); ok {
			writeError(w, &apiError{status: http.StatusUnprocessableEntity, Code: "idempotency_key_reused", Field: "Idempotency-Key", IdempotencyKey: key,
				Message: fmt.Sprintf("Idempotency-Key %q was already used for a different request (%s, with another body or path); this request was not applied: send it with a new key", key, reused.Request)})
			return nil
		}
		s.internal(w, r, "", err)
		return nil
	}
	id := CommandID(scope, cmd.AggregateID(), key)
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.SendTimeout)
	defer cancel()
	out, err := to.Send(ctx, cmd, id)
	return &sent{id: id, key: key, out: out, err: err}
}

// failed answers the outcomes every command shares: a rejection is
// returned (code, detail) for the endpoint to map; anything else is
// answered here (done true).
func (s *Server) failed(w http.ResponseWriter, r *http.Request, sn *sent) (code ledger.Result, detail string, rejected, done bool) {
	var (
		rej      *actor.RejectedError
		dead     *actor.DeadLetteredError
		mismatch *actor.PayloadMismatchError
	)
	switch err := sn.err; {
	case err == nil && sn.out.Status == txn.OutcomeAccepted:
		return "", "", false, false
	case err == nil && sn.out.Status == txn.OutcomeRejected:
		code, detail, _ = ledger.ParseResult(sn.out.Reason)
		return code, detail, true, false
	case errors.As(err, &rej):
		code, detail, _ = ledger.ParseResult(rej.Reason)
		return code, detail, true, false
	case errors.As(err, &mismatch):
		writeError(w, &apiError{status: http.StatusUnprocessableEntity, Code: "idempotency_key_reused", CommandID: sn.id, IdempotencyKey: sn.key,
			Message: fmt.Sprintf("Idempotency-Key %q was already used for a different request; this request was not applied: send it with a new key", sn.key)})
	case errors.As(err, &dead):
		writeError(w, &apiError{status: http.StatusUnprocessableEntity, Code: "dead_lettered", CommandID: sn.id, IdempotencyKey: sn.key,
			Message: "the command could not be handled and was stored as a dead letter: " + dead.Reason})
	case err == nil && sn.out.Status == txn.OutcomeDeadLettered:
		writeError(w, &apiError{status: http.StatusUnprocessableEntity, Code: "dead_lettered", CommandID: sn.id, IdempotencyKey: sn.key,
			Message: "the command could not be handled and was stored as a dead letter: " + sn.out.Reason})
	case errors.Is(err, actor.ErrOutcomeUnknown), errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		writeError(w, &apiError{status: http.StatusGatewayTimeout, Code: "outcome_unknown", CommandID: sn.id, IdempotencyKey: sn.key,
			Message: fmt.Sprintf("no outcome within %v: the request may still be applied; retry it with header \"Idempotency-Key: %s\" to learn its outcome (it is never applied twice)", s.cfg.SendTimeout, sn.key)})
	case errors.Is(err, actor.ErrClosed):
		w.Header().Set("Retry-After", "1")
		writeError(w, &apiError{status: http.StatusServiceUnavailable, Code: "unavailable", CommandID: sn.id, IdempotencyKey: sn.key,
			Message: fmt.Sprintf("the service is shutting down; retry with header \"Idempotency-Key: %s\"", sn.key)})
	default:
		if err == nil {
			err = fmt.Errorf("outcome with unknown status %q", sn.out.Status)
		}
		s.internal(w, r, sn.id, err)
	}
	return "", "", false, true
}

// validationCodes are the ledger's codes for a malformed command: the API
// validates first, so they reach a client only if the two disagree.
var validationCodes = map[ledger.Result]bool{
	ledger.ResultIDMustNotBeEmpty: true, ledger.ResultIDInvalid: true, ledger.ResultDebitAccountIDMustNotBeEmpty: true,
	ledger.ResultCreditAccountIDMustNotBeEmpty: true, ledger.ResultAccountsMustBeDifferent: true, ledger.ResultAmountMustNotBeZero: true,
	ledger.ResultAmountMustNotBeNegative: true, ledger.ResultLedgerMustNotBeZero: true, ledger.ResultCodeMustNotBeZero: true,
	ledger.ResultFlagsAreMutuallyExclusive: true, ledger.ResultTimeoutReservedForPending: true, ledger.ResultTimeoutMustNotBeNegative: true,
	ledger.ResultOverflowsTimeout: true,
}

// refusal is the answer to a rejection with code.
func refusal(sn *sent, code ledger.Result, detail string) *apiError {
	e := &apiError{status: http.StatusConflict, Code: string(code), Message: string(code), CommandID: sn.id, IdempotencyKey: sn.key}
	if detail != "" {
		e.Message += ": " + detail
	}
	switch {
	case code == "":
		e.Code, e.Message = "rejected", sn.out.Reason
	case validationCodes[code]:
		e.status = http.StatusUnprocessableEntity
	case code == ledger.ResultPendingTransferNotFound, code == ledger.ResultAccountNotFound, code == ledger.ResultTransferNotFound:
		e.status = http.StatusNotFound
	}
	return e
}

func (s *Server) internal(w http.ResponseWriter, r *http.Request, id string, err error) {
	s.log.ErrorContext(r.Context(), "request failed", "method", r.Method, "path", r.URL.Path, "command_id", id, "err", err)
	writeError(w, &apiError{status: http.StatusInternalServerError, Code: "internal", CommandID: id, Message: "internal error (logged on the server)"})
}

// ---- Accounts ----

type accountBody struct {
	ID      string              `json:"id"`
	Ledger  uint32              `json:"ledger"`
	Code    uint16              `json:"code"`
	Flags   ledger.AccountFlags `json:"flags"`
	Closed  bool                `json:"closed"`
	Version int64               `json:"version"`
	ledger.Balances
}

type accountResponse struct {
	accountBody
	RequestResult  string `json:"request_result"` // "ok", or "exists" for an open of an existing account with the same fields
	CommandID      string `json:"command_id"`
	IdempotencyKey string `json:"idempotency_key"`
	Duplicate      bool   `json:"duplicate"`
}

func accountOf(id string, a ledger.Account, version int64) accountBody {
	return accountBody{ID: id, Ledger: a.Ledger, Code: a.Code, Flags: a.Flags, Closed: a.Closed, Version: version, Balances: a.Balances()}
}

// POST /v1/accounts
func (s *Server) openAccount(w http.ResponseWriter, r *http.Request) {
	var req openAccountRequest
	if e := decodeJSON(w, r, &req, "id, ledger, code, flags", false); e != nil {
		writeError(w, e)
		return
	}
	cmd, e := func() (ledger.OpenAccount, *apiError) {
		var c ledger.OpenAccount
		var e *apiError
		if c.ID, e = id("id", req.ID); e != nil {
			return c, e
		}
		if c.Ledger, e = ledgerField(req.Ledger); e != nil {
			return c, e
		}
		if c.Code, e = codeField(req.Code, 0); e != nil {
			return c, e
		}
		if f := req.Flags; f != nil {
			c.Flags.DebitsMustNotExceedCredits = f.DebitsMustNotExceedCredits != nil && *f.DebitsMustNotExceedCredits
			c.Flags.CreditsMustNotExceedDebits = f.CreditsMustNotExceedDebits != nil && *f.CreditsMustNotExceedDebits
			if c.Flags.DebitsMustNotExceedCredits && c.Flags.CreditsMustNotExceedDebits {
				return c, invalid("flags", "debits_must_not_exceed_credits and credits_must_not_exceed_debits are mutually exclusive")
			}
		}
		return c, nil
	}()
	if e != nil {
		writeError(w, e)
		return
	}
	sn := s.send(w, r, "accounts.open", s.cfg.Accounts, cmd, req)
	if sn == nil {
		return
	}
	code, detail, rejected, done := s.failed(w, r, sn)
	if done {
		return
	}
	status, result := http.StatusCreated, "ok"
	if rejected {
		if code != ledger.ResultExists {
			e := refusal(sn, code, detail)
			if a, v, err := s.cfg.Reader.Account(r.Context(), cmd.ID); err == nil && a.Opened {
				body := accountOf(cmd.ID, a, v)
				e.Account = &body
			}
			writeError(w, e)
			return
		}
		status, result = http.StatusOK, string(ledger.ResultExists)
	}
	s.awaitBalances(r, sn.out)
	s.writeAccount(w, r, cmd.ID, status, result, sn)
}

// POST /v1/accounts/{id}/close
func (s *Server) closeAccount(w http.ResponseWriter, r *http.Request) {
	acct := r.PathValue("id")
	if err := ledger.ValidateID("account id", acct); err != nil {
		writeError(w, &apiError{status: http.StatusBadRequest, Code: "invalid_path", Field: "id", Message: err.Error()})
		return
	}
	var req emptyRequest
	if e := decodeJSON(w, r, &req, "no fields", true); e != nil {
		writeError(w, e)
		return
	}
	sn := s.send(w, r, "accounts.close", s.cfg.Accounts, ledger.CloseAccount{ID: acct}, req)
	if sn == nil {
		return
	}
	code, detail, rejected, done := s.failed(w, r, sn)
	if done {
		return
	}
	if rejected {
		e := refusal(sn, code, detail)
		if a, v, err := s.cfg.Reader.Account(r.Context(), acct); err == nil && a.Opened {
			body := accountOf(acct, a, v)
			e.Account = &body
		}
		writeError(w, e)
		return
	}
	s.awaitBalances(r, sn.out)
	s.writeAccount(w, r, acct, http.StatusOK, "ok", sn)
}

// awaitBalances waits, within ReadYourWritesTimeout, until the balances
// read model applied out: a GET right after the answer sees the change.
// A read model that lags is logged; the command's answer stands.
func (s *Server) awaitBalances(r *http.Request, out actor.Outcome) {
	if s.cfg.Waiter == nil {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.ReadYourWritesTimeout)
	defer cancel()
	if err := s.cfg.Waiter.WaitFor(ctx, readmodel.BalancesName, out.Position()); err != nil {
		s.log.WarnContext(r.Context(), "balances read model behind", "path", r.URL.Path, "err", err)
	}
}

func (s *Server) writeAccount(w http.ResponseWriter, r *http.Request, acct string, status int, result string, sn *sent) {
	a, v, err := s.cfg.Reader.Account(r.Context(), acct)
	if err != nil {
		s.internal(w, r, sn.id, err)
		return
	}
	writeJSON(w, status, accountResponse{accountBody: accountOf(acct, a, v), RequestResult: result, CommandID: sn.id, IdempotencyKey: sn.key, Duplicate: sn.out.Duplicate})
}

// GET /v1/accounts/{id}: the balances read model.
func (s *Server) getAccount(w http.ResponseWriter, r *http.Request) {
	acct := r.PathValue("id")
	if err := ledger.ValidateID("account id", acct); err != nil {
		writeError(w, &apiError{status: http.StatusBadRequest, Code: "invalid_path", Field: "id", Message: err.Error()})
		return
	}
	if _, e := queryParams(r); e != nil {
		writeError(w, e)
		return
	}
	if s.noReadModels(w) {
		return
	}
	a, err := s.cfg.ReadModels.Account(r.Context(), acct)
	if err != nil {
		s.readError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, accountBody{ID: a.ID, Ledger: a.Ledger, Code: a.Code, Flags: a.Flags, Closed: a.Closed, Version: a.Version, Balances: a.Balances})
}

type statementBody struct {
	AccountID string                    `json:"account_id"`
	Lines     []readmodel.StatementLine `json:"lines"`
	// NextAfter is the "after" of the next page; absent on the last page.
	NextAfter int64 `json:"next_after,omitempty"`
}

// GET /v1/accounts/{id}/statement?after=&limit=
func (s *Server) getStatement(w http.ResponseWriter, r *http.Request) {
	acct := r.PathValue("id")
	if err := ledger.ValidateID("account id", acct); err != nil {
		writeError(w, &apiError{status: http.StatusBadRequest, Code: "invalid_path", Field: "id", Message: err.Error()})
		return
	}
	q, e := queryParams(r, "after", "limit")
	if e != nil {
		writeError(w, e)
		return
	}
	after, e := intParam(q, "after", 0, 0, 1<<62)
	if e != nil {
		writeError(w, e)
		return
	}
	limit, e := intParam(q, "limit", readmodel.DefaultLimit, 1, readmodel.MaxLimit)
	if e != nil {
		writeError(w, e)
		return
	}
	if s.noReadModels(w) {
		return
	}
	if _, err := s.cfg.ReadModels.Account(r.Context(), acct); err != nil {
		s.readError(w, r, err)
		return
	}
	lines, next, err := s.cfg.ReadModels.Statement(r.Context(), acct, after, int(limit))
	if err != nil {
		s.readError(w, r, err)
		return
	}
	if lines == nil {
		lines = []readmodel.StatementLine{}
	}
	writeJSON(w, http.StatusOK, statementBody{AccountID: acct, Lines: lines, NextAfter: next})
}

// GET /v1/pending-transfers?within=SECONDS&limit=
func (s *Server) getExpiring(w http.ResponseWriter, r *http.Request) {
	q, e := queryParams(r, "within", "limit")
	if e != nil {
		writeError(w, e)
		return
	}
	within, e := intParam(q, "within", 3600, 0, ledger.MaxTimeout)
	if e != nil {
		writeError(w, e)
		return
	}
	limit, e := intParam(q, "limit", readmodel.DefaultLimit, 1, readmodel.MaxLimit)
	if e != nil {
		writeError(w, e)
		return
	}
	if s.noReadModels(w) {
		return
	}
	ps, err := s.cfg.ReadModels.Expiring(r.Context(), time.Now(), time.Duration(within)*time.Second, int(limit))
	if err != nil {
		s.readError(w, r, err)
		return
	}
	if ps == nil {
		ps = []readmodel.PendingTransfer{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"within_seconds": within, "transfers": ps})
}

func (s *Server) noReadModels(w http.ResponseWriter) bool {
	if s.cfg.ReadModels != nil {
		return false
	}
	writeError(w, &apiError{status: http.StatusServiceUnavailable, Code: "read_model_unavailable", Message: "this server runs without read models"})
	return true
}

func (s *Server) readError(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case errors.Is(err, readmodel.ErrNotFound):
		writeError(w, &apiError{status: http.StatusNotFound, Code: string(ledger.ResultAccountNotFound),
			Message: err.Error() + " (never opened, or the read model has not applied it yet)"})
	case errors.Is(err, readmodel.ErrNotReady):
		w.Header().Set("Retry-After", "1")
		writeError(w, &apiError{status: http.StatusServiceUnavailable, Code: "read_model_unavailable", Message: err.Error()})
	default:
		s.internal(w, r, "", err)
	}
}

// queryParams parses the query strictly: only allowed names, each once.
func queryParams(r *http.Request, allowed ...string) (url.Values, *apiError) {
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return nil, &apiError{status: http.StatusBadRequest, Code: "invalid_query", Message: fmt.Sprintf("malformed query string: %v", err)}
	}
	for n, vs := range q {
		ok := false
		for _, a := range allowed {
			ok = ok || a == n
		}
		if !ok {
			list := "none"
			if len(allowed) > 0 {
				list = strings.Join(allowed, ", ")
			}
			return nil, &apiError{status: http.StatusBadRequest, Code: "unknown_parameter", Field: n, Message: fmt.Sprintf("unknown query parameter %q (allowed: %s)", n, list)}
		}
		if len(vs) > 1 {
			return nil, &apiError{status: http.StatusBadRequest, Code: "invalid_parameter", Field: n, Message: fmt.Sprintf("query parameter %q given %d times (at most once)", n, len(vs))}
		}
	}
	return q, nil
}

func intParam(q url.Values, name string, def, lo, hi int64) (int64, *apiError) {
	if !q.Has(name) {
		return def, nil
	}
	v := q.Get(name)
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < lo || n > hi {
		return 0, &apiError{status: http.StatusBadRequest, Code: "invalid_parameter", Field: name,
			Message: fmt.Sprintf("%s must be an integer between %d and %d, got %q", name, lo, hi, v)}
	}
	return n, nil
}

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	if s.cfg.Health != nil {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := s.cfg.Health(ctx); err != nil {
			s.log.WarnContext(r.Context(), "health check failed", "err", err)
			writeError(w, &apiError{status: http.StatusServiceUnavailable, Code: "unhealthy", Message: "health check failed"})
			return
		}
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}
