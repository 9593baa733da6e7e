// Package testkit starts a real Kafka and a real Postgres for integration
// tests of onceflow services, and helps tests wait for what the runtime does
// asynchronously. A test of a service built on onceflow:
//
//	func TestReserve(t *testing.T) {
//		env := testkit.Start(t) // Kafka + Postgres with the schema migrated; removed when t ends
//		env.CreateTopic(t, "inventory.commands", 4)
//		env.CreateTopic(t, "inventory.commands.replies", 4)
//
//		agg, err := stock.NewAggregate()
//		if err != nil {
//			t.Fatal(err)
//		}
//		shared := []actor.SharedOption{actor.WithBrokers(env.Brokers()),
//			actor.WithKafkaConfig(env.KafkaConfig()), actor.WithTopic("inventory.commands")}
//		rt, err := actor.NewRuntime(agg, env.Pool(), shared[0], shared[1], shared[2])
//		if err != nil {
//			t.Fatal(err)
//		}
//		ctx, stop := context.WithCancel(context.Background())
//		done := make(chan error, 1)
//		go func() { done <- rt.Run(ctx) }()
//		t.Cleanup(func() { stop(); <-done }) // before the environment goes
//
//		client, err := actor.NewClient(ctx, agg.Registry, shared[0], shared[1], shared[2])
//		if err != nil {
//			t.Fatal(err)
//		}
//		defer client.Close()
//		_, err = client.Send(ctx, stock.ReceiveStock{Warehouse: "ams-1", SKU: "MUG", Qty: 10}, actor.WithCommandID("recv-1"))
//		if err != nil {
//			t.Fatal(err)
//		}
//
//		res := env.WaitOutcome(t, "recv-1") // the stored outcome, or the test fails after 30s
//		if res.Outcome != txn.OutcomeAccepted {
//			t.Fatalf("recv-1: %s %s", res.Outcome, res.Reason)
//		}
//	}
//
// Example (go doc -http, or pkgsite) runs two instances of the inventory
// sample against one environment over HTTP; samples/inventory/testkit_test.go
// does the same with the service's own main code.
//
// # Environments
//
// The main path runs containers through testcontainers-go: the official
// postgres image and apache/kafka (KRaft, one node) by default. Other images
// of the same shape are chosen with WithPostgresImage / WithKafkaImage or the
// environment variables ONCEFLOW_TEST_POSTGRES_IMAGE and
// ONCEFLOW_TEST_KAFKA_IMAGE. scripts/build-test-images.sh builds two such
// images for machines without a registry: onceflow/postgres:15-local (Debian
// packages, the official image's POSTGRES_* variables) and
// onceflow/devbroker:local (FROM scratch, onceflow's Kafka-protocol dev
// broker).
//
// A Kafka container is reached through a port Docker maps at random, but
// Kafka tells clients to connect to its advertised listener, which must be
// that mapped port. As the testcontainers Kafka module does, testkit starts
// the container with a command that waits for a starter file, reads the
// mapped port once the container runs, and copies host:port into the
// container; only then does the broker start. The apache/kafka flavour gets
// a shell starter script; the devbroker image (label
// org.onceflow.kafka-flavor=devbroker) has no shell and waits for the file
// itself (onceflow-devbroker -advertise-file).
//
// The local fallback needs no Docker: an in-process Kafka-protocol broker
// (kfake) and a private Postgres cluster started from the installed server
// binaries (postgresql-15). The mode comes from WithMode, else from
// ONCEFLOW_TESTENV:
//
//	docker  containers; fail with a clear error if Docker does not answer
//	local   the in-process broker and a private Postgres
//	auto    (or unset) docker if an engine answers and the images are present
//	        or pullable, else local, with a log line saying why
//
// ONCEFLOW_TEST_DATABASE_URL (or WithPostgresURL) uses an existing Postgres
// server in either mode: each Env gets a fresh database on it, dropped on
// Close.
//
// Images are pulled only when missing, once, bounded by WithPullTimeout.
// With Ryuk disabled (TESTCONTAINERS_RYUK_DISABLED=true, required where its
// image cannot be pulled) containers are still removed by Close; only a
// killed test process leaves them behind.
//
// # Failures
//
// A broken environment fails fast with an error that names the cause and the
// fix (an *EnvError): Docker not answering, an image that is neither present
// nor pullable, a host port already in use, Postgres refusing the
// connection, a container that exits during start-up. Nothing waits longer
// than WithStartTimeout (default 3 minutes; pulls have their own timeout).
//
// # Sharing
//
// Start ties one Env to one test. For a package whose tests share one Env,
// call New in TestMain and Close after m.Run, and give each test its own
// database with FreshDatabase and its own topics with CreateTopic.
package testkit
