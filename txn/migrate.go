package txn

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"path"
	"regexp"
	"sort"
	"strconv"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/onceflow/onceflow/internal/pgschema"
)

//go:embed migrations/*.sql
var migrationFS embed.FS

// Migration is one embedded, versioned schema change.
type Migration struct {
	Version int    // from the file name: 0001_core.sql is version 1
	Name    string // file name
	SQL     string
}

// migrationLockKey is the pg_advisory_lock key that serialises Migrate
// callers across processes: the first 8 bytes of "onceflow" read as a
// big-endian int64 (an arbitrary constant; it only has to be stable and
// unlikely to collide with a service's own advisory locks).
const migrationLockKey int64 = 0x6f6e6365666c6f77

var migrationName = regexp.MustCompile(`^(\d{4})_[a-z0-9_]+\.sql$`)

// Migrations returns the embedded migrations in version order. Versions run
// 1, 2, 3, ... without gaps; a malformed file name is an error (a build
// defect, caught by the package's tests).
func Migrations() ([]Migration, error) {
	return loadMigrations(migrationFS, "migrations")
}

func loadMigrations(fsys fs.FS, dir string) ([]Migration, error) {
	entries, err := fs.ReadDir(fsys, dir)
	if err != nil {
		return nil, fmt.Errorf("txn: read migrations: %w", err)
	}
	var ms []Migration
	for _, e := range entries {
		m := migrationName.FindStringSubmatch(e.Name())
		if m == nil {
			return nil, fmt.Errorf("txn: migration file %q is not named NNNN_name.sql", e.Name())
		}
		v, _ := strconv.Atoi(m[1])
		b, err := fs.ReadFile(fsys, path.Join(dir, e.Name()))
		if err != nil {
			return nil, fmt.Errorf("txn: read migration %s: %w", e.Name(), err)
		}
		ms = append(ms, Migration{Version: v, Name: e.Name(), SQL: string(b)})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].Version < ms[j].Version })
	for i, m := range ms {
		if m.Version != i+1 {
			return nil, fmt.Errorf("txn: migration %s has version %d, want %d (versions must run 1, 2, 3, ... without gaps or repeats)", m.Name, m.Version, i+1)
		}
	}
	return ms, nil
}

// Migrate applies the embedded migrations that are not yet applied, each in
// its own transaction, recording them in onceflow.schema_migrations. A
// Postgres advisory lock serialises concurrent callers (several instances
// starting at once). It returns the versions it applied. It fails if the
// database has a version newer than this binary knows.
//
// Migrate is idempotent: a second call applies nothing and returns an empty
// slice. ctx bounds the whole run, including the wait for the lock.
func Migrate(ctx context.Context, pool *pgxpool.Pool, opts ...MigrateOption) ([]int, error) {
	o, err := migrateOptions(opts)
	if err != nil {
		return nil, err
	}
	ms, err := Migrations()
	if err != nil {
		return nil, err
	}
	return migrate(ctx, pool, o.schema, coreComponent, ms)
}

// MigrateOption configures Migrate and MigrateFS.
type MigrateOption func(*migrateOpts)

type migrateOpts struct{ schema string }

// InSchema migrates onceflow's tables in schema instead of "onceflow"
// (1-63 characters of [a-z0-9_], not starting with a digit). Use the same
// name with WithSchema for the Store and eventsource.WithSchema for the
// EventStore (actor.WithSchema does all three).
func InSchema(name string) MigrateOption { return func(o *migrateOpts) { o.schema = name } }

func migrateOptions(opts []MigrateOption) (migrateOpts, error) {
	o := migrateOpts{schema: pgschema.Default}
	for _, f := range opts {
		f(&o)
	}
	if err := pgschema.Check(o.schema); err != nil {
		return o, fmt.Errorf("txn: migrate: %w", err)
	}
	return o, nil
}

// coreComponent names onceflow's own schema, recorded in
// onceflow.schema_migrations; every other component in
// onceflow.component_migrations.
const coreComponent = "core"

var componentName = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,62}$`)

// MigrateFS applies the migrations of a component — a service's own tables
// (read models, process state) or an onceflow component other than the core
// — through the same mechanism as Migrate: the files NNNN_name.sql in dir
// of fsys, versions 1, 2, 3, ... per component without gaps, each applied in
// its own transaction and recorded in onceflow.component_migrations under
// component, serialised across processes by the same advisory lock. It
// applies the core schema first when it is missing or old. It returns the
// versions it applied, fails if the database has a version of the component
// newer than fsys knows, and is idempotent.
//
// component is 1-63 characters of [a-z0-9_.-] starting with a letter or
// digit, and not "core".
func MigrateFS(ctx context.Context, pool *pgxpool.Pool, component string, fsys fs.FS, dir string, opts ...MigrateOption) ([]int, error) {
	if !componentName.MatchString(component) || component == coreComponent {
		return nil, fmt.Errorf("txn: migrate: component name %q: want 1-63 characters of [a-z0-9_.-], not %q", component, coreComponent)
	}
	ms, err := loadMigrations(fsys, dir)
	if err != nil {
		return nil, fmt.Errorf("txn: migrate %s: %w", component, err)
	}
	o, err := migrateOptions(opts)
	if err != nil {
		return nil, err
	}
	if _, err := Migrate(ctx, pool, opts...); err != nil {
		return nil, err
	}
	return migrate(ctx, pool, o.schema, component, ms)
}

func migrate(ctx context.Context, pool *pgxpool.Pool, schema, component string, ms []Migration) (applied []int, err error) {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("txn: migrate: %w", err)
	}
	// A session lock (not pg_advisory_xact_lock) because it must cover
	// several transactions: reading the applied versions and applying each
	// migration in its own transaction.
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", migrationLockKey); err != nil {
		// The lock may or may not have been granted: drop the connection
		// so a granted lock cannot leak into the pool.
		conn.Conn().Close(context.WithoutCancel(ctx))
		conn.Release()
		return nil, fmt.Errorf("txn: migrate: take advisory lock: %w", err)
	}
	defer func() {
		if _, uerr := conn.Exec(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock($1)", migrationLockKey); uerr != nil {
			// Closing the session releases the lock.
			conn.Conn().Close(context.WithoutCancel(ctx))
		}
		conn.Release()
	}()

	if _, err := conn.Exec(ctx, pgschema.Rewrite(schema, `
		CREATE SCHEMA IF NOT EXISTS onceflow;
		CREATE TABLE IF NOT EXISTS onceflow.schema_migrations (
			version    integer     PRIMARY KEY,
			name       text        NOT NULL,
			applied_at timestamptz NOT NULL DEFAULT now()
		);
		CREATE TABLE IF NOT EXISTS onceflow.component_migrations (
			component  text        NOT NULL,
			version    integer     NOT NULL,
			name       text        NOT NULL,
			applied_at timestamptz NOT NULL DEFAULT now(),
			PRIMARY KEY (component, version)
		)`)); err != nil {
		return nil, fmt.Errorf("txn: migrate: create the migration tables: %w", err)
	}
	readSQL := "SELECT version, name FROM onceflow.schema_migrations WHERE $1 = $1"
	recordSQL := "INSERT INTO onceflow.schema_migrations (version, name) VALUES ($1, $2)"
	if component != coreComponent {
		readSQL = "SELECT version, name FROM onceflow.component_migrations WHERE component = $1"
		recordSQL = "INSERT INTO onceflow.component_migrations (version, name, component) VALUES ($1, $2, $3)"
	}

	done := map[int]string{}
	rows, _ := conn.Query(ctx, pgschema.Rewrite(schema, readSQL), component)
	var v int
	var name string
	if _, err := pgx.ForEachRow(rows, []any{&v, &name}, func() error { done[v] = name; return nil }); err != nil {
		return nil, fmt.Errorf("txn: migrate %s: read the applied versions: %w", component, err)
	}
	for v, name := range done {
		if v > len(ms) {
			return nil, fmt.Errorf("txn: migrate: the database has %s schema version %d (%s) but this binary only knows versions up to %d: a newer binary has migrated it; upgrade this binary (downgrades are not supported)", component, v, name, len(ms))
		}
	}

	applied = []int{}
	for _, m := range ms {
		if _, ok := done[m.Version]; ok {
			continue
		}
		err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, pgschema.Rewrite(schema, m.SQL)); err != nil {
				return err
			}
			args := []any{m.Version, m.Name}
			if component != coreComponent {
				args = append(args, component)
			}
			_, err := tx.Exec(ctx, pgschema.Rewrite(schema, recordSQL), args...)
			return err
		})
		if err != nil {
			return applied, fmt.Errorf("txn: migrate %s: apply %s: %w", component, m.Name, err)
		}
		applied = append(applied, m.Version)
	}
	return applied, nil
}
