package devenv_test

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/onceflow/onceflow/devenv"
)

var quiet = slog.New(slog.DiscardHandler)

func TestBrokerPersistsAcrossRestarts(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dir := t.TempDir()

	b, err := devenv.StartBroker(ctx, devenv.BrokerOptions{DataDir: dir, Topics: []string{"a"}, Partitions: 3, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	if n := b.Partitions("a"); n != 3 {
		t.Fatalf("topic a has %d partitions, want 3", n)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(b.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "a", Partition: 0, Value: []byte("kept")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	cl.Close()
	b.Close()
	b.Close() // idempotent

	// Same dir, more topics: a keeps its record and partitions, b is created.
	b, err = devenv.StartBroker(ctx, devenv.BrokerOptions{DataDir: dir, Topics: []string{"a", "b"}, Partitions: 5, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if got := [2]int{b.Partitions("a"), b.Partitions("b")}; got != [2]int{3, 5} {
		t.Fatalf("partitions after restart = %v, want [3 5]", got)
	}
	cl, err = kgo.NewClient(kgo.SeedBrokers(b.Addr()), kgo.ConsumeTopics("a"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	for {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("record not found after restart: %v", err)
		}
		for _, e := range fs.Errors() {
			t.Logf("fetch error: %v", e.Err)
		}
		if recs := fs.Records(); len(recs) > 0 {
			if string(recs[0].Value) != "kept" {
				t.Fatalf("record %q, want kept", recs[0].Value)
			}
			return
		}
	}
}

func TestBrokerPortInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	_, err = devenv.StartBroker(context.Background(), devenv.BrokerOptions{Port: port, Logger: quiet})
	if !errors.Is(err, devenv.ErrPortInUse) {
		t.Fatalf("StartBroker on a taken port = %v, want ErrPortInUse", err)
	}
}

func TestBrokerAdvertise(t *testing.T) {
	b, err := devenv.StartBroker(context.Background(), devenv.BrokerOptions{Advertise: "kafka.example:9092", Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if b.Addr() != "kafka.example:9092" {
		t.Fatalf("Addr = %q", b.Addr())
	}
}

func TestBrokerOptionsValidated(t *testing.T) {
	_, err := devenv.StartBroker(context.Background(), devenv.BrokerOptions{Port: -1, Partitions: -2, Advertise: "nohost", Topics: []string{""}, Logger: quiet})
	if err == nil {
		t.Fatal("bad options accepted")
	}
	t.Log(err)
}

func TestPostgresStartAdoptClose(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a Postgres cluster")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// Not t.TempDir: as root the server runs as the postgres user, which
	// must be able to enter every parent directory.
	dir, err := os.MkdirTemp("", "devenv-pg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	pg, err := devenv.StartPostgres(ctx, devenv.PostgresOptions{Dir: dir, Database: "inv", Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Close(context.Background())
	if pg.Adopted() {
		t.Fatal("a fresh cluster reports Adopted")
	}
	ping := func(dsn string) {
		t.Helper()
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		var db string
		if err := conn.QueryRow(ctx, "SELECT current_database()").Scan(&db); err != nil || db != "inv" {
			t.Fatalf("current_database = %q, %v", db, err)
		}
	}
	ping(pg.DSN())

	// A second start on the same dir adopts the running server, and its
	// Close leaves it running for the owner.
	pg2, err := devenv.StartPostgres(ctx, devenv.PostgresOptions{Dir: dir, Database: "inv", Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	if !pg2.Adopted() || pg2.DSN() != pg.DSN() {
		t.Fatalf("second start: adopted=%v dsn %q vs %q", pg2.Adopted(), pg2.DSN(), pg.DSN())
	}
	if err := pg2.Close(ctx); err != nil {
		t.Fatal(err)
	}
	ping(pg.DSN())
	if err := pg.Close(ctx); err != nil {
		t.Fatal(err)
	}
}
