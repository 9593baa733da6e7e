package chaos

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"
)

// malformed is a bad record for the command topic and what must become of it.
type malformed struct {
	kind    string
	key     []byte
	value   []byte
	headers map[string]string
	expect  string // "dead_letter", "rejected", or "refused" (the broker may refuse it; if not, a dead letter)
}

const (
	hdrID   = "onceflow-command-id"
	hdrType = "onceflow-command-type"
)

func malformedRecords(seed int64) []malformed {
	id := func(k string) string { return fmt.Sprintf("chaos-bad-%d-%s", seed, k) }
	h := func(k, typ string) map[string]string { return map[string]string{hdrID: id(k), hdrType: typ} }
	key := []byte("zz-bad/SKU-00")
	good := []byte(`{"warehouse":"zz-bad","sku":"SKU-00","qty":1}`)
	return []malformed{
		{kind: "garbage_value", key: key, value: []byte("\xff\x00garbage{"), headers: h("garbage", "inventory.ReceiveStock"), expect: "dead_letter"},
		{kind: "empty_key", key: nil, value: good, headers: h("emptykey", "inventory.ReceiveStock"), expect: "dead_letter"},
		{kind: "unknown_type", key: key, value: good, headers: h("unknown", "inventory.Teleport"), expect: "dead_letter"},
		{kind: "missing_headers", key: key, value: good, headers: nil, expect: "dead_letter"},
		{kind: "missing_type_header", key: key, value: good, headers: map[string]string{hdrID: id("notype")}, expect: "dead_letter"},
		{kind: "key_mismatch", key: []byte("zz-bad/SKU-99"), value: good, headers: h("mismatch", "inventory.ReceiveStock"), expect: "dead_letter"},
		{kind: "invalid_utf8_key", key: []byte("zz-bad/\xff\xfe"), value: good, headers: h("badkey", "inventory.ReceiveStock"), expect: "dead_letter"},
		{kind: "oversized_command_id", key: key, value: good, headers: map[string]string{hdrID: strings.Repeat("x", 300), hdrType: "inventory.ReceiveStock"}, expect: "dead_letter"},
		{kind: "unknown_field", key: key, value: []byte(`{"warehouse":"zz-bad","sku":"SKU-00","qty":1,"qtty":2}`), headers: h("field", "inventory.ReceiveStock"), expect: "dead_letter"},
		{kind: "invalid_command", key: []byte("zz-bad/SKU-00"), value: []byte(`{"warehouse":"zz-bad","sku":"SKU-00","reservation_id":"r","qty":-5}`), headers: h("invalid", "inventory.Reserve"), expect: "rejected"},
		// Near the broker's default message.max.bytes (1048588): a valid
		// envelope around ~900 KB of JSON the decoder refuses.
		{kind: "huge_payload", key: key, value: []byte(`{"warehouse":"zz-bad","sku":"SKU-00","qty":1,"pad":"` + strings.Repeat("p", 900_000) + `"}`), headers: h("huge", "inventory.ReceiveStock"), expect: "dead_letter"},
		// Beyond it: the broker refuses it, a clear rejection at produce time.
		{kind: "too_large", key: key, value: []byte(strings.Repeat("q", 1_200_000)), headers: h("toolarge", "inventory.ReceiveStock"), expect: "refused"},
	}
}

// inject produces the malformed records straight to the command topic (not
// through any instance) and returns where each landed.
func inject(ctx context.Context, brokers string, seed int64) ([]Injected, error) {
	p, err := kafka.NewProducer(&kafka.ConfigMap{
		"bootstrap.servers": brokers, "enable.metrics.push": false, "partitioner": "murmur2_random",
		"message.max.bytes": 4_000_000, "message.timeout.ms": 60_000, "enable.idempotence": true, "acks": "all",
	})
	if err != nil {
		return nil, err
	}
	defer p.Close()
	go func() {
		for range p.Events() {
		}
	}()
	topic := commandTopic
	var out []Injected
	for _, m := range malformedRecords(seed) {
		in := Injected{Kind: m.kind, CommandID: m.headers[hdrID], Expect: m.expect}
		if !usableID(in.CommandID) {
			in.CommandID = ""
		}
		var hs []kafka.Header
		for k, v := range m.headers {
			hs = append(hs, kafka.Header{Key: k, Value: []byte(v)})
		}
		dr := make(chan kafka.Event, 1)
		msg := &kafka.Message{TopicPartition: kafka.TopicPartition{Topic: &topic, Partition: kafka.PartitionAny}, Key: m.key, Value: m.value, Headers: hs}
		if m.key == nil {
			// An empty key would be spread by the partitioner; pin it.
			msg.TopicPartition.Partition = 0
		}
		if err := p.Produce(msg, dr); err != nil {
			in.ProduceErr = err.Error()
			out = append(out, in)
			continue
		}
		select {
		case ev := <-dr:
			r := ev.(*kafka.Message)
			if r.TopicPartition.Error != nil {
				in.ProduceErr = r.TopicPartition.Error.Error()
			} else {
				in.Partition, in.Offset = r.TopicPartition.Partition, int64(r.TopicPartition.Offset)
			}
		case <-time.After(90 * time.Second):
			return out, fmt.Errorf("inject %s: no delivery report within 90s", m.kind)
		case <-ctx.Done():
			return out, ctx.Err()
		}
		out = append(out, in)
	}
	return out, nil
}
