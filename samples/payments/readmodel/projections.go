// Package readmodel is the payments sample's read side: read models fed
// exactly once by projections (actor.NewProjection) of the account and
// transfer history topics, and the queries the HTTP API serves from them.
//
//   - payments_balances: the four balances of every opened account, with
//     its ledger, code, flags and whether it is closed. The ledger's
//     invariants are CHECK constraints: an event applied twice or skipped
//     fails the batch (the projection halts) instead of showing a wrong
//     balance.
//   - payments_statement: an account's statement, one line per account
//     event about a transfer (reserved, posted, voided, refused), in the
//     account's order, with the balances after each line.
//   - payments_pending: the pending (two-phase) transfers, for the list of
//     those about to expire.
//
// Tables are per projection version (payments_balances_v1, ...): bump a
// version, with a migration creating its tables, to rebuild a read model
// blue/green while the old version serves (see the inventory sample's
// readmodel package for the procedure). Readers find the active version in
// the registry on every query.
//
// The read models are asynchronous: the HTTP API waits for the balances
// projection (projection.Waiter) where it promises read-your-writes.
package readmodel

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/onceflow/onceflow/actor"
	"github.com/onceflow/onceflow/eventsource"
	"github.com/onceflow/onceflow/projection"
	"github.com/onceflow/onceflow/samples/payments/ledger"
	"github.com/onceflow/onceflow/txn"
)

// The projections; a name is the prefix of its tables.
const (
	BalancesName     = "payments_balances"
	BalancesVersion  = 1
	StatementName    = "payments_statement"
	StatementVersion = 1
	PendingName      = "payments_pending"
	PendingVersion   = 1
)

// Component is the name the read-model migrations are recorded under.
const Component = "payments-readmodel"

//go:embed migrations/*.sql
var migrationFS embed.FS

// Migrations returns the read-model migrations, for actor.WithMigrations.
func Migrations() (fs.FS, string) { return migrationFS, "migrations" }

// Projections returns the three projections. reg is ledger.NewRegistry's.
func Projections(reg *eventsource.Registry) []actor.Projection {
	return []actor.Projection{
		{Name: BalancesName, Version: BalancesVersion, Source: ledger.AccountsTopic, Registry: reg,
			Apply: applyBalances(table(BalancesName, BalancesVersion)), Drop: dropFunc(BalancesName)},
		{Name: StatementName, Version: StatementVersion, Source: ledger.AccountsTopic, Registry: reg,
			Apply: applyStatement(table(StatementName, StatementVersion)), Drop: dropFunc(StatementName)},
		{Name: PendingName, Version: PendingVersion, Source: ledger.TransfersTopic, Registry: reg,
			Apply: applyPending(table(PendingName, PendingVersion)), Drop: dropFunc(PendingName)},
	}
}

// Install applies the registry's and the read models' migrations and
// registers the projections, so that readers and waits work before the
// projection runtimes have started (their Run does the same, idempotently).
func Install(ctx context.Context, pool *pgxpool.Pool, store *projection.Store, opts ...txn.MigrateOption) error {
	fsys, dir := projection.Migrations()
	if _, err := txn.MigrateFS(ctx, pool, projection.Component, fsys, dir, opts...); err != nil {
		return fmt.Errorf("readmodel: %w", err)
	}
	fsys, dir = Migrations()
	if _, err := txn.MigrateFS(ctx, pool, Component, fsys, dir, opts...); err != nil {
		return fmt.Errorf("readmodel: %w", err)
	}
	for _, p := range Projections(nil) {
		if _, err := store.Register(ctx, projection.Def{Name: p.Name, Version: p.Version, SourceTopic: p.Source, HistoryTopic: p.HistoryTopic}); err != nil {
			return fmt.Errorf("readmodel: %w", err)
		}
	}
	return nil
}

func table(name string, version int) string {
	return pgx.Identifier{fmt.Sprintf("%s_v%d", name, version)}.Sanitize()
}

func dropFunc(name string) projection.DropFunc {
	return func(ctx context.Context, tx pgx.Tx, version int) error {
		_, err := tx.Exec(ctx, "DROP TABLE IF EXISTS "+table(name, version))
		return err
	}
}

func describe(ev *actor.Event) string {
	return fmt.Sprintf("event %s[%d] seq %d (%s v%d of %s)", ev.Topic, ev.Partition, ev.Seq, ev.Type, ev.Version, ev.AggregateID)
}

// applyBalances keeps the balances the way ledger.AccountEvolve does.
// Refusals change nothing (and may concern an id never opened).
func applyBalances(t string) func(ctx context.Context, tx pgx.Tx, events []actor.Event) error {
	open := `INSERT INTO ` + t + ` (account_id, ledger, code, debits_must_not_exceed_credits, credits_must_not_exceed_debits, version)
		VALUES ($1, $2, $3, $4, $5, $6)`
	move := `UPDATE ` + t + ` SET debits_pending = debits_pending + $2, debits_posted = debits_posted + $3,
		credits_pending = credits_pending + $4, credits_posted = credits_posted + $5, version = $6 WHERE account_id = $1`
	closeAcct := `UPDATE ` + t + ` SET closed = true, version = $2 WHERE account_id = $1`
	return func(ctx context.Context, tx pgx.Tx, events []actor.Event) error {
		for i := range events {
			ev := &events[i]
			var args []any
			sql := move
			switch e := ev.Payload.(type) {
			case ledger.AccountOpened:
				sql, args = open, []any{ev.AggregateID, int64(e.Ledger), int32(e.Code), e.Flags.DebitsMustNotExceedCredits, e.Flags.CreditsMustNotExceedDebits, ev.Version}
			case ledger.AccountClosed:
				sql, args = closeAcct, []any{ev.AggregateID, ev.Version}
			case ledger.DebitReserved:
				args = []any{ev.AggregateID, e.Amount, 0, 0, 0, ev.Version}
			case ledger.CreditReserved:
				args = []any{ev.AggregateID, 0, 0, e.Amount, 0, ev.Version}
			case ledger.DebitPosted:
				args = []any{ev.AggregateID, -e.Pending, e.Amount, 0, 0, ev.Version}
			case ledger.CreditPosted:
				args = []any{ev.AggregateID, 0, 0, -e.Pending, e.Amount, ev.Version}
			case ledger.DebitVoided:
				args = []any{ev.AggregateID, -e.Amount, 0, 0, 0, ev.Version}
			case ledger.CreditVoided:
				args = []any{ev.AggregateID, 0, 0, -e.Amount, 0, ev.Version}
			case ledger.DebitRefused, ledger.CreditRefused:
				continue
			default:
				return fmt.Errorf("%s: the balances projection has no rule for %T", describe(ev), ev.Payload)
			}
			tag, err := tx.Exec(ctx, sql, args...)
			if err != nil {
				return fmt.Errorf("%s: %w", describe(ev), err)
			}
			if tag.RowsAffected() != 1 {
				return fmt.Errorf("%s: no balances row for account %q", describe(ev), ev.AggregateID)
			}
		}
		return nil
	}
}

// applyStatement writes a line per account event about a transfer, with
// the balances after it: the previous line's balances (kept in memory
// within the batch) plus the event's effect. Every event of an account is
// on one partition, applied in order, so the previous line is always
// there.
func applyStatement(t string) func(ctx context.Context, tx pgx.Tx, events []actor.Event) error {
	insert := `INSERT INTO ` + t + ` (account_id, version, transfer_id, side, kind, amount, code,
		debits_pending, debits_posted, credits_pending, credits_posted, recorded_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)`
	last := `SELECT debits_pending, debits_posted, credits_pending, credits_posted FROM ` + t + `
		WHERE account_id = $1 ORDER BY version DESC LIMIT 1`
	return func(ctx context.Context, tx pgx.Tx, events []actor.Event) error {
		running := map[string]*ledger.Balances{}
		for i := range events {
			ev := &events[i]
			var (
				transfer string
				side     ledger.Side
				kind     ledger.EntryStatus
				amount   int64
				code     ledger.Result
				d        ledger.Balances // the change
			)
			switch e := ev.Payload.(type) {
			case ledger.AccountOpened, ledger.AccountClosed:
				continue
			case ledger.DebitReserved:
				transfer, side, kind, amount, d.DebitsPending = e.Transfer, ledger.Debit, ledger.EntryReserved, e.Amount, e.Amount
			case ledger.CreditReserved:
				transfer, side, kind, amount, d.CreditsPending = e.Transfer, ledger.Credit, ledger.EntryReserved, e.Amount, e.Amount
			case ledger.DebitPosted:
				transfer, side, kind, amount, d.DebitsPending, d.DebitsPosted = e.Transfer, ledger.Debit, ledger.EntryPosted, e.Amount, -e.Pending, e.Amount
			case ledger.CreditPosted:
				transfer, side, kind, amount, d.CreditsPending, d.CreditsPosted = e.Transfer, ledger.Credit, ledger.EntryPosted, e.Amount, -e.Pending, e.Amount
			case ledger.DebitVoided:
				transfer, side, kind, amount, d.DebitsPending = e.Transfer, ledger.Debit, ledger.EntryVoided, e.Amount, -e.Amount
			case ledger.CreditVoided:
				transfer, side, kind, amount, d.CreditsPending = e.Transfer, ledger.Credit, ledger.EntryVoided, e.Amount, -e.Amount
			case ledger.DebitRefused:
				transfer, side, kind, code = e.Transfer, ledger.Debit, ledger.EntryRefused, e.Code
			case ledger.CreditRefused:
				transfer, side, kind, code = e.Transfer, ledger.Credit, ledger.EntryRefused, e.Code
			default:
				return fmt.Errorf("%s: the statement projection has no rule for %T", describe(ev), ev.Payload)
			}
			b := running[ev.AggregateID]
			if b == nil {
				b = &ledger.Balances{}
				err := tx.QueryRow(ctx, last, ev.AggregateID).Scan(&b.DebitsPending, &b.DebitsPosted, &b.CreditsPending, &b.CreditsPosted)
				if err != nil && !errors.Is(err, pgx.ErrNoRows) {
					return fmt.Errorf("%s: %w", describe(ev), err)
				}
				running[ev.AggregateID] = b
			}
			b.DebitsPending += d.DebitsPending
			b.DebitsPosted += d.DebitsPosted
			b.CreditsPending += d.CreditsPending
			b.CreditsPosted += d.CreditsPosted
			at := ev.RecordedAt
			if at.IsZero() {
				at = time.Now()
			}
			if _, err := tx.Exec(ctx, insert, ev.AggregateID, ev.Version, transfer, string(side), string(kind), amount, string(code),
				b.DebitsPending, b.DebitsPosted, b.CreditsPending, b.CreditsPosted, at); err != nil {
				return fmt.Errorf("%s: %w", describe(ev), err)
			}
		}
		return nil
	}
}

// applyPending keeps the two-phase transfers from creation until a
// decision (post, void, expiry) or a failure.
func applyPending(t string) func(ctx context.Context, tx pgx.Tx, events []actor.Event) error {
	insert := `INSERT INTO ` + t + ` (transfer_id, debit_account_id, credit_account_id, amount, ledger, status, version)
		VALUES ($1, $2, $3, $4, $5, 'reserving', $6)`
	pending := `UPDATE ` + t + ` SET status = 'pending', expires_at = $2, version = $3 WHERE transfer_id = $1`
	del := `DELETE FROM ` + t + ` WHERE transfer_id = $1`
	return func(ctx context.Context, tx pgx.Tx, events []actor.Event) error {
		for i := range events {
			ev := &events[i]
			var sql string
			var args []any
			switch e := ev.Payload.(type) {
			case ledger.TransferCreated:
				if !e.Pending {
					continue
				}
				sql, args = insert, []any{ev.AggregateID, e.DebitAccountID, e.CreditAccountID, e.Amount, int64(e.Ledger), ev.Version}
			case ledger.TransferPending:
				var exp *time.Time
				if !e.ExpiresAt.IsZero() {
					exp = &e.ExpiresAt
				}
				sql, args = pending, []any{ev.AggregateID, exp, ev.Version}
			case ledger.PostRequested, ledger.VoidRequested, ledger.TransferExpiring:
				sql, args = del, []any{ev.AggregateID}
			case ledger.TransferFailed:
				// A single-phase transfer that failed has no row.
				if _, err := tx.Exec(ctx, del, ev.AggregateID); err != nil {
					return fmt.Errorf("%s: %w", describe(ev), err)
				}
				continue
			case ledger.TransferPosted, ledger.TransferVoided, ledger.TransferExpired, ledger.RefundRequested, ledger.RefundReleased:
				continue
			default:
				return fmt.Errorf("%s: the pending projection has no rule for %T", describe(ev), ev.Payload)
			}
			tag, err := tx.Exec(ctx, sql, args...)
			if err != nil {
				return fmt.Errorf("%s: %w", describe(ev), err)
			}
			if tag.RowsAffected() != 1 {
				return fmt.Errorf("%s: no pending row for transfer %q", describe(ev), ev.AggregateID)
			}
		}
		return nil
	}
}
