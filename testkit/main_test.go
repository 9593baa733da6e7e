package testkit_test

import (
	"os"
	"testing"
)

// These tests are about testkit, not about testcontainers' reaper (Ryuk),
// whose image cannot be pulled on machines without a registry: default it
// off (testkit removes its containers itself) unless the caller chose.
// testcontainers reads the setting once per process, so it is set here,
// before any test runs.
func TestMain(m *testing.M) {
	if _, ok := os.LookupEnv("TESTCONTAINERS_RYUK_DISABLED"); !ok {
		os.Setenv("TESTCONTAINERS_RYUK_DISABLED", "true")
	}
	os.Exit(m.Run())
}
