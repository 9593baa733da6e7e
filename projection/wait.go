package projection

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// ErrHalted matches a WaitFor that gave up because the projection's
// partition is halted.
var ErrHalted = errors.New("projection halted")

// WaitError is why WaitFor returned without the position applied: the
// context ended (Unwrap gives its error), or the projection is halted or
// paused (ErrHalted, ErrPaused).
type WaitError struct {
	Name     string
	Version  int
	Want     Position
	Applied  int64  // the version's position on Want.Partition when it gave up
	Reason   string // halt or pause reason
	Err      error
	Duration time.Duration
}

func (e *WaitError) Error() string {
	switch {
	case errors.Is(e.Err, ErrHalted), errors.Is(e.Err, ErrPaused):
		return fmt.Sprintf("projection %s v%d cannot apply partition %d seq %d (it is at seq %d): %v: %s", e.Name, e.Version, e.Want.Partition, e.Want.Seq, e.Applied, e.Err, e.Reason)
	default:
		return fmt.Sprintf("projection %s v%d had not applied partition %d seq %d after %v (it is at seq %d; see onceflow projections list): %v",
			e.Name, e.Version, e.Want.Partition, e.Want.Seq, e.Duration.Round(time.Millisecond), e.Applied, e.Err)
	}
}

func (e *WaitError) Unwrap() error { return e.Err }

// Waiter waits for projections to apply positions: read-your-writes. It
// holds one Postgres connection that LISTENs on Channel and wakes every
// waiter when a position moves (no polling; a slow recheck every second
// covers a lost connection). Safe for concurrent use; Close releases it.
type Waiter struct {
	store *Store

	mu      sync.Mutex
	changed chan struct{} // closed (and replaced) when positions may have moved
	started bool
	closed  bool
	ready   chan struct{} // closed once LISTEN is in place (or failed)
	cancel  context.CancelFunc
	done    chan struct{}
}

// NewWaiter returns a Waiter on the store's pool and schema.
func NewWaiter(store *Store) *Waiter {
	return &Waiter{store: store, changed: make(chan struct{}), ready: make(chan struct{}), done: make(chan struct{})}
}

// Close stops listening.
func (w *Waiter) Close() {
	w.mu.Lock()
	started, cancel := w.started, w.cancel
	w.started, w.closed = true, true // no start after Close
	w.mu.Unlock()
	if started && cancel != nil {
		cancel()
		<-w.done
	}
}

// ErrWaiterClosed is returned by WaitFor after Close.
var ErrWaiterClosed = errors.New("projection: waiter closed")

func (w *Waiter) generation() chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.started {
		w.started = true
		ctx, cancel := context.WithCancel(context.Background())
		w.cancel = cancel
		go w.listen(ctx)
	}
	return w.changed
}

func (w *Waiter) wake() {
	w.mu.Lock()
	close(w.changed)
	w.changed = make(chan struct{})
	w.mu.Unlock()
}

func (w *Waiter) listen(ctx context.Context) {
	defer close(w.done)
	readyOnce := sync.OnceFunc(func() { close(w.ready) })
	defer readyOnce()
	channel := pgx.Identifier{Channel(w.store.schema)}.Sanitize()
	for ctx.Err() == nil {
		conn, err := w.store.pool.Acquire(ctx)
		if err == nil {
			_, err = conn.Exec(ctx, "LISTEN "+channel)
			if err == nil {
				readyOnce()
				w.wake() // positions may have moved while not listening
				for err == nil {
					_, err = conn.Conn().WaitForNotification(ctx)
					if err == nil {
						w.wake()
					}
				}
			}
			// The session holds a LISTEN: never return it to the pool.
			conn.Conn().Close(context.WithoutCancel(ctx))
			conn.Release()
		}
		readyOnce()
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// WaitFor returns once the active version of projection name has applied
// pos (its position on pos.Partition is at least pos.Seq). A pos with Seq 0
// (a command that stored no event) returns at once. It returns a
// *WaitError when ctx ends first (errors.Is(err, context.DeadlineExceeded)
// on a timeout) or the partition is halted or the version paused.
func (w *Waiter) WaitFor(ctx context.Context, name string, pos Position) error {
	if pos.Seq <= 0 {
		return nil
	}
	start := time.Now()
	w.generation()
	w.mu.Lock()
	closed := w.closed
	w.mu.Unlock()
	if closed {
		return ErrWaiterClosed
	}
	select {
	case <-w.ready:
	case <-ctx.Done():
	}
	var last waitState
	for {
		ch := w.generation()
		st, err := w.read(ctx, name, pos.Partition)
		if err != nil {
			if ctx.Err() != nil {
				return &WaitError{Name: name, Version: last.version, Want: pos, Applied: last.applied, Err: ctx.Err(), Duration: time.Since(start)}
			}
			return err
		}
		last = st
		switch {
		case st.applied >= pos.Seq:
			return nil
		case st.halted != "":
			return &WaitError{Name: name, Version: st.version, Want: pos, Applied: st.applied, Reason: st.halted, Err: ErrHalted, Duration: time.Since(start)}
		case st.paused != "":
			return &WaitError{Name: name, Version: st.version, Want: pos, Applied: st.applied, Reason: st.paused, Err: ErrPaused, Duration: time.Since(start)}
		}
		select {
		case <-ch:
		case <-time.After(time.Second):
		case <-ctx.Done():
			return &WaitError{Name: name, Version: st.version, Want: pos, Applied: st.applied, Err: ctx.Err(), Duration: time.Since(start)}
		}
	}
}

type waitState struct {
	version int
	applied int64
	halted  string
	paused  string
}

func (w *Waiter) read(ctx context.Context, name string, partition int32) (waitState, error) {
	var st waitState
	var paused bool
	err := w.store.pool.QueryRow(ctx, w.store.sql(`
		SELECT p.version, p.paused, p.pause_reason, coalesce(c.next_seq, 1) - 1,
		       CASE WHEN c.halted_at IS NULL THEN '' ELSE coalesce(nullif(c.halt_reason, ''), 'halted') END
		FROM onceflow.projections p
		LEFT JOIN onceflow.partition_claims c ON c.group_id = p.group_id AND c.topic = p.history_topic AND c.partition = $2
		WHERE p.name = $1 AND p.state = 'active'`), name, partition).Scan(&st.version, &paused, &st.paused, &st.applied, &st.halted)
	if errors.Is(err, pgx.ErrNoRows) {
		return st, fmt.Errorf("%w: no active version of %q to wait for", ErrNotFound, name)
	}
	if err != nil {
		return st, fmt.Errorf("projection: wait for %s: %w", name, err)
	}
	if !paused {
		st.paused = ""
	}
	return st, nil
}
