package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/onceflow/onceflow/devenv"
)

func runDevBroker(ctx context.Context, args []string, e env) error {
	fs := newFlagSet("dev-broker", "Run an embedded Kafka-protocol broker (kfake) in the foreground until\ninterrupted. For development and tests only: use real Kafka in production.\nWith --data-dir, topics, records and group offsets survive restarts.", e)
	port := fs.Int("port", 9092, "port to listen on (0 picks one)")
	listen := fs.String("listen", "127.0.0.1", "interface to listen on (0.0.0.0 for all)")
	advertise := fs.String("advertise", "", "`host:port` clients are told to connect to (default: the listen address)")
	dataDir := fs.String("data-dir", ".onceflow/kafka", "persist state in this `dir`ectory; empty keeps it in memory")
	partitions := fs.Int("partitions", 12, "partitions of the topics created by --topics")
	topics := fs.String("topics", "", "comma-separated `topics` to create if missing")
	verbose := fs.Bool("v", false, "log every broker request")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *port < 0 || *port > 65535 {
		return usagef("--port must be in [0, 65535], got %d", *port)
	}
	if *partitions < 1 || *partitions > 10_000 {
		return usagef("--partitions must be in [1, 10000], got %d", *partitions)
	}
	var ts []string
	for _, t := range strings.Split(*topics, ",") {
		if t = strings.TrimSpace(t); t != "" {
			ts = append(ts, t)
		}
	}
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: level}))
	b, err := devenv.StartBroker(ctx, devenv.BrokerOptions{
		DataDir: *dataDir, Port: *port, ListenHost: *listen, Advertise: *advertise,
		Partitions: *partitions, Topics: ts, Logger: log,
	})
	if errors.Is(err, devenv.ErrPortInUse) {
		return fmt.Errorf("%w\n(pick another --port, or use the broker already there)", err)
	}
	if err != nil {
		return err
	}
	defer b.Close()
	where := "in memory"
	if *dataDir != "" {
		where = "in " + *dataDir
	}
	fmt.Fprintf(e.stdout, "Kafka-protocol broker listening on %s (state %s). Ctrl-C to stop.\n\n    export KAFKA_BROKERS=%s\n\n", b.Addr(), where, b.Addr())
	<-ctx.Done()
	fmt.Fprintln(e.stdout, "stopping broker")
	return nil
}
