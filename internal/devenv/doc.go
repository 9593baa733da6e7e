// Package devenv is the embedded default environment of the samples, the
// dev-broker command and tests: a Kafka-protocol broker in the process
// (github.com/twmb/franz-go/pkg/kfake) and a private Postgres cluster
// (internal/pgcluster), both persisted under a local directory so state
// survives restarts.
//
// It is for development only. Production deployments point onceflow at real
// Kafka and Postgres; the framework packages (actor, txn, eventsource) never
// import this package or kfake.
package devenv
