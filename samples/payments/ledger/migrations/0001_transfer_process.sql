-- The transfer process's state: one row per transfer, written only by the
-- process manager "transfers" inside its fenced batch transactions, and read
-- with SELECT ... FOR UPDATE so that the batches of the two source topics
-- (payments.transfers and payments.accounts) that concern one transfer run
-- one after the other. state is ledger.Process as JSON; phase is copied out
-- of it for operators ("which transfers are stuck in posting?").
CREATE TABLE payments_transfer_process (
    transfer_id text        COLLATE "C" PRIMARY KEY,
    phase       text        NOT NULL,
    state       jsonb       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX payments_transfer_process_open ON payments_transfer_process (phase) WHERE phase <> 'done';

-- Every deadline the process fired, with how many times it fired: written
-- in the firing transaction, so a deadline fired twice shows here as
-- fired = 2 (ledger.Check reports it).
CREATE TABLE payments_deadlines_fired (
    id        text        COLLATE "C" PRIMARY KEY,
    fired     integer     NOT NULL DEFAULT 1,
    first_at  timestamptz NOT NULL DEFAULT now(),
    last_at   timestamptz NOT NULL DEFAULT now()
);
