-- Command ids are scoped to the aggregate type (issue: "command ids are one
-- namespace across aggregate types"). Before this migration the primary key
-- was command_id alone, so the same id sent to two aggregate types (an
-- account and a transfer numbered alike by a client) answered the second
-- with the first one's outcome and never applied it.
--
-- Every row onceflow wrote before this migration carries the aggregate type
-- of the runtime that handled it (one aggregate type per runtime), so the
-- existing rows keep their meaning: each is now the outcome of that id for
-- that aggregate type. command_id stays the leading key column, so a lookup
-- by command id alone (tools, the client's Postgres fallback) is still
-- index-backed.
ALTER TABLE onceflow.command_results DROP CONSTRAINT command_results_pkey;
ALTER TABLE onceflow.command_results ALTER COLUMN aggregate_type TYPE text COLLATE "C";
ALTER TABLE onceflow.command_results
    ADD CONSTRAINT command_results_pkey PRIMARY KEY (command_id, aggregate_type);

-- A digest of the command's type name and payload (sha-256), so that a
-- resend of a command id with a different payload is told apart from a
-- plain duplicate (an HTTP layer answers 422, per the IETF httpapi
-- idempotency-key draft). NULL for rows written before this migration: their
-- payload is unknown and a resend is answered as a plain duplicate.
ALTER TABLE onceflow.command_results ADD COLUMN request_hash bytea;
