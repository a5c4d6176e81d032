-- Attribution and conversion windows (docs/funnel.md, "Attribution" and "Conversion windows").
-- Applied after R__views.sql (repeatables run by name): it reads stage_changes_live,
-- lead_status, lead_conversions and identity_links.

-- Every touch: an event with a source or a campaign, counted for the lead it belongs to. A
-- linked identity's events (a visitor's anonymous visits, a merged CRM duplicate's events)
-- belong to the lead the identity is linked to (identity_links: the earliest link).
CREATE OR REPLACE VIEW {database}.attribution_touches AS
SELECT
    if(links.identity = '', events.lead_id, links.lead_id) AS lead_id,
    events.event_id AS event_id,
    events.occurred_at AS occurred_at,
    ifNull(events.source, '(none)') AS source,
    ifNull(events.campaign, '(none)') AS campaign
FROM {database}.events AS events FINAL
LEFT JOIN (SELECT identity, lead_id FROM {database}.identity_links) AS links
    ON links.identity = events.lead_id
WHERE events.source IS NOT NULL OR events.campaign IS NOT NULL
SETTINGS join_use_nulls = 0;

-- The credit each conversion gives each source and campaign, by model: one row per conversion,
-- model, source and campaign. Conversions: a lead's first MQL, first SQL and first win
-- (lead_status), and every deal_won with an amount (revenue, in its currency). The path of a
-- conversion is its lead's touches up to the conversion's occurred_at, inclusive, ordered by
-- time then event id. Models: first_touch (the path's first), lead_creating (the touch of the
-- event that caused the lead's first `lead` stage change, if it is on the path),
-- last_touch_before_mql (the path's last at or before the lead's first MQL, if that came
-- before the conversion), linear (1/n each) and u_shaped (40% first, 40% last, 20% shared by
-- the others; one touch takes 1, two take half each). A conversion with nothing to credit
-- credits (none) / (none) with 1, so every conversion's credits sum to 1 under every model.
CREATE OR REPLACE VIEW {database}.attribution_credits AS
WITH
    links AS (SELECT identity, lead_id FROM {database}.identity_links),
    conversions AS
    (
        SELECT lead_id, pair.1 AS conversion, assumeNotNull(pair.2) AS converted_at,
               concat(lead_id, '/', conversion) AS conversion_id,
               CAST(NULL AS Nullable(String)) AS currency, 0.0 AS amount, mql_at
        FROM {database}.lead_status
        ARRAY JOIN [('mql', mql_at), ('sql', sql_at), ('won', customer_at)] AS pair
        WHERE pair.2 IS NOT NULL
        UNION ALL
        SELECT if(links.identity = '', deals.lead_id, links.lead_id) AS lead_id,
               'revenue' AS conversion, deals.occurred_at AS converted_at,
               deals.event_id AS conversion_id, deals.currency AS currency,
               assumeNotNull(deals.amount) AS amount, status.mql_at AS mql_at
        FROM {database}.events AS deals FINAL
        LEFT JOIN links ON links.identity = deals.lead_id
        LEFT JOIN {database}.lead_status AS status
            ON status.lead_id = if(links.identity = '', deals.lead_id, links.lead_id)
        WHERE deals.type = 'deal_won' AND deals.amount IS NOT NULL
    ),
    lead_touches AS
    (
        SELECT lead_id, arraySort(groupArray((occurred_at, event_id, source, campaign))) AS touches
        FROM {database}.attribution_touches
        GROUP BY lead_id
    ),
    lead_creations AS
    (
        SELECT lead_id, argMin(causation_event_id, sequence) AS creating_event_id
        FROM {database}.stage_changes_live
        WHERE to_stage = 'lead'
        GROUP BY lead_id
    ),
    journeys AS
    (
        SELECT
            conversions.conversion_id AS conversion_id,
            conversions.lead_id AS lead_id,
            conversions.conversion AS conversion,
            conversions.converted_at AS converted_at,
            conversions.currency AS currency,
            conversions.amount AS amount,
            arrayFilter(t -> t.1 <= conversions.converted_at, lead_touches.touches) AS path,
            length(path) AS n,
            if(conversions.mql_at IS NOT NULL AND conversions.mql_at <= conversions.converted_at,
               assumeNotNull(conversions.mql_at), conversions.converted_at) AS mql_bound,
            arrayFilter(t -> t.1 <= mql_bound, path) AS before_mql,
            arrayFilter(t -> t.2 = lead_creations.creating_event_id, path) AS creating
        FROM conversions
        LEFT JOIN lead_touches ON lead_touches.lead_id = conversions.lead_id
        LEFT JOIN lead_creations ON lead_creations.lead_id = conversions.lead_id
    ),
    credited AS
    (
        SELECT
            conversion_id, lead_id, conversion, converted_at, currency, amount,
            model_credits.1 AS model,
            arrayJoin(
                if(empty(model_credits.2), [('(none)', '(none)', 1.0)], model_credits.2)
            ) AS credit_of
        FROM journeys
        ARRAY JOIN [
            ('first_touch', arraySlice(arrayMap(t -> (t.3, t.4, 1.0), path), 1, 1)),
            ('lead_creating', arrayMap(t -> (t.3, t.4, 1.0), creating)),
            ('last_touch_before_mql',
             arraySlice(arrayMap(t -> (t.3, t.4, 1.0), before_mql), -1, 1)),
            ('linear', arrayMap(t -> (t.3, t.4, 1.0 / n), path)),
            ('u_shaped', arrayMap(
                (t, i) -> (t.3, t.4,
                           multiIf(n = 1, 1.0, n = 2, 0.5, i = 1 OR i = n, 0.4, 0.2 / (n - 2))),
                path, arrayEnumerate(path)))
        ] AS model_credits
    )
SELECT
    conversion_id, lead_id, conversion, converted_at, currency, model,
    credit_of.1 AS source, credit_of.2 AS campaign,
    sum(credit_of.3) AS credit, sum(credit_of.3 * amount) AS amount
FROM credited
GROUP BY conversion_id, lead_id, conversion, converted_at, currency, model, source, campaign
SETTINGS join_use_nulls = 0;

-- Attribution per model, conversion, month of the conversion, source and campaign (and
-- currency, for revenue): conversions (those that gave the row any credit), credit (the
-- conversions it is credited with: fractions add up), amount (revenue credited: credit times
-- each deal's amount; 0 for the other conversions). One view for every model, so that they
-- read the same touches and a chart compares them by the `model` column.
CREATE OR REPLACE VIEW {database}.attribution AS
SELECT model, conversion, toStartOfMonth(converted_at) AS month, source, campaign, currency,
       uniqExact(conversion_id) AS conversions, sum(credit) AS credit,
       sum(amount) AS amount
FROM {database}.attribution_credits
GROUP BY model, conversion, month, source, campaign, currency;

-- MQL -> SQL and SQL -> won within 7, 30 and 90 days, per cohort week (the week of the step's
-- first stage: the MQL, the SQL). Of the cohort's leads (entered): converted within the window
-- (converted_at at most N days after entered_at), still_open (not converted within it, and
-- the window has not ended: entered_at + N days is after now()), and not_converted (the
-- window ended without a conversion); entered = converted + still_open + not_converted.
-- rate = converted / entered; open_share = still_open / entered (how much of a young cohort
-- is undecided); decided_rate = converted / (converted + not_converted).
CREATE OR REPLACE VIEW {database}.conversion_windows AS
SELECT
    step,
    toMonday(entered_at) AS cohort_week,
    window_days,
    count() AS entered,
    countIf(converted_at IS NOT NULL AND days_to_convert <= window_days) AS converted,
    countIf(NOT (converted_at IS NOT NULL AND days_to_convert <= window_days)
            AND entered_at + toIntervalDay(window_days) > now64(6)) AS still_open,
    entered - converted - still_open AS not_converted,
    converted / entered AS rate,
    still_open / entered AS open_share,
    if(converted + not_converted = 0, NULL, converted / (converted + not_converted))
        AS decided_rate
FROM {database}.lead_conversions
ARRAY JOIN [7, 30, 90] AS window_days
WHERE step IN ('mql_to_sql', 'sql_to_won')
GROUP BY step, cohort_week, window_days;
