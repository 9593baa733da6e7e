// Package pgcluster runs a private PostgreSQL cluster from the locally
// installed server binaries (initdb, pg_ctl, postgres). It backs the embedded
// development default and the integration tests; production deployments point
// onceflow at their own Postgres instead.
//
// The cluster lives entirely inside one directory: the data directory, the
// Unix socket and the server log. Starting on a directory that already holds
// a cluster reuses it, so data survives restarts. It listens on 127.0.0.1
// only and trusts every local connection (initdb -A trust): never point it at
// a directory exposed to other users.
//
// A server does not outlive the process that started it: a detached
// watchdog stops it when that process dies without calling Stop (SIGKILL
// included), and the next Start stops servers whose recorded owner is dead
// (in its own directory, and in those matching Options.ReapGlob), removing
// the Options.Throwaway ones. See Start.
package pgcluster
