-- Account statements, version 1 (projection payments_statement v1): one line
-- per account event about a transfer (reserved, posted, voided, refused), in
-- the account's order (its version), with the balances after it.
CREATE TABLE payments_statement_v1 (
    account_id      text        COLLATE "C" NOT NULL,
    version         bigint      NOT NULL,
    transfer_id     text        COLLATE "C" NOT NULL,
    side            text        NOT NULL CHECK (side IN ('debit', 'credit')),
    kind            text        NOT NULL CHECK (kind IN ('reserved', 'posted', 'voided', 'refused')),
    amount          bigint      NOT NULL, -- reserved, posted or released; 0 for a refusal
    code            text        NOT NULL DEFAULT '', -- a refusal's result code
    debits_pending  bigint      NOT NULL,
    debits_posted   bigint      NOT NULL,
    credits_pending bigint      NOT NULL,
    credits_posted  bigint      NOT NULL,
    recorded_at     timestamptz NOT NULL,
    PRIMARY KEY (account_id, version)
);
