package txn_test

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/onceflow/onceflow/txn"
)

// A Postgres that accepts TCP connections but never answers (a network
// partition, a server stuck in recovery, a blackholing proxy). With
// connect_timeout in the DSN, pgx gives up with a *pgconn.ConnectError that
// wraps context.DeadlineExceeded, although the caller's context is still
// alive. That is a transient failure: the partition must retry, not halt.
// (Found by the chaos harness: cut_postgres in blackhole mode halted two
// partitions for good.)
func TestConnectTimeoutIsRetryable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close() // hold it open, say nothing
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pool, err := pgxpool.New(ctx, "postgres://postgres@"+ln.Addr().String()+"/db?sslmode=disable&connect_timeout=1")
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	_, err = txn.NewStore(pool).LookupResults(ctx, "t", []string{"c1"})
	if err == nil {
		t.Fatal("lookup against a silent server succeeded")
	}
	if ctx.Err() != nil {
		t.Fatalf("the caller's context expired first: %v", err)
	}
	if !txn.IsRetryable(err) {
		t.Fatalf("IsRetryable(%v) = false: a connect timeout halts the partition instead of retrying", err)
	}
}
