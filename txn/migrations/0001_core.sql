-- onceflow core schema. Everything lives in the "onceflow" schema so it never
-- collides with a service's own tables (inline read models live beside it).
--
-- Identifier columns that are indexed (aggregate type and id, command id)
-- use COLLATE "C": they are compared for equality only, and byte-wise
-- comparison keeps the unique indexes cheap on databases whose default
-- collation is a linguistic one (en_US.UTF-8 and the like).

CREATE SCHEMA IF NOT EXISTS onceflow;

-- One row per (consumer group, topic, partition). The single fenced writer of
-- a partition is whoever holds the current epoch. next_offset is the Kafka
-- offset to consume next: it only moves inside the batch transaction that
-- also writes that batch's effects. next_seq is the next gap-free event
-- sequence number for the partition.
CREATE TABLE onceflow.partition_claims (
    group_id     text        NOT NULL,
    topic        text        NOT NULL,
    partition    integer     NOT NULL,
    next_offset  bigint      NOT NULL DEFAULT 0,
    next_seq     bigint      NOT NULL DEFAULT 1,
    epoch        bigint      NOT NULL DEFAULT 0,
    owner        text        NOT NULL DEFAULT '',
    claimed_at   timestamptz NOT NULL DEFAULT now(),
    committed_at timestamptz,
    PRIMARY KEY (group_id, topic, partition)
);

-- The event store. seq is assigned by the fenced writer of the partition, so
-- (topic, partition, seq) is gap-free and readers can tail it without skipping events
-- committed out of order.
CREATE TABLE onceflow.events (
    topic          text        COLLATE "C" NOT NULL,
    partition      integer     NOT NULL,
    seq            bigint      NOT NULL,
    aggregate_type text        COLLATE "C" NOT NULL,
    aggregate_id   text        COLLATE "C" NOT NULL,
    version        bigint      NOT NULL,
    type           text        NOT NULL,
    data           bytea       NOT NULL,
    metadata       bytea,
    command_id     text        NOT NULL DEFAULT '',
    recorded_at    timestamptz NOT NULL DEFAULT now(),
    -- Named constraints: the Go code maps their violations to errors
    -- (eventsource.ErrConcurrencyConflict for the version).
    CONSTRAINT events_topic_partition_seq_pkey PRIMARY KEY (topic, partition, seq),
    CONSTRAINT events_aggregate_version_key UNIQUE (aggregate_type, aggregate_id, version)
);

CREATE TABLE onceflow.snapshots (
    aggregate_type text        COLLATE "C" NOT NULL,
    aggregate_id   text        COLLATE "C" NOT NULL,
    version        bigint      NOT NULL,
    state          bytea       NOT NULL,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (aggregate_type, aggregate_id)
);

-- Idempotency: one row per command id ever handled. A command id seen again
-- returns this row and changes nothing.
CREATE TABLE onceflow.command_results (
    command_id     text        COLLATE "C" CONSTRAINT command_results_pkey PRIMARY KEY,
    group_id       text        NOT NULL,
    topic          text        NOT NULL,
    partition      integer     NOT NULL,
    "offset"       bigint      NOT NULL,
    aggregate_type text        NOT NULL DEFAULT '',
    aggregate_id   text        NOT NULL DEFAULT '',
    outcome        text        NOT NULL CHECK (outcome IN ('accepted', 'rejected', 'dead_lettered')),
    first_version  bigint      NOT NULL DEFAULT 0,
    last_version   bigint      NOT NULL DEFAULT 0,
    first_seq      bigint      NOT NULL DEFAULT 0,
    last_seq       bigint      NOT NULL DEFAULT 0,
    reason         text        NOT NULL DEFAULT '',
    recorded_at    timestamptz NOT NULL DEFAULT now()
);

-- Input that could not be handled: undecodable records, handler panics. The
-- raw record is kept so it can be inspected and replayed.
CREATE TABLE onceflow.dead_letters (
    id          bigserial   PRIMARY KEY,
    group_id    text        NOT NULL,
    topic       text        NOT NULL,
    partition   integer     NOT NULL,
    "offset"    bigint      NOT NULL,
    command_id  text        NOT NULL DEFAULT '',
    key         bytea,
    value       bytea,
    headers     jsonb       NOT NULL DEFAULT '{}'::jsonb,
    error       text        NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT dead_letters_offset_key UNIQUE (group_id, topic, partition, "offset")
);
