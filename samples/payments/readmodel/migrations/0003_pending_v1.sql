-- Pending (two-phase) transfers, version 1 (projection payments_pending v1):
-- a row from creation until the post, void, expiry or failure is decided.
-- status is 'reserving' until both sides are reserved, then 'pending' with
-- its expiry; the API lists the pending ones about to expire.
CREATE TABLE payments_pending_v1 (
    transfer_id       text        COLLATE "C" PRIMARY KEY,
    debit_account_id  text        NOT NULL,
    credit_account_id text        NOT NULL,
    amount            bigint      NOT NULL CHECK (amount > 0),
    ledger            bigint      NOT NULL,
    status            text        NOT NULL CHECK (status IN ('reserving', 'pending')),
    expires_at        timestamptz, -- NULL: no timeout
    version           bigint      NOT NULL
);

CREATE INDEX payments_pending_v1_expiry ON payments_pending_v1 (expires_at, transfer_id) WHERE status = 'pending';
