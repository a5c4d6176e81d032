-- Campaign spend as published on the spend topic (schemas.CampaignSpend; docs/contract.md), one
-- row per spend_id: the same source, campaign, day and currency sent again replaces the earlier
-- amount (the latest published wins), so a file loaded twice counts once. Read it with FINAL.
CREATE TABLE IF NOT EXISTS {database}.campaign_spend
(
    spend_id String,
    source LowCardinality(String),
    campaign LowCardinality(String),
    day Date,
    amount Float64,
    currency LowCardinality(String) COMMENT 'ISO 4217; amounts in different currencies are never added',
    published_at DateTime64(3, 'UTC') COMMENT 'Kafka timestamp of the spend record',
    projected_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(published_at)
ORDER BY spend_id
SETTINGS non_replicated_deduplication_window = 1000;
