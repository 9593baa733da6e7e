-- The outbox: records a handler produced in a batch's transaction, to be
-- sent to Kafka after commit, in order, by the partition's publisher (the
-- same one that publishes the events, in the same Kafka transactions). seq
-- is a gap-free per-partition sequence assigned by the fenced writer, like
-- the events' seq: next_outbox_seq on the claim moves in the batch's
-- compare-and-set, published_outbox_seq after the Kafka transaction that
-- sent the records committed.
CREATE TABLE onceflow.outbox (
    topic       text        COLLATE "C" NOT NULL, -- the source: command topic and partition of the writer
    partition   integer     NOT NULL,
    seq         bigint      NOT NULL,
    dest_topic  text        NOT NULL,             -- where the record goes
    key         bytea,
    value       bytea,
    headers     jsonb       NOT NULL DEFAULT '{}'::jsonb,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT outbox_topic_partition_seq_pkey PRIMARY KEY (topic, partition, seq)
);

ALTER TABLE onceflow.partition_claims
    ADD COLUMN next_outbox_seq      bigint NOT NULL DEFAULT 1,
    ADD COLUMN published_outbox_seq bigint NOT NULL DEFAULT 0;
