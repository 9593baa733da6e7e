package actor_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
)

// sent records what a test sent, to check against what Postgres holds.
type sent struct {
	id      string
	account string
	delta   int64 // +amount for Deposit, -amount for Withdraw
}

// checkInvariants verifies the exactly-once properties from Postgres alone:
//   - every command id sent has exactly one stored result, and no other
//     result exists;
//   - each aggregate's versions run 1..n with no gap or repeat;
//   - each partition's seq runs 1..n with no gap or repeat, and the claim's
//     next_seq follows the last one;
//   - each account's balance, folded from its events, equals the sum of the
//     deltas of the commands whose stored outcome is accepted, and every
//     accepted command has exactly one event.
func checkInvariants(t *testing.T, pool *pgxpool.Pool, cmds []sent) {
	t.Helper()
	ctx := context.Background()
	q := func(sql string, args ...any) [][]any {
		rows, err := pool.Query(ctx, sql, args...)
		if err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
		defer rows.Close()
		var out [][]any
		for rows.Next() {
			v, err := rows.Values()
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, v)
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		return out
	}

	outcomes := map[string]string{}
	for _, r := range q(`SELECT command_id, outcome FROM onceflow.command_results`) {
		outcomes[r[0].(string)] = r[1].(string)
	}
	want := map[string]bool{}
	for _, c := range cmds {
		want[c.id] = true
		if _, ok := outcomes[c.id]; !ok {
			t.Errorf("command %s (%s %+d) has no stored outcome: lost", c.id, c.account, c.delta)
		}
	}
	for id := range outcomes {
		if !want[id] {
			t.Errorf("stored outcome for command %s that was never sent", id)
		}
	}

	for _, r := range q(`SELECT aggregate_id, count(*), min(version), max(version), count(DISTINCT version)
		FROM onceflow.events GROUP BY aggregate_id`) {
		n, lo, hi, distinct := r[1].(int64), r[2].(int64), r[3].(int64), r[4].(int64)
		if lo != 1 || hi != n || distinct != n {
			t.Errorf("aggregate %v: %d events with versions %d..%d (%d distinct): want 1..n without gap or repeat", r[0], n, lo, hi, distinct)
		}
	}
	for _, r := range q(`SELECT e.partition, count(*), min(e.seq), max(e.seq), max(c.next_seq)
		FROM onceflow.events e JOIN onceflow.partition_claims c ON c.partition = e.partition AND c.topic = e.topic
		GROUP BY e.partition`) {
		n, lo, hi, next := r[1].(int64), r[2].(int64), r[3].(int64), r[4].(int64)
		if lo != 1 || hi != n || next != hi+1 {
			t.Errorf("partition %v: %d events with seq %d..%d, claim next_seq %d: want gap-free 1..n and next n+1", r[0], n, lo, hi, next)
		}
	}

	perCommand := map[string]int64{}
	for _, r := range q(`SELECT command_id, count(*) FROM onceflow.events GROUP BY command_id`) {
		perCommand[r[0].(string)] = r[1].(int64)
	}
	expect := map[string]int64{}
	for _, c := range cmds {
		switch outcomes[c.id] {
		case "accepted":
			expect[c.account] += c.delta
			if perCommand[c.id] != 1 {
				t.Errorf("accepted command %s has %d events, want 1", c.id, perCommand[c.id])
			}
		default:
			if perCommand[c.id] != 0 {
				t.Errorf("%s command %s has %d events, want 0", outcomes[c.id], c.id, perCommand[c.id])
			}
		}
	}
	balances := map[string]int64{}
	for _, r := range q(`SELECT aggregate_id,
			sum(CASE WHEN type = 'test.Deposited' THEN (convert_from(data, 'UTF8')::jsonb->>'amount')::bigint
			         ELSE -(convert_from(data, 'UTF8')::jsonb->>'amount')::bigint END)::bigint
		FROM onceflow.events GROUP BY aggregate_id`) {
		balances[r[0].(string)] = r[1].(int64)
	}
	for acct, want := range expect {
		if balances[acct] != want {
			t.Errorf("account %s: folded balance %d, accepted commands imply %d", acct, balances[acct], want)
		}
		if balances[acct] < 0 {
			t.Errorf("account %s: negative balance %d", acct, balances[acct])
		}
	}
	if testing.Verbose() {
		t.Logf("invariants hold: %d commands, %d outcomes, %d accounts", len(cmds), len(outcomes), len(expect))
	}
}

func countRows(t *testing.T, pool *pgxpool.Pool, sql string, args ...any) int64 {
	t.Helper()
	var n int64
	if err := pool.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

func fmtOutcome(s string, reason string) string { return fmt.Sprintf("%s(%s)", s, reason) }
