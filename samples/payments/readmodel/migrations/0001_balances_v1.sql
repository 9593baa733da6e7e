-- Account balances, version 1 (projection payments_balances v1): one row per
-- opened account, the fold of its events (ledger.AccountEvolve's balances).
-- The CHECK constraints are the ledger's invariants: an event applied twice
-- or skipped fails the projection's Apply (which halts) instead of showing
-- wrong numbers.
CREATE TABLE payments_balances_v1 (
    account_id      text     COLLATE "C" PRIMARY KEY,
    ledger          bigint   NOT NULL,
    code            integer  NOT NULL,
    debits_must_not_exceed_credits boolean NOT NULL,
    credits_must_not_exceed_debits boolean NOT NULL,
    closed          boolean  NOT NULL DEFAULT false,
    debits_pending  bigint   NOT NULL DEFAULT 0,
    debits_posted   bigint   NOT NULL DEFAULT 0,
    credits_pending bigint   NOT NULL DEFAULT 0,
    credits_posted  bigint   NOT NULL DEFAULT 0,
    version         bigint   NOT NULL, -- the account version of the last event applied
    CONSTRAINT payments_balances_v1_nonnegative CHECK (debits_pending >= 0 AND debits_posted >= 0 AND credits_pending >= 0 AND credits_posted >= 0),
    CONSTRAINT payments_balances_v1_debit_flag CHECK (NOT debits_must_not_exceed_credits OR debits_pending + debits_posted <= credits_posted),
    CONSTRAINT payments_balances_v1_credit_flag CHECK (NOT credits_must_not_exceed_debits OR credits_pending + credits_posted <= debits_posted)
);
