package testenv_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/onceflow/onceflow/internal/testenv"
)

func TestMain(m *testing.M) {
	if os.Getenv(envChild) != "" {
		os.Exit(runChild())
	}
	os.Exit(testenv.Main(m))
}

// envChild makes the test binary a child that gets a database from
// testenv, reports it, and waits to be killed.
const envChild = "TESTENV_TEST_CHILD"

func runChild() int {
	time.AfterFunc(3*time.Minute, func() { os.Exit(3) }) // never outlive a forgetful parent
	dsn := testenv.Postgres(childTB{})
	fmt.Printf("READY %s %s\n", testenv.SharedDir(), dsn)
	_, _ = io.Copy(io.Discard, os.Stdin) // until the parent kills us or goes away
	return 0
}

// childTB is the testenv.TB of the child: there is no testing.T there.
type childTB struct{}

func (childTB) Helper()        {}
func (childTB) Cleanup(func()) {}
func (childTB) Name() string   { return "Child" }
func (childTB) Logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
}
func (childTB) Fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
	os.Exit(1)
}

// A test process SIGKILLed while its private cluster runs (a CI timeout)
// must not leave the cluster behind.
func TestKilledTestProcessLeavesNoCluster(t *testing.T) {
	if os.Getenv(testenv.EnvDatabaseURL) != "" {
		t.Skip(testenv.EnvDatabaseURL + " is set: no private cluster")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envChild+"=1")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if _, err := cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var killed bool
	kill := func() {
		if !killed {
			killed = true
			_ = cmd.Process.Signal(syscall.SIGKILL)
			_ = cmd.Wait()
		}
	}
	t.Cleanup(kill)
	line, err := bufio.NewReader(stdout).ReadString('\n')
	f := strings.Fields(line)
	if err != nil || len(f) != 3 || f[0] != "READY" {
		kill()
		t.Fatalf("child said %q (%v); stderr:\n%s", line, err, stderr.String())
	}
	dir := f[1]
	cfg, err := pgx.ParseConfig(f[2])
	if err != nil {
		t.Fatal(err)
	}
	addr := net.JoinHostPort(cfg.Host, strconv.Itoa(int(cfg.Port)))
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("child's cluster directory: %v", err)
	}
	listening := func() bool {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	}
	if !listening() {
		t.Fatalf("child's server does not listen on %s", addr)
	}

	kill()

	deadline := time.Now().Add(time.Minute)
	for listening() || exists(dir) {
		if time.Now().After(deadline) {
			t.Fatalf("a minute after the child was killed: server on %s listening=%v, directory %s exists=%v",
				addr, listening(), dir, exists(dir))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func TestPostgresFreshDatabases(t *testing.T) {
	ctx := context.Background()
	dsn1, dsn2 := testenv.Postgres(t), testenv.Postgres(t)
	if dsn1 == dsn2 {
		t.Fatalf("same DSN twice: %s", dsn1)
	}
	conn, err := pgx.Connect(ctx, dsn1)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").Scan(&n); err != nil || n != 0 {
		t.Fatalf("fresh database has %d tables (%v)", n, err)
	}
}

func TestPoolIsMigrated(t *testing.T) {
	pool := testenv.Pool(t)
	var n int
	if err := pool.QueryRow(context.Background(), "SELECT count(*) FROM onceflow.schema_migrations").Scan(&n); err != nil || n == 0 {
		t.Fatalf("schema_migrations has %d rows (%v)", n, err)
	}
	if got := pool.Config().MaxConns; got != testenv.MaxConns {
		t.Fatalf("MaxConns = %d", got)
	}
}

func TestDatabaseDroppedAtCleanup(t *testing.T) {
	var dsn string
	t.Run("inner", func(t *testing.T) { dsn = testenv.Postgres(t) })
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	name := cfg.Database
	cfg.Database = "postgres"
	if u := os.Getenv(testenv.EnvDatabaseURL); u != "" {
		if c2, err := pgx.ParseConfig(u); err == nil {
			cfg.Database = c2.Database
		}
	}
	conn, err := pgx.ConnectConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var exists bool
	if err := conn.QueryRow(context.Background(), "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", name).Scan(&exists); err != nil || exists {
		t.Fatalf("database %s still exists after cleanup (%v)", name, err)
	}
}
