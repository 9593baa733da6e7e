package testkit

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"strings"

	"github.com/onceflow/onceflow/devenv"
)

// startLocal starts the in-process broker and, unless a server URL was
// given, a private Postgres cluster from the installed binaries.
func (e *Env) startLocal(ctx context.Context, c *config) error {
	log := slog.New(slog.NewTextHandler(logfWriter(c.logf), &slog.HandlerOptions{Level: slog.LevelWarn}))
	b, err := devenv.StartBroker(ctx, devenv.BrokerOptions{Port: c.kafkaPort, Logger: log})
	if errors.Is(err, devenv.ErrPortInUse) {
		return envErr(ErrPortInUse, err, "choose another port with WithKafkaPort, or 0 for a free one", "the Kafka port %d is taken", c.kafkaPort)
	}
	if err != nil {
		return envErr(ErrKafkaUnavailable, err, "", "start the in-process Kafka broker")
	}
	e.onClose(func(context.Context) error { b.Close(); return nil })
	e.brokers = b.Addr()
	// The in-process broker does not do client telemetry; without this
	// every librdkafka client logs about it.
	e.kafkaConfig = map[string]string{"enable.metrics.push": "false"}

	if c.postgresURL != "" {
		return nil
	}
	// os.MkdirTemp, not t.TempDir: as root the server runs as user postgres,
	// which must be able to enter every parent directory.
	dir, err := os.MkdirTemp("", "testkit-pg-")
	if err != nil {
		return envErr(ErrPostgresUnavailable, err, "", "create a directory for the private Postgres cluster")
	}
	e.onClose(func(context.Context) error { return os.RemoveAll(dir) })
	pg, err := devenv.StartPostgres(ctx, devenv.PostgresOptions{Dir: dir, Port: c.postgresPort, Database: "onceflow", Logger: log})
	if err != nil {
		switch msg := err.Error(); {
		case strings.Contains(msg, "is in use"):
			return envErr(ErrPortInUse, err, "choose another port with WithPostgresPort, or 0 for a free one", "the Postgres port %d is taken", c.postgresPort)
		case strings.Contains(msg, "server binaries") && strings.Contains(msg, "not found"):
			return envErr(ErrPostgresUnavailable, err,
				"install the PostgreSQL server (apt-get install postgresql-15), or use Docker ("+EnvMode+"=docker), or set "+EnvDatabaseURL+" to a server",
				"the local environment needs the PostgreSQL server binaries")
		}
		return envErr(ErrPostgresUnavailable, err, "or set "+EnvDatabaseURL+" to a server, or use Docker ("+EnvMode+"=docker)", "start a private Postgres cluster in %s", dir)
	}
	e.onClose(pg.Close)
	e.dsn = pg.DSN()
	e.withDB, _ = dsnWithDatabase(e.dsn)
	e.adminDSN = e.withDB("postgres")
	return nil
}

// logfWriter adapts a Logf function to an io.Writer for slog handlers.
type logfWriter func(format string, args ...any)

func (w logfWriter) Write(p []byte) (int, error) {
	w("%s", strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
