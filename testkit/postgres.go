package testkit

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/onceflow/onceflow/internal/pgcluster"
	"github.com/onceflow/onceflow/txn"
)

// poolMaxConns is the size of Env.Pool: a test's runtimes and clients open
// their own pools; this one serves the helpers and the test's queries.
const poolMaxConns = 10

// openDatabase picks the environment's database (on the server the start
// functions set up, or on the server of WithPostgresURL), opens the pool and
// migrates.
func (e *Env) openDatabase(ctx context.Context, c *config) error {
	if c.postgresURL != "" {
		withDB, err := dsnWithDatabase(c.postgresURL)
		if err != nil {
			return envErr(ErrInvalidConfig, err, "set "+EnvDatabaseURL+" (or WithPostgresURL) to a postgres:// URL", "bad Postgres URL")
		}
		if err := pingPostgres(ctx, c.postgresURL, "the Postgres server of "+EnvDatabaseURL+"/WithPostgresURL",
			"start that server or correct the URL; unset "+EnvDatabaseURL+" to let testkit start Postgres itself"); err != nil {
			return err
		}
		e.adminDSN, e.withDB = c.postgresURL, withDB
		name := dbName()
		if err := pgcluster.CreateDatabase(ctx, e.adminDSN, name); err != nil {
			return envErr(ErrPostgresUnavailable, err, "the URL's user must be allowed to CREATE DATABASE", "cannot create the test database on %s", redact(c.postgresURL))
		}
		e.onClose(func(ctx context.Context) error { return pgcluster.DropDatabase(ctx, e.adminDSN, name) })
		e.dsn = withDB(name)
	}
	pool, err := openMigrated(ctx, e.dsn)
	if err != nil {
		return err
	}
	e.onClose(func(context.Context) error { pool.Close(); return nil })
	e.pool, e.store = pool, txn.NewStore(pool)
	return nil
}

func openMigrated(ctx context.Context, dsn string) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, envErr(ErrInvalidConfig, err, "", "bad Postgres URL %s", redact(dsn))
	}
	cfg.MaxConns = poolMaxConns
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, envErr(ErrPostgresUnavailable, err, "", "open a pool on %s", redact(dsn))
	}
	if _, err := txn.Migrate(ctx, pool); err != nil {
		pool.Close()
		return nil, envErr(ErrPostgresUnavailable, err, "", "migrate the onceflow schema in %s", redact(dsn))
	}
	return pool, nil
}

// FreshDatabase returns the URL of a new database on the environment's
// server with the onceflow schema migrated, dropped when t ends. Tests that
// share one Env use it to stay independent.
func (e *Env) FreshDatabase(t testing.TB) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	name := dbName()
	if err := pgcluster.CreateDatabase(ctx, e.adminDSN, name); err != nil {
		t.Fatalf("testkit: create database: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := pgcluster.DropDatabase(ctx, e.adminDSN, name); err != nil {
			t.Logf("testkit: drop database %s (ignored): %v", name, err)
		}
	})
	dsn := e.withDB(name)
	pool, err := openMigrated(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	pool.Close()
	return dsn
}

// pingPostgres makes one connection attempt and explains a failure. what
// names the server for the message, fix says what to do.
func pingPostgres(ctx context.Context, dsn, what, fix string) error {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(cctx, dsn)
	if err == nil {
		err = conn.Ping(cctx)
		conn.Close(context.WithoutCancel(ctx))
	}
	if err == nil {
		return nil
	}
	return explainPostgres(err, dsn, what, fix)
}

// explainPostgres turns a connection error into an *EnvError.
func explainPostgres(err error, dsn, what, fix string) error {
	var pgErr *pgconn.PgError
	switch {
	case errors.As(err, &pgErr) && strings.HasPrefix(pgErr.Code, "28"):
		return envErr(ErrPostgresUnavailable, err,
			"check the user and password; a Postgres image must honour POSTGRES_USER, POSTGRES_PASSWORD and POSTGRES_DB like the official one (scripts/build-test-images.sh builds one that does)",
			"%s (%s) rejected the credentials", what, redact(dsn))
	case errors.As(err, &pgErr) && pgErr.Code == "3D000":
		return envErr(ErrPostgresUnavailable, err, "create the database or name an existing one in the URL", "%s (%s) has no such database", what, redact(dsn))
	case errors.Is(err, syscall.ECONNREFUSED):
		return envErr(ErrPostgresUnavailable, err, fix, "%s (%s) refused the connection: nothing listens there", what, redact(dsn))
	}
	return envErr(ErrPostgresUnavailable, err, fix, "cannot connect to %s (%s)", what, redact(dsn))
}

// dsnWithDatabase returns a function that rewrites dsn to name another
// database. dsn may be a URL or a key=value connection string.
func dsnWithDatabase(dsn string) (func(string) string, error) {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			return nil, err
		}
		return func(db string) string {
			c := *u
			c.Path = "/" + db
			c.RawPath = ""
			return c.String()
		}, nil
	}
	if _, err := pgconn.ParseConfig(dsn); err != nil {
		return nil, err
	}
	return func(db string) string { return dsn + " dbname=" + db }, nil
}

func dbName() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("testkit_%s", hex.EncodeToString(b[:]))
}
