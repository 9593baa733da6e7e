package ledger

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/onceflow/onceflow/actor"
	"github.com/onceflow/onceflow/eventsource"
)

// ProcessName is the name of the transfer process manager, shared by its
// two runtimes (one per source topic): deadlines are per name.
const ProcessName = "transfers"

// ProcessComponent is the name the process's migrations are recorded under
// (actor.WithMigrations, txn.MigrateFS).
const ProcessComponent = "payments-process"

//go:embed migrations/*.sql
var migrationFS embed.FS

// ProcessMigrations returns the migrations of the process's tables
// (payments_transfer_process, payments_deadlines_fired).
func ProcessMigrations() (fs.FS, string) { return migrationFS, "migrations" }

// ProcessOptions configure the transfer process.
type ProcessOptions struct {
	// Registry is NewRegistry's: it decodes the events of both aggregates
	// and encodes the commands the process sends to both. Required.
	Registry *eventsource.Registry
	// RetryAfter is how long the process waits for the answers to a step
	// before it sends the step's commands again (with the same ids), then
	// twice as long, up to MaxRetryAfter. Defaults 10s and 2m.
	RetryAfter, MaxRetryAfter time.Duration
}

// Processes returns the transfer process manager's two runtimes'
// definitions: source TransfersTopic (the transfers' creations, decisions
// and final marks) and source AccountsTopic (the accounts' answers). Run
// each with actor.NewProcessManager and the process's migrations
// (actor.WithMigrations(ProcessComponent, ProcessMigrations())).
func Processes(o ProcessOptions) ([]actor.ProcessManager, error) {
	if o.Registry == nil {
		return nil, errors.New("ledger: ProcessOptions.Registry is nil")
	}
	if o.RetryAfter <= 0 {
		o.RetryAfter = 10 * time.Second
	}
	if o.MaxRetryAfter < o.RetryAfter {
		o.MaxRetryAfter = max(2*time.Minute, o.RetryAfter)
	}
	sh := &shell{o: o}
	var pms []actor.ProcessManager
	for _, src := range []string{TransfersTopic, AccountsTopic} {
		pms = append(pms, actor.ProcessManager{
			Name: ProcessName, Source: src, Events: o.Registry, Commands: o.Registry,
			Handle: sh.handle, OnDeadline: sh.onDeadline,
		})
	}
	return pms, nil
}

type shell struct{ o ProcessOptions }

// handle runs one event through the transfer's process.
func (sh *shell) handle(ctx context.Context, tx pgx.Tx, ev actor.Event, fx *actor.Effects) error {
	transfer := processTransfer(ev.AggregateID, ev.Payload)
	if transfer == "" {
		return nil
	}
	p, found, err := loadProcess(ctx, tx, transfer)
	if err != nil {
		return err
	}
	if _, create := ev.Payload.(TransferCreated); !found && !create {
		return nil // not a transfer's event the process started from
	}
	at := ev.RecordedAt
	if at.IsZero() {
		at = time.Now()
	}
	return sh.advance(ctx, tx, fx, p, ev.Payload, at)
}

// advance steps p with input and carries out the step: the commands it
// adds to the outstanding ones, its one-shot commands, its timeout, the
// step-retry deadline, and the new state's row.
func (sh *shell) advance(ctx context.Context, tx pgx.Tx, fx *actor.Effects, p Process, input any, at time.Time) error {
	before := Outstanding(p)
	next, eff := Step(p, input, at)
	if reflect.DeepEqual(next, p) && reflect.DeepEqual(eff, Effects{}) {
		return nil // a repeat, or an answer already seen
	}
	after := Outstanding(next)
	sent := map[string]bool{}
	for _, s := range before {
		sent[s.ID] = true
	}
	for _, s := range after {
		if !sent[s.ID] {
			if err := fx.Send(s.Topic, s.Cmd, s.ID); err != nil {
				return err
			}
		}
	}
	for _, s := range eff.Once {
		if err := fx.Send(s.Topic, s.Cmd, s.ID); err != nil {
			return err
		}
	}
	if eff.ScheduleTimeout {
		if err := fx.Schedule(timeoutID(next.Transfer), next.ExpiresAt, nil); err != nil {
			return err
		}
	}
	if eff.CancelTimeout {
		if _, err := fx.Cancel(timeoutID(next.Transfer)); err != nil {
			return err
		}
	}
	if !sameSends(before, after) {
		// The process moved: the old step's retry is moot; the new step
		// gets its own.
		if p.RetryPending {
			if _, err := fx.Cancel(retryID(p.Transfer, p.Retry)); err != nil {
				return err
			}
		}
		next.Attempts, next.RetryPending = 0, false
		if len(after) > 0 {
			// A new id each time (the count only grows): every deadline id
			// fires at most once, which Check verifies.
			next.Retry++
			next.RetryPending = true
			if err := fx.Schedule(retryID(next.Transfer, next.Retry), time.Now().Add(sh.o.RetryAfter), nil); err != nil {
				return err
			}
		}
	}
	return saveProcess(ctx, tx, next)
}

// onDeadline handles the transfer's timeout and the step retries.
func (sh *shell) onDeadline(ctx context.Context, tx pgx.Tx, d actor.Deadline, fx *actor.Effects) error {
	if _, err := tx.Exec(ctx, `INSERT INTO payments_deadlines_fired (id) VALUES ($1)
		ON CONFLICT (id) DO UPDATE SET fired = payments_deadlines_fired.fired + 1, last_at = now()`, d.ID); err != nil {
		return err
	}
	transfer, kind, n, ok := parseDeadlineID(d.ID)
	if !ok {
		return nil
	}
	p, found, err := loadProcess(ctx, tx, transfer)
	if err != nil || !found {
		return err
	}
	switch kind {
	case "timeout":
		return sh.advance(ctx, tx, fx, p, TimeoutFired{}, time.Now())
	case "retry":
		if !p.RetryPending || n != p.Retry {
			return nil // the process moved on since (its cancel lost the race)
		}
		out := Outstanding(p)
		// The answers to this step have not arrived: send the step's
		// commands again WITH THE SAME IDS. The target dedupes by command
		// id, so this is at most a duplicate: a command that was applied
		// is answered from its stored result and changes nothing. A fresh
		// (random) id here would make the target treat the resend as a
		// new command: a second ReserveDebit or PostDebit would apply
		// twice wherever the state is not keyed by the transfer (the
		// account's per-transfer entries are a second line of defence,
		// not the guarantee), and Check reports effects not made under
		// the step's id.
		for _, s := range out {
			if err := fx.Send(s.Topic, s.Cmd, s.ID); err != nil {
				return err
			}
		}
		p.Attempts++
		if len(out) == 0 {
			p.RetryPending = false
			return saveProcess(ctx, tx, p)
		}
		p.Retry++
		delay := sh.o.RetryAfter << min(p.Attempts, 16)
		if delay > sh.o.MaxRetryAfter || delay <= 0 {
			delay = sh.o.MaxRetryAfter
		}
		if err := fx.Schedule(retryID(p.Transfer, p.Retry), time.Now().Add(delay), nil); err != nil {
			return err
		}
		return saveProcess(ctx, tx, p)
	}
	return nil
}

func sameSends(a, b []Send) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].ID != b[i].ID {
			return false
		}
	}
	return true
}

// Deadline ids: "<transfer>/timeout" and "<transfer>/retry/<n>". Transfer
// ids never contain '/'.
func timeoutID(transfer string) string      { return transfer + "/timeout" }
func retryID(transfer string, n int) string { return fmt.Sprintf("%s/retry/%d", transfer, n) }

func parseDeadlineID(id string) (transfer, kind string, n int, ok bool) {
	transfer, rest, ok := strings.Cut(id, "/")
	if !ok {
		return "", "", 0, false
	}
	if rest == "timeout" {
		return transfer, rest, 0, true
	}
	if s, found := strings.CutPrefix(rest, "retry/"); found {
		n, err := strconv.Atoi(s)
		return transfer, "retry", n, err == nil
	}
	return "", "", 0, false
}

func loadProcess(ctx context.Context, tx pgx.Tx, transfer string) (Process, bool, error) {
	var b []byte
	err := tx.QueryRow(ctx, `SELECT state FROM payments_transfer_process WHERE transfer_id = $1 FOR UPDATE`, transfer).Scan(&b)
	if errors.Is(err, pgx.ErrNoRows) {
		return Process{}, false, nil
	}
	if err != nil {
		return Process{}, false, fmt.Errorf("load the process of transfer %q: %w", transfer, err)
	}
	var p Process
	if err := json.Unmarshal(b, &p); err != nil {
		return Process{}, false, fmt.Errorf("decode the process of transfer %q: %w", transfer, err)
	}
	return p, true, nil
}

func saveProcess(ctx context.Context, tx pgx.Tx, p Process) error {
	b, err := json.Marshal(p)
	if err != nil {
		return err
	}
	_, err = tx.Exec(ctx, `INSERT INTO payments_transfer_process (transfer_id, phase, state) VALUES ($1, $2, $3)
		ON CONFLICT (transfer_id) DO UPDATE SET phase = EXCLUDED.phase, state = EXCLUDED.state, updated_at = now()`,
		p.Transfer, string(p.Phase), b)
	if err != nil {
		return fmt.Errorf("save the process of transfer %q: %w", p.Transfer, err)
	}
	return nil
}
