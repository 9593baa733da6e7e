// Command onceflow-devbroker runs the embedded Kafka-protocol broker (kfake,
// via internal/devenv) as a stand-alone process, for container images: it is
// pure Go (CGO_ENABLED=0 gives a static binary for a FROM scratch image) and
// takes its advertised address from configuration.
//
//	onceflow-devbroker [flags]
//
//	-listen          ONCEFLOW_LISTEN          interface (0.0.0.0)
//	-port            ONCEFLOW_PORT            port (9092)
//	-advertise       ONCEFLOW_ADVERTISE       host:port told to clients
//	-advertise-file  ONCEFLOW_ADVERTISE_FILE  wait for this file, read host:port from it
//	-wait            ONCEFLOW_ADVERTISE_WAIT  how long to wait for the file (2m)
//	-partitions      ONCEFLOW_PARTITIONS      partitions of auto-created topics (12)
//	-topics          ONCEFLOW_TOPICS          comma-separated topics to create
//	-data-dir        ONCEFLOW_DATA_DIR        persist state here; empty: memory
//
// A container reached through a mapped port must tell clients the host side
// of the mapping, which is only known once the container runs. As with the
// testcontainers Kafka module's starter script, the broker then waits for
// -advertise-file: the test harness copies host:mappedPort into the
// container and the broker starts listening only after that. Without a
// shell in the image the wait has to live in the binary, hence this flag.
//
// For development and tests only; production uses real Kafka. `onceflow
// dev-broker` is the developer's equivalent on the host.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/onceflow/onceflow/devenv"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, os.Args[1:], os.Getenv, os.Stderr, nil)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "onceflow-devbroker:", err)
		os.Exit(1)
	}
}

type config struct {
	listen, advertise, advertiseFile, dataDir string
	port, partitions                          int
	wait                                      time.Duration
	topics                                    []string
}

func parseConfig(args []string, getenv func(string) string, stderr io.Writer) (config, error) {
	env := func(k, def string) string {
		if v := strings.TrimSpace(getenv(k)); v != "" {
			return v
		}
		return def
	}
	var errs []error
	envInt := func(k string, def int) int {
		v := env(k, "")
		if v == "" {
			return def
		}
		n, err := strconv.Atoi(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s=%q: not an integer", k, v))
		}
		return n
	}
	wait := 2 * time.Minute
	if v := env("ONCEFLOW_ADVERTISE_WAIT", ""); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("ONCEFLOW_ADVERTISE_WAIT=%q: %w", v, err))
		}
		wait = d
	}
	var c config
	var topics string
	fs := flag.NewFlagSet("onceflow-devbroker", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.listen, "listen", env("ONCEFLOW_LISTEN", "0.0.0.0"), "interface to listen on (env ONCEFLOW_LISTEN)")
	fs.IntVar(&c.port, "port", envInt("ONCEFLOW_PORT", 9092), "port to listen on (env ONCEFLOW_PORT)")
	fs.StringVar(&c.advertise, "advertise", env("ONCEFLOW_ADVERTISE", ""), "`host:port` clients are told to connect to (env ONCEFLOW_ADVERTISE); default the listen address")
	fs.StringVar(&c.advertiseFile, "advertise-file", env("ONCEFLOW_ADVERTISE_FILE", ""), "wait for this `file` and advertise the host:port it holds (env ONCEFLOW_ADVERTISE_FILE)")
	fs.DurationVar(&c.wait, "wait", wait, "how long to wait for -advertise-file (env ONCEFLOW_ADVERTISE_WAIT)")
	fs.IntVar(&c.partitions, "partitions", envInt("ONCEFLOW_PARTITIONS", 12), "partitions of created topics (env ONCEFLOW_PARTITIONS)")
	fs.StringVar(&topics, "topics", env("ONCEFLOW_TOPICS", ""), "comma-separated `topics` to create (env ONCEFLOW_TOPICS)")
	fs.StringVar(&c.dataDir, "data-dir", env("ONCEFLOW_DATA_DIR", ""), "persist state in this `dir`ectory; empty keeps it in memory (env ONCEFLOW_DATA_DIR)")
	if err := fs.Parse(args); err != nil {
		return config{}, err
	}
	if fs.NArg() > 0 {
		errs = append(errs, fmt.Errorf("unexpected argument %q", fs.Arg(0)))
	}
	for _, t := range strings.Split(topics, ",") {
		if t = strings.TrimSpace(t); t != "" {
			c.topics = append(c.topics, t)
		}
	}
	if c.advertise != "" && c.advertiseFile != "" {
		errs = append(errs, errors.New("-advertise and -advertise-file are exclusive"))
	}
	if c.wait <= 0 {
		errs = append(errs, fmt.Errorf("-wait must be positive, got %v", c.wait))
	}
	return c, errors.Join(errs...)
}

// run starts the broker and serves until ctx ends. ready, if set, gets the
// advertised address once the broker listens.
func run(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer, ready func(addr string)) error {
	c, err := parseConfig(args, getenv, stderr)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	if c.advertiseFile != "" {
		log.Info("waiting for the advertised address", "file", c.advertiseFile, "timeout", c.wait)
		if c.advertise, err = waitForFile(ctx, c.advertiseFile, c.wait); err != nil {
			return err
		}
	}
	b, err := devenv.StartBroker(ctx, devenv.BrokerOptions{
		DataDir: c.dataDir, Port: c.port, ListenHost: c.listen, Advertise: c.advertise,
		Partitions: c.partitions, Topics: c.topics, Logger: log,
	})
	if err != nil {
		return err
	}
	defer b.Close()
	// testkit and scripts wait for this line.
	log.Info("broker ready", "listen", net.JoinHostPort(c.listen, strconv.Itoa(c.port)), "advertise", b.Addr())
	if ready != nil {
		ready(b.Addr())
	}
	<-ctx.Done()
	return nil
}

// waitForFile polls for path until it holds a line "host:port\n", ctx ends
// or timeout passes. There is nothing to subscribe to in a FROM scratch
// container, so it polls (every 20ms: the harness is waiting on us). The
// trailing newline marks a complete write: a half-extracted file is read
// again rather than misread.
func waitForFile(ctx context.Context, path string, timeout time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	last := "(no file)"
	for {
		b, err := os.ReadFile(path)
		switch {
		case err == nil:
			last = fmt.Sprintf("%q", b)
			if addr, ok := strings.CutSuffix(string(b), "\n"); ok {
				addr = strings.TrimSpace(addr)
				if _, _, err := net.SplitHostPort(addr); err != nil {
					return "", fmt.Errorf("advertise file %s holds %q: want host:port: %w", path, addr, err)
				}
				return addr, nil
			}
		case !errors.Is(err, os.ErrNotExist):
			return "", fmt.Errorf("advertise file: %w", err)
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("no advertised address: %s did not get a complete \"host:port\\n\" line within %v (last seen: %s); the harness writes host:mappedPort there after the container starts; use -advertise for a fixed port mapping", path, timeout, last)
		case <-tick.C:
		}
	}
}
