// Package backendtest is the contract every txn.Backend (with its
// eventsource.Reader) must meet: the same fencing, uniqueness, errors and
// atomicity as the Postgres store. txn runs it against Postgres, txnmem
// against memory, so a fast in-memory test means what a Postgres one means.
package backendtest
