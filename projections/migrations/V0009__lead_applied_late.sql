-- A lead's stage change that an event older than the lead's detailed past moved, with an
-- approximate moment or scores, says so (schemas.StageChange.applied_late; docs/rules.md).
ALTER TABLE {database}.stage_changes
    ADD COLUMN IF NOT EXISTS applied_late Bool DEFAULT false AFTER retracted;
ALTER TABLE {database}.challenger_stage_changes
    ADD COLUMN IF NOT EXISTS applied_late Bool DEFAULT false AFTER retracted;
