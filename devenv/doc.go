// Package devenv is onceflow's embedded development environment, for a
// service's own main (the samples use it) and for local tests: a
// Kafka-protocol broker in the process (github.com/twmb/franz-go/pkg/kfake)
// and a private Postgres cluster started from the installed server binaries,
// both persisted under a local directory so state survives restarts. A
// private cluster is stopped by a watchdog when the process that started it
// dies, even by SIGKILL.
//
//	b, err := devenv.StartBroker(ctx, devenv.BrokerOptions{DataDir: ".state/kafka"})
//	pg, err := devenv.StartPostgres(ctx, devenv.PostgresOptions{Dir: ".state/pg", Database: "app"})
//	// point the Runtime and Client at b.Addr() and pg.DSN()
//
// It is for development only. Production deployments point onceflow at real
// Kafka and Postgres; the framework packages (actor, txn, eventsource) never
// import this package or kfake.
package devenv
