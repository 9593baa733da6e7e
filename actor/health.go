package actor

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"

	"github.com/onceflow/onceflow/txn"
)

// PartitionState is what a Runtime is doing with a partition Kafka assigned
// to it.
type PartitionState string

const (
	// PartitionRunning: claimed in Postgres and consuming.
	PartitionRunning PartitionState = "running"
	// PartitionClaiming: assigned by Kafka, the Postgres claim not yet
	// taken (retried with backoff; Error says why the last attempt failed).
	PartitionClaiming PartitionState = "claiming"
	// PartitionHalted: stopped on an error it cannot get past (failure
	// policy Halt, a non-retryable error); HaltReason says why. Nothing is
	// consumed until it is resumed (ResumePartition, `onceflow resume`).
	PartitionHalted PartitionState = "halted"
)

// PartitionHealth is one assigned partition as the Runtime sees it.
type PartitionHealth struct {
	Partition  int32          `json:"partition"`
	State      PartitionState `json:"state"`
	Epoch      int64          `json:"epoch,omitempty"`
	HaltReason string         `json:"halt_reason,omitempty"`
	Error      string         `json:"error,omitempty"` // last claim error while claiming
	// NextOffset is the committed position (the next offset to handle).
	NextOffset int64 `json:"next_offset"`
	// HighWatermark is the partition's end offset as last seen by the
	// consumer (-1 when not known yet); Lag = HighWatermark - NextOffset.
	HighWatermark int64 `json:"high_watermark"`
	lowWatermark  int64 // the partition's log start, as last seen (-1 when not known)
	Lag           int64 `json:"lag"`
	// PublishedSeq is the last event seq published to the history and
	// state topics; PublishLag the events stored but not yet published;
	// PublishError the last publish failure while it lags.
	PublishedSeq int64  `json:"published_seq"`
	PublishLag   int64  `json:"publish_lag"`
	PublishError string `json:"publish_error,omitempty"`
}

// Health is a Runtime's state for a health endpoint.
type Health struct {
	Running    bool              `json:"running"`
	Group      string            `json:"group"`
	Topic      string            `json:"topic"`
	Instance   string            `json:"instance"`
	Partitions []PartitionHealth `json:"partitions"` // by partition number
}

// Healthy reports whether the runtime runs and no partition it was
// assigned is halted or waiting for its claim.
func (h Health) Healthy() bool {
	if !h.Running {
		return false
	}
	for _, p := range h.Partitions {
		if p.State != PartitionRunning {
			return false
		}
	}
	return true
}

// Health returns the state of every partition assigned to this instance:
// owned and running, waiting for its claim, or halted with the reason, with
// the committed position and the lag. Safe to call from any goroutine (a
// health or readiness handler). Lag is refreshed every 100ms.
func (r *Runtime) Health() Health {
	h := Health{Running: r.running.Load() && !r.stopped.Load(), Group: r.cfg.group, Topic: r.cfg.topic, Instance: r.cfg.instanceID}
	r.healthMu.Lock()
	for _, ph := range r.health {
		c := *ph
		if pub := r.pubs[c.Partition]; pub != nil && c.State != PartitionClaiming {
			c.PublishedSeq, c.PublishLag, c.PublishError = pub.published.Load(), pub.lag(), pub.err()
		}
		h.Partitions = append(h.Partitions, c)
	}
	r.healthMu.Unlock()
	slices.SortFunc(h.Partitions, func(a, b PartitionHealth) int { return int(a.Partition - b.Partition) })
	return h
}

// ResumePartition resumes a halted partition of this runtime's group and
// topic: it clears the halt recorded on the partition's claim row, and the
// owner (this instance or another one) claims it again and consumes from the
// committed position, so the record that halted it is tried again. It
// reports whether the partition was halted. Resume after fixing what made
// it halt (a handler bug, a failure policy), or it halts again.
func (r *Runtime) ResumePartition(ctx context.Context, partition int32) (wasHalted bool, err error) {
	was, err := r.store.Resume(ctx, r.key(partition))
	if err != nil {
		return false, fmt.Errorf("onceflow: resume partition %d: %w", partition, err)
	}
	r.requestControl(controlMsg{kind: controlResume, partition: partition})
	return was, nil
}

// haltCheckEvery is how often the owner of a halted partition reads its
// claim row to see whether an operator resumed it.
const haltCheckEvery = 2 * time.Second

func (r *Runtime) setHealth(p int32, f func(*PartitionHealth)) {
	r.healthMu.Lock()
	defer r.healthMu.Unlock()
	if r.health == nil {
		r.health = map[int32]*PartitionHealth{}
	}
	ph := r.health[p]
	if ph == nil {
		ph = &PartitionHealth{Partition: p, HighWatermark: -1, lowWatermark: -1}
		r.health[p] = ph
	}
	f(ph)
	ph.Partition = p
}

// watermarks are the partition's low and high watermarks as of the last
// health tick; -1 when unknown.
func (r *Runtime) watermarks(p int32) (low, high int64) {
	r.healthMu.Lock()
	defer r.healthMu.Unlock()
	if ph := r.health[p]; ph != nil {
		return ph.lowWatermark, ph.HighWatermark
	}
	return -1, -1
}

func (r *Runtime) dropHealth(p int32) {
	r.healthMu.Lock()
	delete(r.health, p)
	delete(r.pubs, p)
	r.healthMu.Unlock()
}

// tickHealth refreshes positions and lag, and looks at the claim rows of
// halted partitions (in the background: the poll loop never waits on
// Postgres for it).
func (r *Runtime) tickHealth(now time.Time) {
	for p, h := range r.handles {
		next := h.nextOffset.Load()
		low, high := int64(-1), int64(-1)
		if lo, hi, err := r.consumer.GetWatermarkOffsets(r.cfg.topic, p); err == nil && hi >= 0 {
			low, high = lo, hi
		}
		r.setHealth(p, func(ph *PartitionHealth) {
			ph.NextOffset, ph.HighWatermark, ph.lowWatermark = next, high, low
			ph.Lag = 0
			if high >= 0 && high > next {
				ph.Lag = high - next
			}
		})
		if h.halted != "" && now.After(h.checkAt) && h.checking.CompareAndSwap(false, true) {
			h.checkAt = now.Add(haltCheckEvery)
			go r.checkResumed(p, h)
		}
	}
}

func (r *Runtime) checkResumed(p int32, h *partitionHandle) {
	defer h.checking.Store(false)
	ctx, cancel := context.WithTimeout(context.Background(), haltCheckEvery)
	defer cancel()
	c, err := r.store.ReadClaim(ctx, r.key(p))
	if err != nil {
		return
	}
	if c.Epoch == h.epoch && c.HaltedAt == nil {
		r.requestControl(controlMsg{kind: controlResume, partition: p, epoch: h.epoch})
	}
}

// recordHalt stores a halt on the claim row so operators see it and can
// resume it from another process. Best effort, bounded.
func (r *Runtime) recordHalt(key txn.PartitionKey, epoch int64, reason string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := r.store.Halt(ctx, key, epoch, reason); err != nil {
		r.cfg.log.Warn("could not record the halt on the claim row (Health still reports it)", "partition", key.Partition, "err", err)
	}
}

// waitPublishers waits (at most timeout) for stopped partitions' publishers
// to abort their open transaction and close their producers.
func (r *Runtime) waitPublishers(timeout time.Duration) {
	done := make(chan struct{})
	go func() { r.pubWG.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(timeout):
		r.cfg.log.Warn("publishers did not stop in time", "timeout", timeout)
	}
}

// ensureEventTopics creates the history and state topics when missing, with
// the command topic's partition count: the history topic with unlimited
// retention, the state topic compacted. A failure is logged: publishing
// then lags (Health, metrics) until the topics exist.
func (r *Runtime) ensureEventTopics(ctx context.Context) {
	n := int(r.partitions.Load())
	if r.cfg.createTopic > 0 {
		n = r.cfg.createTopic
	}
	if n <= 0 {
		r.cfg.log.Warn("event topics not checked: the command topic's partition count is unknown")
		return
	}
	specs := []kafka.TopicSpecification{{Topic: r.cfg.historyTopic, NumPartitions: n, ReplicationFactor: -1,
		Config: map[string]string{"retention.ms": "-1", "retention.bytes": "-1"}}}
	if r.cfg.publishState {
		specs = append(specs, kafka.TopicSpecification{Topic: r.cfg.stateTopic, NumPartitions: n, ReplicationFactor: -1,
			Config: map[string]string{"cleanup.policy": "compact"}})
	}
	if err := createTopics(ctx, &r.cfg, specs); err != nil {
		r.cfg.log.Warn("creating the event topics failed: publishing lags until they exist", "err", err)
	}
}
