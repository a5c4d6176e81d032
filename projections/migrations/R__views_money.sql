-- The funnel's money (docs/funnel.md, "Money: spend, CAC and pipeline velocity"): campaign spend
-- against the leads and customers it bought. Runs after R__views.sql (repeatables run sorted by
-- name) and reads its views. Amounts are never converted: one currency per row. A division by
-- no lead, MQL, SQL or customer gives NULL, never an error.

-- Per lead: its first entry into lead, MQL, SQL, opportunity and customer (stage changes in
-- effect), its first touch, and the touch of the event that made it a lead (the causation event
-- of its first `lead` stage change; '(none)' when it never was a lead or the event had none).
CREATE OR REPLACE VIEW {database}.lead_money_touches AS
SELECT status.lead_id AS lead_id, status.source AS source, status.campaign AS campaign,
       ifNull(creating.source, '(none)') AS creating_source,
       ifNull(creating.campaign, '(none)') AS creating_campaign,
       status.first_seen_at AS first_seen_at, status.lead_at AS lead_at,
       status.mql_at AS mql_at, status.sql_at AS sql_at,
       status.opportunity_at AS opportunity_at, status.customer_at AS customer_at
FROM {database}.lead_status AS status
LEFT JOIN
    (SELECT lead_id, argMinIf(causation_event_id, sequence, to_stage = 'lead') AS event_id
     FROM {database}.stage_changes_live
     GROUP BY lead_id) AS lead_change ON lead_change.lead_id = status.lead_id
LEFT JOIN
    (SELECT event_id, source, campaign FROM {database}.events FINAL) AS creating
    ON creating.event_id = lead_change.event_id;

-- One row per lead and stage it entered (lead, mql, sql, customer), with the month of its first
-- entry: what spend is divided by.
CREATE OR REPLACE VIEW {database}.money_entries AS
SELECT lead_id, source, campaign, creating_source, creating_campaign,
       entry.1 AS stage, toStartOfMonth(assumeNotNull(entry.2)) AS month
FROM {database}.lead_money_touches
ARRAY JOIN arrayFilter(
    e -> e.2 IS NOT NULL,
    [('lead', lead_at), ('mql', mql_at), ('sql', sql_at), ('customer', customer_at)]) AS entry;

-- Spend per month, source, campaign and currency (the latest record of each day counts).
CREATE OR REPLACE VIEW {database}.spend_monthly AS
SELECT toStartOfMonth(day) AS month, source, campaign, currency,
       sum(amount) AS spend, count() AS days
FROM {database}.campaign_spend FINAL
GROUP BY month, source, campaign, currency;

-- Blended CAC per month and currency: all spend of the month over all customers won that month
-- (first entry into `customer`); beside it the cost per lead, MQL and SQL of the month.
CREATE OR REPLACE VIEW {database}.cac_monthly AS
SELECT spent.month AS month, spent.currency AS currency, spent.spend AS spend,
       entered.customers AS customers, spent.spend / nullIf(entered.customers, 0) AS cac,
       entered.leads AS leads, spent.spend / nullIf(entered.leads, 0) AS cost_per_lead,
       entered.mqls AS mqls, spent.spend / nullIf(entered.mqls, 0) AS cost_per_mql,
       entered.sqls AS sqls, spent.spend / nullIf(entered.sqls, 0) AS cost_per_sql
FROM
    (SELECT month, currency, sum(spend) AS spend
     FROM {database}.spend_monthly GROUP BY month, currency) AS spent
LEFT JOIN
    (SELECT month, countIf(stage = 'lead') AS leads, countIf(stage = 'mql') AS mqls,
            countIf(stage = 'sql') AS sqls, countIf(stage = 'customer') AS customers
     FROM {database}.money_entries GROUP BY month) AS entered
    ON entered.month = spent.month;

-- CAC per month, source and campaign (and currency), by first touch: the campaign's spend over
-- the customers won that month whose first touch was that source and campaign.
CREATE OR REPLACE VIEW {database}.cac_by_source AS
SELECT spent.month AS month, spent.source AS source, spent.campaign AS campaign,
       spent.currency AS currency, spent.spend AS spend,
       entered.customers AS customers, spent.spend / nullIf(entered.customers, 0) AS cac,
       entered.leads AS leads, spent.spend / nullIf(entered.leads, 0) AS cost_per_lead,
       entered.mqls AS mqls, spent.spend / nullIf(entered.mqls, 0) AS cost_per_mql,
       entered.sqls AS sqls, spent.spend / nullIf(entered.sqls, 0) AS cost_per_sql
FROM {database}.spend_monthly AS spent
LEFT JOIN
    (SELECT month, source, campaign, countIf(stage = 'lead') AS leads,
            countIf(stage = 'mql') AS mqls, countIf(stage = 'sql') AS sqls,
            countIf(stage = 'customer') AS customers
     FROM {database}.money_entries GROUP BY month, source, campaign) AS entered
    ON entered.month = spent.month AND entered.source = spent.source
       AND entered.campaign = spent.campaign;

-- The same by lead-creating touch: the source and campaign of the event that made the lead.
CREATE OR REPLACE VIEW {database}.cac_by_lead_touch AS
SELECT spent.month AS month, spent.source AS source, spent.campaign AS campaign,
       spent.currency AS currency, spent.spend AS spend,
       entered.customers AS customers, spent.spend / nullIf(entered.customers, 0) AS cac,
       entered.leads AS leads, spent.spend / nullIf(entered.leads, 0) AS cost_per_lead,
       entered.mqls AS mqls, spent.spend / nullIf(entered.mqls, 0) AS cost_per_mql,
       entered.sqls AS sqls, spent.spend / nullIf(entered.sqls, 0) AS cost_per_sql
FROM {database}.spend_monthly AS spent
LEFT JOIN
    (SELECT month, creating_source AS source, creating_campaign AS campaign,
            countIf(stage = 'lead') AS leads, countIf(stage = 'mql') AS mqls,
            countIf(stage = 'sql') AS sqls, countIf(stage = 'customer') AS customers
     FROM {database}.money_entries GROUP BY month, source, campaign) AS entered
    ON entered.month = spent.month AND entered.source = spent.source
       AND entered.campaign = spent.campaign;

-- Each lead that entered `opportunity`: the quarter of its first entry, whether it was won
-- (entered `customer` at or after) and its cycle in days (first stage change to customer).
CREATE OR REPLACE VIEW {database}.velocity_leads AS
SELECT lead_id, source, toStartOfQuarter(assumeNotNull(opportunity_at)) AS quarter,
       ifNull(customer_at >= opportunity_at, false) AS was_won,
       if(was_won, (toUnixTimestamp64Micro(assumeNotNull(customer_at))
                - toUnixTimestamp64Micro(first_seen_at)) / 86400e6, NULL) AS cycle_days
FROM {database}.lead_money_touches
WHERE opportunity_at IS NOT NULL;

-- Each lead's first deal_won (by event time, then event id): its amount and currency.
CREATE OR REPLACE VIEW {database}.first_deals AS
SELECT lead_id, argMin(deal_amount, (occurred_at, event_id)) AS amount,
       argMin(deal_currency, (occurred_at, event_id)) AS currency
FROM
    (SELECT lead_id, occurred_at, event_id, assumeNotNull(amount) AS deal_amount,
            toString(assumeNotNull(currency)) AS deal_currency
     FROM {database}.events FINAL
     WHERE type = 'deal_won' AND amount IS NOT NULL AND currency IS NOT NULL)
GROUP BY lead_id;

-- Pipeline velocity per first-touch source, quarter of the first entry into `opportunity` and
-- currency of the deals: opportunities x win rate x mean deal value / mean cycle days (value a
-- day). Won: entered `customer` at or after `opportunity`; a won lead's deal value is its first
-- deal_won's amount; its cycle runs from its first stage change to its first entry into
-- `customer`. currency, mean_deal_value and velocity are NULL while no deal was won.
CREATE OR REPLACE VIEW {database}.pipeline_velocity AS
SELECT cohort.source AS source, cohort.quarter AS quarter, deals.currency AS currency,
       cohort.opportunities AS opportunities, cohort.won AS won,
       cohort.won / cohort.opportunities AS win_rate,
       deals.deals AS deals, deals.mean_deal_value AS mean_deal_value,
       cohort.mean_cycle_days AS mean_cycle_days,
       cohort.opportunities * win_rate * mean_deal_value / nullIf(mean_cycle_days, 0) AS velocity
FROM
    (SELECT source, quarter, count() AS opportunities, countIf(was_won) AS won,
            if(won = 0, NULL, avgIf(assumeNotNull(cycle_days), was_won)) AS mean_cycle_days
     FROM {database}.velocity_leads GROUP BY source, quarter) AS cohort
LEFT JOIN
    (SELECT source, quarter, toNullable(currency) AS currency, toNullable(count()) AS deals,
            toNullable(avg(amount)) AS mean_deal_value
     FROM {database}.velocity_leads AS lead
     INNER JOIN {database}.first_deals AS deal ON deal.lead_id = lead.lead_id
     WHERE was_won
     GROUP BY source, quarter, currency) AS deals
    ON deals.source = cohort.source AND deals.quarter = cohort.quarter;
