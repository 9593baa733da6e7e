package testenv_test

import (
	"context"
	"os"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/onceflow/onceflow/internal/testenv"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

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
