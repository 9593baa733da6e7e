package devenv

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
)

// BrokerOptions configures StartBroker.
type BrokerOptions struct {
	// DataDir persists topics, records, group offsets and producer state;
	// starting again on the same directory resumes where the last broker
	// stopped. Empty keeps everything in memory. Two brokers must never
	// share a DataDir.
	DataDir string
	// Port to listen on. 0 picks a free port.
	Port int
	// ListenHost is the interface to listen on. Default "127.0.0.1".
	ListenHost string
	// Advertise is the host:port given to clients in metadata responses,
	// for a broker reached through another address than it listens on (a
	// container, a port forward). Default: the listen address.
	Advertise string
	// Topics are created with Partitions partitions if they do not exist
	// (also on restart with a DataDir; existing topics keep their partition
	// count).
	Topics []string
	// Partitions of each created topic. Default 12.
	Partitions int
	// MinSessionTimeout is the smallest consumer group session timeout the
	// broker accepts. Default 100ms, so tests can use short sessions (a real
	// broker's default minimum is 6s).
	MinSessionTimeout time.Duration
	// Logger receives the broker's errors and warnings; its informational
	// messages (one per request) are logged at debug level. Default
	// slog.Default().
	Logger *slog.Logger
}

// Broker is a running embedded broker.
type Broker struct {
	c    *kfake.Cluster
	addr string
	log  *slog.Logger
}

// ErrPortInUse is returned by StartBroker when the port is taken, usually by
// another instance's embedded broker.
var ErrPortInUse = errors.New("devenv: broker port in use")

// StartBroker starts a single-broker Kafka-protocol cluster. ctx bounds the
// start-up only; the broker runs until Close.
func StartBroker(ctx context.Context, opts BrokerOptions) (*Broker, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.ListenHost == "" {
		opts.ListenHost = "127.0.0.1"
	}
	if opts.Partitions == 0 {
		opts.Partitions = 12
	}
	if opts.MinSessionTimeout == 0 {
		opts.MinSessionTimeout = 100 * time.Millisecond
	}
	var errs []error
	if opts.Port < 0 || opts.Port > 65535 {
		errs = append(errs, fmt.Errorf("port must be in [0, 65535], got %d", opts.Port))
	}
	if opts.Partitions < 1 || opts.Partitions > 10_000 {
		errs = append(errs, fmt.Errorf("partitions must be in [1, 10000], got %d", opts.Partitions))
	}
	if opts.Advertise != "" {
		if _, p, err := net.SplitHostPort(opts.Advertise); err != nil {
			errs = append(errs, fmt.Errorf("advertise %q: want host:port: %w", opts.Advertise, err))
		} else if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			errs = append(errs, fmt.Errorf("advertise %q: bad port", opts.Advertise))
		}
	}
	for _, t := range opts.Topics {
		if t == "" {
			errs = append(errs, errors.New("empty topic name"))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("devenv: broker options: %w", err)
	}

	kopts := []kfake.Opt{
		kfake.NumBrokers(1),
		kfake.Ports(opts.Port),
		kfake.GroupMinSessionTimeout(opts.MinSessionTimeout),
		kfake.DefaultNumPartitions(opts.Partitions),
		kfake.WithLogger(slogAdapter{opts.Logger}),
		kfake.ListenFn(func(network, address string) (net.Listener, error) {
			// kfake always asks for 127.0.0.1:port; honour ListenHost.
			_, port, err := net.SplitHostPort(address)
			if err != nil {
				return nil, err
			}
			ln, err := net.Listen(network, net.JoinHostPort(opts.ListenHost, port))
			if err != nil {
				if errors.Is(err, syscall.EADDRINUSE) {
					return nil, fmt.Errorf("%w: %s:%s (another broker, perhaps another instance's embedded one, listens there): %w", ErrPortInUse, opts.ListenHost, port, err)
				}
				return nil, err
			}
			if opts.Advertise != "" {
				return advertisedListener{Listener: ln, addr: advertisedAddr{network, opts.Advertise}}, nil
			}
			return ln, nil
		}),
	}
	if opts.DataDir != "" {
		if err := os.MkdirAll(opts.DataDir, 0o755); err != nil {
			return nil, fmt.Errorf("devenv: broker data dir: %w", err)
		}
		kopts = append(kopts, kfake.DataDir(opts.DataDir))
	}
	c, err := kfake.NewCluster(kopts...)
	if err != nil {
		return nil, fmt.Errorf("devenv: start broker: %w", err)
	}
	b := &Broker{c: c, addr: c.ListenAddrs()[0], log: opts.Logger}
	for _, t := range opts.Topics {
		if b.c.TopicInfo(t) != nil {
			continue
		}
		if err := b.c.CreateTopic(t, int32(opts.Partitions), nil); err != nil {
			c.Close()
			return nil, fmt.Errorf("devenv: create topic %q: %w", t, err)
		}
	}
	opts.Logger.Info("devenv: broker started", "addr", b.addr, "data_dir", opts.DataDir, "topics", opts.Topics)
	return b, nil
}

// Addr returns the bootstrap address clients should use (host:port).
func (b *Broker) Addr() string { return b.addr }

// Cluster returns the underlying kfake cluster, for tests that inject faults
// or inspect groups.
func (b *Broker) Cluster() *kfake.Cluster { return b.c }

// Partitions returns the partition count of topic, or 0 if it does not exist.
func (b *Broker) Partitions(topic string) int {
	return len(b.c.PartitionInfos(topic))
}

// Close stops the broker, writing its state to DataDir first if set.
// Connected clients see their connections drop. Safe to call twice.
func (b *Broker) Close() {
	b.c.Close()
	b.log.Info("devenv: broker stopped", "addr", b.addr)
}

// slogAdapter routes kfake's logs to slog. kfake logs every request at its
// Info level, so that goes to Debug.
type slogAdapter struct{ l *slog.Logger }

func (a slogAdapter) Logf(level kfake.LogLevel, format string, args ...any) {
	var l slog.Level
	switch level {
	case kfake.LogLevelError:
		l = slog.LevelError
	case kfake.LogLevelWarn:
		l = slog.LevelWarn
	case kfake.LogLevelNone:
		return
	default:
		l = slog.LevelDebug
	}
	ctx := context.Background()
	if !a.l.Enabled(ctx, l) {
		return
	}
	a.l.Log(ctx, l, "kfake: "+fmt.Sprintf(format, args...))
}

// advertisedListener reports addr instead of the bound address: kfake tells
// clients to connect to its listener's Addr().
type advertisedListener struct {
	net.Listener
	addr net.Addr
}

func (l advertisedListener) Addr() net.Addr { return l.addr }

type advertisedAddr struct{ network, s string }

func (a advertisedAddr) Network() string { return a.network }
func (a advertisedAddr) String() string  { return a.s }
