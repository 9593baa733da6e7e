// Package api is the payments sample's HTTP JSON API.
//
//	POST /v1/accounts                    {"id", "ledger", "code", "flags": {"debits_must_not_exceed_credits", "credits_must_not_exceed_debits"}}
//	POST /v1/accounts/{id}/close
//	GET  /v1/accounts/{id}               balances (read model)
//	GET  /v1/accounts/{id}/statement     ?after=VERSION&limit=N (read model)
//	POST /v1/transfers                   {"id", "debit_account_id", "credit_account_id", "amount", "ledger", "code", "pending", "timeout_seconds"}
//	GET  /v1/transfers/{id}              state and result code
//	POST /v1/transfers/{id}/post         {"amount"} (optional: the full pending amount)
//	POST /v1/transfers/{id}/void
//	GET  /v1/pending-transfers           ?within=SECONDS&limit=N: pending transfers about to expire (read model)
//	POST /v1/cards/authorize             {"authorization_id", "card_account_id", "merchant_account_id", "amount", "ledger", "code", "timeout_seconds"}
//	POST /v1/cards/capture               {"authorization_id", "amount"}
//	POST /v1/cards/void                  {"authorization_id"}
//	POST /v1/cards/refund                {"authorization_id", "refund_id", "amount"}
//	GET  /healthz
//
// Amounts are JSON integers in the ledger's minor units (cents), from 1 to
// 9223372036854775807; a fraction, a string or anything out of range is a
// 400 naming the field. (JavaScript clients should keep amounts below
// 2^53.) Ledgers are 1..4294967295, codes 1..65535, ids 1-64 characters of
// [A-Za-z0-9._-].
//
// # Idempotency
//
// Every POST requires an Idempotency-Key header (1-128 printable ASCII
// characters), as in the IETF httpapi idempotency-key draft: a missing key
// is 400. The first request with a key is remembered per operation with
// the fingerprint of its method, path and validated body (Keys); the same
// key with the same request returns the stored answer of its command (the
// command id derives from the key, and onceflow handles a command id once,
// ever), so a retry after a timeout or a dropped connection is safe; the
// same key with a different body or path is 422 idempotency_key_reused and
// is not applied.
//
// # Outcomes
//
// A transfer completes asynchronously: the transfer process reserves,
// posts or voids on the two accounts after the transfer aggregate accepted
// the request. POST /v1/transfers (and post, void, and the card routes)
// answer 202 Accepted with the transfer's current state and a Location;
// with "Prefer: wait=N" (RFC 7240, N seconds, at most 60) the request waits
// until the transfer settled (for a create: posted, pending, voided,
// expired or failed; for a post, void or refund: final) and answers 200
// with it, or 202 if N ran out. A failed transfer is a 200 with "status":
// "failed" and the result code in "result" (exceeds_credits, ...): the
// request was processed; the ledger refused the money movement.
//
// Rejections by the ledger carry its result code in "code": 409 for a
// conflict with the current state (exists_with_different_amount,
// pending_transfer_already_posted, transfer_in_flight with Retry-After,
// account_has_pending_transfers, ...), 404 for pending_transfer_not_found,
// account_not_found and transfer_not_found, 422 for a malformed command the
// ledger caught. A create of an existing transfer or account with the same
// fields is not an error: 200 (or 202) with "request_result": "exists" and
// the stored state, as TigerBeetle's exists result. Other answers: 504
// outcome_unknown (retry with the same key), 503 shutting down, 413, 415,
// 405, 400 naming the field. Every error body is JSON: {"code", "error",
// "field", "command_id", "idempotency_key", "transfer" or "account"}.
package api
