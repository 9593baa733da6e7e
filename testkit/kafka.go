package testkit

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// kafkaReady asks for metadata through the bootstrap address and then
// talks to every broker at its advertised address: a broker that
// advertises an address the test process cannot reach is not ready.
// (franz-go here, not librdkafka: it is quiet about refused connections.)
func kafkaReady(ctx context.Context, bootstrap string) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	cl, err := kgo.NewClient(kgo.SeedBrokers(bootstrap), kgo.DialTimeout(time.Second), kgo.RequestRetries(0))
	if err != nil {
		return err
	}
	defer cl.Close()
	resp, err := kmsg.NewPtrMetadataRequest().RequestWith(ctx, cl)
	if err != nil {
		return err
	}
	if len(resp.Brokers) == 0 {
		return errors.New("metadata lists no brokers")
	}
	for _, b := range resp.Brokers {
		if _, err := kmsg.NewPtrApiVersionsRequest().RequestWith(ctx, cl.Broker(int(b.NodeID))); err != nil {
			return fmt.Errorf("broker %d at advertised %s:%d: %w", b.NodeID, b.Host, b.Port, err)
		}
	}
	return nil
}

// CreateTopic creates topic with the given number of partitions (an
// existing topic is left as it is) and waits until every partition has a
// leader.
func (e *Env) CreateTopic(t testing.TB, topic string, partitions int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), e.waitTimeout)
	defer cancel()
	if err := e.createTopic(ctx, topic, partitions); err != nil {
		t.Fatalf("testkit: create topic %q: %v", topic, err)
	}
}

func (e *Env) createTopic(ctx context.Context, topic string, partitions int) error {
	if partitions < 1 {
		return fmt.Errorf("partitions must be >= 1, got %d", partitions)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(e.brokers))
	if err != nil {
		return err
	}
	defer cl.Close()
	req := kmsg.NewPtrCreateTopicsRequest()
	rt := kmsg.NewCreateTopicsRequestTopic()
	rt.Topic, rt.NumPartitions, rt.ReplicationFactor = topic, int32(partitions), 1
	req.Topics = append(req.Topics, rt)
	req.TimeoutMillis = 30_000
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		return err
	}
	for _, r := range resp.Topics {
		if err := kerr.ErrorForCode(r.ErrorCode); err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
			return err
		}
	}
	// Wait until the topic's partitions all have leaders: producers and
	// consumers that start right after otherwise see transient errors.
	return wait(ctx, 50*time.Millisecond, func(ctx context.Context) (bool, error) {
		mreq := kmsg.NewPtrMetadataRequest()
		mt := kmsg.NewMetadataRequestTopic()
		mt.Topic = kmsg.StringPtr(topic)
		mreq.Topics = append(mreq.Topics, mt)
		resp, err := mreq.RequestWith(ctx, cl)
		if err != nil {
			return false, nil
		}
		for _, t := range resp.Topics {
			if t.ErrorCode != 0 || len(t.Partitions) == 0 {
				return false, nil
			}
			for _, p := range t.Partitions {
				if p.ErrorCode != 0 || p.Leader < 0 {
					return false, nil
				}
			}
			return true, nil
		}
		return false, nil
	})
}
