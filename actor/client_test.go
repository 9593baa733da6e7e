package actor_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/onceflow/onceflow/actor"
	"github.com/onceflow/onceflow/internal/chaos"
	"github.com/onceflow/onceflow/txn"
)

// A command whose record cannot be delivered fails its Send with the
// delivery error (found through the record's opaque value, as the Client
// has no delivery channel per Send), not with a timeout; once the broker is
// reachable again the same Client sends, and the batched replies of many
// concurrent Sends each reach their own Send.
func TestSendReportsAFailedDeliveryAndRepliesReachTheirSends(t *testing.T) {
	e := newEnv(t)
	a := e.start("a")
	owns(t, a, testPartitions)
	proxy, err := chaos.NewProxy(e.brokers, true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(proxy.Close)
	c := e.client(actor.WithBrokers(proxy.Addr()), actor.WithKafkaConfig(map[string]string{"message.timeout.ms": "2000"}))
	if _, err := send(t, c, Deposit{Account: "d-1", Amount: 1}); err != nil {
		t.Fatal(err)
	}

	proxy.Cut(chaos.CutReset)
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	_, err = c.Send(ctx, Deposit{Account: "d-2", Amount: 1}, actor.WithCommandID("undeliverable-1"))
	cancel()
	if err == nil || errors.Is(err, actor.ErrOutcomeUnknown) || !strings.Contains(err.Error(), "was not delivered") {
		t.Fatalf("Send while the broker is unreachable: got %v, want the delivery error", err)
	}
	proxy.Heal()
	// The client reconnects with backoff; sends in the meantime may still
	// time out after 2s (message.timeout.ms).
	eventually(t, 60*time.Second, "a send after the broker is back", func() error {
		_, err := send(t, c, Deposit{Account: "d-1", Amount: 1})
		return err
	})

	// Many concurrent Sends share batched reply records: each gets its own
	// outcome (its command id, its aggregate's next version).
	const n = 200
	errs := make(chan error, n)
	for i := range n {
		go func() {
			cmd := Deposit{Account: "d-" + string(rune('a'+i%10)), Amount: 1}
			o, err := send(t, c, cmd)
			switch {
			case err != nil:
				errs <- err
			case o.AggregateID != cmd.Account || o.Status != txn.OutcomeAccepted || o.FirstVersion == 0 || o.Duplicate:
				errs <- errors.New("wrong outcome for " + cmd.Account + ": " + o.AggregateID + " " + string(o.Status))
			default:
				errs <- nil
			}
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if st := a.rt.Stats(); st.ReplyErrors != 0 {
		t.Errorf("%d reply errors", st.ReplyErrors)
	}
}
