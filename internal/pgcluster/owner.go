package pgcluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
)

// A cluster started by Start belongs to the process that started it (its
// owner) and must not outlive it. Two mechanisms see to that:
//
//   - A watchdog: Start spawns a small detached shell process (its own
//     session, so signals to the owner's process group spare it) that reads
//     a pipe whose only write end the owner holds. Stop writes "release" and
//     closes the pipe, and the watchdog exits doing nothing. If the owner
//     dies first (SIGKILL, crash, exit without Stop), the kernel closes the
//     write end, the watchdog reads EOF, and it runs pg_ctl stop -m
//     immediate (then removes Dir if Options.Throwaway). An EOF on a pipe
//     needs no polling and cannot be fooled by pid reuse.
//
//     Why not Pdeathsig: pg_ctl daemonises the postmaster (fork, setsid), so
//     a parent-death signal set on pg_ctl never reaches the server; and
//     Pdeathsig fires when the parent *thread* exits, which in Go can happen
//     while the process lives on.
//
//   - Reaping: the owner is recorded in Dir/pgcluster.owner. The next Start
//     on the same Dir stops a server whose recorded owner is dead instead of
//     adopting it, and Options.ReapGlob makes Start look for such orphans in
//     sibling directories too (stopping them, and removing the throwaway
//     ones). This catches what the watchdog cannot: the machine or the
//     watchdog itself killed, or the owner killed in the short window
//     before the watchdog exists.
//
// Adopting a server that a live process owns (another instance of a sample,
// for example) takes no ownership: the adopter gets no watchdog and the
// server stops when its owner goes.

// ownerFileName is the file in Options.Dir naming the owner process.
const ownerFileName = "pgcluster.owner"

// owner identifies the process that owns a cluster.
type owner struct {
	pid       int
	start     uint64 // start time of pid in clock ticks since boot (/proc/<pid>/stat); 0 if unknown
	pidNS     string // the owner's pid namespace (/proc/self/ns/pid); "" if unknown
	throwaway bool   // Dir may be removed once the owner is gone
}

func selfOwner(throwaway bool) owner {
	pid := os.Getpid()
	ns, _ := os.Readlink("/proc/self/ns/pid")
	return owner{pid: pid, start: procStartTime(pid), pidNS: ns, throwaway: throwaway}
}

func (o owner) encode() []byte {
	return fmt.Appendf(nil, "pid=%d\nstart=%d\npidns=%s\nthrowaway=%t\n", o.pid, o.start, o.pidNS, o.throwaway)
}

// readOwner reads dir's owner file; ok is false if there is none (or it is
// unreadable or malformed).
func readOwner(dir string) (o owner, ok bool) {
	b, err := os.ReadFile(filepath.Join(dir, ownerFileName))
	if err != nil {
		return owner{}, false
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, _ := strings.Cut(line, "=")
		switch k {
		case "pid":
			o.pid, _ = strconv.Atoi(v)
		case "start":
			o.start, _ = strconv.ParseUint(v, 10, 64)
		case "pidns":
			o.pidNS = v
		case "throwaway":
			o.throwaway = v == "true"
		}
	}
	return o, o.pid > 0
}

// writeOwner records o as dir's owner (atomically: write, then rename). The
// file is world-readable: the watchdog may run as the postgres OS user.
func writeOwner(dir string, o owner) error {
	path := filepath.Join(dir, ownerFileName)
	tmp := path + ".tmp" + strconv.Itoa(os.Getpid())
	if err := os.WriteFile(tmp, o.encode(), 0o644); err != nil {
		return fmt.Errorf("pgcluster: record owner: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("pgcluster: record owner: %w", err)
	}
	return nil
}

// alive reports whether the owner process still runs. When in doubt (no
// permission to signal it, another pid namespace) it says yes: a live
// cluster must never be reaped.
func (o owner) alive() bool {
	if o.pid <= 0 {
		return false
	}
	if ns, err := os.Readlink("/proc/self/ns/pid"); err == nil && o.pidNS != "" && o.pidNS != ns {
		return true // its pid means nothing here
	}
	if err := syscall.Kill(o.pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	state, start, ok := procStat(o.pid)
	if !ok {
		return true // no /proc: trust kill(0)
	}
	if state == "Z" || state == "X" {
		return false // exited, not yet reaped
	}
	return o.start == 0 || start == o.start // otherwise the pid was reused
}

// procStartTime returns the start time of pid (clock ticks since boot), or 0.
func procStartTime(pid int) uint64 {
	_, start, _ := procStat(pid)
	return start
}

// procStat returns the state and start time fields of /proc/<pid>/stat.
func procStat(pid int) (state string, start uint64, ok bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "", 0, false
	}
	// pid (comm) state ppid ... : comm may hold spaces and parentheses, so
	// split after the last ')'. Field 3 is the state, field 22 the start time.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return "", 0, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return "", 0, false
	}
	start, err = strconv.ParseUint(f[19], 10, 64)
	return f[0], start, err == nil
}

// postmasterPID returns the pid and port recorded in dataDir/postmaster.pid,
// or pid 0 if there is no such file.
func postmasterPID(dataDir string) (pid, port int, err error) {
	b, err := os.ReadFile(filepath.Join(dataDir, "postmaster.pid"))
	if errors.Is(err, os.ErrNotExist) {
		return 0, 0, nil
	}
	if err != nil {
		return 0, 0, fmt.Errorf("pgcluster: %w", err)
	}
	// postmaster.pid lines: pid, data dir, start time, port, socket dir, listen addr, ...
	lines := strings.Split(string(b), "\n")
	pid, _ = strconv.Atoi(strings.TrimSpace(lines[0]))
	if len(lines) > 3 {
		port, _ = strconv.Atoi(strings.TrimSpace(lines[3]))
	}
	return pid, port, nil
}

// serverRunning reports whether dataDir's postmaster.pid names a live
// postgres process.
func serverRunning(dataDir string) bool {
	pid, _, err := postmasterPID(dataDir)
	return err == nil && pid > 0 && isPostgresProcess(pid)
}

// stopImmediate stops the server the way a crash would (pg_ctl stop -m
// immediate: no shutdown checkpoint, crash recovery at the next start) and
// waits until it has gone. Used on servers whose owner died.
func (c *Cluster) stopImmediate(ctx context.Context) error {
	out, err := c.run(ctx, "pg_ctl", "stop", "-D", c.dataDir, "-m", "immediate", "-w", "-t", "60")
	if err != nil && serverRunning(c.dataDir) {
		return fmt.Errorf("pgcluster: stop %s: %w\n%s", c.dataDir, err, out)
	}
	releaseWatchdog(c.dataDir)
	return nil
}

// reapOrphans stops the servers in the cluster directories matching pattern
// (except skip) whose owner process is gone, and removes the directories of
// the throwaway ones. Directories without an owner file (not started by
// Start, or not yet set up) and those whose owner lives are left alone.
// Failures are logged: reaping is best effort and never fails Start.
func reapOrphans(ctx context.Context, pattern, skip, binDir string, cred *syscall.Credential, log *slog.Logger) {
	matches, err := filepath.Glob(pattern)
	if err != nil {
		log.Warn("pgcluster: reap: bad pattern", "pattern", pattern, "err", err)
		return
	}
	for _, dir := range matches {
		if dir, err = filepath.Abs(dir); err != nil || dir == skip {
			continue
		}
		o, ok := readOwner(dir)
		if !ok || o.alive() {
			continue
		}
		c := &Cluster{dir: dir, dataDir: dataDirOf(dir), binDir: binDir, cred: cred, log: log}
		if serverRunning(c.dataDir) {
			log.Info("pgcluster: stopping orphaned server", "dir", dir, "owner_pid", o.pid)
			if err := c.stopImmediate(ctx); err != nil {
				log.Warn("pgcluster: reap: could not stop orphaned server", "dir", dir, "err", err)
				continue
			}
		}
		if o.throwaway && isThrowawaySafe(dir) {
			if err := os.RemoveAll(dir); err != nil {
				log.Warn("pgcluster: reap: could not remove throwaway cluster", "dir", dir, "err", err)
				continue
			}
			log.Info("pgcluster: removed throwaway cluster of a dead process", "dir", dir, "owner_pid", o.pid)
		}
	}
}

// isThrowawaySafe refuses to treat a filesystem root as a removable
// directory.
func isThrowawaySafe(dir string) bool {
	return filepath.IsAbs(dir) && filepath.Dir(dir) != dir
}

// noWatchdog disables the watchdog (tests use it to make orphans).
var noWatchdog atomic.Bool

// watchdogs holds the write ends of the watchdogs' pipes, by data
// directory. Keeping them here, not in the Cluster, means a caller that
// drops its *Cluster cannot have the garbage collector close the pipe (and
// so stop the server) behind its back; it also gives one watchdog per data
// directory however many times this process starts or adopts it.
var watchdogs struct {
	sync.Mutex
	m map[string]*watchdog
}

type watchdog struct {
	w   *os.File
	pid int
}

// watchdogScript runs as: sh -c script sh PG_CTL DATADIR OWNERFILE OWNERPID RMDIR LOGFILE
const watchdogScript = `read -r msg
[ "$msg" = release ] && exit 0
# The owner died without Stop. Act only if it still owns the cluster.
grep -qx "pid=$4" "$3" 2>/dev/null || exit 0
exec >>"$6" 2>&1 </dev/null
echo "pgcluster watchdog: owner process $4 exited without stopping the server: pg_ctl stop -m immediate"
# The owner may have died while pg_ctl start was bringing the server up.
i=0
while [ ! -f "$2/postmaster.pid" ] && [ $i -lt 5 ]; do sleep 1; i=$((i+1)); done
if [ -f "$2/postmaster.pid" ]; then "$1" stop -D "$2" -m immediate -w -t 60; fi
if [ -n "$5" ]; then rm -rf -- "$5"; fi
`

// ensureWatchdog starts the watchdog of c's data directory unless this
// process already has one.
func (c *Cluster) ensureWatchdog(throwaway bool) error {
	watchdogs.Lock()
	defer watchdogs.Unlock()
	if watchdogs.m[c.dataDir] != nil || noWatchdog.Load() {
		return nil
	}
	rmDir := ""
	if throwaway {
		rmDir = c.dir
	}
	r, w, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("pgcluster: watchdog: %w", err)
	}
	defer r.Close()
	cmd := exec.Command("/bin/sh", "-c", watchdogScript, "sh",
		filepath.Join(c.binDir, "pg_ctl"), c.dataDir, filepath.Join(c.dir, ownerFileName),
		strconv.Itoa(os.Getpid()), rmDir, c.logFile)
	cmd.Dir = "/"
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	// Stdout and stderr stay nil (/dev/null): the script logs to the
	// server log, and must not hold a pipe of ours (or of whoever runs
	// us) open after we are gone. The write end w is close-on-exec, so no
	// other child inherits it.
	cmd.Stdin = r
	// Its own session: a signal to our process group (Ctrl-C, a CI runner
	// killing the job's group) must not take the watchdog with us. The
	// postmaster is in a session of its own too (pg_ctl calls setsid).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if c.cred != nil {
		// pg_ctl refuses to run as root.
		cmd.SysProcAttr.Credential = c.cred
		cmd.Env = append(cmd.Env, "HOME="+c.dir, "USER=postgres", "LOGNAME=postgres")
	}
	if err := cmd.Start(); err != nil {
		w.Close()
		return fmt.Errorf("pgcluster: start watchdog: %w", err)
	}
	go cmd.Wait() // reaps the watchdog when it exits
	if watchdogs.m == nil {
		watchdogs.m = make(map[string]*watchdog)
	}
	watchdogs.m[c.dataDir] = &watchdog{w: w, pid: cmd.Process.Pid}
	return nil
}

// releaseWatchdog tells the watchdog of dataDir, if this process has one,
// to exit without touching the cluster.
func releaseWatchdog(dataDir string) {
	watchdogs.Lock()
	wd := watchdogs.m[dataDir]
	delete(watchdogs.m, dataDir)
	watchdogs.Unlock()
	if wd != nil {
		_, _ = wd.w.Write([]byte("release\n"))
		wd.w.Close()
	}
}

// dataDirOf returns the data directory of the cluster rooted at dir.
func dataDirOf(dir string) string {
	if exists(filepath.Join(dir, "PG_VERSION")) {
		return dir
	}
	return filepath.Join(dir, "data")
}
