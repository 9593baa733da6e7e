-- Deadlines of process managers: a timeout a process scheduled in a batch's
-- transaction, fired once by the current owner of the claim key (group,
-- topic, partition) that scheduled it. Firing deletes the row in the firing
-- batch's fenced transaction, so a deadline fires exactly once, also after
-- a rebalance or a restart; a cancel (from any source partition of the
-- process manager) deletes it first.
CREATE TABLE onceflow.deadlines (
    process    text        COLLATE "C" NOT NULL, -- the process manager's name
    id         text        COLLATE "C" NOT NULL, -- unique per process manager
    group_id   text        COLLATE "C" NOT NULL, -- the claim key of the partition that fires it
    topic      text        COLLATE "C" NOT NULL,
    partition  integer     NOT NULL,
    due_at     timestamptz NOT NULL,
    payload    bytea,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (process, id)
);

CREATE INDEX deadlines_due ON onceflow.deadlines (group_id, topic, partition, due_at);
