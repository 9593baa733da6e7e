package main

import (
	"errors"
	"flag"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func envOf(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestParseConfigDefaults(t *testing.T) {
	c, err := parseConfig(nil, envOf(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want := config{httpAddr: "127.0.0.1:8082", partitions: 12, dataDir: filepath.Join(".onceflow", "payments"), embeddedPort: 9094,
		logFormat: "text", logLevel: slog.LevelInfo, retryAfter: 10 * time.Second}
	if c != want {
		t.Fatalf("config = %+v\nwant     %+v", c, want)
	}
}

func TestParseConfigFlagBeatsEnv(t *testing.T) {
	env := envOf(map[string]string{"KAFKA_BROKERS": "k:1", "DATABASE_URL": "postgres://db", "HTTP_ADDR": ":9000", "RETRY_AFTER": "3s", "PARTITIONS": "3"})
	c, err := parseConfig([]string{"-http-addr", "127.0.0.1:0", "-retry-after", "500ms"}, env, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.brokers != "k:1" || c.databaseURL != "postgres://db" || c.httpAddr != "127.0.0.1:0" || c.retryAfter != 500*time.Millisecond || c.partitions != 3 {
		t.Fatalf("config = %+v", c)
	}
}

func TestParseConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"-log-format", "xml"}, nil, `log format "xml"`},
		{[]string{"-http-addr", "8080"}, nil, `http address "8080"`},
		{[]string{"-partitions", "0"}, nil, "partitions must be in [1, 10000], got 0"},
		{nil, map[string]string{"PARTITIONS": "many"}, `PARTITIONS="many": not an integer`},
		{nil, map[string]string{"RETRY_AFTER": "soon"}, `RETRY_AFTER`},
		{[]string{"-retry-after", "1ms"}, nil, "retry-after must be at least 100ms"},
		{[]string{"extra"}, nil, `unexpected argument "extra"`},
		{nil, map[string]string{"ONCEFLOW_KAFKA_CONFIG": "session.timeout.ms"}, `want key=value`},
	} {
		_, err := parseConfig(tc.args, envOf(tc.env), io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("parseConfig(%q, %v) = %v, want %q", tc.args, tc.env, err, tc.want)
		}
	}
	if _, err := parseConfig([]string{"-h"}, envOf(nil), io.Discard); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("-h: %v", err)
	}
}

func TestRedact(t *testing.T) {
	if got := redact("postgres://u:secret@h:5432/db"); got != "postgres://u:xxxxx@h:5432/db" {
		t.Fatal(got)
	}
}
