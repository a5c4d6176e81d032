-- Account stage changes as published: an upsert log keyed by change_id (highest revision wins),
-- like stage_changes. Account ids are company domains or CRM ids, stored in clear; the lead that
-- caused a change is stored like every lead id (a keyed hash unless the operator opts out).
CREATE TABLE IF NOT EXISTS {database}.account_changes
(
    change_id String,
    account_id String,
    from_stage LowCardinality(Nullable(String)),
    to_stage LowCardinality(String),
    occurred_at DateTime64(6, 'UTC') COMMENT 'Event time of the causing lead event',
    rule LowCardinality(String),
    rules_version LowCardinality(String),
    causation_lead_id String,
    causation_event_id String,
    causation_change_id Nullable(String),
    people UInt32 COMMENT 'The account''s make-up when it changed stage',
    leads UInt32,
    mqls UInt32,
    sqls UInt32,
    engagement_score Float64,
    seniorities Array(LowCardinality(String)),
    sequence UInt32,
    revision UInt32,
    retracted Bool,
    published_at DateTime64(3, 'UTC') COMMENT 'Kafka timestamp of the account-change record',
    projected_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(revision)
ORDER BY change_id
SETTINGS non_replicated_deduplication_window = 1000;

-- Account signals: one lead's facts as its account reads them. The highest revision of each
-- (account, lead) is the truth; member = false says the lead left the account.
CREATE TABLE IF NOT EXISTS {database}.account_members
(
    account_id String,
    lead_id String,
    revision UInt32 COMMENT 'The lead''s event count',
    occurred_at DateTime64(6, 'UTC') COMMENT 'Event time of the lead''s latest event',
    causation_event_id String,
    causation_change_id Nullable(String),
    member Bool,
    stage LowCardinality(Nullable(String)),
    seniority LowCardinality(Nullable(String)),
    engagement_score Float64,
    published_at DateTime64(3, 'UTC') COMMENT 'Kafka timestamp of the account-signal record',
    projected_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(revision)
ORDER BY (account_id, lead_id)
SETTINGS non_replicated_deduplication_window = 1000;
