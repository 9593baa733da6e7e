package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/onceflow/onceflow/internal/pgcluster"
	"github.com/onceflow/onceflow/txn"
)

// EnvDatabaseURL names the environment variable that points the tests at an
// existing server instead of a private cluster. The URL's user must be allowed
// to CREATE DATABASE; its database is only used to create and drop the test
// databases.
const EnvDatabaseURL = "ONCEFLOW_TEST_DATABASE_URL"

// TB is the part of testing.TB the helpers use. *testing.T and *testing.B
// implement it; taking an interface keeps "testing" out of non-test files.
type TB interface {
	Helper()
	Cleanup(func())
	Fatalf(format string, args ...any)
	Logf(format string, args ...any)
	Name() string
}

// MaxConns is the pool size of Pool: many test databases may be open at
// once against one server with max_connections 200.
const MaxConns = 8

// tempDirPrefix names the temporary directories of the private clusters
// (under os.TempDir()).
const tempDirPrefix = "onceflow-testpg-"

// setupTimeout bounds creating a database, migrating it, and starting the
// shared cluster.
const setupTimeout = 2 * time.Minute

var shared struct {
	once     sync.Once
	adminDSN string // connects to an existing database on the server
	withDB   func(db string) string
	cluster  *pgcluster.Cluster
	dir      string
	err      error
}

var dbCounter atomic.Int64

// Main runs the tests and then stops the private cluster if one was
// started. Use it from TestMain:
//
//	func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }
func Main(m interface{ Run() int }) int {
	code := m.Run()
	if err := Shutdown(); err != nil {
		fmt.Fprintln(os.Stderr, "testenv:", err)
		if code == 0 {
			code = 1
		}
	}
	return code
}

// Shutdown stops the private cluster started by Postgres, if any, and
// removes its directory. Main calls it; call it directly only from a custom
// TestMain.
func Shutdown() error {
	if shared.cluster == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := shared.cluster.Stop(ctx)
	if err == nil && shared.dir != "" {
		err = os.RemoveAll(shared.dir)
	}
	shared.cluster = nil
	return err
}

// setup starts the shared server once per test process.
func setup() error {
	shared.once.Do(func() {
		if u := os.Getenv(EnvDatabaseURL); u != "" {
			shared.adminDSN = u
			shared.withDB, shared.err = dsnWithDatabase(u)
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
		defer cancel()
		// os.MkdirTemp, not a test's TempDir: the cluster outlives single
		// tests, and when we run as root the server runs as user postgres
		// and must be able to enter the directory's parents.
		dir, err := os.MkdirTemp("", tempDirPrefix)
		if err != nil {
			shared.err = err
			return
		}
		log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
		// Throwaway: if this test process is killed (a CI timeout's
		// SIGKILL), pgcluster's watchdog stops the server and removes dir.
		// ReapGlob: what a watchdog could not clean up (it was killed too)
		// the next test process does.
		c, err := pgcluster.Start(ctx, pgcluster.Options{
			Dir:       dir,
			Throwaway: true,
			ReapGlob:  filepath.Join(os.TempDir(), tempDirPrefix+"*"),
			Logger:    log,
		})
		if err != nil {
			os.RemoveAll(dir)
			shared.err = fmt.Errorf("%w (or set %s to a server the tests may create databases on)", err, EnvDatabaseURL)
			return
		}
		shared.cluster, shared.dir = c, dir
		shared.adminDSN = c.DSN("postgres")
		shared.withDB = c.DSN
	})
	return shared.err
}

// dsnWithDatabase returns a function that rewrites dsn to name another
// database. dsn may be a URL or a key=value connection string.
func dsnWithDatabase(dsn string) (func(string) string, error) {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			return nil, fmt.Errorf("testenv: %s: %w", EnvDatabaseURL, err)
		}
		return func(db string) string {
			c := *u
			c.Path = "/" + db
			c.RawPath = ""
			return c.String()
		}, nil
	}
	// key=value: a later dbname overrides an earlier one.
	return func(db string) string { return dsn + " dbname=" + db }, nil
}

// Postgres returns the DSN of a fresh, empty database with a unique name on
// the shared server (the server named by ONCEFLOW_TEST_DATABASE_URL, or a
// private cluster started once per test process). The database is dropped
// when the test ends (best effort; failures are logged).
func Postgres(t TB) string {
	t.Helper()
	if err := setup(); err != nil {
		t.Fatalf("testenv: no PostgreSQL for tests: %v", err)
	}
	name := dbName(t.Name())
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	if err := pgcluster.CreateDatabase(ctx, shared.adminDSN, name); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := pgcluster.DropDatabase(ctx, shared.adminDSN, name); err != nil {
			t.Logf("testenv: drop test database (ignored): %v", err)
		}
	})
	return shared.withDB(name)
}

// Pool returns a pool (at most MaxConns connections) on a fresh database
// with txn.Migrate applied. The pool is closed and the database dropped when
// the test ends.
func Pool(t TB) *pgxpool.Pool {
	t.Helper()
	dsn := Postgres(t)
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	cfg.MaxConns = MaxConns
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	// Registered after Postgres's cleanup, so it runs before the drop.
	t.Cleanup(pool.Close)
	if _, err := txn.Migrate(ctx, pool); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	return pool
}

// dbName derives a unique, valid database name from a test name.
func dbName(testName string) string {
	var b strings.Builder
	b.WriteString("t_")
	for _, r := range strings.ToLower(testName) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
		if b.Len() >= 30 {
			break
		}
	}
	var rnd [4]byte
	_, _ = rand.Read(rnd[:])
	// pid + counter keep names unique within a run; the random part keeps
	// them unique across concurrent test binaries sharing one server.
	return fmt.Sprintf("%s_%d_%d_%s", b.String(), os.Getpid(), dbCounter.Add(1), hex.EncodeToString(rnd[:]))
}
