package actor

import (
	"context"
	"errors"

	"github.com/onceflow/onceflow/eventsource"
)

// Client sends commands and waits for their outcomes. Safe for concurrent use.
type Client struct {
	cfg config
}

// SendOption configures one Send.
type SendOption func(*sendOptions)

type sendOptions struct{ commandID string }

// WithCommandID sets the command id (the idempotency key). Default: a new
// random id. Reuse the id when retrying a command whose outcome is unknown.
func WithCommandID(id string) SendOption { return func(o *sendOptions) { o.commandID = id } }

// NewClient returns a Client. reg must name every command type sent.
func NewClient(ctx context.Context, reg *eventsource.Registry, opts ...ClientOption) (*Client, error) {
	return nil, errors.New("TODO")
}

// Send produces cmd to the command topic keyed by cmd.AggregateID() and
// waits for its outcome. ctx bounds the wait.
func (c *Client) Send(ctx context.Context, cmd eventsource.Command, opts ...SendOption) (Outcome, error) {
	return Outcome{}, errors.New("TODO")
}

// Close stops the client.
func (c *Client) Close() error { return nil }
