package txn

import (
	"context"
	"embed"
	"errors"

	"github.com/jackc/pgx/v5/pgxpool"
)

//go:embed migrations/*.sql
var migrationFS embed.FS

// Migration is one embedded, versioned schema change.
type Migration struct {
	Version int    // from the file name: 0001_core.sql is version 1
	Name    string // file name
	SQL     string
}

// Migrations returns the embedded migrations in version order.
func Migrations() ([]Migration, error) {
	return nil, errors.New("TODO")
}

// Migrate applies the embedded migrations that are not yet applied, each in
// its own transaction, recording them in onceflow.schema_migrations. A
// Postgres advisory lock serialises concurrent callers (several instances
// starting at once). It returns the versions it applied. It fails if the
// database has a version newer than this binary knows.
func Migrate(ctx context.Context, pool *pgxpool.Pool) ([]int, error) {
	return nil, errors.New("TODO")
}
