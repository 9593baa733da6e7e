package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/onceflow/onceflow/internal/testenv"
	"github.com/onceflow/onceflow/txn"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

type result struct {
	code           int
	stdout, stderr string
}

func onceflow(t *testing.T, vars map[string]string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out, errOut bytes.Buffer
	code := run(ctx, args, env{&out, &errOut, func(k string) string { return vars[k] }})
	return result{code, out.String(), errOut.String()}
}

func TestUsage(t *testing.T) {
	for _, tc := range []struct {
		args       []string
		code       int
		wantStdout string
		wantStderr string
	}{
		{nil, 2, "", "Usage: onceflow <command>"},
		{[]string{"help"}, 0, "dead-letters", ""},
		{[]string{"--help"}, 0, "dev-broker", ""},
		{[]string{"frobnicate"}, 2, "", `unknown command "frobnicate"`},
		{[]string{"migrate", "-h"}, 0, "", "Usage: onceflow migrate [flags]"},
		{[]string{"migrate"}, 2, "", "no database: set DATABASE_URL or pass --database-url"},
		{[]string{"migrate", "--bogus"}, 2, "", "flag provided but not defined: -bogus"},
		{[]string{"claims", "extra"}, 2, "", `unexpected argument "extra"`},
		{[]string{"claims", "--database-url", "::nope"}, 2, "", "bad database URL"},
		{[]string{"dead-letters", "--limit", "0", "--database-url", "postgres://x/y"}, 2, "", "--limit must be in [1, 10000], got 0"},
		{[]string{"dev-broker", "--port", "70000"}, 2, "", "--port must be in [0, 65535], got 70000"},
		{[]string{"dev-broker", "--partitions", "0"}, 2, "", "--partitions must be in"},
		// Nothing listens on port 1: a runtime failure, exit 1.
		{[]string{"claims", "--database-url", "postgres://u@127.0.0.1:1/db?connect_timeout=2", "--timeout", "5s"}, 1, "", "connect to 127.0.0.1:1/db"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			r := onceflow(t, nil, tc.args...)
			if r.code != tc.code || !strings.Contains(r.stdout, tc.wantStdout) || !strings.Contains(r.stderr, tc.wantStderr) {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s\nwant stdout ~ %q, stderr ~ %q", r.code, tc.code, r.stdout, r.stderr, tc.wantStdout, tc.wantStderr)
			}
		})
	}
}

func TestDatabaseCommands(t *testing.T) {
	dsn := testenv.Postgres(t)
	vars := map[string]string{"DATABASE_URL": dsn}

	r := onceflow(t, vars, "migrate")
	if r.code != 0 || !regexp.MustCompile(`(?m)^applied 1  0001_core\.sql$`).MatchString(r.stdout) ||
		!regexp.MustCompile(`(?m)^applied projections 1  0001_registry\.sql\nprojections schema is at version 1$`).MatchString(r.stdout) {
		t.Fatalf("first migrate: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	// The flag wins over the environment.
	r = onceflow(t, map[string]string{"DATABASE_URL": "postgres://u@127.0.0.1:1/x"}, "migrate", "--database-url", dsn)
	if r.code != 0 || !strings.HasPrefix(r.stdout, "schema is up to date") || !strings.HasSuffix(r.stdout, "\nprojections schema is up to date (version 1)\n") {
		t.Fatalf("second migrate: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r := onceflow(t, vars, "claims"); r.code != 0 || r.stdout != "no claims\n" {
		t.Fatalf("claims on an empty db: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r := onceflow(t, vars, "dead-letters"); r.code != 0 || r.stdout != "no dead letters\n" {
		t.Fatalf("dead-letters on an empty db: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	// A claim and a dead letter, written the way the runtime writes them.
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	store := txn.NewStore(pool)
	key := txn.PartitionKey{Group: "g1", Topic: "inventory.commands", Partition: 3}
	claim, err := store.Claim(ctx, key, "instance-a")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.Commit(ctx, &txn.Batch{Claim: claim, NextOffset: claim.NextOffset + 1, DeadLetters: []txn.DeadLetter{{
		Offset: claim.NextOffset, CommandID: "cmd-1", Key: []byte("ams-1/X"), Value: []byte("{not json"),
		Error: "decode \"inventory.Reserve\":\ninvalid character", Headers: map[string]string{"h": "v"},
	}}}); err != nil {
		t.Fatal(err)
	}

	r = onceflow(t, vars, "claims", "--group", "g1")
	if r.code != 0 || !regexp.MustCompile(`(?m)^g1\s+inventory\.commands\s+3\s+1\s+instance-a\s+1\s+1\s+\d{4}-`).MatchString(r.stdout) {
		t.Fatalf("claims: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r := onceflow(t, vars, "claims", "--group", "other"); r.stdout != "no claims\n" {
		t.Fatalf("claims of another group: %s", r.stdout)
	}
	r = onceflow(t, vars, "claims", "--json")
	var c map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &c); err != nil || c["owner"] != "instance-a" || c["next_offset"] != 1.0 {
		t.Fatalf("claims --json: %v\n%s", err, r.stdout)
	}

	r = onceflow(t, vars, "dead-letters")
	if r.code != 0 || !regexp.MustCompile(`(?m)^1\s+g1\s+inventory\.commands\s+3\s+0\s+cmd-1\s+\S+\s+decode "inventory.Reserve": invalid character$`).MatchString(r.stdout) {
		t.Fatalf("dead-letters: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = onceflow(t, vars, "dead-letters", "--json", "--topic", "inventory.commands")
	var d map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &d); err != nil || d["value"] != "{not json" || d["command_id"] != "cmd-1" {
		t.Fatalf("dead-letters --json: %v\n%s", err, r.stdout)
	}
	if r := onceflow(t, vars, "dead-letters", "--after-id", "1"); r.stdout != "no dead letters\n" {
		t.Fatalf("dead-letters --after-id 1: %s", r.stdout)
	}
	if r := onceflow(t, vars, "dead-letters", "--limit", "1"); !strings.Contains(r.stdout, "(more may follow: --after-id 1)") {
		t.Fatalf("dead-letters --limit 1: %s", r.stdout)
	}

	// A halted partition shows in claims and is resumed by the CLI.
	if err := store.Halt(ctx, key, claim.Epoch, "offset 1: handler panicked: boom\ngoroutine 7 [running]"); err != nil {
		t.Fatal(err)
	}
	r = onceflow(t, vars, "claims", "--group", "g1")
	if !regexp.MustCompile(`(?m)^g1\s+inventory\.commands\s+3\s.*\d{4}-\S+ offset 1: handler panicked: boom$`).MatchString(r.stdout) {
		t.Fatalf("claims of a halted partition:\n%s%s", r.stdout, r.stderr)
	}
	for _, tc := range []struct {
		args       []string
		code       int
		wantStdout string
		wantStderr string
	}{
		{[]string{"resume", "--topic", "inventory.commands", "--partition", "3"}, 2, "", "--group is required"},
		{[]string{"resume", "--group", "g1", "--partition", "3"}, 2, "", "--topic is required"},
		{[]string{"resume", "--group", "g1", "--topic", "inventory.commands"}, 2, "", "--partition is required"},
		{[]string{"resume", "--group", "g1", "--topic", "nope", "--partition", "0"}, 1, "", "not found"},
		{[]string{"resume", "--group", "g1", "--topic", "inventory.commands", "--partition", "3"}, 0, "resumed", ""},
		{[]string{"resume", "--group", "g1", "--topic", "inventory.commands", "--partition", "3"}, 0, "was not halted", ""},
	} {
		r := onceflow(t, vars, tc.args...)
		if r.code != tc.code || !strings.Contains(r.stdout, tc.wantStdout) || !strings.Contains(r.stderr, tc.wantStderr) {
			t.Fatalf("%v: exit %d, want %d\nstdout: %s\nstderr: %s", tc.args, r.code, tc.code, r.stdout, r.stderr)
		}
	}
	if c, _ := store.ReadClaim(ctx, key); c.HaltedAt != nil {
		t.Fatalf("claim still halted after resume: %+v", c)
	}

	// Another schema (actor.WithSchema): migrated and listed on its own.
	if r := onceflow(t, vars, "migrate", "--schema", "tenant_x"); r.code != 0 || !strings.Contains(r.stdout, "applied 1  0001_core.sql") {
		t.Fatalf("migrate --schema tenant_x: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r := onceflow(t, vars, "claims", "--schema", "tenant_x"); r.code != 0 || r.stdout != "no claims\n" {
		t.Fatalf("claims --schema tenant_x: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r := onceflow(t, vars, "claims", "--schema", "Bad-Name"); r.code != 2 || !strings.Contains(r.stderr, "schema name") {
		t.Fatalf("claims --schema Bad-Name: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}

// syncBuffer is written by the broker goroutine and read by the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestDevBroker(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errOut syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"dev-broker", "--port", "0", "--data-dir", t.TempDir(), "--topics", "a, b", "--partitions", "2", "--advertise", "localhost:7777"},
			env{&out, &errOut, func(string) string { return "" }})
	}()
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(out.String(), "export KAFKA_BROKERS=localhost:7777") {
		if time.Now().After(deadline) {
			t.Fatalf("no address printed\nstdout: %s\nstderr: %s", out.String(), errOut.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("exit %d\n%s", code, errOut.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("dev-broker did not stop on cancel")
	}
}
