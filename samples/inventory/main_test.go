package main

import (
	"errors"
	"flag"
	"io"
	"log/slog"
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
	want := config{httpAddr: "127.0.0.1:8080", topic: "inventory.commands", partitions: 12, dataDir: ".onceflow",
		embeddedPort: 9092, logFormat: "text", logLevel: slog.LevelInfo, passivate: 2 * time.Minute, rywTimeout: 5 * time.Second}
	if c != want {
		t.Fatalf("config = %+v\nwant     %+v", c, want)
	}
}

func TestParseConfigFlagBeatsEnv(t *testing.T) {
	env := envOf(map[string]string{"KAFKA_BROKERS": "k:1", "DATABASE_URL": "postgres://db", "HTTP_ADDR": ":9000",
		"INSTANCE_ID": "env-id", "LOG_FORMAT": "json", "LOG_LEVEL": "debug", "PARTITIONS": "3"})
	c, err := parseConfig([]string{"-http-addr", "127.0.0.1:0", "-instance-id", "flag-id"}, env, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.brokers != "k:1" || c.databaseURL != "postgres://db" || c.httpAddr != "127.0.0.1:0" || c.instanceID != "flag-id" ||
		c.logFormat != "json" || c.logLevel != slog.LevelDebug || c.partitions != 3 {
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
		{[]string{"-log-level", "loud"}, nil, `log level "loud"`},
		{[]string{"-http-addr", "8080"}, nil, `http address "8080"`},
		{[]string{"-partitions", "0"}, nil, "partitions must be in [1, 10000], got 0"},
		{nil, map[string]string{"PARTITIONS": "many"}, `PARTITIONS="many": not an integer`},
		{[]string{"extra"}, nil, `unexpected argument "extra"`},
		{[]string{"-nope"}, nil, "flag provided but not defined"},
		{nil, map[string]string{"ONCEFLOW_KAFKA_CONFIG": "session.timeout.ms"}, `kafka config "session.timeout.ms": want key=value`},
		{[]string{"-read-your-writes-timeout", "0s"}, nil, "read-your-writes timeout must be > 0, got 0s"},
		{nil, map[string]string{"READ_YOUR_WRITES_TIMEOUT": "soon"}, `READ_YOUR_WRITES_TIMEOUT: time: invalid duration "soon"`},
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

func TestParseKafkaConfig(t *testing.T) {
	got, err := parseKafkaConfig(" session.timeout.ms=3000, heartbeat.interval.ms = 300 ,")
	if err != nil || len(got) != 2 || got["session.timeout.ms"] != "3000" || got["heartbeat.interval.ms"] != "300" {
		t.Fatalf("parseKafkaConfig = %v, %v", got, err)
	}
}

func TestRedact(t *testing.T) {
	for in, want := range map[string]string{
		"postgres://u:secret@h:5432/db": "postgres://u:xxxxx@h:5432/db",
		"postgres://u@h/db":             "postgres://u@h/db",
		"host=h user=u":                 "host=h user=u",
	} {
		if got := redact(in); got != want {
			t.Errorf("redact(%q) = %q, want %q", in, got, want)
		}
	}
}
