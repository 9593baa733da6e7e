package main

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

func envOf(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestParseConfig(t *testing.T) {
	c, err := parseConfig([]string{"-port", "0", "-topics", "a, b"}, envOf(map[string]string{"ONCEFLOW_ADVERTISE": "h:1", "ONCEFLOW_PARTITIONS": "3"}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.port != 0 || c.advertise != "h:1" || c.partitions != 3 || len(c.topics) != 2 || c.topics[1] != "b" || c.listen != "0.0.0.0" {
		t.Fatalf("config %+v", c)
	}
	for _, tc := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"-advertise", "h:1", "-advertise-file", "/f"}, nil, "exclusive"},
		{nil, map[string]string{"ONCEFLOW_PORT": "x"}, `ONCEFLOW_PORT="x": not an integer`},
		{[]string{"-wait", "0s"}, nil, "-wait must be positive"},
		{[]string{"extra"}, nil, `unexpected argument "extra"`},
	} {
		if _, err := parseConfig(tc.args, envOf(tc.env), io.Discard); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("parseConfig(%q, %v) = %v, want %q", tc.args, tc.env, err, tc.want)
		}
	}
}

// The container protocol: the broker starts only once the advertise file
// holds a complete line, and then advertises exactly that address.
func TestAdvertiseFile(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	file := filepath.Join(t.TempDir(), "advertise")
	ready := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"-listen", "127.0.0.1", "-port", "0", "-advertise-file", file}, envOf(nil), io.Discard, func(a string) { ready <- a })
	}()
	// A partial write is not taken for the address.
	if err := os.WriteFile(file, []byte("127.0.0"), 0o644); err != nil {
		t.Fatal(err)
	}
	select {
	case a := <-ready:
		t.Fatalf("broker started on a partial file, advertising %s", a)
	case err := <-done:
		t.Fatalf("run: %v", err)
	case <-time.After(100 * time.Millisecond): // a negative check: nothing may happen
	}
	if err := os.WriteFile(file, []byte("kafka.example:19092\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	select {
	case a := <-ready:
		if a != "kafka.example:19092" {
			t.Fatalf("advertised %s", a)
		}
	case err := <-done:
		t.Fatalf("run: %v", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}
}

func TestAdvertiseFileTimeout(t *testing.T) {
	file := filepath.Join(t.TempDir(), "never")
	err := run(context.Background(), []string{"-port", "0", "-advertise-file", file, "-wait", "50ms"}, envOf(nil), io.Discard, nil)
	if err == nil || !strings.Contains(err.Error(), "did not get a complete") {
		t.Fatalf("run = %v", err)
	}
}

// Without a file the broker serves on its listen address.
func TestServes(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ready := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"-listen", "127.0.0.1", "-port", "0", "-topics", "t"}, envOf(nil), io.Discard, func(a string) { ready <- a })
	}()
	var addr string
	select {
	case addr = <-ready:
	case err := <-done:
		t.Fatal(err)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "t", Value: []byte("x")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	cancel()
	<-done
}
