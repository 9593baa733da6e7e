package api

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/onceflow/onceflow/actor"
	"github.com/onceflow/onceflow/eventsource"
	"github.com/onceflow/onceflow/projection"
	"github.com/onceflow/onceflow/samples/inventory/readmodel"
	"github.com/onceflow/onceflow/samples/inventory/stock"
	"github.com/onceflow/onceflow/txn"
)

// Sender sends one command and waits for its outcome. *actor.Client
// implements it. It must honour ctx and report what happened with the error
// types of package actor (*actor.RejectedError, *actor.DeadLetteredError,
// *actor.OutcomeUnknownError, actor.ErrClosed).
type Sender interface {
	Send(ctx context.Context, cmd eventsource.Command, opts ...actor.SendOption) (actor.Outcome, error)
}

// Reader loads the committed state and version of one SKU in one warehouse.
// A SKU never seen has stock.Initial() and version 0.
type Reader interface {
	Load(ctx context.Context, warehouse, sku string) (stock.State, int64, error)
}

// ReadModels answers the read-model queries. *readmodel.Reader implements
// it; its errors say what went wrong (*readmodel.ArgumentError,
// readmodel.ErrNotFound, readmodel.ErrNotReady).
type ReadModels interface {
	StockOfWarehouse(ctx context.Context, warehouse string, limit int, cursor string) (readmodel.StockPage, error)
	LowStock(ctx context.Context, below int64, limit int, cursor string) (readmodel.StockPage, error)
	Reservation(ctx context.Context, id string) (readmodel.Reservation, error)
}

// Waiter waits until projection name has applied pos. *projection.Waiter
// implements it; its errors are *projection.WaitError (the context ended,
// or the projection is halted or paused) or match projection.ErrNotFound.
type Waiter interface {
	WaitFor(ctx context.Context, name string, pos projection.Position) error
}

// Limits of the HTTP layer.
const (
	// MaxBodyBytes is the largest request body accepted (413 beyond).
	MaxBodyBytes = 64 << 10
	// MaxIdempotencyKeyLen is the longest Idempotency-Key accepted.
	MaxIdempotencyKeyLen = 128
	// DefaultSendTimeout is how long a command request waits for its outcome
	// when Config.SendTimeout is zero.
	DefaultSendTimeout = 10 * time.Second
	// DefaultReadYourWritesTimeout is how long a Read-Your-Writes: true
	// request waits for the read models when
	// Config.ReadYourWritesTimeout is zero.
	DefaultReadYourWritesTimeout = 5 * time.Second
	// HeaderReadYourWrites: "true" makes a command request answer only once
	// every read model shows the command.
	HeaderReadYourWrites = "Read-Your-Writes"
)

// Config configures a Server. Sender and Reader are required.
type Config struct {
	Sender Sender
	Reader Reader
	// Health, when set, is called by GET /healthz; an error makes it answer
	// 503. For example the database pool's Ping.
	Health func(ctx context.Context) error
	// Logger receives one line per request and the details of 500s.
	// Default slog.Default().
	Logger *slog.Logger
	// SendTimeout bounds how long a command request waits for its outcome
	// before answering 504. Default DefaultSendTimeout.
	SendTimeout time.Duration
	// ReadModels, when set, serves GET /v1/warehouses/{warehouse}/stock,
	// /v1/low-stock and /v1/reservations/{reservation_id}; without it they
	// are 404.
	ReadModels ReadModels
	// Waiter and Projections, when set, make read-your-writes available: a
	// command request with the header "Read-Your-Writes: true" answers
	// only after Waiter reports every projection of Projections has
	// applied the command (its outcome's position). Without them such a
	// request is a 400.
	Waiter      Waiter
	Projections []string
	// ReadYourWritesTimeout bounds that wait, after the outcome arrived,
	// before answering 504. Default DefaultReadYourWritesTimeout.
	ReadYourWritesTimeout time.Duration
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
	if cfg.Sender == nil {
		errs = append(errs, errors.New("api: Config.Sender is nil"))
	}
	if cfg.Reader == nil {
		errs = append(errs, errors.New("api: Config.Reader is nil"))
	}
	if cfg.SendTimeout < 0 {
		errs = append(errs, fmt.Errorf("api: Config.SendTimeout must be >= 0, got %v", cfg.SendTimeout))
	}
	if cfg.ReadYourWritesTimeout < 0 {
		errs = append(errs, fmt.Errorf("api: Config.ReadYourWritesTimeout must be >= 0, got %v", cfg.ReadYourWritesTimeout))
	}
	if (cfg.Waiter == nil) != (len(cfg.Projections) == 0) {
		errs = append(errs, errors.New("api: Config.Waiter and Config.Projections go together: the projections a read-your-writes request waits for, and what waits"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if cfg.SendTimeout == 0 {
		cfg.SendTimeout = DefaultSendTimeout
	}
	if cfg.ReadYourWritesTimeout == 0 {
		cfg.ReadYourWritesTimeout = DefaultReadYourWritesTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	s := &Server{cfg: cfg, mux: http.NewServeMux(), log: cfg.Logger}

	// Patterns carry no method: each route checks it itself so that a wrong
	// method gets a JSON 405 like every other error (the mux's own 405 is
	// plain text).
	const base = "/v1/stock/{warehouse}/{sku}"
	s.mux.Handle(base, only(s.getStock, http.MethodGet, http.MethodHead))
	s.mux.Handle(base+"/receive", only(s.command("receive", decodeReceive), http.MethodPost))
	s.mux.Handle(base+"/reserve", only(s.command("reserve", decodeReserve), http.MethodPost))
	s.mux.Handle(base+"/release", only(s.command("release", decodeRelease), http.MethodPost))
	s.mux.Handle(base+"/ship", only(s.command("ship", decodeShip), http.MethodPost))
	s.mux.Handle(base+"/adjust", only(s.command("adjust", decodeAdjust), http.MethodPost))
	if cfg.ReadModels != nil {
		s.mux.Handle("/v1/warehouses/{warehouse}/stock", only(s.getWarehouseStock, http.MethodGet, http.MethodHead))
		s.mux.Handle("/v1/low-stock", only(s.getLowStock, http.MethodGet, http.MethodHead))
		s.mux.Handle("/v1/reservations/{reservation_id}", only(s.getReservation, http.MethodGet, http.MethodHead))
	}
	s.mux.Handle("/healthz", only(s.healthz, http.MethodGet, http.MethodHead))
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
	level := slog.LevelInfo
	if rec.status >= 500 {
		level = slog.LevelWarn
	}
	s.log.Log(r.Context(), level, "http request", "method", r.Method, "path", r.URL.Path,
		"status", rec.status, "duration", time.Since(start).Round(time.Microsecond))
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
	allow := methods[0]
	for _, m := range methods[1:] {
		allow += ", " + m
	}
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

// target reads and validates the {warehouse} and {sku} path segments.
func target(r *http.Request) (warehouse, sku string, e *apiError) {
	warehouse, sku = r.PathValue("warehouse"), r.PathValue("sku")
	if err := stock.ValidateWarehouse(warehouse); err != nil {
		return "", "", &apiError{status: http.StatusBadRequest, Code: "invalid_path", Field: "warehouse", Message: err.Error()}
	}
	if err := stock.ValidateSKU(sku); err != nil {
		return "", "", &apiError{status: http.StatusBadRequest, Code: "invalid_path", Field: "sku", Message: err.Error()}
	}
	return warehouse, sku, nil
}

// CommandID is the command id used for a request with Idempotency-Key key
// on operation op ("receive", "reserve", ...) of aggregate aggregateID. It
// scopes the key to the operation and the aggregate, so a key reused by
// mistake on another SKU cannot return that other command's outcome.
func CommandID(op, aggregateID, key string) string {
	return "inventory:" + op + ":" + aggregateID + ":" + key
}

func idempotencyKey(r *http.Request) (string, *apiError) {
	vals := r.Header.Values("Idempotency-Key")
	if len(vals) == 0 {
		var b [16]byte
		_, _ = rand.Read(b[:]) // never fails (crypto/rand docs)
		return hex.EncodeToString(b[:]), nil
	}
	bad := func(msg string) *apiError {
		return &apiError{status: http.StatusBadRequest, Code: "invalid_idempotency_key", Field: "Idempotency-Key", Message: msg}
	}
	if len(vals) > 1 {
		return "", bad("Idempotency-Key header given more than once")
	}
	k := vals[0]
	if k == "" || len(k) > MaxIdempotencyKeyLen {
		return "", bad(fmt.Sprintf("Idempotency-Key must be 1-%d characters, got %d", MaxIdempotencyKeyLen, len(k)))
	}
	for i := 0; i < len(k); i++ {
		if c := k[i]; c <= ' ' || c > '~' {
			return "", bad(fmt.Sprintf("Idempotency-Key has an invalid character at position %d (want printable ASCII, no spaces)", i+1))
		}
	}
	return k, nil
}

// command returns the handler of one command endpoint: decode builds the
// command from the validated path and body.
func (s *Server) command(op string, decode func(w http.ResponseWriter, r *http.Request, warehouse, sku string) (stock.Command, *apiError)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		warehouse, sku, e := target(r)
		if e != nil {
			writeError(w, e)
			return
		}
		key, e := idempotencyKey(r)
		if e != nil {
			writeError(w, e)
			return
		}
		ryw, e := s.readYourWrites(r)
		if e != nil {
			writeError(w, e)
			return
		}
		cmd, e := decode(w, r, warehouse, sku)
		if e != nil {
			writeError(w, e)
			return
		}
		id := CommandID(op, cmd.AggregateID(), key)
		ctx, cancel := context.WithTimeout(r.Context(), s.cfg.SendTimeout)
		defer cancel()
		out, err := s.cfg.Sender.Send(ctx, cmd, actor.WithCommandID(id))
		if ryw && err == nil && out.Status == txn.OutcomeAccepted {
			if e := s.awaitReadModels(r, id, key, out); e != nil {
				writeError(w, e)
				return
			}
		}
		s.writeOutcome(w, r, id, key, out, err, ryw)
	}
}

// outcomeBody is the 200 response of a command.
type outcomeBody struct {
	CommandID      string `json:"command_id"`
	IdempotencyKey string `json:"idempotency_key"`
	Status         string `json:"status"`
	AggregateID    string `json:"aggregate_id"`
	FirstVersion   int64  `json:"first_version"`
	LastVersion    int64  `json:"last_version"`
	Partition      int32  `json:"partition"`
	Offset         int64  `json:"offset"`
	Duplicate      bool   `json:"duplicate"`
	// ReadYourWrites: the answer waited until every read model showed the
	// command (Read-Your-Writes: true).
	ReadYourWrites bool `json:"read_your_writes,omitempty"`
}

// writeOutcome answers with the command's outcome; waited says the read
// models were waited for (an accepted command only).
func (s *Server) writeOutcome(w http.ResponseWriter, r *http.Request, id, key string, out actor.Outcome, err error, waited bool) {
	var (
		rejected *actor.RejectedError
		dead     *actor.DeadLetteredError
		mismatch *actor.PayloadMismatchError
	)
	switch {
	case errors.As(err, &mismatch):
		// IETF httpapi idempotency-key draft: the same key with a
		// different request payload is 422.
		writeError(w, &apiError{status: http.StatusUnprocessableEntity, Code: "idempotency_key_reused", CommandID: id, IdempotencyKey: key,
			Message: fmt.Sprintf("Idempotency-Key %q was already used for a different request to this resource (%s); this request was not applied: send a new request with a new key", key, mismatchSummary(mismatch.Outcome))})
	case err == nil:
		switch out.Status {
		case txn.OutcomeAccepted:
			if out.CommandID == "" {
				out.CommandID = id
			}
			writeJSON(w, http.StatusOK, outcomeBody{
				CommandID: out.CommandID, IdempotencyKey: key, Status: string(out.Status), AggregateID: out.AggregateID,
				FirstVersion: out.FirstVersion, LastVersion: out.LastVersion, Partition: out.Partition, Offset: out.Offset,
				Duplicate: out.Duplicate, ReadYourWrites: waited,
			})
		case txn.OutcomeRejected:
			writeError(w, &apiError{status: http.StatusConflict, Code: "rejected", Message: out.Reason, CommandID: id, IdempotencyKey: key})
		case txn.OutcomeDeadLettered:
			writeError(w, deadLettered(id, key, out.Reason))
		default:
			s.internal(w, r, id, fmt.Errorf("outcome with unknown status %q", out.Status))
		}
	case errors.As(err, &rejected):
		writeError(w, &apiError{status: http.StatusConflict, Code: "rejected", Message: rejected.Reason, CommandID: id, IdempotencyKey: key})
	case errors.As(err, &dead):
		writeError(w, deadLettered(id, key, dead.Reason))
	case errors.Is(err, actor.ErrOutcomeUnknown), errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		// Canceled: the client went away; the answer is for the log.
		writeError(w, &apiError{status: http.StatusGatewayTimeout, Code: "outcome_unknown", CommandID: id, IdempotencyKey: key,
			Message: fmt.Sprintf("no outcome within %v: the command may still be applied; retry the same request with header \"Idempotency-Key: %s\" to learn its outcome (it is never applied twice)", s.cfg.SendTimeout, key)})
	case errors.Is(err, actor.ErrClosed):
		w.Header().Set("Retry-After", "1")
		writeError(w, &apiError{status: http.StatusServiceUnavailable, Code: "unavailable", CommandID: id, IdempotencyKey: key,
			Message: fmt.Sprintf("the service is shutting down; retry with header \"Idempotency-Key: %s\"", key)})
	default:
		s.internal(w, r, id, err)
	}
}

func mismatchSummary(o actor.Outcome) string {
	if o.Reason != "" {
		return fmt.Sprintf("that one ended %s: %s", o.Status, o.Reason)
	}
	return fmt.Sprintf("that one ended %s", o.Status)
}

func deadLettered(id, key, reason string) *apiError {
	return &apiError{status: http.StatusUnprocessableEntity, Code: "dead_lettered", CommandID: id, IdempotencyKey: key,
		Message: "the command could not be handled and was stored as a dead letter: " + reason}
}

func (s *Server) internal(w http.ResponseWriter, r *http.Request, id string, err error) {
	s.log.ErrorContext(r.Context(), "request failed", "method", r.Method, "path", r.URL.Path, "command_id", id, "err", err)
	writeError(w, &apiError{status: http.StatusInternalServerError, Code: "internal", CommandID: id, Message: "internal error (logged on the server)"})
}

// stockBody is the GET response.
type stockBody struct {
	Warehouse    string           `json:"warehouse"`
	SKU          string           `json:"sku"`
	OnHand       int64            `json:"on_hand"`
	Reserved     int64            `json:"reserved"`
	Available    int64            `json:"available"`
	Reservations map[string]int64 `json:"reservations"`
	Version      int64            `json:"version"`
}

func (s *Server) getStock(w http.ResponseWriter, r *http.Request) {
	warehouse, sku, e := target(r)
	if e != nil {
		writeError(w, e)
		return
	}
	st, version, err := s.cfg.Reader.Load(r.Context(), warehouse, sku)
	if err != nil {
		s.internal(w, r, "", fmt.Errorf("load %s: %w", stock.AggregateID(warehouse, sku), err))
		return
	}
	res := st.Reservations
	if res == nil {
		res = map[string]int64{}
	}
	writeJSON(w, http.StatusOK, stockBody{
		Warehouse: warehouse, SKU: sku, OnHand: st.OnHand, Reserved: st.Reserved, Available: st.Available(),
		Reservations: res, Version: version,
	})
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
