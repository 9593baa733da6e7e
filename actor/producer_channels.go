package actor

import "github.com/confluentinc/confluent-kafka-go/v2/kafka"

// producerChannels sizes the Go channels confluent-kafka-go allocates for a
// producer, unless WithKafkaConfig sets them. Its defaults (1,000,000 each)
// make every producer allocate 24 MB of Go heap up front: a 16 MB Events()
// buffer and an 8 MB ProduceChannel() buffer. A Runtime has one producer for
// replies and one per owned partition for publishing, so with 12 partitions
// that was 312 MB of live heap doing nothing, which also doubled the heap
// the garbage collector lets grow before it runs (docs/benchmarks.md,
// "Memory per live aggregate"). onceflow never uses ProduceChannel, and
// reads Events() in a goroutine of its own, so a small buffer only bounds
// how far the delivery reports may run ahead of that reader (librdkafka
// queues the rest).
func producerChannels(m kafka.ConfigMap) {
	if _, ok := m["go.events.channel.size"]; !ok {
		m["go.events.channel.size"] = 10_000
	}
	if _, ok := m["go.produce.channel.size"]; !ok {
		m["go.produce.channel.size"] = 16
	}
}
