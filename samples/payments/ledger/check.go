package ledger

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/onceflow/onceflow/actor"
)

// Violation kinds reported by Check.
const (
	VEventGap          = "event_gap"            // an aggregate's versions are not 1, 2, 3, ...
	VUndecodable       = "undecodable_event"    // an event the registry cannot decode
	VAccountInvariant  = "account_invariant"    // a balance went negative or broke its flag, at some event
	VLedgerUnbalanced  = "ledger_unbalanced"    // per ledger, credits posted != debits posted
	VPendingMismatch   = "pending_mismatch"     // per ledger, debits pending != credits pending
	VTransferInvariant = "transfer_invariant"   // a transfer's state broke an invariant, at some event
	VNotFinal          = "not_final"            // a transfer that is not posted, voided, expired or failed
	VFinalTwice        = "final_twice"          // a transfer with more than one final event
	VEffects           = "effects_mismatch"     // a transfer's account effects do not match its final state
	VOrphanEffect      = "orphan_effect"        // an account effect of a transfer that does not exist, or on another account
	VEffectNotFromStep = "effect_not_from_step" // an account effect not made under the step's deterministic command id
	VRefund            = "refund_mismatch"      // refunds beyond what was posted, or not matching their transfers
	VDeadlineTwice     = "deadline_fired_twice"
	VTimeoutNotFired   = "timeout_not_fired" // an expired transfer whose timeout did not fire exactly once
	VDeadlinePending   = "deadline_pending"  // a deadline still scheduled for a finished transfer
	VProcessNotDone    = "process_not_done"  // a transfer's process row not in phase done
	VCommandFailed     = "command_failed"    // a process command rejected or dead-lettered: a bug
	VDeadLetter        = "dead_letter"       // a record of the payments topics dead-lettered
)

// Violation is one broken invariant: its kind, the account or transfer id
// (or ledger, or deadline id) it concerns, and the details.
type Violation struct {
	Kind   string `json:"kind"`
	ID     string `json:"id"`
	Detail string `json:"detail"`
}

func (v Violation) String() string { return fmt.Sprintf("%s %s: %s", v.Kind, v.ID, v.Detail) }

// LedgerTotals are the sums of one ledger's accounts' balances.
type LedgerTotals struct {
	Ledger   uint32 `json:"ledger"`
	Accounts int    `json:"accounts"`
	Balances
}

// Report is what Check found.
type Report struct {
	Accounts       int            `json:"accounts"`
	Transfers      int            `json:"transfers"`
	Events         int            `json:"events"`
	ByStatus       map[Status]int `json:"by_status"`
	DeadlinesFired int            `json:"deadlines_fired"`
	Ledgers        []LedgerTotals `json:"ledgers"`
	Violations     []Violation    `json:"violations"`
}

// OK reports whether there is no violation.
func (r Report) OK() bool { return len(r.Violations) == 0 }

// String summarises the report, with up to 20 violations.
func (r Report) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d accounts, %d transfers %v, %d events, %d deadlines fired: %d violations", r.Accounts, r.Transfers, r.ByStatus, r.Events, r.DeadlinesFired, len(r.Violations))
	if len(r.Violations) > 0 {
		kinds := map[string]int{}
		for _, v := range r.Violations {
			kinds[v.Kind]++
		}
		fmt.Fprintf(&b, " %v", kinds)
	}
	for i, v := range r.Violations {
		if i == 20 {
			fmt.Fprintf(&b, "\n  ... %d more", len(r.Violations)-i)
			break
		}
		b.WriteString("\n  " + v.String())
	}
	return b.String()
}

func (r *Report) add(kind, id, format string, args ...any) {
	r.Violations = append(r.Violations, Violation{Kind: kind, ID: id, Detail: fmt.Sprintf(format, args...)})
}

// effect is one account event about a transfer.
type effect struct {
	account   string
	side      Side
	kind      EntryStatus
	amount    int64 // reserved, posted or voided
	pending   int64 // a post: the reservation it settled
	code      Result
	commandID string
}

// Check verifies the payments ledger's invariants from what Postgres holds:
// the event store in schema (onceflow's schema, "onceflow" by default) and
// the process's tables (payments_transfer_process and
// payments_deadlines_fired, on the search path; skipped when absent). Run it
// when the workload has quiesced and every pending transfer was posted,
// voided or expired: a transfer still in flight is reported (not_final).
//
//   - every account's events, folded in order, keep its invariants at
//     every event: no balance below zero, the must-not-exceed flags held,
//     pending balances equal to the reservations;
//   - per ledger, the accounts' credits posted sum to their debits posted
//     and their credits pending to their debits pending;
//   - every transfer ended posted, voided, expired or failed, exactly once,
//     and its account effects match: a posted transfer has exactly one
//     reservation and one post of its amount on each of its two accounts,
//     a voided or expired one a reservation and a void on each, a failed
//     one a refusal (with its code) and, if the debit had been reserved,
//     that reservation voided; no effect on any other account, none for a
//     transfer that does not exist, each made under the step's
//     deterministic command id (actor.CommandID(transfer, step));
//   - a transfer's refunds never exceed what it posted and match their
//     transfers;
//   - every deadline fired at most once, every expired transfer's timeout
//     fired exactly once, and none is left scheduled for a finished
//     transfer; every process is done, and none of its commands was
//     rejected or dead-lettered.
func Check(ctx context.Context, pool *pgxpool.Pool, schema string) (Report, error) {
	rep := Report{ByStatus: map[Status]int{}}
	reg, err := NewRegistry()
	if err != nil {
		return rep, err
	}
	if schema == "" {
		schema = "onceflow"
	}
	table := func(name string) string { return pgx.Identifier{schema, name}.Sanitize() }

	v := newVerifier(&rep)
	rows, err := pool.Query(ctx, `SELECT aggregate_type, aggregate_id, version, type, data, command_id FROM `+table("events")+`
		WHERE aggregate_type = ANY($1) ORDER BY aggregate_type, aggregate_id, version`, []string{AccountType, TransferType})
	if err != nil {
		return rep, fmt.Errorf("ledger: check: read events: %w", err)
	}
	for rows.Next() {
		var typ, id, name, cmdID string
		var version int64
		var data []byte
		if err := rows.Scan(&typ, &id, &version, &name, &data, &cmdID); err != nil {
			rows.Close()
			return rep, fmt.Errorf("ledger: check: %w", err)
		}
		payload, err := reg.Decode(name, data)
		if err != nil {
			rep.add(VUndecodable, id, "%s version %d: %v", typ, version, err)
			continue
		}
		v.event(typ, id, version, payload, cmdID)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return rep, fmt.Errorf("ledger: check: read events: %w", err)
	}
	transfers := v.finish()

	if err := checkProcess(ctx, pool, table, transfers, &rep); err != nil {
		return rep, err
	}
	sort.SliceStable(rep.Violations, func(i, j int) bool { return rep.Violations[i].Kind < rep.Violations[j].Kind })
	return rep, nil
}

// verifier checks a stream of events, each aggregate's in version order
// (Check's part that needs no database).
type verifier struct {
	rep       *Report
	accounts  map[string]Account
	effects   map[string][]effect // by transfer
	transfers map[string]Transfer
	finals    map[string]int
	broken    map[string]bool // aggregates whose invariant already broke: report the first event only
	lastType  string
	lastID    string
	lastVer   int64
}

func newVerifier(rep *Report) *verifier {
	return &verifier{rep: rep, accounts: map[string]Account{}, effects: map[string][]effect{}, transfers: map[string]Transfer{},
		finals: map[string]int{}, broken: map[string]bool{}}
}

// event folds one decoded event of aggregate (typ, id) at version.
func (v *verifier) event(typ, id string, version int64, payload any, cmdID string) {
	rep := v.rep
	rep.Events++
	if typ != v.lastType || id != v.lastID {
		v.lastType, v.lastID, v.lastVer = typ, id, 0
	}
	if version != v.lastVer+1 {
		rep.add(VEventGap, id, "%s version %d follows %d", typ, version, v.lastVer)
	}
	v.lastVer = version
	if typ == AccountType {
		ev, ok := payload.(AccountEvent)
		if !ok {
			rep.add(VUndecodable, id, "%s version %d: %T is not an account event", typ, version, payload)
			return
		}
		s, ok := v.accounts[id]
		if !ok {
			s = InitialAccount()
		}
		s = AccountEvolve(s, ev)
		v.accounts[id] = s
		if err := CheckAccountInvariants(s); err != nil && !v.broken[id] {
			v.broken[id] = true
			rep.add(VAccountInvariant, id, "after version %d (%T): %v", version, ev, err)
		}
		if t, e, ok := effectOf(id, ev, cmdID); ok {
			v.effects[t] = append(v.effects[t], e)
		}
		return
	}
	ev, ok := payload.(TransferEvent)
	if !ok {
		rep.add(VUndecodable, id, "%s version %d: %T is not a transfer event", typ, version, payload)
		return
	}
	s := TransferEvolve(v.transfers[id], ev)
	v.transfers[id] = s
	switch ev.(type) {
	case TransferPosted, TransferVoided, TransferExpired, TransferFailed:
		v.finals[id]++
	}
	if err := CheckTransferInvariants(s); err != nil && !v.broken[id] {
		v.broken[id] = true
		rep.add(VTransferInvariant, id, "after version %d (%T): %v", version, ev, err)
	}
}

// finish checks the ledgers and the transfers' effects, and returns the
// transfers' final states.
func (v *verifier) finish() map[string]Transfer {
	rep := v.rep
	totals := map[uint32]*LedgerTotals{}
	for _, a := range v.accounts {
		if !a.Opened {
			continue // refusals only: an account that was never opened
		}
		rep.Accounts++
		t := totals[a.Ledger]
		if t == nil {
			t = &LedgerTotals{Ledger: a.Ledger}
			totals[a.Ledger] = t
		}
		t.Accounts++
		t.DebitsPending += a.DebitsPending
		t.DebitsPosted += a.DebitsPosted
		t.CreditsPending += a.CreditsPending
		t.CreditsPosted += a.CreditsPosted
	}
	for _, t := range totals {
		rep.Ledgers = append(rep.Ledgers, *t)
		id := fmt.Sprint(t.Ledger)
		if t.DebitsPosted != t.CreditsPosted {
			rep.add(VLedgerUnbalanced, id, "debits posted %d, credits posted %d", t.DebitsPosted, t.CreditsPosted)
		}
		if t.DebitsPending != t.CreditsPending {
			rep.add(VPendingMismatch, id, "debits pending %d, credits pending %d", t.DebitsPending, t.CreditsPending)
		}
	}
	sort.Slice(rep.Ledgers, func(i, j int) bool { return rep.Ledgers[i].Ledger < rep.Ledgers[j].Ledger })

	ids := make([]string, 0, len(v.transfers))
	for id := range v.transfers {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	rep.Transfers = len(ids)
	for _, id := range ids {
		t := v.transfers[id]
		rep.ByStatus[t.Status]++
		if !t.Status.Final() {
			rep.add(VNotFinal, id, "status %s", t.Status)
		} else if v.finals[id] != 1 {
			rep.add(VFinalTwice, id, "%d final events", v.finals[id])
		}
		checkEffects(rep, t, v.effects[id])
		checkRefunds(rep, t, v.transfers)
	}
	for id, es := range v.effects {
		if _, ok := v.transfers[id]; !ok {
			rep.add(VOrphanEffect, id, "%d account effects of a transfer that does not exist (first: %s of %d on %s)", len(es), es[0].kind, es[0].amount, es[0].account)
		}
	}
	return v.transfers
}

// effectOf turns an account event into an effect on its transfer.
func effectOf(account string, ev AccountEvent, cmdID string) (string, effect, bool) {
	e := effect{account: account, commandID: cmdID}
	var t string
	switch x := ev.(type) {
	case DebitReserved:
		t, e.side, e.kind, e.amount = x.Transfer, Debit, EntryReserved, x.Amount
	case CreditReserved:
		t, e.side, e.kind, e.amount = x.Transfer, Credit, EntryReserved, x.Amount
	case DebitRefused:
		t, e.side, e.kind, e.code = x.Transfer, Debit, EntryRefused, x.Code
	case CreditRefused:
		t, e.side, e.kind, e.code = x.Transfer, Credit, EntryRefused, x.Code
	case DebitPosted:
		t, e.side, e.kind, e.amount, e.pending = x.Transfer, Debit, EntryPosted, x.Amount, x.Pending
	case CreditPosted:
		t, e.side, e.kind, e.amount, e.pending = x.Transfer, Credit, EntryPosted, x.Amount, x.Pending
	case DebitVoided:
		t, e.side, e.kind, e.amount = x.Transfer, Debit, EntryVoided, x.Amount
	case CreditVoided:
		t, e.side, e.kind, e.amount = x.Transfer, Credit, EntryVoided, x.Amount
	default:
		return "", e, false
	}
	return t, e, true
}

// stepOf is the process step whose command makes an effect.
func stepOf(e effect) string {
	verb := map[EntryStatus]string{EntryReserved: "reserve", EntryRefused: "reserve", EntryPosted: "post", EntryVoided: "void"}[e.kind]
	return verb + "-" + string(e.side)
}

func checkEffects(rep *Report, t Transfer, es []effect) {
	var debit, credit []effect
	for _, e := range es {
		switch {
		case e.side == Debit && e.account == t.DebitAccountID:
			debit = append(debit, e)
		case e.side == Credit && e.account == t.CreditAccountID:
			credit = append(credit, e)
		default:
			rep.add(VOrphanEffect, t.ID, "a %s %s on account %s, which is not the transfer's %s account", e.side, e.kind, e.account, e.side)
			continue
		}
		if want := actor.CommandID(t.ID, stepOf(e)); e.commandID != want {
			rep.add(VEffectNotFromStep, t.ID, "the %s %s on %s was made by command %q, not %q", e.side, e.kind, e.account, e.commandID, want)
		}
	}
	want := func(side Side, es []effect, kinds ...EntryStatus) bool {
		got := make([]EntryStatus, len(es))
		for i, e := range es {
			got[i] = e.kind
		}
		if !slices.Equal(got, kinds) {
			rep.add(VEffects, t.ID, "%s %s on %s: effects %v, want %v", t.Status, side, accountOf(t, side), got, kinds)
			return false
		}
		return true
	}
	checkAmounts := func(side Side, es []effect) {
		for _, e := range es {
			bad := false
			switch e.kind {
			case EntryReserved, EntryVoided:
				bad = e.amount != t.Amount
			case EntryPosted:
				bad = e.amount != t.PostAmount || e.pending != t.Amount
			}
			if bad {
				rep.add(VEffects, t.ID, "%s %s of %d (pending %d) on %s; the transfer is %d, posted %d", side, e.kind, e.amount, e.pending, accountOf(t, side), t.Amount, t.PostAmount)
			}
		}
	}
	switch t.Status {
	case StatusPosted:
		if want(Debit, debit, EntryReserved, EntryPosted) && want(Credit, credit, EntryReserved, EntryPosted) {
			checkAmounts(Debit, debit)
			checkAmounts(Credit, credit)
		}
	case StatusVoided, StatusExpired:
		if want(Debit, debit, EntryReserved, EntryVoided) && want(Credit, credit, EntryReserved, EntryVoided) {
			checkAmounts(Debit, debit)
			checkAmounts(Credit, credit)
		}
	case StatusFailed:
		switch {
		case len(debit) == 1 && debit[0].kind == EntryRefused:
			if debit[0].code != t.Result {
				rep.add(VEffects, t.ID, "failed with %s, the debit was refused with %s", t.Result, debit[0].code)
			}
			want(Credit, credit)
		default:
			if want(Debit, debit, EntryReserved, EntryVoided) && want(Credit, credit, EntryRefused) {
				checkAmounts(Debit, debit)
				if credit[0].code != t.Result {
					rep.add(VEffects, t.ID, "failed with %s, the credit was refused with %s", t.Result, credit[0].code)
				}
			}
		}
	}
}

func accountOf(t Transfer, side Side) string {
	if side == Debit {
		return t.DebitAccountID
	}
	return t.CreditAccountID
}

func checkRefunds(rep *Report, t Transfer, transfers map[string]Transfer) {
	if len(t.Refunds) == 0 {
		return
	}
	var posted int64
	for rid, r := range t.Refunds {
		rt, ok := transfers[RefundTransferID(t.ID, rid)]
		switch {
		case !ok:
			rep.add(VRefund, t.ID, "refund %q has no transfer", rid)
		case rt.RefundOf != t.ID || rt.Amount != r.Amount || rt.DebitAccountID != t.CreditAccountID || rt.CreditAccountID != t.DebitAccountID:
			rep.add(VRefund, t.ID, "refund %q: its transfer %+v does not reverse %d of this one", rid, rt, r.Amount)
		case rt.Status == StatusFailed && !r.Released:
			rep.add(VRefund, t.ID, "refund %q failed (%s) but was not released", rid, rt.Result)
		case rt.Status == StatusPosted && r.Released:
			rep.add(VRefund, t.ID, "refund %q posted but was released", rid)
		case rt.Status == StatusPosted:
			posted += rt.PostAmount
		}
	}
	if posted > t.PostAmount {
		rep.add(VRefund, t.ID, "refunds posted %d of a transfer that posted %d", posted, t.PostAmount)
	}
}

// checkProcess checks the deadlines and the process rows.
func checkProcess(ctx context.Context, pool *pgxpool.Pool, table func(string) string, transfers map[string]Transfer, rep *Report) error {
	missing := func(err error) bool {
		var pe *pgconn.PgError
		return errors.As(err, &pe) && pe.Code == "42P01" // undefined_table: the process never ran here
	}
	fired := map[string]int{}
	rows, err := pool.Query(ctx, `SELECT id, fired FROM payments_deadlines_fired`)
	if err == nil {
		for rows.Next() {
			var id string
			var n int
			if err = rows.Scan(&id, &n); err != nil {
				break
			}
			fired[id] = n
		}
		rows.Close()
		err = errors.Join(err, rows.Err())
	}
	switch {
	case missing(err):
		return nil
	case err != nil:
		return fmt.Errorf("ledger: check: deadlines fired: %w", err)
	}
	rep.DeadlinesFired = len(fired)
	for id, n := range fired {
		if n != 1 {
			rep.add(VDeadlineTwice, id, "fired %d times", n)
		}
	}
	for id, t := range transfers {
		if t.Status == StatusExpired && fired[timeoutID(id)] != 1 {
			rep.add(VTimeoutNotFired, id, "expired, its timeout fired %d times", fired[timeoutID(id)])
		}
	}
	// Deadlines still scheduled for finished transfers.
	rows, err = pool.Query(ctx, `SELECT id FROM `+table("deadlines")+` WHERE process = $1`, ProcessName)
	if err != nil {
		return fmt.Errorf("ledger: check: deadlines: %w", err)
	}
	pending, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("ledger: check: deadlines: %w", err)
	}
	for _, id := range pending {
		if tr, _, _, ok := parseDeadlineID(id); ok && transfers[tr].Status.Final() {
			rep.add(VDeadlinePending, tr, "deadline %s is still scheduled", id)
		}
	}
	// Processes.
	rows, err = pool.Query(ctx, `SELECT transfer_id, phase FROM payments_transfer_process WHERE phase <> $1`, string(PhaseDone))
	if err != nil {
		return fmt.Errorf("ledger: check: processes: %w", err)
	}
	type open struct{ ID, Phase string }
	opens, err := pgx.CollectRows(rows, pgx.RowToStructByPos[open])
	if err != nil {
		return fmt.Errorf("ledger: check: processes: %w", err)
	}
	for _, o := range opens {
		rep.add(VProcessNotDone, o.ID, "phase %s", o.Phase)
	}
	rows, err = pool.Query(ctx, `SELECT transfer_id FROM payments_transfer_process`)
	if err != nil {
		return fmt.Errorf("ledger: check: processes: %w", err)
	}
	known, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("ledger: check: processes: %w", err)
	}
	have := make(map[string]bool, len(known))
	for _, id := range known {
		have[id] = true
	}
	for id := range transfers {
		if !have[id] {
			rep.add(VProcessNotDone, id, "no process row")
		}
	}
	// The process's commands: never rejected or dead-lettered.
	rows, err = pool.Query(ctx, `SELECT command_id, aggregate_type, outcome, reason FROM `+table("command_results")+`
		WHERE aggregate_type = ANY($1) AND outcome <> 'accepted' AND command_id NOT LIKE 'payments:%'`, []string{AccountType, TransferType})
	if err != nil {
		return fmt.Errorf("ledger: check: command results: %w", err)
	}
	type failed struct{ ID, Type, Outcome, Reason string }
	fs, err := pgx.CollectRows(rows, pgx.RowToStructByPos[failed])
	if err != nil {
		return fmt.Errorf("ledger: check: command results: %w", err)
	}
	for _, f := range fs {
		rep.add(VCommandFailed, f.ID, "%s command %s: %s", f.Type, f.Outcome, f.Reason)
	}
	rows, err = pool.Query(ctx, `SELECT topic, partition, "offset", error FROM `+table("dead_letters")+` WHERE topic = ANY($1)`,
		[]string{AccountsTopic, TransfersTopic, AccountsTopic + ".events", TransfersTopic + ".events"})
	if err != nil {
		return fmt.Errorf("ledger: check: dead letters: %w", err)
	}
	type dead struct {
		Topic     string
		Partition int32
		Offset    int64
		Error     string
	}
	ds, err := pgx.CollectRows(rows, pgx.RowToStructByPos[dead])
	if err != nil {
		return fmt.Errorf("ledger: check: dead letters: %w", err)
	}
	for _, d := range ds {
		rep.add(VDeadLetter, fmt.Sprintf("%s[%d]@%d", d.Topic, d.Partition, d.Offset), "%s", d.Error)
	}
	return nil
}
