package actor

import (
	"bytes"
	"crypto/sha256"
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
//
// Wire format of an outcome record on a reply topic: key = command id,
// value = the JSON of Outcome plus "send_id" when the command had one.
const (
	HeaderCommandID   = "onceflow-command-id"
	HeaderCommandType = "onceflow-command-type"
	HeaderReplyTopic  = "onceflow-reply-topic"
	HeaderSendID      = "onceflow-send-id"
)

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
	if len(m.Key) == 0 {
		return e, fmt.Errorf("empty record key: the key must be the aggregate id")
	}
	if !utf8.Valid(m.Key) {
		return e, fmt.Errorf("record key is not valid UTF-8")
	}
	e.key = string(m.Key)
	return e, nil
}
