-- Outbox records belong to the claim (group, topic, partition) that wrote
-- them, not to the topic alone: two consumers of one history topic (two
-- process managers, say) each have their own gap-free outbox sequence
-- under their own fence.
ALTER TABLE onceflow.outbox ADD COLUMN group_id text COLLATE "C" NOT NULL DEFAULT '';
UPDATE onceflow.outbox o SET group_id = c.group_id
FROM (SELECT DISTINCT ON (topic, partition) group_id, topic, partition FROM onceflow.partition_claims ORDER BY topic, partition, claimed_at DESC) c
WHERE o.topic = c.topic AND o.partition = c.partition;
ALTER TABLE onceflow.outbox DROP CONSTRAINT outbox_topic_partition_seq_pkey;
ALTER TABLE onceflow.outbox ADD CONSTRAINT outbox_pkey PRIMARY KEY (group_id, topic, partition, seq);
