package api

import (
	"context"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/onceflow/onceflow/eventsource"
)

// TransferChannel is the Postgres NOTIFY channel on which every committed
// batch of the transfer runtime names the transfers it changed (see
// NotifyTransfers).
const TransferChannel = "payments_transfers"

// NotifyTransfers is an actor.InlineProjection for the transfer runtime:
// inside each batch's transaction it NOTIFYs TransferChannel with the id
// of every transfer the batch changed. Postgres delivers notifications at
// commit, so a waiter woken by one reads the committed state; a batch
// rolled back or fenced notifies nothing.
func NotifyTransfers(ctx context.Context, tx pgx.Tx, events []eventsource.StoredEvent) error {
	seen := map[string]bool{}
	for _, ev := range events {
		if seen[ev.AggregateID] {
			continue
		}
		seen[ev.AggregateID] = true
		if _, err := tx.Exec(ctx, `SELECT pg_notify($1, $2)`, TransferChannel, ev.AggregateID); err != nil {
			return err
		}
	}
	return nil
}

// Watcher tells a waiting request when a transfer may have changed.
type Watcher interface {
	// Watch returns a channel that receives when transfer id may have
	// changed, and a func to stop watching.
	Watch(id string) (<-chan struct{}, func())
}

// Notifier is the Watcher over TransferChannel: one connection LISTENs and
// wakes the watchers of the transfer each notification names (and every
// watcher after a reconnect, which may have missed some). Close releases
// the connection.
type Notifier struct {
	pool *pgxpool.Pool

	mu      sync.Mutex
	subs    map[string]map[chan struct{}]struct{}
	started bool
	cancel  context.CancelFunc
	done    chan struct{}
}

// NewNotifier returns a Notifier on pool; it connects on the first Watch.
func NewNotifier(pool *pgxpool.Pool) *Notifier {
	return &Notifier{pool: pool, subs: map[string]map[chan struct{}]struct{}{}, done: make(chan struct{})}
}

// Watch implements Watcher.
func (n *Notifier) Watch(id string) (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	n.mu.Lock()
	if !n.started {
		n.started = true
		ctx, cancel := context.WithCancel(context.Background())
		n.cancel = cancel
		go n.listen(ctx)
	}
	if n.subs[id] == nil {
		n.subs[id] = map[chan struct{}]struct{}{}
	}
	n.subs[id][ch] = struct{}{}
	n.mu.Unlock()
	return ch, func() {
		n.mu.Lock()
		delete(n.subs[id], ch)
		if len(n.subs[id]) == 0 {
			delete(n.subs, id)
		}
		n.mu.Unlock()
	}
}

// Close stops listening.
func (n *Notifier) Close() {
	n.mu.Lock()
	started, cancel := n.started, n.cancel
	n.started = true
	n.mu.Unlock()
	if started && cancel != nil {
		cancel()
		<-n.done
	}
}

func (n *Notifier) wake(id string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for id2, subs := range n.subs {
		if id != "" && id2 != id {
			continue
		}
		for ch := range subs {
			select {
			case ch <- struct{}{}:
			default:
			}
		}
	}
}

func (n *Notifier) listen(ctx context.Context) {
	defer close(n.done)
	for ctx.Err() == nil {
		conn, err := n.pool.Acquire(ctx)
		if err == nil {
			_, err = conn.Exec(ctx, "LISTEN "+pgx.Identifier{TransferChannel}.Sanitize())
			if err == nil {
				n.wake("") // changes may have been missed while not listening
				for err == nil {
					var note *pgconn.Notification
					if note, err = conn.Conn().WaitForNotification(ctx); err == nil {
						n.wake(note.Payload)
					}
				}
			}
			// The session holds a LISTEN: never return it to the pool.
			_ = conn.Conn().Close(context.WithoutCancel(ctx))
			conn.Release()
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}
