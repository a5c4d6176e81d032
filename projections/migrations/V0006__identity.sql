-- Identity stitching (docs/rules.md): the tracker's anonymous id each event was seen under.
-- Equal to lead_id: a visitor's event; another id: the lead's event that links that visitor.
ALTER TABLE {database}.events ADD COLUMN IF NOT EXISTS anonymous_id Nullable(String) AFTER currency;
