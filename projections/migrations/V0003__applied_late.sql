-- Account changes caused by a signal older than the account's detailed past say so
-- (schemas.AccountChange.applied_late; docs/rules.md).
ALTER TABLE {database}.account_changes
    ADD COLUMN IF NOT EXISTS applied_late Bool DEFAULT false AFTER retracted;
