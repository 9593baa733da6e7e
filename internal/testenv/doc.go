// Package testenv provides real PostgreSQL databases to onceflow's tests.
//
// Each test gets a fresh database with a unique name on one shared server:
// the server named by ONCEFLOW_TEST_DATABASE_URL if set, otherwise a private
// cluster (package pgcluster) started lazily once per test process in a
// temporary directory and stopped by Main. Databases are dropped when their
// test ends.
//
// The package does not import "testing": helpers take the small TB
// interface, which *testing.T and *testing.B implement.
package testenv
