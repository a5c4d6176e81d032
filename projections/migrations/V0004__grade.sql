-- Each stage change carries the lead's grade (schemas.StageChange.grade; the rules' [grade]).
ALTER TABLE {database}.stage_changes
    ADD COLUMN IF NOT EXISTS grade LowCardinality(Nullable(String)) AFTER engagement_score;
