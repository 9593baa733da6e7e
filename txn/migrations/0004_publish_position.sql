-- Events out (history and state topics): how far the partition's stored
-- events have been published to Kafka. The publisher of a partition is its
-- current owner; it moves published_seq only after the Kafka transaction
-- holding every event up to it committed, so a new owner resumes at
-- published_seq + 1 and loses nothing (it may publish again what a previous
-- owner published without recording it: a repeat of an earlier seq).
ALTER TABLE onceflow.partition_claims ADD COLUMN published_seq bigint NOT NULL DEFAULT 0;
