// Package ledger is the payments sample's domain: a double-entry ledger in
// the style of TigerBeetle, built from two aggregates and a process manager
// on onceflow.
//
//   - Account (AccountDecider, topic payments.accounts, keyed by account id):
//     a ledger (currency), a code, flags, and four balances in integer minor
//     units: debits pending and posted, credits pending and posted. The
//     flags (debits must not exceed credits, credits must not exceed
//     debits) are enforced in Decide, on every reservation.
//   - Transfer (TransferDecider, topic payments.transfers, keyed by the
//     client's transfer id): immutable once created; single-phase (posted
//     at once) or two-phase (pending with a timeout, then posted fully or
//     partially, voided, or expired). It records the decisions (a post or
//     a void requested, an expiry decided) and the final state.
//   - The transfer process (Processes, two actor.ProcessManager runtimes
//     named "transfers", one per source topic) moves the money between the
//     two accounts, which may live on different partitions: it reserves the
//     debit, then the credit, and posts or voids both. Every command it
//     sends has a deterministic id (actor.CommandID of the transfer and the
//     step), so a resend is a duplicate and never a second effect.
//
// An account answers the process's commands it refuses with an event that
// carries a result code (DebitRefused, CreditRefused): a refusal is an
// answer the process must see, not a rejection that only the sender of a
// command learns. A client's command that breaks a rule is rejected by
// Decide with a *ResultError whose text begins with the code.
//
// Everything in the deciders is pure: no I/O, no clock, no randomness; the
// process's state machine (Step, Outstanding) is pure too, and its shell
// (Processes) keeps the state in one row per transfer, locked FOR UPDATE.
//
// Check verifies the ledger's invariants from Postgres; tests and fault
// harnesses run it after a workload has quiesced.
package ledger
