package chaos

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"

	"github.com/onceflow/onceflow/devenv"
)

// The broker advertises an address nobody listens on, so a client only gets
// through if the proxy rewrites the broker addresses in metadata and
// coordinator responses: the instance's traffic really goes through its
// proxy, and cutting the proxy cuts the instance.
func TestKafkaProxyRewritesBrokerAddresses(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dead, _ := net.Listen("tcp", "127.0.0.1:0")
	deadAddr := dead.Addr().String()
	dead.Close()
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	b, err := devenv.StartBroker(ctx, devenv.BrokerOptions{Port: port, Advertise: deadAddr, Partitions: 2, Topics: []string{"t"}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	p, err := NewProxy(fmt.Sprintf("127.0.0.1:%d", port), true)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()

	produce := func(timeout time.Duration) error {
		pr, err := kafka.NewProducer(&kafka.ConfigMap{"bootstrap.servers": p.Addr(), "enable.metrics.push": false,
			"message.timeout.ms": int(timeout.Milliseconds()), "log_level": 0})
		if err != nil {
			return err
		}
		defer pr.Close()
		topic := "t"
		dr := make(chan kafka.Event, 1)
		if err := pr.Produce(&kafka.Message{TopicPartition: kafka.TopicPartition{Topic: &topic, Partition: kafka.PartitionAny}, Value: []byte("v")}, dr); err != nil {
			return err
		}
		if m := (<-dr).(*kafka.Message); m.TopicPartition.Error != nil {
			return m.TopicPartition.Error
		}
		return nil
	}
	if err := produce(20 * time.Second); err != nil {
		t.Fatalf("produce through the proxy: %v", err)
	}
	// Consumer groups find their coordinator through FindCoordinator.
	c, err := kafka.NewConsumer(&kafka.ConfigMap{"bootstrap.servers": p.Addr(), "group.id": "g", "auto.offset.reset": "earliest",
		"enable.metrics.push": false, "log_level": 0})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Subscribe("t", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ReadMessage(30 * time.Second); err != nil {
		t.Fatalf("consume through the proxy: %v", err)
	}
	p.Cut(CutReset)
	if err := produce(2 * time.Second); err == nil {
		t.Fatal("produce succeeded through a cut proxy")
	}
	p.Heal()
	if err := produce(20 * time.Second); err != nil {
		t.Fatalf("produce after heal: %v", err)
	}
}

func TestProxyBlackholeHoldsAndResumes(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); io.Copy(c, c) }() // echo
		}
	}()
	p, err := NewProxy(ln.Addr().String(), false)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 4)
	echo := func(msg string, wait time.Duration) error {
		if _, err := c.Write([]byte(msg)); err != nil {
			return err
		}
		c.SetReadDeadline(time.Now().Add(wait))
		_, err := io.ReadFull(c, buf)
		return err
	}
	if err := echo("ping", 5*time.Second); err != nil || string(buf) != "ping" {
		t.Fatalf("echo: %q %v", buf, err)
	}
	p.Cut(CutBlackhole)
	if err := echo("held", 300*time.Millisecond); err == nil {
		t.Fatal("bytes crossed a blackholed proxy")
	}
	p.Heal()
	// The held bytes arrive once the cut heals.
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "held" {
		t.Fatalf("after heal: %q %v", buf, err)
	}
}
