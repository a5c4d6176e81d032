-- The identity an event links to its lead, as the core reads it (docs/rules.md, "Identity
-- stitching"): the duplicate a `leads_merged` names (merged_lead_id), else an anonymous_id
-- other than lead_id; NULL: the event links nothing. Stored hashed like the lead ids. Rows
-- projected before this migration read it from their anonymous_id; a merge projected before
-- it is not known until `leadflow rebuild` projects the events again.
ALTER TABLE {database}.events
    ADD COLUMN IF NOT EXISTS linked_id Nullable(String)
    DEFAULT if(anonymous_id != lead_id, anonymous_id, NULL) AFTER anonymous_id;
