-- Stage changes as published: an upsert log keyed by change_id (highest revision wins).
-- Read it through the views (FINAL), never by raw count: redeliveries are merged lazily.
CREATE TABLE IF NOT EXISTS {database}.stage_changes
(
    change_id String,
    lead_id String,
    from_stage LowCardinality(Nullable(String)),
    to_stage LowCardinality(String),
    occurred_at DateTime64(6, 'UTC') COMMENT 'Event time of the causing event',
    causation_event_id String,
    rule LowCardinality(String),
    rules_version LowCardinality(String),
    mql_kind LowCardinality(Nullable(String)),
    reason LowCardinality(Nullable(String)),
    fit_score Float64,
    engagement_score Float64,
    source LowCardinality(Nullable(String)) COMMENT 'The lead''s first-touch source',
    campaign LowCardinality(Nullable(String)) COMMENT 'The lead''s first-touch campaign',
    sequence UInt32,
    revision UInt32,
    retracted Bool,
    published_at DateTime64(3, 'UTC') COMMENT 'Kafka timestamp of the stage-change record',
    projected_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(revision)
ORDER BY change_id
SETTINGS non_replicated_deduplication_window = 1000;

-- Input events (no properties: they may hold personal data), one row per event_id.
CREATE TABLE IF NOT EXISTS {database}.events
(
    event_id String,
    lead_id String,
    type LowCardinality(String),
    occurred_at DateTime64(6, 'UTC'),
    source LowCardinality(Nullable(String)),
    campaign LowCardinality(Nullable(String)),
    amount Nullable(Float64) COMMENT 'deal_won only',
    currency LowCardinality(Nullable(String)) COMMENT 'deal_won only',
    published_at DateTime64(3, 'UTC'),
    projected_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
ORDER BY event_id
SETTINGS non_replicated_deduplication_window = 1000;
