package readmodel

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/onceflow/onceflow/projection"
	"github.com/onceflow/onceflow/samples/payments/ledger"
)

// Page sizes.
const (
	DefaultLimit = 100
	MaxLimit     = 1000
)

var (
	// ErrNotFound: no such account in the read model (never opened, or
	// not applied yet).
	ErrNotFound = errors.New("not found")
	// ErrNotReady: the projection has no active version yet.
	ErrNotReady = errors.New("read model not ready")
)

// AccountBalance is one row of the balances read model.
type AccountBalance struct {
	ID      string              `json:"id"`
	Ledger  uint32              `json:"ledger"`
	Code    uint16              `json:"code"`
	Flags   ledger.AccountFlags `json:"flags"`
	Closed  bool                `json:"closed"`
	Version int64               `json:"version"` // the account version the row reflects
	ledger.Balances
}

// StatementLine is one line of an account's statement.
type StatementLine struct {
	Version    int64              `json:"version"` // the account's version: the line's order
	TransferID string             `json:"transfer_id"`
	Side       ledger.Side        `json:"side"`
	Kind       ledger.EntryStatus `json:"kind"`
	Amount     int64              `json:"amount"`
	Code       ledger.Result      `json:"code,omitempty"`
	RecordedAt time.Time          `json:"recorded_at"`
	ledger.Balances
}

// PendingTransfer is a pending two-phase transfer.
type PendingTransfer struct {
	ID              string     `json:"id"`
	DebitAccountID  string     `json:"debit_account_id"`
	CreditAccountID string     `json:"credit_account_id"`
	Amount          int64      `json:"amount"`
	Ledger          uint32     `json:"ledger"`
	ExpiresAt       *time.Time `json:"expires_at"` // nil: no timeout
}

// Reader queries the read models. Safe for concurrent use. Every query
// reads the projection's active version in its transaction first
// (projection.ActiveTx), so it follows a blue/green switch.
type Reader struct {
	pool   *pgxpool.Pool
	schema string
}

// NewReader returns a Reader; schema is onceflow's ("" for the default).
func NewReader(pool *pgxpool.Pool, schema string) *Reader {
	return &Reader{pool: pool, schema: cmp.Or(schema, "onceflow")}
}

func (r *Reader) read(ctx context.Context, name string, q func(tx pgx.Tx, table string) error) error {
	return pgx.BeginFunc(ctx, r.pool, func(tx pgx.Tx) error {
		info, err := projection.ActiveTx(ctx, tx, r.schema, name)
		if errors.Is(err, projection.ErrNotFound) {
			return fmt.Errorf("%w: projection %s has no active version yet", ErrNotReady, name)
		}
		if err != nil {
			return fmt.Errorf("readmodel: %s: %w", name, err)
		}
		return q(tx, table(name, info.Version))
	})
}

// Account returns an account's balances, or ErrNotFound.
func (r *Reader) Account(ctx context.Context, id string) (AccountBalance, error) {
	var a AccountBalance
	err := r.read(ctx, BalancesName, func(tx pgx.Tx, t string) error {
		var l int64
		var code int32
		err := tx.QueryRow(ctx, `SELECT account_id, ledger, code, debits_must_not_exceed_credits, credits_must_not_exceed_debits, closed,
			debits_pending, debits_posted, credits_pending, credits_posted, version FROM `+t+` WHERE account_id = $1`, id).Scan(
			&a.ID, &l, &code, &a.Flags.DebitsMustNotExceedCredits, &a.Flags.CreditsMustNotExceedDebits, &a.Closed,
			&a.DebitsPending, &a.DebitsPosted, &a.CreditsPending, &a.CreditsPosted, &a.Version)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("%w: account %q", ErrNotFound, id)
		}
		a.Ledger, a.Code = uint32(l), uint16(code)
		return err
	})
	return a, err
}

// Statement returns up to limit lines of account id's statement after
// version after (0: from the start), in order, and the version to pass as
// after for the next page (0 on the last page).
func (r *Reader) Statement(ctx context.Context, id string, after int64, limit int) ([]StatementLine, int64, error) {
	if limit < 1 || limit > MaxLimit {
		return nil, 0, fmt.Errorf("limit must be between 1 and %d, got %d", MaxLimit, limit)
	}
	var lines []StatementLine
	err := r.read(ctx, StatementName, func(tx pgx.Tx, t string) error {
		rows, _ := tx.Query(ctx, `SELECT version, transfer_id, side, kind, amount, code, recorded_at,
			debits_pending, debits_posted, credits_pending, credits_posted FROM `+t+`
			WHERE account_id = $1 AND version > $2 ORDER BY version LIMIT $3`, id, after, limit+1)
		var err error
		lines, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (StatementLine, error) {
			var l StatementLine
			var side, kind, code string
			err := row.Scan(&l.Version, &l.TransferID, &side, &kind, &l.Amount, &code, &l.RecordedAt,
				&l.DebitsPending, &l.DebitsPosted, &l.CreditsPending, &l.CreditsPosted)
			l.Side, l.Kind, l.Code = ledger.Side(side), ledger.EntryStatus(kind), ledger.Result(code)
			return l, err
		})
		return err
	})
	if err != nil {
		return nil, 0, err
	}
	var next int64
	if len(lines) > limit {
		lines = lines[:limit]
		next = lines[limit-1].Version
	}
	return lines, next, nil
}

// Expiring returns up to limit pending transfers whose timeout falls
// before now + within, soonest first.
func (r *Reader) Expiring(ctx context.Context, now time.Time, within time.Duration, limit int) ([]PendingTransfer, error) {
	if limit < 1 || limit > MaxLimit {
		return nil, fmt.Errorf("limit must be between 1 and %d, got %d", MaxLimit, limit)
	}
	var out []PendingTransfer
	err := r.read(ctx, PendingName, func(tx pgx.Tx, t string) error {
		rows, _ := tx.Query(ctx, `SELECT transfer_id, debit_account_id, credit_account_id, amount, ledger, expires_at FROM `+t+`
			WHERE status = 'pending' AND expires_at <= $1 ORDER BY expires_at, transfer_id LIMIT $2`, now.Add(within), limit)
		var err error
		out, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (PendingTransfer, error) {
			var p PendingTransfer
			var l int64
			err := row.Scan(&p.ID, &p.DebitAccountID, &p.CreditAccountID, &p.Amount, &l, &p.ExpiresAt)
			p.Ledger = uint32(l)
			return p, err
		})
		return err
	})
	return out, err
}
