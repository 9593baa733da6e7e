package actor

import (
	"fmt"
	"hash/crc32"
)

// Partitioner maps a record key (an aggregate id) to a partition of the
// command topic. The Runtime and every producer of the command topic must
// agree on it: a partition handles only the records whose key maps to it, so
// that each aggregate has exactly one writer. A record that arrives on
// another partition (a producer with another partitioner, a record produced
// to an explicit partition) is dead-lettered with a reason naming the
// aggregate, the partition it arrived on and the one it belongs to.
//
// Pass the same Partitioner to the Runtime and the Client with
// WithPartitioner (a SharedOption). The default is Murmur2, the Java
// client's default, which most Kafka clients can be configured to use.
type Partitioner struct {
	// Name identifies the partitioner in errors and logs.
	Name string
	// Librdkafka is the librdkafka "partitioner" property that places
	// keys the same way, used by the Client's producer. Empty: the Client
	// computes the partition itself with Partition.
	Librdkafka string
	// Partition returns the partition of key among partitions (> 0). It
	// must be deterministic and return a value in [0, partitions).
	Partition func(key []byte, partitions int32) int32
}

var (
	// Murmur2 is the Java client's default partitioner (murmur2 of the key,
	// sign bit cleared, modulo the partition count); librdkafka's
	// "murmur2" / "murmur2_random", franz-go's StickyKeyPartitioner, and
	// the default of kafka-clients. The default.
	Murmur2 = Partitioner{Name: "murmur2", Librdkafka: "murmur2_random", Partition: murmur2Partition}
	// CRC32 is librdkafka's default partitioner ("consistent_random":
	// CRC-32 of the key modulo the partition count), which kcat, the
	// confluent-kafka Python, Go and .NET clients and node-rdkafka use
	// unless configured otherwise.
	CRC32 = Partitioner{Name: "crc32", Librdkafka: "consistent_random", Partition: crc32Partition}
)

// WithPartitioner sets how keys map to partitions (default Murmur2). The
// Runtime dead-letters records that arrived on another partition than the
// one their key maps to; the Client places records with it. Give both the
// same value, and configure any other producer of the command topic alike.
func WithPartitioner(p Partitioner) Option {
	return option(func(c *config) { c.partitioner = p })
}

func (p Partitioner) validate() error {
	if p.Name == "" || p.Partition == nil {
		return fmt.Errorf("WithPartitioner: a Partitioner needs a Name and a Partition func (use actor.Murmur2, actor.CRC32 or build one)")
	}
	return nil
}

// murmur2Partition is Kafka's Utils.toPositive(Utils.murmur2(key)) %
// partitions.
func murmur2Partition(key []byte, partitions int32) int32 {
	return int32(murmur2(key)&0x7fffffff) % partitions
}

// murmur2 is the 32-bit MurmurHash2 with Kafka's seed, as in the Java
// client's org.apache.kafka.common.utils.Utils.murmur2.
func murmur2(data []byte) uint32 {
	const (
		seed = 0x9747b28c
		m    = 0x5bd1e995
		r    = 24
	)
	n := len(data)
	h := uint32(seed) ^ uint32(n)
	for i := 0; i+4 <= n; i += 4 {
		k := uint32(data[i]) | uint32(data[i+1])<<8 | uint32(data[i+2])<<16 | uint32(data[i+3])<<24
		k *= m
		k ^= k >> r
		k *= m
		h *= m
		h ^= k
	}
	tail := data[n&^3:]
	switch len(tail) {
	case 3:
		h ^= uint32(tail[2]) << 16
		fallthrough
	case 2:
		h ^= uint32(tail[1]) << 8
		fallthrough
	case 1:
		h ^= uint32(tail[0])
		h *= m
	}
	h ^= h >> 13
	h *= m
	h ^= h >> 15
	return h
}

// crc32Partition is librdkafka's consistent partitioner: rd_crc32(key) %
// partitions (CRC-32, IEEE polynomial, as zlib).
func crc32Partition(key []byte, partitions int32) int32 {
	return int32(crc32.ChecksumIEEE(key) % uint32(partitions))
}
