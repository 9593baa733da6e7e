package actor

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"

	"github.com/onceflow/onceflow/eventsource"
	"github.com/onceflow/onceflow/txn"
)

// Client sends commands and waits for their outcomes. It is safe for
// concurrent use; create one per process and Close it when done.
//
// Outcomes arrive on the reply topic. The Client reads every partition of
// its reply topic from the position it had when the Client was created, so
// clients that share a reply topic also read each other's replies (and
// ignore them); give each service its own reply topic with WithReplyTopic
// when that matters. With WithResults, a slow or lost reply is covered by
// reading the command_results table.
type Client struct {
	cfg      config
	reg      *eventsource.Registry
	producer *kafka.Producer
	consumer *kafka.Consumer
	// partitions is the command topic's partition count when the Client
	// places records itself (a Partitioner librdkafka does not have).
	partitions int32

	// ids: a random prefix per Client, then a counter, for default command
	// ids and send ids (unique without a crypto/rand read per Send).
	idPrefix string
	idSeq    atomic.Uint64
	// replyTopic is the reply topic's name as a header value.
	replyTopic []byte

	mu      sync.Mutex
	waiters map[string]*waiter // by command id; more than one send of an id chain through next

	closeOnce sync.Once
	closing   chan struct{}
	wg        sync.WaitGroup
}

// SendOption configures one Send.
type SendOption func(*sendOptions)

type sendOptions struct{ commandID string }

// WithCommandID sets the command id, the idempotency key: a command id is
// handled at most once, ever; sending it again returns the stored outcome
// with Outcome.Duplicate set. Default: a new unique id (the Client's random
// 96-bit prefix and a counter). Reuse the id when retrying a command whose
// outcome is unknown.
func WithCommandID(id string) SendOption { return func(o *sendOptions) { o.commandID = id } }

// NewClient connects a Client. reg must name every command type sent. ctx
// bounds the setup (topic metadata and reply topic positions).
func NewClient(ctx context.Context, reg *eventsource.Registry, opts ...ClientOption) (*Client, error) {
	if reg == nil {
		return nil, errors.New("onceflow: NewClient: registry is nil")
	}
	cfg := defaultConfig()
	for _, o := range opts {
		o.apply(&cfg)
	}
	if err := cfg.validateClient(); err != nil {
		return nil, fmt.Errorf("onceflow: invalid client configuration: %w", err)
	}
	if cfg.createTopic > 0 {
		if err := ensureTopics(ctx, &cfg, cfg.topic, cfg.replyTopic); err != nil {
			return nil, err
		}
	}
	c := &Client{cfg: cfg, reg: reg, waiters: map[string]*waiter{}, closing: make(chan struct{}),
		idPrefix: randomID()[:24], replyTopic: []byte(cfg.replyTopic)}
	var err error
	if c.producer, err = kafka.NewProducer(producerConfig(&cfg)); err != nil {
		return nil, fmt.Errorf("onceflow: kafka producer: %w", err)
	}
	cm := baseConfig(&cfg)
	cm["group.id"] = "onceflow-client-" + randomID() // required by librdkafka; never joined (Assign only)
	cm["enable.auto.commit"] = false
	cm["enable.partition.eof"] = false
	if c.consumer, err = kafka.NewConsumer(&cm); err != nil {
		c.producer.Close()
		return nil, fmt.Errorf("onceflow: kafka consumer: %w", err)
	}
	if cfg.partitioner.Librdkafka == "" {
		if c.partitions, err = c.commandPartitions(ctx); err != nil {
			c.consumer.Close()
			c.producer.Close()
			return nil, err
		}
	}
	if err := c.assignReplies(ctx); err != nil {
		c.consumer.Close()
		c.producer.Close()
		return nil, err
	}
	c.wg.Add(2)
	go c.pollReplies()
	go c.drainDeliveries()
	return c, nil
}

func timeoutMs(ctx context.Context, def time.Duration) int {
	if dl, ok := ctx.Deadline(); ok {
		if d := time.Until(dl); d < def {
			return max(int(d.Milliseconds()), 1)
		}
	}
	return int(def.Milliseconds())
}

// commandPartitions reads the command topic's partition count.
func (c *Client) commandPartitions(ctx context.Context) (int32, error) {
	topic := c.cfg.topic
	md, err := c.consumer.GetMetadata(&topic, false, timeoutMs(ctx, 15*time.Second))
	if err != nil {
		return 0, fmt.Errorf("onceflow: command topic %q metadata from %s: %w", topic, c.cfg.brokers, err)
	}
	tm, ok := md.Topics[topic]
	if !ok || len(tm.Partitions) == 0 {
		return 0, fmt.Errorf("onceflow: command topic %q does not exist on %s: create it, or use WithCreateTopics", topic, c.cfg.brokers)
	}
	return int32(len(tm.Partitions)), nil
}

// assignReplies assigns every reply partition at its current end, so that
// no reply to a command sent after NewClient returns can be missed.
func (c *Client) assignReplies(ctx context.Context) error {
	topic := c.cfg.replyTopic
	md, err := c.consumer.GetMetadata(&topic, false, timeoutMs(ctx, 15*time.Second))
	if err != nil {
		return fmt.Errorf("onceflow: reply topic %q metadata from %s: %w", topic, c.cfg.brokers, err)
	}
	tm, ok := md.Topics[topic]
	if !ok || tm.Error.Code() == kafka.ErrUnknownTopicOrPart || len(tm.Partitions) == 0 {
		return fmt.Errorf("onceflow: reply topic %q does not exist on %s: create it, or use WithCreateTopics", topic, c.cfg.brokers)
	}
	tps := make([]kafka.TopicPartition, 0, len(tm.Partitions))
	for _, p := range tm.Partitions {
		_, high, err := c.consumer.QueryWatermarkOffsets(topic, p.ID, timeoutMs(ctx, 15*time.Second))
		if err != nil {
			return fmt.Errorf("onceflow: reply topic %q partition %d end offset: %w", topic, p.ID, err)
		}
		tps = append(tps, kafka.TopicPartition{Topic: &topic, Partition: p.ID, Offset: kafka.Offset(high)})
	}
	if err := c.consumer.Assign(tps); err != nil {
		return fmt.Errorf("onceflow: assign reply topic %q: %w", topic, err)
	}
	return nil
}

func (c *Client) pollReplies() {
	defer c.wg.Done()
	for {
		select {
		case <-c.closing:
			return
		default:
		}
		m, ok := c.consumer.Poll(100).(*kafka.Message)
		if !ok {
			continue
		}
		if f, _ := header(m, HeaderReplyFormat); f == replyFormatBatch {
			reps, err := decodeReplies(m.Value)
			if err != nil {
				c.cfg.log.Warn("ignoring malformed batched reply", "topic", c.cfg.replyTopic, "offset", m.TopicPartition.Offset, "err", err)
				continue
			}
			c.mu.Lock()
			for i := range reps {
				c.deliver(&reps[i])
			}
			c.mu.Unlock()
			continue
		}
		r, err := decodeReply(m.Value)
		if err != nil {
			c.cfg.log.Warn("ignoring malformed reply", "topic", c.cfg.replyTopic, "offset", m.TopicPartition.Offset, "err", err)
			continue
		}
		c.mu.Lock()
		c.deliver(&r)
		c.mu.Unlock()
	}
}

// deliver hands a reply to the sends waiting for it. c.mu is held.
func (c *Client) deliver(r *reply) {
	for w := c.waiters[r.CommandID]; w != nil; w = w.next {
		// A reply tagged with a send id answers that send only: a resend
		// must learn that it was a duplicate, not receive the first
		// send's late reply.
		if r.SendID != "" && r.SendID != w.sendID {
			continue
		}
		select {
		case w.ch <- sendResult{outcome: r.Outcome}:
		default:
		}
	}
}

// drainDeliveries reads the producer's delivery reports. A failed one is
// handed to its Send (the record's opaque value is the Send's waiter) when
// that Send still waits.
func (c *Client) drainDeliveries() {
	defer c.wg.Done()
	for ev := range c.producer.Events() {
		m, ok := ev.(*kafka.Message)
		if !ok || m.TopicPartition.Error == nil {
			continue
		}
		w, ok := m.Opaque.(*waiter)
		if !ok {
			continue
		}
		err := fmt.Errorf("onceflow: command %s was not delivered to %q (resend with the same command id): %w", w.commandID, c.cfg.topic, m.TopicPartition.Error)
		c.mu.Lock()
		for x := c.waiters[w.commandID]; x != nil; x = x.next {
			if x == w {
				select {
				case w.ch <- sendResult{err: err}:
				default:
				}
			}
		}
		c.mu.Unlock()
	}
}

// sendResult is what a waiting Send receives: its outcome, or the failure
// to deliver its record.
type sendResult struct {
	outcome Outcome
	err     error
}

// waiter is one Send waiting for its reply. It is never reused: a late
// delivery report finds it by identity.
type waiter struct {
	commandID, sendID string // immutable
	ch                chan sendResult
	next              *waiter // another send of the same command id (guarded by Client.mu)
}

// nextID returns a new id: the Client's random prefix and a counter.
func (c *Client) nextID() string {
	return c.idPrefix + strconv.FormatUint(c.idSeq.Add(1), 36)
}

func (c *Client) register(id string) *waiter {
	w := &waiter{commandID: id, sendID: c.nextID(), ch: make(chan sendResult, 1)}
	c.mu.Lock()
	w.next = c.waiters[id]
	c.waiters[id] = w
	c.mu.Unlock()
	return w
}

func (c *Client) unregister(id string, w *waiter) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch head := c.waiters[id]; {
	case head == w && w.next == nil:
		delete(c.waiters, id)
	case head == w:
		c.waiters[id] = w.next
	default:
		for x := head; x != nil; x = x.next {
			if x.next == w {
				x.next = w.next
				break
			}
		}
	}
}

// Send produces cmd to the command topic, keyed by cmd.AggregateID(), and
// waits for its outcome. ctx bounds the whole call; without a deadline the
// send timeout applies (WithSendTimeout, default 30s).
//
// It returns the Outcome and:
//   - nil when the command was accepted;
//   - a *RejectedError (errors.Is ErrRejected) when Decide rejected it;
//   - a *DeadLetteredError (errors.Is ErrDeadLettered) when it could not be handled;
//   - an *OutcomeUnknownError (errors.Is ErrOutcomeUnknown) when no outcome
//     arrived in time: the command may still be applied; resend with the
//     same command id to learn the outcome (it is never applied twice);
//   - another error when the command could not be encoded or produced.
func (c *Client) Send(ctx context.Context, cmd eventsource.Command, opts ...SendOption) (Outcome, error) {
	select {
	case <-c.closing:
		return Outcome{}, ErrClosed
	default:
	}
	var so sendOptions
	for _, o := range opts {
		o(&so)
	}
	if so.commandID == "" {
		so.commandID = c.nextID()
	}
	id := so.commandID
	if len(id) > maxCommandIDLen {
		return Outcome{CommandID: id}, fmt.Errorf("onceflow: command id is %d bytes, limit %d", len(id), maxCommandIDLen)
	}
	if cmd == nil {
		return Outcome{CommandID: id}, errors.New("onceflow: Send: command is nil")
	}
	aggID := cmd.AggregateID()
	if aggID == "" {
		return Outcome{CommandID: id}, fmt.Errorf("onceflow: Send %T: AggregateID() is empty", cmd)
	}
	name, data, err := c.reg.Encode(cmd)
	if err != nil {
		return Outcome{CommandID: id}, fmt.Errorf("onceflow: Send: %w", err)
	}
	// Without a deadline the send timeout applies: a timer, not a derived
	// context (one allocation fewer on every Send).
	var expired <-chan time.Time
	if _, ok := ctx.Deadline(); !ok {
		t := time.NewTimer(c.cfg.sendTimeout)
		defer t.Stop()
		expired = t.C
	}
	w := c.register(id)
	defer c.unregister(id, w)

	topic := c.cfg.topic
	key := []byte(aggID)
	part := kafka.PartitionAny
	if c.partitions > 0 {
		part = c.cfg.partitioner.Partition(key, c.partitions)
	}
	// One allocation for the header values that differ per Send.
	hv := make([]byte, 0, len(id)+len(name)+len(w.sendID))
	hv = append(append(append(hv, id...), name...), w.sendID...)
	msg := &kafka.Message{
		TopicPartition: kafka.TopicPartition{Topic: &topic, Partition: part},
		Key:            key,
		Value:          data,
		Opaque:         w,
		Headers: []kafka.Header{
			{Key: HeaderCommandID, Value: hv[:len(id):len(id)]},
			{Key: HeaderCommandType, Value: hv[len(id) : len(id)+len(name) : len(id)+len(name)]},
			{Key: HeaderReplyTopic, Value: c.replyTopic},
			{Key: HeaderSendID, Value: hv[len(id)+len(name):]},
			{Key: HeaderReplyFormat, Value: replyFormatBatchBytes},
		},
	}
	// No delivery channel: a failed delivery reaches this Send through
	// drainDeliveries (the opaque value); a success is implied by the
	// outcome.
	for {
		err = c.producer.Produce(msg, nil)
		var ke kafka.Error
		if err == nil || !errors.As(err, &ke) || ke.Code() != kafka.ErrQueueFull {
			break
		}
		select {
		case <-time.After(5 * time.Millisecond):
		case <-ctx.Done():
			return Outcome{CommandID: id}, fmt.Errorf("onceflow: Send: producer queue full: %w", ctx.Err())
		case <-expired:
			return Outcome{CommandID: id}, fmt.Errorf("onceflow: Send: producer queue full: %w", context.DeadlineExceeded)
		}
	}
	if err != nil {
		return Outcome{CommandID: id}, fmt.Errorf("onceflow: produce command %s: %w", id, err)
	}
	return c.await(ctx, expired, id, name, data, w.ch)
}

// replyFormatBatchBytes is the onceflow-reply-format header value a Client
// sends: it reads batched replies.
var replyFormatBatchBytes = []byte(replyFormatBatch)

// await waits for the outcome of command id (type name, encoded data).
// expired, when not nil, is the send timeout.
func (c *Client) await(ctx context.Context, expired <-chan time.Time, id, name string, data []byte, ch chan sendResult) (Outcome, error) {
	var poll <-chan time.Time
	if c.cfg.results != nil {
		t := time.NewTicker(c.cfg.resultPoll)
		defer t.Stop()
		poll = t.C
	}
	for {
		select {
		case r := <-ch:
			if r.err != nil {
				return Outcome{CommandID: id}, r.err
			}
			return r.outcome, outcomeErr(r.outcome)
		case <-poll:
			r, err := c.cfg.results.TopicResult(ctx, c.cfg.topic, id)
			if err == nil {
				// Whether this send was the first handling of the id is
				// not known here; a different request digest is.
				o := outcomeFromResult(r, false)
				o.PayloadMismatch = !sameRequest(r.RequestHash, requestHash(name, data))
				o.Duplicate = o.PayloadMismatch
				return o, outcomeErr(o)
			}
			if !errors.Is(err, txn.ErrNotFound) && ctx.Err() == nil {
				c.cfg.log.Warn("reading command result from Postgres", "command_id", id, "err", err)
			}
		case <-ctx.Done():
			return Outcome{CommandID: id}, &OutcomeUnknownError{CommandID: id, Err: ctx.Err()}
		case <-expired:
			return Outcome{CommandID: id}, &OutcomeUnknownError{CommandID: id, Err: context.DeadlineExceeded}
		case <-c.closing:
			return Outcome{CommandID: id}, &OutcomeUnknownError{CommandID: id, Err: ErrClosed}
		}
	}
}

func outcomeErr(o Outcome) error {
	if o.PayloadMismatch {
		return &PayloadMismatchError{CommandID: o.CommandID, Outcome: o}
	}
	switch o.Status {
	case txn.OutcomeRejected:
		return &RejectedError{CommandID: o.CommandID, Reason: o.Reason}
	case txn.OutcomeDeadLettered:
		return &DeadLetteredError{CommandID: o.CommandID, Reason: o.Reason}
	}
	return nil
}

// Close stops the client: pending Sends return an *OutcomeUnknownError.
func (c *Client) Close() error {
	c.closeOnce.Do(func() {
		close(c.closing)
		c.producer.Flush(5000)
		c.producer.Close() // closes Events(), ending drainDeliveries
		c.wg.Wait()
		c.consumer.Close()
	})
	return nil
}
