package testkit

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/onceflow/onceflow/txn"
)

// pollInterval is how often the Wait helpers look again.
const pollInterval = 20 * time.Millisecond

// wait calls cond every interval until it reports true, returns an error or
// ctx ends.
func wait(ctx context.Context, interval time.Duration, cond func(ctx context.Context) (bool, error)) error {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		ok, err := cond(ctx)
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// WaitFor polls cond until it returns true, and fails t if that does not
// happen within the wait timeout (WithWaitTimeout) or cond returns an
// error. what describes the condition for the failure message.
func (e *Env) WaitFor(t testing.TB, what string, cond func(ctx context.Context) (bool, error)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), e.waitTimeout)
	defer cancel()
	if err := wait(ctx, pollInterval, cond); err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("testkit: %s: not true after %v", what, e.waitTimeout)
		}
		t.Fatalf("testkit: %s: %v", what, err)
	}
}

// WaitOutcome waits until command commandID has a stored outcome and
// returns it: accepted, rejected or dead-lettered (txn.CommandResult). It
// fails t if there is none within the wait timeout. The outcome is read from
// Postgres, so it is the committed truth, whatever the client was told.
// Command ids are scoped to the aggregate type: if several aggregate types
// stored an outcome under commandID, it fails t; use WaitOutcomeOf.
func (e *Env) WaitOutcome(t testing.TB, commandID string) txn.CommandResult {
	t.Helper()
	return e.waitOutcome(t, "", commandID)
}

// WaitOutcomeOf is WaitOutcome for the command commandID of aggregateType.
func (e *Env) WaitOutcomeOf(t testing.TB, aggregateType, commandID string) txn.CommandResult {
	t.Helper()
	return e.waitOutcome(t, aggregateType, commandID)
}

func (e *Env) waitOutcome(t testing.TB, aggregateType, commandID string) txn.CommandResult {
	t.Helper()
	var res txn.CommandResult
	ctx, cancel := context.WithTimeout(context.Background(), e.waitTimeout)
	defer cancel()
	err := wait(ctx, pollInterval, func(ctx context.Context) (bool, error) {
		var rs []txn.CommandResult
		var err error
		if aggregateType != "" {
			var r txn.CommandResult
			if r, err = e.store.Result(ctx, aggregateType, commandID); err == nil {
				rs = append(rs, r)
			}
		} else {
			rs, err = e.store.ResultsByCommandID(ctx, commandID)
		}
		switch {
		case err == nil && len(rs) == 1:
			res = rs[0]
			return true, nil
		case err == nil && len(rs) > 1:
			return false, fmt.Errorf("command id %q has outcomes for %d aggregate types (%s, %s, ...): use WaitOutcomeOf", commandID, len(rs), rs[0].AggregateType, rs[1].AggregateType)
		case err == nil, errors.Is(err, txn.ErrNotFound), ctx.Err() != nil:
			return false, nil
		}
		return false, err
	})
	if errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("testkit: command %q has no stored outcome after %v: is a runtime consuming its topic from this database (%s)?", commandID, e.waitTimeout, redact(e.dsn))
	}
	if err != nil {
		t.Fatalf("testkit: outcome of command %q: %v", commandID, err)
	}
	return res
}

// WaitPosition waits until read reports a position >= want and returns the
// position read. A position is whatever the reader tracks, for example the
// event seq a projection has applied up to, read from the projection's own
// table (read-your-writes: wait for the LastSeq of a command's outcome).
// name describes the reader for the failure message.
func (e *Env) WaitPosition(t testing.TB, name string, want int64, read func(ctx context.Context) (int64, error)) int64 {
	t.Helper()
	var got int64
	ctx, cancel := context.WithTimeout(context.Background(), e.waitTimeout)
	defer cancel()
	err := wait(ctx, pollInterval, func(ctx context.Context) (bool, error) {
		p, err := read(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return false, nil
			}
			return false, err
		}
		got = p
		return p >= want, nil
	})
	if errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("testkit: %s is at position %d after %v, want >= %d", name, got, e.waitTimeout, want)
	}
	if err != nil {
		t.Fatalf("testkit: %s: read position: %v", name, err)
	}
	return got
}

// DeadLetters returns the dead letters matching q (all of them up to
// q.Limit, default 100), in id order.
func (e *Env) DeadLetters(t testing.TB, q txn.DeadLetterQuery) []txn.DeadLetter {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), e.waitTimeout)
	defer cancel()
	dls, err := e.store.DeadLetters(ctx, q)
	if err != nil {
		t.Fatalf("testkit: %v", fmt.Errorf("dead letters: %w", err))
	}
	return dls
}
