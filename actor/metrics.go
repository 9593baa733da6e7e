package actor

import (
	"sync/atomic"
	"time"
)

// Stats is a snapshot of a Runtime's counters since it started.
type Stats struct {
	Batches         int64         // committed batch transactions
	Records         int64         // records committed (all outcomes)
	Events          int64         // events stored
	Accepted        int64         // commands accepted
	Rejected        int64         // commands rejected by Decide
	DeadLetters     int64         // records dead-lettered
	Duplicates      int64         // records whose command id had been handled before
	Fenced          int64         // commits rejected by the fence
	Halted          int64         // partitions halted on an unrecoverable error
	Assigned        int64         // partitions claimed
	Revoked         int64         // partitions revoked or lost
	Lost            int64         // of which lost (session expired)
	Loads           int64         // aggregates loaded from Postgres
	Passivations    int64         // aggregates passivated after WithPassivateAfter idle
	ReplyErrors     int64         // replies that failed to be produced
	CommitTimeSum   time.Duration // total time in Commit
	OwnedPartitions int           // partitions currently owned
	HaltedNow       int           // owned partitions currently halted
	// Misrouted counts records dead-lettered because their key maps to
	// another partition (a producer with another partitioner).
	Misrouted int64
	// VersionConflicts counts commits that found an aggregate version
	// already taken: another writer wrote one of the batch's aggregates
	// (a misconfigured producer or service). Each is handled by reloading
	// and deciding again; alert on it.
	VersionConflicts int64
	// SnapshotErrors counts snapshots refused because the state did not
	// survive the codec round trip (or could not be encoded).
	SnapshotErrors int64
	// RebalanceMax is the longest time spent in one rebalance callback.
	RebalanceMax time.Duration
	// Published counts events published to the history topic (repeats
	// after a crash included); PublishErrors failed publish attempts;
	// PublishLag the events stored but not yet published, over the owned
	// partitions.
	Published, PublishErrors, PublishLag int64
	// PublishTransactions counts committed Kafka transactions of the
	// publishers (Published / PublishTransactions is the events per
	// transaction).
	PublishTransactions int64
	// PublishedOutbox counts outbox records sent to their topics.
	PublishedOutbox int64
	// Applied counts events a projection applied; GapFilled the events it
	// read from the Postgres event store because the history topic lacked
	// them (retention, or a publisher gap: alert when it grows while the
	// topic's retention is unlimited).
	Applied, GapFilled int64
	// DeadlinesFired counts process-manager deadlines fired (committed);
	// DeadlineErrors OnDeadline failures (the deadline stays due).
	DeadlinesFired, DeadlineErrors int64
	// LiveAggregates is the number of aggregates held in memory now (their
	// actors running), over the owned partitions: bounded by about
	// WithMaxAggregates.
	LiveAggregates int64
	// Evictions counts aggregates passivated because their partition held
	// more than its share of WithMaxAggregates (least recently used
	// first; not counted in Passivations). Each costs a reload if the
	// aggregate gets another command: Loads growing with Evictions says
	// the cap is below the working set.
	Evictions int64
}

type metrics struct {
	batches, records, events                      atomic.Int64
	accepted, rejected, deadLetters, duplicates   atomic.Int64
	fenced, halted, assigned, revoked, lost       atomic.Int64
	loads, passivations, replyErrors, commitNanos atomic.Int64
	owned                                         atomic.Int64
	misrouted, conflicts, snapshotErrors          atomic.Int64
	rebalanceMaxNanos                             atomic.Int64
	published, publishErrors, publishTxns         atomic.Int64
	publishedOutbox                               atomic.Int64
	applied, gapFilled                            atomic.Int64
	deadlinesFired, deadlineErrors                atomic.Int64
	live, evictions                               atomic.Int64
}

func (m *metrics) observeRebalance(d time.Duration) {
	for {
		old := m.rebalanceMaxNanos.Load()
		if int64(d) <= old || m.rebalanceMaxNanos.CompareAndSwap(old, int64(d)) {
			return
		}
	}
}

func (m *metrics) observeCommit(records, events int, d time.Duration) {
	m.batches.Add(1)
	m.records.Add(int64(records))
	m.events.Add(int64(events))
	m.commitNanos.Add(int64(d))
}

func (m *metrics) countOutcome(s itemStatus) {
	switch s {
	case statusAccepted:
		m.accepted.Add(1)
	case statusRejected:
		m.rejected.Add(1)
	case statusDuplicate, statusBatchDuplicate:
		m.duplicates.Add(1)
	case statusDeadLetter:
		m.deadLetters.Add(1)
	}
}

func (m *metrics) snapshot() Stats {
	return Stats{
		Batches: m.batches.Load(), Records: m.records.Load(), Events: m.events.Load(),
		Accepted: m.accepted.Load(), Rejected: m.rejected.Load(), DeadLetters: m.deadLetters.Load(),
		Duplicates: m.duplicates.Load(), Fenced: m.fenced.Load(), Halted: m.halted.Load(),
		Assigned: m.assigned.Load(), Revoked: m.revoked.Load(), Lost: m.lost.Load(),
		Loads: m.loads.Load(), Passivations: m.passivations.Load(), ReplyErrors: m.replyErrors.Load(),
		CommitTimeSum: time.Duration(m.commitNanos.Load()), OwnedPartitions: int(m.owned.Load()),
		Misrouted: m.misrouted.Load(), VersionConflicts: m.conflicts.Load(),
		SnapshotErrors: m.snapshotErrors.Load(), RebalanceMax: time.Duration(m.rebalanceMaxNanos.Load()),
		Published: m.published.Load(), PublishErrors: m.publishErrors.Load(), PublishTransactions: m.publishTxns.Load(), PublishedOutbox: m.publishedOutbox.Load(),
		Applied: m.applied.Load(), GapFilled: m.gapFilled.Load(),
		DeadlinesFired: m.deadlinesFired.Load(), DeadlineErrors: m.deadlineErrors.Load(),
		LiveAggregates: m.live.Load(), Evictions: m.evictions.Load(),
	}
}
