package api

import (
	"bytes"
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Component is the name the API's migrations are recorded under.
const Component = "payments-api"

//go:embed migrations/*.sql
var migrationFS embed.FS

// Migrations returns the API's migrations (the idempotency keys table),
// for txn.MigrateFS or actor.WithMigrations.
func Migrations() (fs.FS, string) { return migrationFS, "migrations" }

// KeyReusedError is returned by Keys.Claim when the key was first used for
// another request.
type KeyReusedError struct {
	Request string // the first request's method and path
}

func (e *KeyReusedError) Error() string {
	return fmt.Sprintf("idempotency key already used for another request (%s)", e.Request)
}

// Keys remembers which request an Idempotency-Key was first used for.
type Keys interface {
	// Claim records key for scope with the request's fingerprint if it is
	// new, and returns nil when the key is new or was used for the same
	// fingerprint; a *KeyReusedError when it was used for another.
	Claim(ctx context.Context, scope, key string, fingerprint []byte, request string) error
}

// MemKeys is an in-memory Keys, for tests and single-process use.
type MemKeys struct {
	mu sync.Mutex
	m  map[[2]string]memKey
}

type memKey struct {
	fp      []byte
	request string
}

// Claim implements Keys.
func (k *MemKeys) Claim(_ context.Context, scope, key string, fp []byte, request string) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.m == nil {
		k.m = map[[2]string]memKey{}
	}
	if old, ok := k.m[[2]string{scope, key}]; ok {
		if !bytes.Equal(old.fp, fp) {
			return &KeyReusedError{Request: old.request}
		}
		return nil
	}
	k.m[[2]string{scope, key}] = memKey{fp, request}
	return nil
}

// PGKeys is the Postgres Keys (table payments_idempotency_keys, see
// Migrations): shared by every instance of the service.
type PGKeys struct{ Pool *pgxpool.Pool }

// Claim implements Keys. Two concurrent first requests with one key: one
// inserts, the other reads its row.
func (k PGKeys) Claim(ctx context.Context, scope, key string, fp []byte, request string) error {
	var got []byte
	var first string
	var err error
	// A concurrent first request's insert that commits while this
	// statement runs is not in its snapshot: no row; the next try sees it.
	for range 3 {
		err = k.claim(ctx, scope, key, fp, request, &got, &first)
		if !errors.Is(err, pgx.ErrNoRows) {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("idempotency key: %w", err)
	}
	if !bytes.Equal(got, fp) {
		return &KeyReusedError{Request: first}
	}
	return nil
}

func (k PGKeys) claim(ctx context.Context, scope, key string, fp []byte, request string, got *[]byte, first *string) error {
	return k.Pool.QueryRow(ctx, `WITH ins AS (
			INSERT INTO payments_idempotency_keys (scope, key, fingerprint, request) VALUES ($1, $2, $3, $4)
			ON CONFLICT (scope, key) DO NOTHING RETURNING fingerprint, request)
		SELECT fingerprint, request FROM ins
		UNION ALL SELECT fingerprint, request FROM payments_idempotency_keys WHERE scope = $1 AND key = $2
		LIMIT 1`, scope, key, fp, request).Scan(got, first)
}

func isKeyReused(err error) (*KeyReusedError, bool) {
	var e *KeyReusedError
	ok := errors.As(err, &e)
	return e, ok
}
