-- A partition that halts (failure policy Halt, a non-retryable error) records
-- why on its claim row, so operators see it (`onceflow claims`) and can
-- resume it without restarting the process (`onceflow resume`, or
-- Runtime.ResumePartition): the owner polls the row of a halted partition and
-- resumes it when halted_at is cleared. A new claim clears both columns.
ALTER TABLE onceflow.partition_claims
    ADD COLUMN halted_at   timestamptz,
    ADD COLUMN halt_reason text NOT NULL DEFAULT '';
