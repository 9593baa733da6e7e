-- Idempotency keys of the HTTP API (IETF httpapi idempotency-key draft):
-- the first request seen with a key, per operation, by the fingerprint of
-- its method, path and validated body. A later request with the same key and
-- another fingerprint is answered 422; with the same fingerprint it goes on
-- and gets the stored outcome of its command (whose id derives from the key).
CREATE TABLE payments_idempotency_keys (
    scope       text        COLLATE "C" NOT NULL, -- the operation: "transfers.create", ...
    key         text        COLLATE "C" NOT NULL,
    fingerprint bytea       NOT NULL,
    request     text        NOT NULL, -- "POST /v1/transfers", for the 422 message
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, key)
);

-- Keys older than the retention an operator chooses can be deleted by
-- created_at (the command ids they map to stay deduplicated by onceflow).
CREATE INDEX payments_idempotency_keys_created ON payments_idempotency_keys (created_at);
