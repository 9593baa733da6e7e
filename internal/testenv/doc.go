// Package testenv provides real PostgreSQL databases to onceflow's tests.
//
// Each test gets a fresh database with a unique name on one shared server:
// the server named by ONCEFLOW_TEST_DATABASE_URL if set, otherwise a private
// cluster (package pgcluster) started lazily once per test process in a
// temporary directory and stopped by Main. If the test process is killed
// before Main can stop it, the cluster's watchdog stops it and removes the
// directory, and the next test process reaps whatever is left. Databases are
// dropped when their test ends.
//
// The package does not import "testing": helpers take the small TB
// interface, which *testing.T and *testing.B implement.
package testenv
