-- The engagement points of the event alone, as the rules the projector runs with score it
-- (LEADFLOW_RULES_FILE, as the worker): its type's or content category's points, within what
-- the type's cap (and its group's and the total cap) let one event add; not decayed. 0 for an
-- event that is not engagement. NULL: not scored (projected before this migration, or by a
-- writer given no rules); `leadflow rebuild` scores every event again.
ALTER TABLE {database}.events ADD COLUMN IF NOT EXISTS points Nullable(Float64) AFTER linked_id;
