-- An MQL's owner and queue (schemas.StageChange.owner/queue; the rules' [handoff]).
ALTER TABLE {database}.stage_changes
    ADD COLUMN IF NOT EXISTS owner LowCardinality(Nullable(String)) AFTER campaign,
    ADD COLUMN IF NOT EXISTS queue LowCardinality(Nullable(String)) AFTER owner;
ALTER TABLE {database}.challenger_stage_changes
    ADD COLUMN IF NOT EXISTS owner LowCardinality(Nullable(String)) AFTER campaign,
    ADD COLUMN IF NOT EXISTS queue LowCardinality(Nullable(String)) AFTER owner;
