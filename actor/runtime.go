package actor

import (
	"context"
	"errors"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/onceflow/onceflow/eventsource"
)

// Runtime serves one aggregate type from one command topic.
type Runtime struct {
	cfg config
}

// NewRuntime validates agg and the options and returns a Runtime. It does
// not connect to anything: Run does.
func NewRuntime[S, C, E any](agg *eventsource.Aggregate[S, C, E], pool *pgxpool.Pool, opts ...Option) (*Runtime, error) {
	return nil, errors.New("TODO")
}

// Run joins the consumer group and serves until ctx is cancelled or a fatal
// error occurs. It migrates the schema first. On return the consumer has
// left the group and every partition's in-flight batch has committed or been
// abandoned (and will be fenced).
func (r *Runtime) Run(ctx context.Context) error { return errors.New("TODO") }
