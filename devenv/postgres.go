package devenv

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/onceflow/onceflow/internal/pgcluster"
)

// PostgresOptions configures StartPostgres.
type PostgresOptions struct {
	// Dir holds the cluster (created on first start, reused after). Required.
	Dir string
	// Port at 127.0.0.1. 0 picks a free port, or adopts the port of a server
	// already running on Dir.
	Port int
	// Database is created if missing. Default "onceflow".
	Database string
	// Logger for progress messages. Default slog.Default().
	Logger *slog.Logger
}

// Postgres is a private Postgres cluster started (or adopted) for
// development.
type Postgres struct {
	cluster *pgcluster.Cluster
	db      string
	adopted bool
	log     *slog.Logger
}

// StartPostgres starts the private cluster in opts.Dir, or adopts the server
// another process (for example another instance of a sample) already runs
// there, and creates opts.Database if needed. ctx bounds the start-up.
func StartPostgres(ctx context.Context, opts PostgresOptions) (*Postgres, error) {
	if opts.Dir == "" {
		return nil, errors.New("devenv: PostgresOptions.Dir is empty")
	}
	if opts.Database == "" {
		opts.Database = "onceflow"
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	before := postmasterPID(opts.Dir)
	c, err := pgcluster.Start(ctx, pgcluster.Options{Dir: opts.Dir, Port: opts.Port, Logger: opts.Logger})
	if err != nil {
		return nil, fmt.Errorf("devenv: start postgres in %s: %w", opts.Dir, err)
	}
	// The same live postmaster before and after Start: pgcluster adopted a
	// server someone else started, and stopping it is theirs to do.
	p := &Postgres{cluster: c, db: opts.Database, log: opts.Logger,
		adopted: before != "" && before == postmasterPID(opts.Dir)}
	if err := c.CreateDatabase(ctx, opts.Database); err != nil {
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "42P04" { // duplicate_database
			if !p.adopted {
				_ = c.Stop(context.WithoutCancel(ctx))
			}
			return nil, fmt.Errorf("devenv: create database %q: %w", opts.Database, err)
		}
	}
	return p, nil
}

// DSN returns the connection URL of the database.
func (p *Postgres) DSN() string { return p.cluster.DSN(p.db) }

// Adopted reports whether the server was already running (started by
// another process) when StartPostgres was called.
func (p *Postgres) Adopted() bool { return p.adopted }

// Close stops the server if this process started it; an adopted server is
// left running for its owner. ctx bounds the wait.
func (p *Postgres) Close(ctx context.Context) error {
	if p.adopted {
		p.log.Info("devenv: leaving adopted postgres running", "port", p.cluster.Port())
		return nil
	}
	return p.cluster.Stop(ctx)
}

// postmasterPID returns the pid line of the cluster's postmaster.pid, or "".
func postmasterPID(dir string) string {
	for _, d := range []string{dir, filepath.Join(dir, "data")} {
		b, err := os.ReadFile(filepath.Join(d, "postmaster.pid"))
		if err == nil {
			pid, _, _ := strings.Cut(string(b), "\n")
			return strings.TrimSpace(pid)
		}
	}
	return ""
}
