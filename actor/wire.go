package actor

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"unicode/utf8"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"

	"github.com/onceflow/onceflow/txn"
)

// Wire format of a command record on the command topic:
//
//	key     the aggregate id (UTF-8)
//	value   the command, encoded by the registry's codec
//	headers onceflow-command-id   the command id (idempotency key), required
//	        onceflow-command-type the registered command type name, required
//	        onceflow-reply-topic  where to send the outcome, optional
//	        onceflow-send-id      echoed in the reply, optional: lets a
//	                              client match a reply to one send attempt
//	        onceflow-reply-format "batch" when the sender reads batched
//	                              replies, optional
//
// Wire format of an outcome record on a reply topic, for a command without
// onceflow-reply-format: key = command id, value = the JSON of Outcome plus
// "send_id" when the command had one. For commands with
// onceflow-reply-format "batch", the runtime sends one record per reply
// topic per committed batch (split at maxReplyRecordBytes): no key, header
// onceflow-reply-format "batch", value the binary encoding of
// encodeReplies. Clients decode both (Client sends "batch"); a client of an
// older version never asks for batches, so it keeps getting JSON.
const (
	HeaderCommandID   = "onceflow-command-id"
	HeaderCommandType = "onceflow-command-type"
	HeaderReplyTopic  = "onceflow-reply-topic"
	HeaderSendID      = "onceflow-send-id"
	HeaderReplyFormat = "onceflow-reply-format"
)

// replyFormatBatch is the onceflow-reply-format value of batched replies.
const replyFormatBatch = "batch"

// maxReplyRecordBytes bounds one batched reply record, well inside Kafka's
// default 1 MB message limit.
const maxReplyRecordBytes = 256 << 10

// maxCommandIDLen bounds command ids (they are primary keys).
const maxCommandIDLen = 200

// requestHash is the digest stored with a command's result: sha-256 over
// the command type name, a NUL, and the encoded command. A resend of the
// command id with another digest is another request under a reused id.
func requestHash(typeName string, value []byte) []byte {
	h := sha256.New()
	h.Write([]byte(typeName))
	h.Write([]byte{0})
	h.Write(value)
	return h.Sum(nil)
}

// sameRequest reports whether two request digests may be the same request.
// An unknown digest (a result stored before digests existed) matches.
func sameRequest(stored, got []byte) bool {
	return len(stored) == 0 || len(got) == 0 || bytes.Equal(stored, got)
}

func outcomeFromResult(r txn.CommandResult, dup bool) Outcome {
	return Outcome{
		CommandID: r.CommandID, Status: r.Outcome, AggregateID: r.AggregateID,
		Partition: r.Partition, Offset: r.Offset,
		FirstVersion: r.FirstVersion, LastVersion: r.LastVersion,
		FirstSeq: r.FirstSeq, LastSeq: r.LastSeq, Reason: r.Reason, Duplicate: dup,
	}
}

// reply is an outcome on the wire, tagged with the send attempt it answers.
type reply struct {
	Outcome
	SendID string `json:"send_id,omitempty"`
}

func encodeReply(r reply) ([]byte, error) { return json.Marshal(r) }

func decodeReply(b []byte) (reply, error) {
	var r reply
	if err := json.Unmarshal(b, &r); err != nil {
		return reply{}, err
	}
	if r.CommandID == "" {
		return reply{}, fmt.Errorf("reply without command_id")
	}
	return r, nil
}

// replyBatchVersion is the first byte of a batched reply record.
const replyBatchVersion = 1

// Flags of one reply in a batched reply record.
const (
	replyFlagDuplicate       = 1 << 0
	replyFlagPayloadMismatch = 1 << 1
)

// appendReply appends one reply of a batched reply record to buf:
//
//	string command_id, send_id, status, aggregate_id
//	varint partition, offset, first_version, last_version, first_seq, last_seq
//	string reason
//	byte   flags (1 duplicate, 2 payload mismatch)
//
// where a string is its uvarint length and its bytes. The record is the
// version byte (1), the uvarint count of replies, and the replies.
func appendReply(buf []byte, r *reply) []byte {
	buf = appendString(buf, r.CommandID)
	buf = appendString(buf, r.SendID)
	buf = appendString(buf, string(r.Status))
	buf = appendString(buf, r.AggregateID)
	buf = binary.AppendVarint(buf, int64(r.Partition))
	buf = binary.AppendVarint(buf, r.Offset)
	buf = binary.AppendVarint(buf, r.FirstVersion)
	buf = binary.AppendVarint(buf, r.LastVersion)
	buf = binary.AppendVarint(buf, r.FirstSeq)
	buf = binary.AppendVarint(buf, r.LastSeq)
	buf = appendString(buf, r.Reason)
	var flags byte
	if r.Duplicate {
		flags |= replyFlagDuplicate
	}
	if r.PayloadMismatch {
		flags |= replyFlagPayloadMismatch
	}
	return append(buf, flags)
}

func appendString(buf []byte, s string) []byte {
	buf = binary.AppendUvarint(buf, uint64(len(s)))
	return append(buf, s...)
}

// encodeReplies encodes replies as batched reply records, each at most
// about maxBytes (one reply larger than that gets a record of its own),
// appending into buf's storage. It calls emit with each record's bytes,
// which are only valid during the call, and the number of replies in it.
func encodeReplies(buf []byte, reps []reply, maxBytes int, emit func(rec []byte, n int)) []byte {
	for len(reps) > 0 {
		// Encode the body after a header of maximal size, then move the
		// header (version, count) right in front of it.
		const hdr = 1 + binary.MaxVarintLen64
		buf = append(buf[:0], make([]byte, hdr)...)
		n := 0
		for n < len(reps) && (n == 0 || len(buf) < maxBytes) {
			buf = appendReply(buf, &reps[n])
			n++
		}
		var h [hdr]byte
		h[0] = replyBatchVersion
		hl := 1 + binary.PutUvarint(h[1:], uint64(n))
		start := hdr - hl
		copy(buf[start:], h[:hl])
		emit(buf[start:], n)
		reps = reps[n:]
	}
	return buf
}

// replyDecoder reads a batched reply record without reflection.
type replyDecoder struct {
	b   []byte
	err error
}

func (d *replyDecoder) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("batched reply: truncated or malformed %s", what)
	}
}

func (d *replyDecoder) uvarint(what string) uint64 { return readVarint(d, what, binary.Uvarint) }
func (d *replyDecoder) varint(what string) int64   { return readVarint(d, what, binary.Varint) }

// readVarint reads one (u)varint with decode, or records what was
// malformed.
func readVarint[T int64 | uint64](d *replyDecoder, what string, decode func([]byte) (T, int)) T {
	if d.err != nil {
		return 0
	}
	v, n := decode(d.b)
	if n <= 0 {
		d.fail(what)
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *replyDecoder) str(what string) string {
	n := d.uvarint(what)
	if d.err != nil {
		return ""
	}
	if n > uint64(len(d.b)) {
		d.fail(what)
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}

// decodeReplies decodes a batched reply record (encodeReplies). It never
// panics on bad input; a malformed record is an error naming the field.
func decodeReplies(b []byte) ([]reply, error) {
	if len(b) == 0 || b[0] != replyBatchVersion {
		return nil, fmt.Errorf("batched reply: unknown version (first byte of %d)", len(b))
	}
	d := replyDecoder{b: b[1:]}
	count := d.uvarint("count")
	if d.err != nil {
		return nil, d.err
	}
	// Each reply takes at least 12 bytes: a count beyond that is corrupt
	// (and must not size an allocation).
	if count > uint64(len(d.b)/12) {
		return nil, fmt.Errorf("batched reply: count %d does not fit in %d bytes", count, len(d.b))
	}
	out := make([]reply, 0, count)
	for range count {
		var r reply
		r.CommandID = d.str("command_id")
		r.SendID = d.str("send_id")
		r.Status = txn.Outcome(d.str("status"))
		r.AggregateID = d.str("aggregate_id")
		r.Partition = int32(d.varint("partition"))
		r.Offset = d.varint("offset")
		r.FirstVersion = d.varint("first_version")
		r.LastVersion = d.varint("last_version")
		r.FirstSeq = d.varint("first_seq")
		r.LastSeq = d.varint("last_seq")
		r.Reason = d.str("reason")
		if d.err == nil && len(d.b) == 0 {
			d.fail("flags")
		}
		if d.err != nil {
			return nil, d.err
		}
		r.Duplicate = d.b[0]&replyFlagDuplicate != 0
		r.PayloadMismatch = d.b[0]&replyFlagPayloadMismatch != 0
		d.b = d.b[1:]
		if r.CommandID == "" {
			return nil, fmt.Errorf("batched reply: reply %d without command_id", len(out))
		}
		out = append(out, r)
	}
	if len(d.b) != 0 {
		return nil, fmt.Errorf("batched reply: %d bytes after the last of %d replies", len(d.b), count)
	}
	return out, nil
}

// header returns the last value of header k.
func header(m *kafka.Message, k string) (string, bool) {
	for i := len(m.Headers) - 1; i >= 0; i-- {
		if m.Headers[i].Key == k {
			return string(m.Headers[i].Value), true
		}
	}
	return "", false
}

func headersMap(m *kafka.Message) map[string]string {
	out := make(map[string]string, len(m.Headers))
	for _, h := range m.Headers {
		v := string(h.Value)
		if !utf8.ValidString(v) {
			v = fmt.Sprintf("%q", h.Value)
		}
		out[h.Key] = v
	}
	return out
}

// envelope is a parsed command record.
type envelope struct {
	commandID  string
	typeName   string
	replyTopic string
	sendID     string
	key        string
	batchReply bool // the sender reads batched replies
}

// parseEnvelope checks a record's key and headers. The returned error is the
// dead-letter reason.
func parseEnvelope(m *kafka.Message) (envelope, error) {
	var e envelope
	id, ok := header(m, HeaderCommandID)
	switch {
	case !ok || id == "":
		return e, fmt.Errorf("missing header %s", HeaderCommandID)
	case len(id) > maxCommandIDLen:
		return e, fmt.Errorf("header %s is %d bytes, limit %d", HeaderCommandID, len(id), maxCommandIDLen)
	case !utf8.ValidString(id):
		return e, fmt.Errorf("header %s is not valid UTF-8", HeaderCommandID)
	}
	e.commandID = id
	e.typeName, _ = header(m, HeaderCommandType)
	if e.typeName == "" {
		return e, fmt.Errorf("missing header %s", HeaderCommandType)
	}
	e.replyTopic, _ = header(m, HeaderReplyTopic)
	e.sendID, _ = header(m, HeaderSendID)
	format, _ := header(m, HeaderReplyFormat)
	e.batchReply = format == replyFormatBatch
	if len(m.Key) == 0 {
		return e, fmt.Errorf("empty record key: the key must be the aggregate id")
	}
	if !utf8.Valid(m.Key) {
		return e, fmt.Errorf("record key is not valid UTF-8")
	}
	e.key = string(m.Key)
	return e, nil
}
