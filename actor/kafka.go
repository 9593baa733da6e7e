package actor

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"
)

func baseConfig(c *config) kafka.ConfigMap {
	m := kafka.ConfigMap{
		"bootstrap.servers": c.brokers,
		// KIP-714 client metrics push: useless without a collector, and
		// some brokers log about it on every connection.
		"enable.metrics.push": false,
	}
	for k, v := range c.kafka {
		m[k] = v
	}
	return m
}

func consumerConfig(c *config) *kafka.ConfigMap {
	m := baseConfig(c)
	m["group.id"] = c.group
	m["client.id"] = c.instanceID
	// Postgres holds the consumed offsets. Kafka's group offsets only
	// mirror them for lag dashboards: the runtime stores an offset after
	// its batch committed in Postgres and librdkafka commits stored offsets
	// in the background. On assignment the runtime always starts from the
	// offset in Postgres, never from Kafka's.
	m["enable.auto.commit"] = true
	m["enable.auto.offset.store"] = false
	m["auto.offset.reset"] = "earliest"
	m["enable.partition.eof"] = false
	switch c.protocol {
	case ProtocolConsumer:
		m["group.protocol"] = "consumer"
	default:
		m["partition.assignment.strategy"] = "cooperative-sticky"
	}
	return &m
}

// consumerOnly are librdkafka consumer properties that a producer would warn
// about when WithKafkaConfig passes them to every client.
var consumerOnly = []string{
	"session.timeout.ms", "heartbeat.interval.ms", "max.poll.interval.ms", "group.protocol",
	"partition.assignment.strategy", "group.instance.id", "auto.offset.reset", "fetch.min.bytes",
	"fetch.wait.max.ms", "fetch.max.bytes", "max.partition.fetch.bytes", "queued.min.messages",
	"queued.max.messages.kbytes", "auto.commit.interval.ms", "check.crcs", "group.remote.assignor",
}

func producerConfig(c *config) *kafka.ConfigMap {
	m := baseConfig(c)
	producerChannels(m)
	for _, k := range consumerOnly {
		delete(m, k)
	}
	m["enable.idempotence"] = true
	m["acks"] = "all"
	// The partitioner the Runtime checks records against (WithPartitioner;
	// murmur2, the Java client's default, unless set): a record keyed by an
	// aggregate id lands on the partition that owns the aggregate. Without a
	// librdkafka equivalent the Client sets each record's partition itself.
	if c.partitioner.Librdkafka != "" {
		m["partitioner"] = c.partitioner.Librdkafka
	}
	if _, ok := m["linger.ms"]; !ok {
		// Measured on the 2-core box (docs/benchmarks.md): 2ms put a
		// command's Send->outcome p50 at 8ms at 200 commands/s (two
		// produces on the path), 0 cost 30% of the batched throughput in
		// produce requests, 0.5 gives p50 ~5ms at the same throughput.
		m["linger.ms"] = "0.5"
	}
	if _, ok := m["go.delivery.report.fields"]; !ok {
		// Both producers (commands, replies) act only on whether a
		// delivery failed, and on the record's opaque value: copying
		// each report's key and value out of C would be wasted.
		m["go.delivery.report.fields"] = "none"
	}
	return &m
}

// ensureTopics creates the topics that do not exist yet.
func ensureTopics(ctx context.Context, c *config, topics ...string) error {
	specs := make([]kafka.TopicSpecification, 0, len(topics))
	for _, t := range topics {
		specs = append(specs, kafka.TopicSpecification{Topic: t, NumPartitions: c.createTopic, ReplicationFactor: -1})
	}
	return createTopics(ctx, c, specs)
}

// createTopics creates the topics of specs that do not exist yet.
func createTopics(ctx context.Context, c *config, specs []kafka.TopicSpecification) error {
	topics := make([]string, len(specs))
	for i, s := range specs {
		topics[i] = s.Topic
	}
	m := baseConfig(c)
	admin, err := kafka.NewAdminClient(&m)
	if err != nil {
		return fmt.Errorf("onceflow: kafka admin client: %w", err)
	}
	defer admin.Close()
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	res, err := admin.CreateTopics(cctx, specs)
	if err != nil {
		return fmt.Errorf("onceflow: create topics %v on %s: %w", topics, c.brokers, err)
	}
	var errs []error
	for _, r := range res {
		if r.Error.Code() != kafka.ErrNoError && r.Error.Code() != kafka.ErrTopicAlreadyExists {
			errs = append(errs, fmt.Errorf("create topic %q: %w", r.Topic, r.Error))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("onceflow: %w", err)
	}
	return nil
}

// randomID returns 32 hex characters from crypto/rand.
func randomID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
