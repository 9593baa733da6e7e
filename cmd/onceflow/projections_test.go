package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/onceflow/onceflow/internal/testenv"
	"github.com/onceflow/onceflow/projection"
)

func TestProjectionsUsage(t *testing.T) {
	db := []string{"--database-url", "postgres://x/y"}
	for _, tc := range []struct {
		args       []string
		code       int
		wantStdout string
		wantStderr string
	}{
		{[]string{"help"}, 0, "projections", ""},
		{[]string{"projections"}, 2, "", "missing subcommand: one of list, pause, resume, reset, skip, switch, watch"},
		{[]string{"projections", "frob"}, 2, "", `onceflow projections: unknown subcommand "frob"`},
		{[]string{"projections", "-h"}, 0, "Usage: onceflow projections <subcommand>", ""},
		{[]string{"projections", "list", "-h"}, 0, "", "Usage: onceflow projections list [flags]"},
		{[]string{"projections", "list", "--bogus"}, 2, "", "flag provided but not defined: -bogus"},
		{[]string{"projections", "list", "extra"}, 2, "", `onceflow projections: list: unexpected argument "extra"`},
		{[]string{"projections", "list"}, 2, "", "no database: set DATABASE_URL or pass --database-url"},
		{[]string{"projections", "list", "--schema", "Bad-Name", "--database-url", "postgres://x/y"}, 2, "", "--schema: "},
		{[]string{"projections", "pause", "--version", "1"}, 2, "", "onceflow projections: pause: --name is required"},
		{[]string{"projections", "pause", "--name", "b"}, 2, "", "pause: --version is required"},
		{[]string{"projections", "resume", "--name", "b", "--version", "-2"}, 2, "", "resume: --version must be >= 1, got -2"},
		{[]string{"projections", "pause", "--name", "b", "--version", "x"}, 2, "", `invalid value "x" for flag -version`},
		{append([]string{"projections", "reset", "--name", "b", "--version", "1", "--to", "3"}, db...), 2, "", "reset: --partition is required"},
		{append([]string{"projections", "reset", "--name", "b", "--version", "1", "--partition", "99999999999", "--to", "3"}, db...), 2, "", "--partition must be in [0, 2147483647], got 99999999999"},
		{append([]string{"projections", "reset", "--name", "b", "--version", "1", "--partition", "0"}, db...), 2, "", "reset: --to is required"},
		{append([]string{"projections", "reset", "--name", "b", "--version", "1", "--partition", "0", "--to", "-5"}, db...), 2, "", "--to must be >= 0, got -5"},
		{append([]string{"projections", "skip", "--name", "b", "--version", "1", "--partition", "0"}, db...), 2, "", "skip: --seq is required"},
		{append([]string{"projections", "skip", "--name", "b", "--version", "1", "--seq", "4"}, db...), 2, "", "skip: --partition is required"},
		{append([]string{"projections", "switch", "--name", "b"}, db...), 2, "", "switch: --version is required"},
		{append([]string{"projections", "watch", "--name", "b", "--version", "1", "--interval", "0s"}, db...), 2, "", "watch: --interval must be > 0, got 0s"},
		{append([]string{"projections", "watch", "--name", "b", "--version", "1", "--interval", "soon"}, db...), 2, "", `invalid value "soon" for flag -interval`},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			r := onceflow(t, nil, tc.args...)
			if r.code != tc.code || !strings.Contains(r.stdout, tc.wantStdout) || !strings.Contains(r.stderr, tc.wantStderr) {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s\nwant stdout ~ %q, stderr ~ %q", r.code, tc.code, r.stdout, r.stderr, tc.wantStdout, tc.wantStderr)
			}
		})
	}
}

func TestWatchProgress(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	for _, tc := range []struct {
		name      string
		prev, cur watchSample
		want      watchProgress
		line, bar string
	}{{
		name: "first sample",
		cur:  watchSample{at: t0, total: 50000, lag: 38000},
		want: watchProgress{applied: 12000, total: 50000, lag: 38000, percent: 24, rate: -1, eta: -1},
		line: "balances v2: 12000/50000 events (24.0%), measuring events/s",
		bar:  "balances v2 [=======>......................]  24.0%  measuring events/s",
	}, {
		name: "rate and ETA between samples",
		prev: watchSample{at: t0, total: 50000, lag: 41100},
		cur:  watchSample{at: at(time.Second), total: 50000, lag: 38000},
		want: watchProgress{applied: 12000, total: 50000, lag: 38000, percent: 24, rate: 3100, eta: 12258064516}, // 38000 / 3100 s,
		line: "balances v2: 12000/50000 events (24.0%), 3100 events/s, ETA 12s",
		bar:  "balances v2 [=======>......................]  24.0%  3100 events/s  ETA 12s",
	}, {
		// The source commits as fast as the version applies: the lag does
		// not shrink, so there is no ETA.
		name: "not gaining on a growing source",
		prev: watchSample{at: t0, total: 1000, lag: 500},
		cur:  watchSample{at: at(2 * time.Second), total: 1200, lag: 500},
		want: watchProgress{applied: 700, total: 1200, lag: 500, percent: 58.3, rate: 100, eta: -1},
		line: "balances v2: 700/1200 events (58.3%), 100 events/s, ETA unknown",
		bar:  "balances v2 [=================>............]  58.3%  100 events/s  ETA unknown",
	}, {
		// Positions moved back (a reset): no negative rate.
		name: "reset backwards",
		prev: watchSample{at: t0, total: 1000, lag: 0},
		cur:  watchSample{at: at(time.Second), total: 1000, lag: 900},
		want: watchProgress{applied: 100, total: 1000, lag: 900, percent: 10, rate: 0, eta: -1},
		line: "balances v2: 100/1000 events (10.0%), 0 events/s, ETA unknown",
		bar:  "balances v2 [===>..........................]  10.0%  0 events/s  ETA unknown",
	}, {
		// 99.998% is shown as 99.9%: 100.0% means caught up.
		name: "one event behind",
		prev: watchSample{at: t0, total: 50000, lag: 2},
		cur:  watchSample{at: at(time.Second), total: 50000, lag: 1},
		want: watchProgress{applied: 49999, total: 50000, lag: 1, percent: 99.9, rate: 1, eta: time.Second},
		line: "balances v2: 49999/50000 events (99.9%), 1 events/s, ETA 1s",
		bar:  "balances v2 [=============================>]  99.9%  1 events/s  ETA 1s",
	}, {
		name: "caught up",
		prev: watchSample{at: t0, total: 50000, lag: 1000},
		cur:  watchSample{at: at(500 * time.Millisecond), total: 50000, lag: 0},
		want: watchProgress{applied: 50000, total: 50000, lag: 0, percent: 100, rate: 2000, eta: 0},
		line: "balances v2: 50000/50000 events (100.0%), caught up",
		bar:  "balances v2 [==============================] 100.0%  caught up",
	}, {
		name: "nothing to apply",
		cur:  watchSample{at: t0},
		want: watchProgress{percent: 100, rate: -1, eta: 0},
		line: "balances v2: 0/0 events (100.0%), caught up",
		bar:  "balances v2 [==============================] 100.0%  caught up",
	}, {
		name: "same instant",
		prev: watchSample{at: t0, total: 10, lag: 5},
		cur:  watchSample{at: t0, total: 10, lag: 4},
		want: watchProgress{applied: 6, total: 10, lag: 4, percent: 60, rate: -1, eta: -1},
		line: "balances v2: 6/10 events (60.0%), measuring events/s",
		bar:  "balances v2 [==================>...........]  60.0%  measuring events/s",
	}} {
		t.Run(tc.name, func(t *testing.T) {
			got := measure(tc.prev, tc.cur)
			if got != tc.want {
				t.Fatalf("measure:\n got %+v\nwant %+v", got, tc.want)
			}
			if line := progressLine("balances", 2, got); line != tc.line {
				t.Fatalf("line:\n got %q\nwant %q", line, tc.line)
			}
			if bar := progressBar("balances", 2, got); bar != tc.bar {
				t.Fatalf("bar:\n got %q\nwant %q", bar, tc.bar)
			}
		})
	}

	for d, want := range map[time.Duration]string{
		-1: "unknown", 0: "<1s", 400 * time.Millisecond: "<1s", 1500 * time.Millisecond: "2s", 12 * time.Second: "12s",
		65 * time.Second: "1m05s", 2*time.Hour + 7*time.Minute + 10*time.Second: "2h07m", 50 * time.Hour: "50h00m",
	} {
		if got := etaString(d); got != want {
			t.Errorf("etaString(%v) = %q, want %q", d, got, want)
		}
	}

	st := projection.Status{Info: projection.Info{State: projection.Retired, Paused: true, PauseReason: "rebuilding\nafter a bug"},
		Partitions: []projection.PartitionStatus{{Partition: 0}, {Partition: 3, Halted: "offset 7: poison\ngoroutine 1"}}}
	if got, want := watchNote(st), " (retired; paused: rebuilding after a bug; partition 3 halted: offset 7: poison)"; got != want {
		t.Fatalf("watchNote = %q, want %q", got, want)
	}
	if got := watchNote(projection.Status{Info: projection.Info{State: projection.Building}}); got != "" {
		t.Fatalf("watchNote of a running version = %q", got)
	}
}

// projectionsFixture is a database with the projection registry: balances
// v1 (active, caught up on both partitions of accounts.commands), balances
// v2 (building: 40 of 100 on partition 0, nothing on partition 1), and
// audit v1 (active, a source without claims).
func projectionsFixture(t *testing.T) (vars map[string]string, pool *pgxpool.Pool) {
	t.Helper()
	dsn := testenv.Postgres(t)
	vars = map[string]string{"DATABASE_URL": dsn}
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)

	// No registry yet: what to do about it.
	r := onceflow(t, vars, "projections", "list")
	if r.code != 1 || !strings.Contains(r.stderr, "onceflow projections: list: no projection registry in schema onceflow: start a projection runtime or run onceflow migrate (") {
		t.Fatalf("list without a registry: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	if err := projection.Migrate(ctx, pool); err != nil {
		t.Fatal(err)
	}
	store := projection.NewStore(pool)
	for _, d := range []projection.Def{
		{Name: "balances", Version: 1, SourceTopic: "accounts.commands"},
		{Name: "balances", Version: 2, SourceTopic: "accounts.commands"},
		{Name: "audit", Version: 1, SourceTopic: "audit.commands"},
	} {
		if _, err := store.Register(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	// The claims the runtimes would hold: the command group's (how far
	// the source has committed) and the projection versions' (positions).
	if _, err := pool.Exec(ctx, `INSERT INTO onceflow.partition_claims (group_id, topic, partition, next_seq, epoch, owner) VALUES
		('accounts', 'accounts.commands', 0, 101, 3, 'svc-a'),
		('accounts', 'accounts.commands', 1, 51, 2, 'svc-b'),
		('onceflow.projection.balances.v1', 'accounts.commands.events', 0, 101, 4, 'proj-a'),
		('onceflow.projection.balances.v1', 'accounts.commands.events', 1, 51, 1, 'proj-b'),
		('onceflow.projection.balances.v2', 'accounts.commands.events', 0, 41, 1, 'proj-a')`); err != nil {
		t.Fatal(err)
	}
	return vars, pool
}

// nextSeq reads a projection version's claim row.
func nextSeq(t *testing.T, pool *pgxpool.Pool, version, partition int) (seq, offset int64) {
	t.Helper()
	err := pool.QueryRow(context.Background(), `SELECT next_seq, next_offset FROM onceflow.partition_claims WHERE group_id = $1 AND partition = $2`,
		projection.Def{Name: "balances", Version: version}.Group(), partition).Scan(&seq, &offset)
	if err != nil {
		t.Fatal(err)
	}
	return seq, offset
}

// listJSON runs list --json and returns its versions by "name vN".
func listJSON(t *testing.T, vars map[string]string, args ...string) map[string]map[string]any {
	t.Helper()
	r := onceflow(t, vars, append([]string{"projections", "list", "--json"}, args...)...)
	if r.code != 0 {
		t.Fatalf("list --json: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	out := map[string]map[string]any{}
	for _, line := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
		var v map[string]any
		if err := json.Unmarshal([]byte(line), &v); err != nil {
			t.Fatalf("list --json: %v\n%s", err, r.stdout)
		}
		out[v["name"].(string)+" v"+jsonString(v["version"])] = v
	}
	return out
}

func jsonString(v any) string { b, _ := json.Marshal(v); return string(b) }

func mustRun(t *testing.T, vars map[string]string, code int, wantStdout, wantStderr string, args ...string) result {
	t.Helper()
	r := onceflow(t, vars, append([]string{"projections"}, args...)...)
	if r.code != code || !strings.Contains(r.stdout, wantStdout) || !strings.Contains(r.stderr, wantStderr) {
		t.Fatalf("projections %v: exit %d, want %d\nstdout: %s\nstderr: %s\nwant stdout ~ %q, stderr ~ %q", args, r.code, code, r.stdout, r.stderr, wantStdout, wantStderr)
	}
	return r
}

func TestProjectionsCommands(t *testing.T) {
	vars, pool := projectionsFixture(t)
	ctx := context.Background()

	// list: a row per version and source partition.
	r := mustRun(t, vars, 0, "", "", "list")
	for _, re := range []string{
		`^NAME\s+VERSION\s+STATE\s+PAUSED\s+PARTITION\s+POSITION\s+LAST\s+LAG\s+OWNER\s+EPOCH\s+HALTED$`,
		`^audit\s+1\s+active\s+-\s+-\s+-\s+-\s+-\s+-\s+-\s+-$`,
		`^balances\s+1\s+active\s+-\s+0\s+100\s+100\s+0\s+proj-a\s+4\s+-$`,
		`^balances\s+1\s+active\s+-\s+1\s+50\s+50\s+0\s+proj-b\s+1\s+-$`,
		`^balances\s+2\s+building\s+-\s+0\s+40\s+100\s+60\s+proj-a\s+1\s+-$`,
		`^balances\s+2\s+building\s+-\s+1\s+0\s+50\s+50\s+-\s+0\s+-$`,
	} {
		if !regexp.MustCompile("(?m)" + re).MatchString(r.stdout) {
			t.Fatalf("list: no line ~ %s\n%s", re, r.stdout)
		}
	}
	if n := strings.Count(r.stdout, "\n"); n != 6 {
		t.Fatalf("list: %d lines, want 6\n%s", n, r.stdout)
	}
	mustRun(t, vars, 0, "no projections\n", "", "list", "--name", "nope")
	if r := mustRun(t, vars, 0, "", "", "list", "--name", "audit"); strings.Contains(r.stdout, "balances") {
		t.Fatalf("list --name audit:\n%s", r.stdout)
	}

	js := listJSON(t, vars)
	v2 := js["balances v2"]
	if len(js) != 3 || v2["state"] != "building" || v2["lag"] != 110.0 || v2["caught_up"] != false || v2["paused"] != false ||
		v2["group"] != "onceflow.projection.balances.v2" || v2["source_topic"] != "accounts.commands" || v2["history_topic"] != "accounts.commands.events" ||
		v2["activated_at"] != nil || js["balances v1"]["caught_up"] != true || js["balances v1"]["activated_at"] == nil {
		t.Fatalf("list --json: %v", js)
	}
	parts := v2["partitions"].([]any)
	p1 := parts[1].(map[string]any)
	if len(parts) != 2 || p1["partition"] != 1.0 || p1["position"] != 0.0 || p1["last"] != 50.0 || p1["lag"] != 50.0 || p1["owner"] != "" || p1["halted"] != false {
		t.Fatalf("list --json partitions of balances v2: %v", parts)
	}
	if parts := js["audit v1"]["partitions"].([]any); len(parts) != 0 {
		t.Fatalf("list --json partitions of audit v1: %v", parts)
	}

	// watch: a caught-up version exits at once with a plain line (stdout
	// is not a terminal here); an unknown version is an error.
	if r := mustRun(t, vars, 0, "", "", "watch", "--name", "balances", "--version", "1"); r.stdout != "balances v1: 150/150 events (100.0%), caught up\n" {
		t.Fatalf("watch of a caught-up version: %q", r.stdout)
	}
	mustRun(t, vars, 1, "", "onceflow projections: watch: projection not found: balances v9 (onceflow projections list", "watch", "--name", "balances", "--version", "9")

	// pause and resume.
	mustRun(t, vars, 1, "", "projection not found: balances v9", "pause", "--name", "balances", "--version", "9")
	mustRun(t, vars, 0, "balances v2 paused: its partitions stop at their next batch", "", "pause", "--name", "balances", "--version", "2", "--reason", "rebuilding after a bug")
	r = mustRun(t, vars, 0, "", "", "list", "--name", "balances")
	if !regexp.MustCompile(`(?m)^balances\s+2\s+building\s+rebuilding after a bug\s+0\s+40\s`).MatchString(r.stdout) ||
		!regexp.MustCompile(`(?m)^balances\s+1\s+active\s+-\s+0\s`).MatchString(r.stdout) {
		t.Fatalf("list of a paused version:\n%s", r.stdout)
	}
	if v2 := listJSON(t, vars, "--name", "balances")["balances v2"]; v2["paused"] != true || v2["pause_reason"] != "rebuilding after a bug" {
		t.Fatalf("list --json of a paused version: %v", v2)
	}
	mustRun(t, vars, 0, "balances v2 resumed (pause cleared)", "", "resume", "--name", "balances", "--version", "2")
	mustRun(t, vars, 0, "balances v2 was neither paused nor halted; nothing to do", "", "resume", "--name", "balances", "--version", "2")
	if v2 := listJSON(t, vars, "--name", "balances")["balances v2"]; v2["paused"] != false || v2["pause_reason"] != "" {
		t.Fatalf("list --json of a resumed version: %v", v2)
	}

	// reset: refused while running, accepted once paused.
	mustRun(t, vars, 1, "", "balances v1 partition 0 is running (the version is not paused and the partition is not halted): pause it first (onceflow projections pause --name balances --version 1)",
		"reset", "--name", "balances", "--version", "1", "--partition", "0", "--to", "10")
	if seq, _ := nextSeq(t, pool, 1, 0); seq != 101 {
		t.Fatalf("refused reset moved the position: next_seq %d", seq)
	}
	mustRun(t, vars, 0, "balances v1 paused", "", "pause", "--name", "balances", "--version", "1")
	mustRun(t, vars, 0, "balances v1 partition 0 reset from seq 100 to seq 10: it applies seq 11 next once resumed (onceflow projections resume --name balances --version 1)", "",
		"reset", "--name", "balances", "--version", "1", "--partition", "0", "--to", "10")
	if seq, off := nextSeq(t, pool, 1, 0); seq != 11 || off != 0 {
		t.Fatalf("after reset: next_seq %d next_offset %d, want 11 0", seq, off)
	}
	mustRun(t, vars, 1, "", "has no claim on partition 7 yet", "reset", "--name", "balances", "--version", "1", "--partition", "7", "--to", "0")

	// skip: only the next event.
	mustRun(t, vars, 1, "", "the next event it applies is seq 11", "skip", "--name", "balances", "--version", "1", "--partition", "0", "--seq", "12")
	mustRun(t, vars, 0, "balances v1 partition 0 skipped seq 11 without applying it: it applies seq 12 next once resumed", "",
		"skip", "--name", "balances", "--version", "1", "--partition", "0", "--seq", "11")
	if seq, _ := nextSeq(t, pool, 1, 0); seq != 12 {
		t.Fatalf("after skip: next_seq %d, want 12", seq)
	}
	mustRun(t, vars, 0, "balances v1 resumed (pause cleared)", "", "resume", "--name", "balances", "--version", "1")
	mustRun(t, vars, 1, "", "pause it first", "skip", "--name", "balances", "--version", "1", "--partition", "0", "--seq", "12")

	// A halted partition (a poison event under the Halt policy): shown by
	// list, skipped without a pause, its halt cleared by resume.
	if _, err := pool.Exec(ctx, `UPDATE onceflow.partition_claims SET halted_at = now(), halt_reason = 'offset 40: apply: poison'||chr(10)||'goroutine 1'
		WHERE group_id = 'onceflow.projection.balances.v2' AND partition = 0`); err != nil {
		t.Fatal(err)
	}
	r = mustRun(t, vars, 0, "", "", "list", "--name", "balances")
	if !regexp.MustCompile(`(?m)^balances\s+2\s+building\s+-\s+0\s+40\s+100\s+60\s+proj-a\s+1\s+offset 40: apply: poison$`).MatchString(r.stdout) {
		t.Fatalf("list of a halted partition:\n%s", r.stdout)
	}
	p0 := listJSON(t, vars, "--name", "balances")["balances v2"]["partitions"].([]any)[0].(map[string]any)
	if p0["halted"] != true || p0["halt_reason"] != "offset 40: apply: poison\ngoroutine 1" {
		t.Fatalf("list --json of a halted partition: %v", p0)
	}
	mustRun(t, vars, 0, "balances v2 partition 0 skipped seq 41", "", "skip", "--name", "balances", "--version", "2", "--partition", "0", "--seq", "41")
	mustRun(t, vars, 0, "balances v2 resumed (halt cleared on partition 0)", "", "resume", "--name", "balances", "--version", "2")
	if r := mustRun(t, vars, 0, "", "", "list", "--name", "balances"); strings.Contains(r.stdout, "poison") {
		t.Fatalf("list after resume:\n%s", r.stdout)
	}

	// switch: refused until the version has caught up (or --force).
	mustRun(t, vars, 1, "", "balances v2 has not caught up (109 events behind): wait for it (onceflow projections watch --name balances --version 2) or pass --force",
		"switch", "--name", "balances", "--version", "2")
	if _, err := pool.Exec(ctx, `UPDATE onceflow.partition_claims SET next_seq = 101 WHERE group_id = 'onceflow.projection.balances.v2' AND partition = 0;
		INSERT INTO onceflow.partition_claims (group_id, topic, partition, next_seq) VALUES ('onceflow.projection.balances.v2', 'accounts.commands.events', 1, 51)`); err != nil {
		t.Fatal(err)
	}
	mustRun(t, vars, 0, "balances v2 is active; v1 is retired and its runtime stops. The tables of v1 are left in place", "", "switch", "--name", "balances", "--version", "2")
	js = listJSON(t, vars, "--name", "balances")
	if js["balances v1"]["state"] != "retired" || js["balances v2"]["state"] != "active" {
		t.Fatalf("after switch: %v", js)
	}
	mustRun(t, vars, 0, "balances v2 is already active; nothing to do", "", "switch", "--name", "balances", "--version", "2")
	mustRun(t, vars, 1, "", "projection not found: balances v9", "switch", "--name", "balances", "--version", "9")
	// Back to v1, which is behind: only with --force.
	mustRun(t, vars, 1, "", "balances v1 has not caught up (89 events behind)", "switch", "--name", "balances", "--version", "1")
	mustRun(t, vars, 0, "balances v1 is active; v2 is retired", "", "switch", "--name", "balances", "--version", "1", "--force")
	if r := mustRun(t, vars, 0, "", "", "list", "--name", "balances"); !regexp.MustCompile(`(?m)^balances\s+2\s+retired\s`).MatchString(r.stdout) {
		t.Fatalf("list after the switch back:\n%s", r.stdout)
	}

	// Another schema: no registry there.
	mustRun(t, vars, 1, "", "no projection registry in schema tenant_y: start a projection runtime or run onceflow migrate --schema tenant_y", "list", "--schema", "tenant_y")
	mustRun(t, vars, 1, "", "no projection registry in schema tenant_y", "pause", "--name", "balances", "--version", "1", "--schema", "tenant_y")
}

// TestProjectionsWatch follows a building version until it catches up.
func TestProjectionsWatch(t *testing.T) {
	vars, pool := projectionsFixture(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out, errOut syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"projections", "watch", "--name", "balances", "--version", "2", "--interval", "20ms"},
			env{&out, &errOut, func(k string) string { return vars[k] }})
	}()
	waitFor := func(re string) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for !regexp.MustCompile("(?m)" + re).MatchString(out.String()) {
			if time.Now().After(deadline) {
				t.Fatalf("no line ~ %s\nstdout: %s\nstderr: %s", re, out.String(), errOut.String())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitFor(`^balances v2: 40/150 events \(26\.6%\), measuring events/s$`)
	waitFor(`^balances v2: 40/150 events \(26\.6%\), 0 events/s, ETA unknown$`)
	// The runtime applies 30 events on partition 0.
	if _, err := pool.Exec(ctx, `UPDATE onceflow.partition_claims SET next_seq = 71 WHERE group_id = 'onceflow.projection.balances.v2' AND partition = 0`); err != nil {
		t.Fatal(err)
	}
	waitFor(`^balances v2: 70/150 events \(46\.6%\), [1-9]\d* events/s, ETA \S+$`)
	// ... and halts on partition 0: watch says why it does not progress.
	if _, err := pool.Exec(ctx, `UPDATE onceflow.partition_claims SET halted_at = now(), halt_reason = 'offset 70: poison' WHERE group_id = 'onceflow.projection.balances.v2' AND partition = 0`); err != nil {
		t.Fatal(err)
	}
	waitFor(`^balances v2: 70/150 events \(46\.6%\), 0 events/s, ETA unknown \(partition 0 halted: offset 70: poison\)$`)
	// Then catches up.
	if _, err := pool.Exec(ctx, `UPDATE onceflow.partition_claims SET next_seq = 101, halted_at = NULL WHERE group_id = 'onceflow.projection.balances.v2' AND partition = 0;
		INSERT INTO onceflow.partition_claims (group_id, topic, partition, next_seq) VALUES ('onceflow.projection.balances.v2', 'accounts.commands.events', 1, 51)`); err != nil {
		t.Fatal(err)
	}
	select {
	case code := <-done:
		if code != 0 || !strings.HasSuffix(out.String(), "\nbalances v2: 150/150 events (100.0%), caught up\n") {
			t.Fatalf("exit %d\nstdout: %s\nstderr: %s", code, out.String(), errOut.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("watch did not exit after catching up\nstdout: %s", out.String())
	}

	// Interrupted before catching up: exit 1, saying how far behind.
	if _, err := pool.Exec(ctx, `UPDATE onceflow.partition_claims SET next_seq = 151 WHERE group_id = 'accounts' AND partition = 0`); err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithCancel(ctx)
	var out2, errOut2 syncBuffer
	go func() {
		done <- run(wctx, []string{"projections", "watch", "--name", "balances", "--version", "2", "--interval", "20ms"},
			env{&out2, &errOut2, func(k string) string { return vars[k] }})
	}()
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(out2.String(), "balances v2: 150/200 events (75.0%)") {
		if time.Now().After(deadline) {
			t.Fatalf("no progress line\nstdout: %s\nstderr: %s", out2.String(), errOut2.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	wcancel()
	select {
	case code := <-done:
		if code != 1 || !strings.Contains(errOut2.String(), "onceflow projections: watch: stopped before balances v2 caught up (50 events behind at the last sample): context canceled") {
			t.Fatalf("interrupted watch: exit %d\nstderr: %s", code, errOut2.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("watch did not stop on cancel")
	}
}

func TestIsTerminal(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "out"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if isTerminal(f) || isTerminal(&bytes.Buffer{}) {
		t.Fatal("a regular file or a buffer taken for a terminal")
	}
	// A character device, as a terminal is.
	null, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		t.Skip(err)
	}
	defer null.Close()
	if !isTerminal(null) {
		t.Fatalf("%s (a character device) not taken for a terminal", os.DevNull)
	}
}
