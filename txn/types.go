package txn

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/onceflow/onceflow/eventsource"
)

// PartitionKey names one partition of one topic as consumed by one group.
type PartitionKey struct {
	Group     string
	Topic     string
	Partition int32
}

// Claim is a partition's claim row: who owns it, at which epoch, and where
// its next batch starts.
type Claim struct {
	PartitionKey
	Epoch      int64
	Owner      string
	NextOffset int64 // Kafka offset to consume next
	NextSeq    int64 // next gap-free event seq of the partition
	ClaimedAt  time.Time
	// HaltedAt is set while the partition is halted (see Store.Halt);
	// HaltReason says why. A new claim and Store.Resume clear both.
	HaltedAt   *time.Time
	HaltReason string
	// PublishedSeq is the last event seq of the partition published to
	// Kafka (history and state topics); 0 when none.
	PublishedSeq int64
	// NextOutboxSeq is the next gap-free outbox seq of the partition;
	// PublishedOutboxSeq the last one sent to Kafka (0 when none).
	NextOutboxSeq      int64
	PublishedOutboxSeq int64
}

// OutboxRecord is a record a handler produced in a batch's transaction, to
// be sent to Topic after commit by the partition's publisher, in Seq order.
type OutboxRecord struct {
	SourceTopic     string // the writer's command topic and partition
	SourcePartition int32
	Seq             int64 // gap-free per source partition, from Claim.NextOutboxSeq
	Topic           string
	Key, Value      []byte
	Headers         map[string]string
	RecordedAt      time.Time
}

// Outcome is how a command ended.
type Outcome string

const (
	// OutcomeAccepted: Decide returned events (possibly none); they are stored.
	OutcomeAccepted Outcome = "accepted"
	// OutcomeRejected: Decide returned an error; Reason holds it. Nothing else changed.
	OutcomeRejected Outcome = "rejected"
	// OutcomeDeadLettered: the record could not be handled (undecodable, or
	// the handler panicked); it is in dead_letters and Reason says why.
	OutcomeDeadLettered Outcome = "dead_lettered"
)

// CommandResult is the stored outcome of one command id.
type CommandResult struct {
	CommandID string
	PartitionKey
	Offset        int64
	AggregateType string
	AggregateID   string
	Outcome       Outcome
	FirstVersion  int64 // versions and seqs of the events written; 0 when none
	LastVersion   int64
	FirstSeq      int64
	LastSeq       int64
	Reason        string
	// RequestHash is the digest of the command's type name and payload
	// (see RequestHash); nil when unknown (rows written before migration 3,
	// or records without a usable payload). A resend of the command id whose
	// digest differs is a different request under a reused id.
	RequestHash []byte
	RecordedAt  time.Time
}

// DeadLetter is a record that could not be handled, with its raw bytes.
type DeadLetter struct {
	ID int64
	PartitionKey
	// Offset is the record's Kafka offset; for an event a consumer read
	// from the event store instead of its topic, minus the event's seq.
	Offset     int64
	CommandID  string // "" when the record had none
	Key        []byte
	Value      []byte
	Headers    map[string]string
	Error      string
	RecordedAt time.Time
}

// Batch is everything one partition's batch writes, in one transaction.
type Batch struct {
	// Claim is the writer's claim as of the start of this batch: its key and
	// epoch, and the NextOffset and NextSeq it expects to find. Commit fences
	// on all three.
	Claim Claim
	// NextOffset is the offset after the batch's last record. It must be
	// greater than Claim.NextOffset.
	NextOffset int64
	// Events to append. Their Seq must run Claim.NextSeq, Claim.NextSeq+1, ...
	// and their Partition must be Claim.Partition.
	Events []eventsource.StoredEvent
	// Snapshots to upsert, at most one per aggregate.
	Snapshots []eventsource.Snapshot
	// Results, one per command id handled in this batch.
	Results []CommandResult
	// DeadLetters of this batch.
	DeadLetters []DeadLetter
	// NextSeq, when not zero, is where the claim's next_seq moves for a
	// batch that stores no events: the position of a consumer of a history
	// topic (a projection, a process manager), which is the next source seq
	// it applies. It must not be below Claim.NextSeq, and a batch with
	// Events must leave it zero (their seqs move next_seq).
	NextSeq int64
	// Outbox records to send after commit. Their Seq must run
	// Claim.NextOutboxSeq, +1, ... (SourceTopic and SourcePartition may be
	// left empty: the claim's).
	Outbox []OutboxRecord
	// InTx, when set, runs inside the transaction after the fenced offset
	// update and the writes above, just before COMMIT (for inline read
	// models). It runs only when the fence held, so it never does work for
	// a zombie. An error rolls the whole batch back.
	InTx func(ctx context.Context, tx pgx.Tx) error
	// Emit, when set, runs inside the transaction after InTx and returns
	// outbox records the handler produced there (a process manager's
	// commands, which depend on state it read through tx). Commit numbers
	// them after Outbox (their Seq is ignored) and moves next_outbox_seq
	// past them, in the same transaction. Committed.NextOutboxSeq includes
	// them. An error rolls the whole batch back.
	Emit func(ctx context.Context, tx pgx.Tx) ([]OutboxRecord, error)
	// Timer marks a batch that consumes no record and moves no position (a
	// consumer's fired deadlines): NextOffset may equal the claim's. It is
	// still fenced on the claim like any batch.
	Timer bool
}

// NextSeqAfter is the claim's next_seq once the batch committed: NextSeq
// when set, else Claim.NextSeq plus the number of events.
func (b *Batch) NextSeqAfter() int64 {
	if b.NextSeq != 0 {
		return b.NextSeq
	}
	return b.Claim.NextSeq + int64(len(b.Events))
}

// Deadline is a process manager's scheduled timeout (see ScheduleTx).
type Deadline struct {
	Process string       // the process manager's name
	ID      string       // unique per process manager
	Key     PartitionKey // the claim key whose owner fires it
	DueAt   time.Time
	Payload []byte
}

// Committed is the claim position after a successful Commit.
type Committed struct {
	NextOffset    int64
	NextSeq       int64
	NextOutboxSeq int64
}

// DeadLetterQuery selects dead letters; zero fields match everything.
type DeadLetterQuery struct {
	Group   string
	Topic   string
	AfterID int64 // return rows with id > AfterID
	Limit   int   // 0 means 100
}
