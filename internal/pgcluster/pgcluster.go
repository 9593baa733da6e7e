package pgcluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// SuperUser is the superuser name initdb creates (initdb -U).
const SuperUser = "postgres"

// Options configures Start.
type Options struct {
	// Dir holds the cluster. If Dir (or Dir/data) contains PG_VERSION the
	// existing cluster is reused; otherwise a new one is created in
	// Dir/data. Required.
	Dir string
	// Port to listen on at 127.0.0.1. 0 picks a free port.
	Port int
	// Logger receives progress messages (default slog.Default()).
	Logger *slog.Logger
	// BinDir holds initdb, pg_ctl and postgres. Empty: search PATH, then
	// /usr/lib/postgresql/*/bin (newest version first).
	BinDir string
	// StartTimeout bounds how long Start waits for the server to accept
	// connections (default 60s). ctx may bound it further.
	StartTimeout time.Duration
	// Throwaway says Dir exists only for this cluster and may be deleted
	// once its owner is gone: when the owning process dies without Stop,
	// the watchdog removes Dir after stopping the server, and so does
	// reaping (see ReapGlob). Stop itself never removes Dir. Set it for
	// temporary directories (tests), never for data that must survive.
	Throwaway bool
	// ReapGlob, if set, is a filepath.Glob pattern of other cluster
	// directories, typically the one Dir was created from (for example
	// filepath.Join(os.TempDir(), "myapp-pg-*")). Before starting, Start
	// stops the servers in those directories whose owner process (recorded
	// by an earlier Start) is dead, and removes the directories of the
	// Throwaway ones. Directories with a live owner, or not set up by
	// Start, are left alone. Reaping is best effort: failures are logged.
	ReapGlob string
}

// Cluster is a running private PostgreSQL cluster. Its methods are safe for
// concurrent use.
type Cluster struct {
	dir     string // the root directory (Options.Dir)
	dataDir string
	sockDir string
	logFile string
	binDir  string
	port    int
	cred    *syscall.Credential // non-nil when running the server as another OS user
	log     *slog.Logger
}

// Port returns the TCP port the server listens on at 127.0.0.1.
func (c *Cluster) Port() int { return c.port }

// DataDir returns the cluster's data directory.
func (c *Cluster) DataDir() string { return c.dataDir }

// LogFile returns the path of the server log.
func (c *Cluster) LogFile() string { return c.logFile }

// DSN returns a connection URL for database db as the superuser over TCP.
func (c *Cluster) DSN(db string) string {
	return fmt.Sprintf("postgres://%s@127.0.0.1:%d/%s?sslmode=disable", SuperUser, c.port, db)
}

// Start starts (creating it first if needed) the cluster in opts.Dir and
// waits until it accepts connections. ctx bounds the whole start-up.
//
// When the process runs as root, initdb and the server run as the "postgres"
// OS user (initdb refuses to run as root): Dir is chown'ed to that user and
// its parent directories must be searchable by it.
//
// The process that starts the server owns it: Start records it in
// Dir/pgcluster.owner and spawns a watchdog that stops the server (pg_ctl
// stop -m immediate) if this process dies without calling Stop, even by
// SIGKILL. A server still running on Dir is handled by who owns it:
//
//   - owner dead (a killed test binary whose watchdog did not run): the
//     server is stopped (-m immediate) and a new one started, owned by us;
//   - owner alive, or no owner recorded (a server started some other way):
//     it is adopted when it listens on the requested port (or any port if
//     opts.Port is 0), and restarted otherwise. Adopting takes no
//     ownership: no watchdog, and the server goes when its owner does.
//
// A stale postmaster.pid whose process is gone is removed.
func Start(ctx context.Context, opts Options) (*Cluster, error) {
	if opts.Dir == "" {
		return nil, errors.New("pgcluster: Options.Dir is empty")
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.StartTimeout <= 0 {
		opts.StartTimeout = 60 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, opts.StartTimeout)
	defer cancel()

	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("pgcluster: %w", err)
	}
	binDir, err := findBinDir(opts.BinDir)
	if err != nil {
		return nil, err
	}
	if opts.Throwaway && !isThrowawaySafe(dir) {
		return nil, fmt.Errorf("pgcluster: Throwaway with Dir %s: refusing to treat a filesystem root as removable", dir)
	}
	c := &Cluster{dir: dir, binDir: binDir, log: opts.Logger, sockDir: dir, logFile: filepath.Join(dir, "postgres.log")}
	c.dataDir = dataDirOf(dir)
	// A Unix socket path is limited to 107 bytes; fall back to TCP-only
	// rather than failing when Dir is deep.
	if len(filepath.Join(c.sockDir, ".s.PGSQL.65535.lock")) > 100 {
		c.sockDir = ""
	}

	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("pgcluster: create %s: %w", dir, err)
	}
	if os.Geteuid() == 0 {
		if err := c.dropRoot(); err != nil {
			return nil, err
		}
	}
	if opts.ReapGlob != "" {
		reapOrphans(ctx, opts.ReapGlob, dir, binDir, c.cred, c.log)
	}

	self := selfOwner(opts.Throwaway)
	if !exists(filepath.Join(c.dataDir, "PG_VERSION")) {
		// Recorded before initdb, so that a Throwaway Dir is reaped even if
		// we die before any server runs.
		if err := writeOwner(dir, self); err != nil {
			return nil, err
		}
		if err := c.initdb(ctx); err != nil {
			return nil, err
		}
	}

	adopted, err := c.handleExistingPostmaster(ctx, opts.Port)
	if err != nil {
		return nil, err
	}
	if adopted {
		if err := c.waitReady(ctx); err != nil {
			return nil, err
		}
		return c, nil
	}

	// From here the server is ours: record it, and have the watchdog stop
	// it if we die. The watchdog exists before pg_ctl start forks the
	// server, so no window is left in which a kill leaves it running.
	if err := writeOwner(dir, self); err != nil {
		return nil, err
	}
	if err := c.ensureWatchdog(opts.Throwaway); err != nil {
		return nil, err
	}

	// With Port 0 we pick a free port and retry if someone else takes it
	// between our probe and the server's bind.
	attempts := 1
	if opts.Port == 0 {
		attempts = 3
	}
	for i := 0; ; i++ {
		c.port = opts.Port
		if c.port == 0 {
			if c.port, err = freePort(); err != nil {
				return nil, err
			}
		}
		err = c.start(ctx)
		if err == nil {
			break
		}
		if !errors.Is(err, errPortInUse) || i+1 >= attempts {
			// Stops a server that came up too late for pg_ctl -w (if
			// any) and releases the watchdog.
			_ = c.Stop(context.WithoutCancel(ctx))
			return nil, err
		}
		c.log.Info("pgcluster: port taken, retrying", "port", c.port)
	}
	if err := c.waitReady(ctx); err != nil {
		_ = c.Stop(context.WithoutCancel(ctx))
		return nil, err
	}
	c.log.Info("pgcluster: started", "dir", c.dir, "port", c.port)
	return c, nil
}

// Stop shuts the server down (pg_ctl stop -m fast: open sessions are
// disconnected, their transactions rolled back) and waits for it to exit.
// The data directory is kept. Once the server is down, this process's
// watchdog for the cluster (if any) is dismissed. ctx bounds the wait.
func (c *Cluster) Stop(ctx context.Context) error {
	out, err := c.run(ctx, "pg_ctl", "stop", "-D", c.dataDir, "-m", "fast", "-w", "-t", "60")
	if err != nil {
		if !exists(filepath.Join(c.dataDir, "postmaster.pid")) {
			releaseWatchdog(c.dataDir)
			return nil // already stopped
		}
		return fmt.Errorf("pgcluster: stop %s: %w\n%s", c.dataDir, err, out)
	}
	releaseWatchdog(c.dataDir)
	c.log.Info("pgcluster: stopped", "dir", c.dir)
	return nil
}

// CreateDatabase creates database name. ctx bounds the statement.
func (c *Cluster) CreateDatabase(ctx context.Context, name string) error {
	return CreateDatabase(ctx, c.DSN("postgres"), name)
}

// DropDatabase drops database name if it exists, disconnecting its sessions
// (DROP DATABASE ... WITH (FORCE)). ctx bounds the statement.
func (c *Cluster) DropDatabase(ctx context.Context, name string) error {
	return DropDatabase(ctx, c.DSN("postgres"), name)
}

// CreateDatabase connects to adminDSN and creates database name.
func CreateDatabase(ctx context.Context, adminDSN, name string) error {
	return adminExec(ctx, adminDSN, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
}

// DropDatabase connects to adminDSN and drops database name if it exists,
// disconnecting its sessions.
func DropDatabase(ctx context.Context, adminDSN, name string) error {
	return adminExec(ctx, adminDSN, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)")
}

func adminExec(ctx context.Context, dsn, sql string) error {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return fmt.Errorf("pgcluster: connect: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, sql); err != nil {
		return fmt.Errorf("pgcluster: %s: %w", sql, err)
	}
	return nil
}

var errPortInUse = errors.New("port in use")

// dropRoot arranges for the server to run as the postgres OS user.
func (c *Cluster) dropRoot() error {
	u, err := user.Lookup("postgres")
	if err != nil {
		return fmt.Errorf("pgcluster: running as root, and initdb refuses to run as root, but there is no OS user \"postgres\" to run it as (%w): run as a non-root user, create that user, or set DATABASE_URL", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	c.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: true}
	// chown the whole tree: a reused cluster may have been created by root
	// tooling, and the log file and socket live in dir.
	err = filepath.WalkDir(c.dir, func(p string, _ os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, uid, gid)
	})
	if err != nil {
		return fmt.Errorf("pgcluster: chown %s to user postgres: %w", c.dir, err)
	}
	// The server must be able to reach dir: every parent must be searchable
	// by "others" (t.TempDir() and os.MkdirTemp parents are 0700 root).
	for p := filepath.Dir(c.dir); ; p = filepath.Dir(p) {
		fi, err := os.Stat(p)
		if err != nil {
			return fmt.Errorf("pgcluster: %w", err)
		}
		st, _ := fi.Sys().(*syscall.Stat_t)
		ok := fi.Mode().Perm()&0o001 != 0 || (st != nil && st.Uid == uint32(uid) && fi.Mode().Perm()&0o100 != 0)
		if !ok {
			return fmt.Errorf("pgcluster: the server runs as OS user postgres (we are root), but it cannot enter %s (mode %v): choose a Dir whose parents are searchable by others, for example under /tmp via os.MkdirTemp(\"\", ...)", p, fi.Mode().Perm())
		}
		if p == filepath.Dir(p) {
			return nil
		}
	}
}

func (c *Cluster) initdb(ctx context.Context) error {
	if entries, err := os.ReadDir(c.dataDir); err == nil && len(entries) > 0 {
		return fmt.Errorf("pgcluster: %s is not empty but holds no cluster (no PG_VERSION): remove it or choose another Dir", c.dataDir)
	}
	c.log.Info("pgcluster: initdb", "dir", c.dataDir)
	out, err := c.run(ctx, "initdb", "-D", c.dataDir, "-A", "trust", "-U", SuperUser, "-E", "UTF8", "--locale=C")
	if err != nil {
		return fmt.Errorf("pgcluster: initdb %s: %w\n%s", c.dataDir, err, out)
	}
	return nil
}

// handleExistingPostmaster deals with a postmaster.pid left in the data
// directory. It reports whether a live server was adopted.
func (c *Cluster) handleExistingPostmaster(ctx context.Context, wantPort int) (bool, error) {
	pidFile := filepath.Join(c.dataDir, "postmaster.pid")
	pid, port, err := postmasterPID(c.dataDir)
	if err != nil || pid == 0 && !exists(pidFile) {
		return false, err
	}
	if pid <= 0 || !isPostgresProcess(pid) {
		// The previous server died without cleaning up (killed, machine
		// crash). Postgres itself refuses to start if the pid was reused
		// by an unrelated process, so remove the file.
		c.log.Info("pgcluster: removing stale postmaster.pid", "pid", pid)
		if err := os.Remove(pidFile); err != nil {
			return false, fmt.Errorf("pgcluster: remove stale %s: %w", pidFile, err)
		}
		return false, nil
	}
	if o, ok := readOwner(c.dir); ok && !o.alive() {
		// Its owner was killed and the watchdog did not stop it (killed
		// too, or the machine was busy): an orphan, not a server to adopt.
		c.log.Info("pgcluster: stopping orphaned server (its owner process is gone)", "pid", pid, "owner_pid", o.pid)
		return false, c.stopImmediate(ctx)
	}
	if port > 0 && (wantPort == 0 || wantPort == port) {
		c.log.Info("pgcluster: adopting running server", "pid", pid, "port", port)
		c.port = port
		return true, nil
	}
	c.log.Info("pgcluster: restarting running server on another port", "pid", pid, "port", port, "want", wantPort)
	if err := c.Stop(ctx); err != nil {
		return false, err
	}
	return false, nil
}

func isPostgresProcess(pid int) bool {
	if err := syscall.Kill(pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	if err != nil {
		return true // no /proc: trust kill(0)
	}
	return strings.HasPrefix(strings.TrimSpace(string(comm)), "postgres")
}

func (c *Cluster) start(ctx context.Context) error {
	// fsync stays on (the default, stated explicitly): onceflow's
	// exactly-once guarantee and the throughput numbers we publish are only
	// meaningful with durable commits.
	o := []string{
		"-p", strconv.Itoa(c.port),
		"-c", "listen_addresses=127.0.0.1",
		"-c", "max_connections=200",
		"-c", "shared_buffers=128MB",
		"-c", "fsync=on",
		"-c", "synchronous_commit=on",
	}
	if c.sockDir != "" {
		o = append(o, "-k", shellQuote(c.sockDir))
	} else {
		o = append(o, "-k", "''")
	}
	out, err := c.run(ctx, "pg_ctl", "start", "-D", c.dataDir, "-l", c.logFile, "-w", "-t", "60", "-o", strings.Join(o, " "))
	if err == nil {
		return nil
	}
	tail := logTail(c.logFile, 15)
	if strings.Contains(tail, "Address already in use") {
		return fmt.Errorf("pgcluster: port %d on 127.0.0.1 is in use: choose another Port or 0 for a free one: %w", c.port, errPortInUse)
	}
	return fmt.Errorf("pgcluster: pg_ctl start %s: %w\n%s\nserver log %s:\n%s", c.dataDir, err, out, c.logFile, tail)
}

// waitReady connects until the server answers or ctx ends. pg_ctl -w already
// waits, but an adopted server may still be starting up or shutting down.
func (c *Cluster) waitReady(ctx context.Context) error {
	var last error
	for {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		conn, err := pgx.Connect(cctx, c.DSN("postgres"))
		if err == nil {
			err = conn.Ping(cctx)
			conn.Close(cctx)
		}
		cancel()
		if err == nil {
			return nil
		}
		last = err
		t := time.NewTimer(50 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("pgcluster: server in %s not ready on port %d: %w (last error: %v); server log %s:\n%s",
				c.dataDir, c.port, ctx.Err(), last, c.logFile, logTail(c.logFile, 15))
		case <-t.C:
		}
	}
}

// run runs one of the server binaries, as the postgres OS user if needed.
func (c *Cluster) run(ctx context.Context, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(c.binDir, name), args...)
	cmd.Dir = c.dir
	cmd.Env = append(os.Environ(), "LC_ALL=C", "TZ=UTC")
	if c.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred}
		cmd.Env = append(cmd.Env, "HOME="+c.dir, "USER=postgres", "LOGNAME=postgres")
	}
	// pg_ctl start -l redirects the server's output to the log file, so the
	// daemonised server does not hold our pipe open and this returns.
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	err := cmd.Run()
	return buf.Bytes(), err
}

// findBinDir locates a directory with initdb, pg_ctl and postgres.
func findBinDir(explicit string) (string, error) {
	has := func(d string) bool {
		for _, b := range []string{"initdb", "pg_ctl", "postgres"} {
			if fi, err := os.Stat(filepath.Join(d, b)); err != nil || fi.IsDir() {
				return false
			}
		}
		return true
	}
	if explicit != "" {
		if has(explicit) {
			return explicit, nil
		}
		return "", fmt.Errorf("pgcluster: %s does not hold initdb, pg_ctl and postgres", explicit)
	}
	if p, err := exec.LookPath("pg_ctl"); err == nil {
		if d := filepath.Dir(resolve(p)); has(d) {
			return d, nil
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	// Newest major version first.
	sort.Slice(dirs, func(i, j int) bool { return versionOf(dirs[i]) > versionOf(dirs[j]) })
	for _, d := range dirs {
		if has(d) {
			return d, nil
		}
	}
	return "", errors.New("pgcluster: PostgreSQL server binaries (initdb, pg_ctl, postgres) not found on PATH or in /usr/lib/postgresql/*/bin: install postgresql-15 (apt-get install postgresql-15) or set DATABASE_URL to an existing server")
}

func resolve(p string) string {
	if r, err := filepath.EvalSymlinks(p); err == nil {
		return r
	}
	return p
}

func versionOf(binDir string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return v
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pgcluster: pick a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

func logTail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
