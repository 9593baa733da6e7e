package txn_test

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/fstest"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/onceflow/onceflow/internal/testenv"
	"github.com/onceflow/onceflow/txn"
)

func rawPool(t *testing.T) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(testenv.Postgres(t))
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxConns = testenv.MaxConns
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

func TestMigrationsEmbedded(t *testing.T) {
	t.Parallel()
	ms, err := txn.Migrations()
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) == 0 || ms[0].Version != 1 || ms[0].Name != "0001_core.sql" || !strings.Contains(ms[0].SQL, "partition_claims") {
		t.Fatalf("unexpected migrations: %+v", ms)
	}
}

func TestLoadMigrationsRejectsBadFiles(t *testing.T) {
	t.Parallel()
	for name, files := range map[string]fstest.MapFS{
		"bad name": {"m/1_x.sql": {}},
		"gap":      {"m/0001_a.sql": {}, "m/0003_c.sql": {}},
		"repeat":   {"m/0001_a.sql": {}, "m/0001_b.sql": {}},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := txn.LoadMigrations(files, "m"); err == nil {
				t.Fatal("no error")
			}
		})
	}
}

func TestMigrateIdempotent(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := rawPool(t)
	ms, _ := txn.Migrations()
	got, err := txn.Migrate(ctx, pool)
	if err != nil {
		t.Fatal(err)
	}
	want := make([]int, len(ms))
	for i := range ms {
		want[i] = i + 1
	}
	if !slices.Equal(got, want) {
		t.Fatalf("first Migrate applied %v, want %v", got, want)
	}
	got, err = txn.Migrate(ctx, pool)
	if err != nil || len(got) != 0 {
		t.Fatalf("second Migrate applied %v, %v; want nothing", got, err)
	}
}

func TestMigrateConcurrent(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := rawPool(t)
	const n = 6
	var wg sync.WaitGroup
	results := make([][]int, n)
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() { results[i], errs[i] = txn.Migrate(ctx, pool) })
	}
	wg.Wait()
	total := 0
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("Migrate %d: %v", i, errs[i])
		}
		total += len(results[i])
	}
	ms, _ := txn.Migrations()
	if total != len(ms) {
		t.Fatalf("migrations applied %d times in total, want %d (each exactly once): %v", total, len(ms), results)
	}
	var rows int
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM onceflow.schema_migrations").Scan(&rows); err != nil || rows != len(ms) {
		t.Fatalf("schema_migrations rows = %d (%v)", rows, err)
	}
}

func TestMigrateRefusesNewerDatabase(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := rawPool(t)
	if _, err := txn.Migrate(ctx, pool); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, "INSERT INTO onceflow.schema_migrations (version, name) VALUES (999, '0999_future.sql')"); err != nil {
		t.Fatal(err)
	}
	_, err := txn.Migrate(ctx, pool)
	if err == nil || !strings.Contains(err.Error(), "999") || !strings.Contains(err.Error(), "upgrade this binary") {
		t.Fatalf("err = %v", err)
	}
}

func TestMigrateFailureRollsBack(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := rawPool(t)
	ms, _ := txn.Migrations()
	bad := append(slices.Clone(ms), txn.Migration{Version: len(ms) + 1, Name: "bad.sql", SQL: "CREATE TABLE onceflow.half (x int); SELECT nonsense_fn()"})
	applied, err := txn.MigrateThese(ctx, pool, bad)
	if err == nil || !strings.Contains(err.Error(), "bad.sql") {
		t.Fatalf("err = %v", err)
	}
	if len(applied) != len(ms) {
		t.Fatalf("applied %v", applied)
	}
	var exists bool
	if err := pool.QueryRow(ctx, "SELECT to_regclass('onceflow.half') IS NOT NULL").Scan(&exists); err != nil || exists {
		t.Fatalf("half-applied migration left a table (%v)", err)
	}
}
