package pgcluster_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/onceflow/onceflow/internal/pgcluster"
)

// The child mode of the test binary: start a cluster, report it on stdout,
// then wait until stdin closes (or the parent SIGKILLs us).
const (
	envChild      = "PGCLUSTER_TEST_CHILD" // set: run as the child
	envDir        = "PGCLUSTER_TEST_DIR"
	envThrowaway  = "PGCLUSTER_TEST_THROWAWAY"
	envNoWatchdog = "PGCLUSTER_TEST_NO_WATCHDOG"
)

func TestMain(m *testing.M) {
	if os.Getenv(envChild) != "" {
		os.Exit(runChild())
	}
	os.Exit(m.Run())
}

func runChild() int {
	// Never outlive a test that forgot us.
	time.AfterFunc(3*time.Minute, func() { os.Exit(3) })
	if os.Getenv(envNoWatchdog) != "" {
		pgcluster.DisableWatchdog()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := pgcluster.Start(ctx, pgcluster.Options{
		Dir:       os.Getenv(envDir),
		Throwaway: os.Getenv(envThrowaway) != "",
		Logger:    quietLogger(),
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 1
	}
	fmt.Printf("READY %s %d %d\n", c.DataDir(), c.Port(), postmasterPIDOf(c.DataDir()))
	_, _ = io.Copy(io.Discard, os.Stdin)
	// The parent went away without killing us: exit without Stop and let
	// the watchdog (if any) do its job.
	return 0
}

type child struct {
	cmd     *exec.Cmd
	dataDir string
	port    int
	pmPID   int // the postmaster's pid
	once    sync.Once
}

// startChild re-executes the test binary as a child that starts a cluster in
// dir (env adds PGCLUSTER_TEST_* settings) and returns once it is up.
func startChild(t *testing.T, dir string, env ...string) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(append(os.Environ(), envChild+"=1", envDir+"="+dir), env...)
	stderr, err := os.CreateTemp(t.TempDir(), "child-stderr-")
	if err != nil {
		t.Fatal(err)
	}
	defer stderr.Close()
	cmd.Stderr = stderr
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
	ch := &child{cmd: cmd}
	t.Cleanup(ch.kill)
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		ch.kill()
		msg, _ := os.ReadFile(stderr.Name())
		t.Fatalf("child did not report a cluster: %v\nchild stderr:\n%s", err, msg)
	}
	f := strings.Fields(line)
	if len(f) != 4 || f[0] != "READY" {
		t.Fatalf("child said %q", line)
	}
	ch.dataDir = f[1]
	ch.port, _ = strconv.Atoi(f[2])
	ch.pmPID, _ = strconv.Atoi(f[3])
	if ch.port <= 0 || ch.pmPID <= 0 {
		t.Fatalf("child said %q", line)
	}
	return ch
}

// kill SIGKILLs the child (no chance to clean up) and reaps it.
func (ch *child) kill() {
	ch.once.Do(func() {
		_ = ch.cmd.Process.Signal(syscall.SIGKILL)
		_ = ch.cmd.Wait()
	})
}

func postmasterPIDOf(dataDir string) int {
	b, err := os.ReadFile(filepath.Join(dataDir, "postmaster.pid"))
	if err != nil {
		return 0
	}
	first, _, _ := strings.Cut(string(b), "\n")
	pid, _ := strconv.Atoi(strings.TrimSpace(first))
	return pid
}

// processGone reports whether pid has exited (a zombie counts as exited:
// the postmaster's parent is init, which may be slow to reap it).
func processGone(pid int) bool {
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return true
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return errors.Is(err, os.ErrNotExist)
	}
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && len(s) > i+2 {
		return s[i+2] == 'Z' || s[i+2] == 'X'
	}
	return false
}

func portOpen(port int) bool {
	conn, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), time.Second)
	if err != nil {
		return false
	}
	conn.Close()
	return true
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// waitFor polls cond until it holds or timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// deadPID returns the pid of a process that has exited.
func deadPID(t *testing.T) int {
	t.Helper()
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	return cmd.ProcessState.Pid()
}

// The problem this guards against: a go test binary SIGKILLed (CI timeout)
// left its private cluster running forever.
func TestWatchdogStopsServerOfKilledOwner(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a PostgreSQL cluster")
	}
	dir := newDir(t)
	ch := startChild(t, dir, envThrowaway+"=1")
	if !portOpen(ch.port) {
		t.Fatalf("child's server does not listen on port %d", ch.port)
	}
	owner, err := os.ReadFile(filepath.Join(dir, "pgcluster.owner"))
	if err != nil || !strings.Contains(string(owner), fmt.Sprintf("pid=%d\n", ch.cmd.Process.Pid)) {
		t.Fatalf("owner file %q (%v) does not name the child %d", owner, err, ch.cmd.Process.Pid)
	}

	ch.kill()

	waitFor(t, time.Minute, fmt.Sprintf("postmaster %d of the killed child still runs", ch.pmPID), func() bool {
		return processGone(ch.pmPID)
	})
	waitFor(t, 10*time.Second, fmt.Sprintf("port %d still open", ch.port), func() bool { return !portOpen(ch.port) })
	waitFor(t, 30*time.Second, "the throwaway cluster directory was not removed", func() bool { return !exists(dir) })
}

func TestStartStopsOrphanOnSameDir(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a PostgreSQL cluster")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := newDir(t)
	ch := startChild(t, dir, envNoWatchdog+"=1")
	ch.kill()
	// Without a watchdog the server outlives its owner: an orphan.
	if processGone(ch.pmPID) {
		t.Fatalf("postmaster %d gone with its owner although the watchdog was off", ch.pmPID)
	}

	c, err := pgcluster.Start(ctx, pgcluster.Options{Dir: dir, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop(context.Background())
	if pid := postmasterPIDOf(c.DataDir()); pid == ch.pmPID || pid == 0 {
		t.Fatalf("postmaster pid %d: the orphan %d was adopted, not replaced", pid, ch.pmPID)
	}
	waitFor(t, 30*time.Second, "the orphaned postmaster still runs", func() bool { return processGone(ch.pmPID) })
	if pgcluster.WatchdogPID(c.DataDir()) == 0 {
		t.Fatal("the replacement server has no watchdog")
	}
}

func TestStartReapsOrphansByGlob(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a PostgreSQL cluster")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	base, err := os.MkdirTemp("", "pgcluster-reap-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	if err := os.Chmod(base, 0o755); err != nil { // the server may run as user postgres
		t.Fatal(err)
	}

	// A throwaway cluster whose owner was killed and whose watchdog never ran.
	orphan, err := os.MkdirTemp(base, "c-")
	if err != nil {
		t.Fatal(err)
	}
	ch := startChild(t, orphan, envNoWatchdog+"=1", envThrowaway+"=1")
	ch.kill()
	if processGone(ch.pmPID) {
		t.Fatalf("postmaster %d gone with its owner although the watchdog was off", ch.pmPID)
	}
	// Directories without a server: owner died before starting one
	// (throwaway, or kept), owner alive, or not matching the pattern.
	mk := func(name string, pid int, throwaway bool) string {
		d := filepath.Join(base, name)
		if err := os.MkdirAll(filepath.Join(d, "data"), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := pgcluster.WriteOwnerFile(d, pid, throwaway); err != nil {
			t.Fatal(err)
		}
		return d
	}
	dead := deadPID(t)
	deadThrowaway := mk("c-dead", dead, true)
	deadKept := mk("c-kept", dead, false)
	live := mk("c-live", os.Getpid(), true)
	unmatched := mk("x-other", dead, true)

	dir := filepath.Join(base, "c-new")
	c, err := pgcluster.Start(ctx, pgcluster.Options{Dir: dir, Throwaway: true, ReapGlob: filepath.Join(base, "c-*"), Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop(context.Background())

	waitFor(t, 30*time.Second, "the orphaned postmaster still runs", func() bool { return processGone(ch.pmPID) })
	for d, want := range map[string]bool{orphan: false, deadThrowaway: false, deadKept: true, live: true, unmatched: true, dir: true} {
		if exists(d) != want {
			t.Errorf("%s: exists=%v, want %v", filepath.Base(d), !want, want)
		}
	}
}
