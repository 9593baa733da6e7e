package pgcluster_test

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/onceflow/onceflow/internal/pgcluster"
)

func newDir(t *testing.T) string {
	t.Helper()
	// Not t.TempDir(): its parents are 0700, which the server cannot enter
	// when the test runs as root and the server as user postgres.
	dir, err := os.MkdirTemp("", "pgcluster-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func quietLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

func TestStartStopReuse(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a PostgreSQL cluster")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := newDir(t)

	c, err := pgcluster.Start(ctx, pgcluster.Options{Dir: dir, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	watchdog := pgcluster.WatchdogPID(c.DataDir())
	if watchdog == 0 {
		t.Fatal("no watchdog for a server this process started")
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			_ = c.Stop(context.Background())
		}
	})
	if err := c.CreateDatabase(ctx, "app"); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, c.DSN("app"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "CREATE TABLE kept (v int); INSERT INTO kept VALUES (42)"); err != nil {
		t.Fatal(err)
	}
	var fsync string
	if err := conn.QueryRow(ctx, "SHOW fsync").Scan(&fsync); err != nil || fsync != "on" {
		t.Fatalf("fsync = %q, %v; want on", fsync, err)
	}
	conn.Close(ctx)

	if err := c.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	stopped = true
	if err := c.Stop(ctx); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	// Stop dismisses the watchdog: it exits without touching the cluster,
	// which the restart below relies on.
	waitFor(t, 30*time.Second, "the watchdog did not exit after Stop", func() bool { return processGone(watchdog) })

	// Restart on the same directory: the data survives.
	c2, err := pgcluster.Start(ctx, pgcluster.Options{Dir: dir, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Stop(context.Background())
	conn, err = pgx.Connect(ctx, c2.DSN("app"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var v int
	if err := conn.QueryRow(ctx, "SELECT v FROM kept").Scan(&v); err != nil || v != 42 {
		t.Fatalf("after restart: v=%d err=%v", v, err)
	}
	if err := c2.DropDatabase(ctx, "app"); err != nil {
		t.Fatal(err)
	}
}

func TestStalePidFileAndAdopt(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a PostgreSQL cluster")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := newDir(t)
	c, err := pgcluster.Start(ctx, pgcluster.Options{Dir: dir, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	// A second Start while the first server runs adopts it (a previous
	// process was killed without stopping its server).
	c2, err := pgcluster.Start(ctx, pgcluster.Options{Dir: dir, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if c2.Port() != c.Port() {
		t.Fatalf("adopted port %d, want %d", c2.Port(), c.Port())
	}
	if err := c.Stop(ctx); err != nil {
		t.Fatal(err)
	}

	// Fake a crash: a postmaster.pid naming a process that does not exist.
	pidFile := filepath.Join(c.DataDir(), "postmaster.pid")
	stale := strconv.Itoa(1<<22-1) + "\n" + c.DataDir() + "\n0\n5432\n\n"
	if err := os.WriteFile(pidFile, []byte(stale), 0o600); err != nil {
		t.Fatal(err)
	}
	c3, err := pgcluster.Start(ctx, pgcluster.Options{Dir: dir, Logger: quietLogger()})
	if err != nil {
		t.Fatalf("start over stale pid file: %v", err)
	}
	if err := c3.Stop(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestPortInUse(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a PostgreSQL cluster")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := l.Addr().(*net.TCPAddr).Port
	_, err = pgcluster.Start(ctx, pgcluster.Options{Dir: newDir(t), Port: port, Logger: quietLogger()})
	if err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("err = %v, want a port-in-use error", err)
	}
}

func TestMissingBinaries(t *testing.T) {
	_, err := pgcluster.Start(context.Background(), pgcluster.Options{Dir: newDir(t), BinDir: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), "does not hold initdb") {
		t.Fatalf("err = %v", err)
	}
	if errors.Is(err, context.Canceled) {
		t.Fatal("unexpected")
	}
}
