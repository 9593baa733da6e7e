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
	applied, err := txn.MigrateThese(ctx, pool, "onceflow", "core", bad)
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

// A service's own migrations (or another component's) go through the same
// mechanism, recorded per component; the core schema is applied first.
func TestMigrateFS(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := rawPool(t)
	v1 := fstest.MapFS{
		"sql/0001_read_model.sql": {Data: []byte("CREATE TABLE stock_view (id text PRIMARY KEY, n bigint NOT NULL)")},
	}
	applied, err := txn.MigrateFS(ctx, pool, "inventory.views", v1, "sql")
	if err != nil || !slices.Equal(applied, []int{1}) {
		t.Fatalf("first MigrateFS: %v %v", applied, err)
	}
	var core int
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM onceflow.schema_migrations").Scan(&core); err != nil || core == 0 {
		t.Fatalf("core schema not applied first: %d %v", core, err)
	}
	if applied, err := txn.MigrateFS(ctx, pool, "inventory.views", v1, "sql"); err != nil || len(applied) != 0 {
		t.Fatalf("second MigrateFS: %v %v (want nothing applied)", applied, err)
	}
	v2 := fstest.MapFS{
		"sql/0001_read_model.sql": v1["sql/0001_read_model.sql"],
		"sql/0002_more.sql":       {Data: []byte("ALTER TABLE stock_view ADD COLUMN warehouse text")},
	}
	if applied, err := txn.MigrateFS(ctx, pool, "inventory.views", v2, "sql"); err != nil || !slices.Equal(applied, []int{2}) {
		t.Fatalf("MigrateFS with a new version: %v %v", applied, err)
	}
	// Another component numbers its versions independently.
	if applied, err := txn.MigrateFS(ctx, pool, "other", fstest.MapFS{"m/0001_x.sql": {Data: []byte("CREATE TABLE other_x (x int)")}}, "m"); err != nil || !slices.Equal(applied, []int{1}) {
		t.Fatalf("another component: %v %v", applied, err)
	}
	// An older binary (only v1) refuses a database at v2.
	if _, err := txn.MigrateFS(ctx, pool, "inventory.views", v1, "sql"); err == nil || !strings.Contains(err.Error(), "inventory.views schema version 2") {
		t.Fatalf("older migrations against a newer database: %v", err)
	}
	// Bad names and files are errors, not panics.
	for _, tc := range []struct {
		component string
		fsys      fstest.MapFS
		want      string
	}{
		{"core", v1, `not "core"`},
		{"Bad Name", v1, "component name"},
		{"x", fstest.MapFS{"sql/1_a.sql": {Data: []byte("SELECT 1")}}, "is not named NNNN_name.sql"},
		{"x", fstest.MapFS{"sql/0002_a.sql": {Data: []byte("SELECT 1")}}, "want 1"},
	} {
		if _, err := txn.MigrateFS(ctx, pool, tc.component, tc.fsys, "sql"); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("MigrateFS(%q): %v, want an error containing %q", tc.component, err, tc.want)
		}
	}
}
