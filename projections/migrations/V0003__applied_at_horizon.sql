-- Account changes caused by a signal older than the account's detailed past say so
-- (schemas.AccountChange.applied_at_horizon; docs/accounts.md).
ALTER TABLE {database}.account_changes
    ADD COLUMN IF NOT EXISTS applied_at_horizon Bool DEFAULT false AFTER retracted;
