package actor

import (
	"errors"
	"testing"
	"unicode/utf8"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"

	"github.com/onceflow/onceflow/eventsource"
)

type fuzzAdd struct {
	ID string `json:"id"`
	N  int64  `json:"n"`
}

func (c fuzzAdd) AggregateID() string { return c.ID }

type fuzzAdded struct {
	N int64 `json:"n"`
}

// FuzzCommandRecord feeds arbitrary command records through what the
// partition actor does with a record before deciding it: the envelope
// (key and headers) and the registry decode. Whatever the bytes, it must
// not panic, and a record it accepts must carry a usable command id, a
// UTF-8 key equal to the command's aggregate id and a registered type;
// everything else is an error, which the runtime turns into a dead letter.
//
//	go test -run '^$' -fuzz FuzzCommandRecord -fuzztime 20s ./actor
func FuzzCommandRecord(f *testing.F) {
	reg := eventsource.NewRegistry()
	if err := errors.Join(eventsource.Register[fuzzAdd](reg, "fuzz.Add"), eventsource.Register[fuzzAdded](reg, "fuzz.Added")); err != nil {
		f.Fatal(err)
	}
	agg := &eventsource.Aggregate[int64, eventsource.Command, any]{
		Type: "fuzz.counter", Registry: reg,
		Decider: eventsource.Decider[int64, eventsource.Command, any]{
			Initial: func() int64 { return 0 },
			Decide:  func(int64, eventsource.Command) ([]any, error) { return nil, nil },
			Evolve:  func(s int64, _ any) int64 { return s },
		},
	}
	if err := agg.Validate(); err != nil {
		f.Fatal(err)
	}
	h := typedHandler[int64, eventsource.Command, any]{agg: agg}

	f.Add([]byte("a-1"), []byte(`{"id":"a-1","n":3}`), "cmd-1", "fuzz.Add", true, true)
	f.Add([]byte("a-1"), []byte(`{"id":"a-2","n":3}`), "cmd-2", "fuzz.Add", true, true)
	f.Add([]byte(""), []byte(`{}`), "", "", false, false)
	f.Add([]byte("\xff"), []byte("\xff\x00"), "\xff", "fuzz.Added", true, true)
	f.Add([]byte("a"), []byte(`{"id":"a","n":1} {"id":"a"}`), "c", "fuzz.Add", true, true)
	f.Add([]byte("a"), []byte(`{"id":"a","n":1e400,"x":1}`), "c", "fuzz.Nope", true, true)
	f.Fuzz(func(t *testing.T, key, value []byte, id, typ string, withID, withType bool) {
		topic := "t"
		m := &kafka.Message{TopicPartition: kafka.TopicPartition{Topic: &topic}, Key: key, Value: value}
		if withID {
			m.Headers = append(m.Headers, kafka.Header{Key: HeaderCommandID, Value: []byte(id)})
		}
		if withType {
			m.Headers = append(m.Headers, kafka.Header{Key: HeaderCommandType, Value: []byte(typ)})
		}
		_ = headersMap(m) // stored with every dead letter: must not fail either
		env, err := parseEnvelope(m)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("an envelope error without a reason (it becomes the dead letter's error)")
			}
			return
		}
		if env.commandID == "" || len(env.commandID) > maxCommandIDLen || !utf8.ValidString(env.commandID) {
			t.Fatalf("accepted an unusable command id %q", env.commandID)
		}
		if env.key == "" || !utf8.ValidString(env.key) || env.typeName == "" {
			t.Fatalf("accepted key %q type %q", env.key, env.typeName)
		}
		cmd, aggID, err := h.decode(env.typeName, m.Value)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("a decode error without a reason")
			}
			return
		}
		if _, ok := cmd.(fuzzAdd); !ok || env.typeName != "fuzz.Add" {
			t.Fatalf("type %q decoded to %T", env.typeName, cmd)
		}
		if aggID != cmd.(fuzzAdd).ID {
			t.Fatalf("aggregate id %q, command says %q", aggID, cmd.(fuzzAdd).ID)
		}
	})
}
