package actor

import (
	"fmt"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"

	"github.com/onceflow/onceflow/eventsource"
	"github.com/onceflow/onceflow/txn"
)

// The partition pipeline, one batch at a time (partitionActor.process):
//
//	records ─ decodeBatch (pure) ─ markDuplicates (command_results) ─ load aggregates
//	        ─ decide (aggregate actors, in offset order per aggregate)
//	        ─ assembleBatch (pure: seqs, results, dead letters) ─ ONE fenced transaction (txn.Store.Commit)
//	        ─ after commit: publisher hand-off, hooks, replies
//
// decodeBatch and assembleBatch are pure functions of their inputs, tested
// without Kafka or Postgres (pipeline_test.go).

// routing is where a batch's records arrived and how keys map to
// partitions.
type routing struct {
	topic       string
	partition   int32
	partitions  int32 // the topic's partition count; 0 when unknown (no check)
	partitioner Partitioner
}

// misrouted returns why a record with key must not be handled on this
// partition, or "" when its key maps here. Handling it here would make this
// partition a second writer of an aggregate another partition owns.
func (r routing) misrouted(key []byte) string {
	if r.partitions <= 0 {
		return "" // count unknown (metadata failed): the version check at commit still guards
	}
	if want := r.partitioner.Partition(key, r.partitions); want != r.partition {
		return fmt.Sprintf("misrouted: aggregate %q arrived on partition %d of %q but belongs to partition %d (%s partitioner, %d partitions): its producer uses another partitioner or an explicit partition; produce it keyed by the aggregate id with the %s partitioner (or configure WithPartitioner to match the producers)",
			key, r.partition, r.topic, want, r.partitioner.Name, r.partitions, r.partitioner.Name)
	}
	return ""
}

// decodeBatch parses and decodes a batch's records, in order, into items:
// a pending command with its aggregate id, a dead letter with the reason
// (bad envelope, undecodable, key not the command's aggregate, misrouted),
// or a duplicate of an earlier record of the batch with the same command id.
// decode returns a command and its aggregate id.
func decodeBatch(recs []*kafka.Message, decode func(typeName string, data []byte) (any, string, error), rt routing) []*item {
	items := make([]*item, len(recs))
	seen := make(map[string]*item, len(recs))
	for i, m := range recs {
		it := &item{msg: m, offset: int64(m.TopicPartition.Offset)}
		items[i] = it
		env, err := parseEnvelope(m)
		it.env = env
		it.hasID = env.commandID != ""
		it.hash = requestHash(env.typeName, m.Value)
		if it.hasID {
			if first, ok := seen[env.commandID]; ok {
				it.status, it.dupOf = statusBatchDuplicate, first
				continue
			}
			seen[env.commandID] = it
		}
		if err != nil {
			it.status, it.reason = statusDeadLetter, err.Error()
			continue
		}
		cmd, aggID, err := decode(env.typeName, m.Value)
		if err != nil {
			it.status, it.reason = statusDeadLetter, fmt.Sprintf("decode command: %v", err)
			continue
		}
		if aggID != env.key {
			it.status, it.reason = statusDeadLetter, fmt.Sprintf("record key %q does not match the command's aggregate id %q", env.key, aggID)
			continue
		}
		if reason := rt.misrouted(m.Key); reason != "" {
			it.status, it.reason, it.misrouted = statusDeadLetter, reason, true
			continue
		}
		it.cmd, it.aggID = cmd, aggID
	}
	return items
}

// assembleBatch builds the contents of a decided batch's transaction, in
// record order: the accepted commands' events with gap-free seqs from
// claim.NextSeq (recorded on their items), one command result per record
// with a usable command id, and a dead letter with the raw record for each
// record that could not be handled. The claim's next offset moves past the
// last record.
func assembleBatch(claim txn.Claim, aggType string, items []*item, snaps []eventsource.Snapshot) *txn.Batch {
	key := claim.PartitionKey
	b := &txn.Batch{Claim: claim, Snapshots: snaps, NextOffset: items[len(items)-1].offset + 1}
	events := 0
	for _, it := range items {
		if it.status == statusAccepted {
			events += len(it.events)
		}
	}
	b.Events = make([]eventsource.StoredEvent, 0, events)
	b.Results = make([]txn.CommandResult, 0, len(items))
	seq := claim.NextSeq
	for _, it := range items {
		res := txn.CommandResult{CommandID: it.env.commandID, PartitionKey: key, Offset: it.offset, AggregateType: aggType, AggregateID: it.aggID, RequestHash: it.hash}
		switch it.status {
		case statusAccepted:
			if len(it.events) > 0 {
				it.firstSeq = seq
				for j, ev := range it.events {
					b.Events = append(b.Events, eventsource.StoredEvent{
						Topic: key.Topic, Partition: key.Partition, Seq: seq, AggregateType: aggType, AggregateID: it.aggID,
						Version: it.firstVersion + int64(j), Type: ev.typeName, Data: ev.data, CommandID: it.env.commandID,
					})
					seq++
				}
				it.lastSeq = seq - 1
			}
			res.Outcome, res.FirstVersion, res.LastVersion, res.FirstSeq, res.LastSeq = txn.OutcomeAccepted, it.firstVersion, it.lastVersion, it.firstSeq, it.lastSeq
			b.Results = append(b.Results, res)
		case statusRejected:
			res.Outcome, res.Reason = txn.OutcomeRejected, it.reason
			b.Results = append(b.Results, res)
		case statusDeadLetter:
			b.DeadLetters = append(b.DeadLetters, txn.DeadLetter{
				PartitionKey: key, Offset: it.offset, CommandID: it.env.commandID,
				Key: it.msg.Key, Value: it.msg.Value, Headers: headersMap(it.msg), Error: it.reason,
			})
			if it.hasID {
				res.Outcome, res.Reason = txn.OutcomeDeadLettered, it.reason
				b.Results = append(b.Results, res)
			}
		}
	}
	return b
}
