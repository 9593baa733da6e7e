-- The projection registry: one row per projection version. A projection
-- version consumes the history topic in its own consumer group
-- (group_id) and keeps its position per source partition on its claim
-- rows (partition_claims.next_seq: the next source seq it applies).
--
-- state: 'building' (filling its own tables), 'active' (the one readers
-- use; at most one per name), 'retired' (replaced; its runtime stops).
-- Readers switch versions in one transaction (Store.Switch). Every batch
-- of a projection reads its row FOR SHARE inside its fenced transaction,
-- so a switch waits for an in-flight batch and no batch of a retired or
-- paused version commits after the switch or the pause.
CREATE TABLE onceflow.projections (
    name          text        COLLATE "C" NOT NULL,
    version       integer     NOT NULL CHECK (version >= 1),
    source_topic  text        NOT NULL,
    history_topic text        NOT NULL,
    group_id      text        NOT NULL UNIQUE,
    state         text        NOT NULL DEFAULT 'building' CHECK (state IN ('building', 'active', 'retired')),
    paused        boolean     NOT NULL DEFAULT false,
    pause_reason  text        NOT NULL DEFAULT '',
    created_at    timestamptz NOT NULL DEFAULT now(),
    activated_at  timestamptz,
    PRIMARY KEY (name, version)
);

CREATE UNIQUE INDEX projections_one_active ON onceflow.projections (name) WHERE state = 'active';
