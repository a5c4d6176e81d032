-- Handoff events as published (schemas.HandoffEvent; docs/handoff.md): facts, never revised, so
-- a redelivery repeats the same row and ReplacingMergeTree keeps one per handoff_id. Read them
-- through the views (FINAL). lead_id is stored as every lead id is (a keyed hash unless the
-- operator opts out).
CREATE TABLE IF NOT EXISTS {database}.handoff_events
(
    handoff_id String,
    lead_id String,
    kind LowCardinality(String),
    at DateTime64(6, 'UTC') COMMENT 'The MQL, the assignment, the warning, the deadline, the touch or the retraction',
    mql_change_id String COMMENT 'The MQL stage change the handoff follows: one handoff per MQL',
    causation_event_id Nullable(String),
    owner LowCardinality(Nullable(String)),
    queue LowCardinality(Nullable(String)),
    assigned_by LowCardinality(Nullable(String)) COMMENT 'assigned only: rules or crm',
    team LowCardinality(Nullable(String)),
    mql_kind LowCardinality(String),
    grade LowCardinality(Nullable(String)),
    source LowCardinality(Nullable(String)) COMMENT 'The lead''s first-touch source',
    campaign LowCardinality(Nullable(String)) COMMENT 'The lead''s first-touch campaign',
    mql_at DateTime64(6, 'UTC'),
    due_at Nullable(DateTime64(6, 'UTC')),
    target_minutes Nullable(Float64) COMMENT 'Minutes of the owner''s working time',
    touch LowCardinality(Nullable(String)) COMMENT 'touched only: attempt or contact',
    response_business_minutes Nullable(Float64) COMMENT 'touched only',
    response_wall_minutes Nullable(Float64) COMMENT 'touched only',
    within_target Nullable(Bool) COMMENT 'touched only',
    rules_version LowCardinality(String),
    published_at DateTime64(3, 'UTC') COMMENT 'Kafka timestamp of the handoff record',
    projected_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
ORDER BY handoff_id
SETTINGS non_replicated_deduplication_window = 1000;
