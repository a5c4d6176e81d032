-- The views BI reads. Each is documented in docs/funnel.md (section "Funnel views").
-- Re-applied whenever this file changes. Dates and times are UTC; durations are in days.

-- Every stage change that currently holds: latest revision of each change_id, retractions
-- removed, and none of an identity linked to another lead. A CRM duplicate merged into another
-- lead (`leads_merged`) publishes nothing once linked and retracts what it still has in detail,
-- but the changes folded into its snapshot stay on the topic: left out here, the person counts
-- once, as the lead it was merged into. (Any link makes the identity another lead's: a later
-- link that the core refuses as a conflict only decides to whom, see identity_links. The set
-- of linked ids needs no FINAL: a redelivered event names the same identity.)
CREATE OR REPLACE VIEW {database}.stage_changes_live AS
SELECT change_id, lead_id, from_stage, to_stage, occurred_at, causation_event_id, rule,
       rules_version, mql_kind, reason, fit_score, engagement_score, grade,
       ifNull(source, '(none)') AS source, ifNull(campaign, '(none)') AS campaign, sequence
FROM {database}.stage_changes FINAL
WHERE NOT retracted
    AND lead_id NOT IN
        (SELECT assumeNotNull(linked_id) FROM {database}.events WHERE linked_id IS NOT NULL);

-- One row per lead: its current stage and the first time it entered each stage (NULL: never).
-- A lead merged into another is no row of its own (stage_changes_live leaves it out).
CREATE OR REPLACE VIEW {database}.lead_status AS
SELECT
    lead_id,
    argMax(to_stage, sequence) AS current_stage,
    argMax(occurred_at, sequence) AS stage_since,
    argMax(source, sequence) AS source,
    argMax(campaign, sequence) AS campaign,
    argMax(grade, sequence) AS current_grade,
    min(occurred_at) AS first_seen_at,
    minIfOrNull(occurred_at, to_stage = 'subscriber') AS subscriber_at,
    minIfOrNull(occurred_at, to_stage = 'lead') AS lead_at,
    minIfOrNull(occurred_at, to_stage = 'mql') AS mql_at,
    argMinIf(mql_kind, sequence, to_stage = 'mql') AS mql_kind,
    argMinIf(grade, sequence, to_stage = 'mql') AS mql_grade,
    minIfOrNull(occurred_at, to_stage = 'sql') AS sql_at,
    minIfOrNull(occurred_at, to_stage = 'opportunity') AS opportunity_at,
    minIfOrNull(occurred_at, to_stage = 'customer') AS customer_at,
    minIfOrNull(occurred_at, to_stage = 'evangelist') AS evangelist_at,
    minIfOrNull(occurred_at, to_stage = 'disqualified') AS disqualified_at,
    argMaxIf(reason, sequence, to_stage = 'disqualified') AS disqualified_reason
FROM {database}.stage_changes_live
GROUP BY lead_id;

-- Each lead's conversion steps: when it first entered the step's first stage, and when it first
-- entered the second one afterwards (NULL: not converted).
CREATE OR REPLACE VIEW {database}.lead_conversions AS
SELECT lead_id, source, campaign, pair.1 AS step, pair.2 AS entered_at,
       if(pair.3 >= pair.2, pair.3, NULL) AS converted_at,
       (toUnixTimestamp64Micro(converted_at) - toUnixTimestamp64Micro(entered_at)) / 86400e6
           AS days_to_convert
FROM {database}.lead_status
ARRAY JOIN [
    ('lead_to_mql', lead_at, mql_at),
    ('mql_to_sql', mql_at, sql_at),
    ('sql_to_opportunity', sql_at, opportunity_at),
    ('opportunity_to_customer', opportunity_at, customer_at),
    ('sql_to_won', sql_at, customer_at)
] AS pair
WHERE entered_at IS NOT NULL;

-- Leads entering each stage per day, by first-touch source and campaign.
CREATE OR REPLACE VIEW {database}.stage_entries_daily AS
SELECT toDate(occurred_at) AS day, to_stage AS stage, source, campaign,
       count() AS entries, uniqExact(lead_id) AS leads
FROM {database}.stage_changes_live
GROUP BY day, stage, source, campaign;

-- The same per week (weeks start on Monday).
CREATE OR REPLACE VIEW {database}.stage_entries_weekly AS
SELECT toMonday(occurred_at) AS week, to_stage AS stage, source, campaign,
       count() AS entries, uniqExact(lead_id) AS leads
FROM {database}.stage_changes_live
GROUP BY week, stage, source, campaign;

-- Cohort conversion: of the leads that first entered a step's first stage in week W, how many
-- went on to its second stage (at any time since).
CREATE OR REPLACE VIEW {database}.conversion_cohorts AS
SELECT step, toMonday(entered_at) AS cohort_week, source, campaign,
       count() AS entered, countIf(converted_at IS NOT NULL) AS converted,
       converted / entered AS rate
FROM {database}.lead_conversions
GROUP BY step, cohort_week, source, campaign;

-- Period conversion: per week, first entries into the second stage over first entries into
-- the first stage in that same week (can exceed 1: they are different leads).
CREATE OR REPLACE VIEW {database}.conversion_by_week AS
SELECT step, week, sum(entered) AS entered, sum(converted) AS converted,
       if(entered = 0, NULL, converted / entered) AS rate
FROM
(
    SELECT step, toMonday(entered_at) AS week, 1 AS entered, 0 AS converted
    FROM {database}.lead_conversions
    UNION ALL
    SELECT step, toMonday(converted_at) AS week, 0 AS entered, 1 AS converted
    FROM {database}.lead_conversions
    WHERE converted_at IS NOT NULL
)
GROUP BY step, week;

-- Time to convert between stages, over the leads that converted.
CREATE OR REPLACE VIEW {database}.time_to_convert AS
SELECT step, count() AS converted,
       quantileExactInclusive(0.5)(days_to_convert) AS median_days,
       quantileExactInclusive(0.9)(days_to_convert) AS p90_days,
       avg(days_to_convert) AS mean_days
FROM {database}.lead_conversions
WHERE converted_at IS NOT NULL
GROUP BY step;

-- Sales cycle: from SQL to won, per first-touch source.
CREATE OR REPLACE VIEW {database}.sales_cycle AS
SELECT source, count() AS won,
       quantileExactInclusive(0.5)(days_to_convert) AS median_days,
       quantileExactInclusive(0.9)(days_to_convert) AS p90_days,
       avg(days_to_convert) AS mean_days
FROM {database}.lead_conversions
WHERE step = 'sql_to_won' AND converted_at IS NOT NULL
GROUP BY source;

-- Purchases (deal_won events, repeat purchases included), per currency.
CREATE OR REPLACE VIEW {database}.purchase_value AS
SELECT assumeNotNull(currency) AS currency, count() AS deals,
       sum(assumeNotNull(amount)) AS total_amount, avg(assumeNotNull(amount)) AS mean_amount
FROM {database}.events FINAL
WHERE type = 'deal_won' AND amount IS NOT NULL
GROUP BY currency;

-- Active (high-intent form) vs passive (score) MQLs, by each lead's first MQL, and their SQL rate.
CREATE OR REPLACE VIEW {database}.mql_kinds AS
SELECT assumeNotNull(mql_kind) AS mql_kind, count() AS mqls,
       countIf(sql_at IS NOT NULL) AS became_sql, became_sql / mqls AS sql_rate
FROM {database}.lead_status
WHERE mql_at IS NOT NULL
GROUP BY mql_kind;

-- MQLs by their grade when they became MQL (fit letter, engagement number), and what sales
-- made of them: whether the grade predicts SQL and won, so sales can trust the sort.
CREATE OR REPLACE VIEW {database}.mql_grades AS
SELECT ifNull(mql_grade, '(none)') AS grade, count() AS mqls,
       countIf(sql_at IS NOT NULL) AS became_sql, became_sql / mqls AS sql_rate,
       countIf(customer_at IS NOT NULL) AS won, won / mqls AS won_rate
FROM {database}.lead_status
WHERE mql_at IS NOT NULL
GROUP BY grade;

-- Disqualifications by reason, the stage they happened in, and first-touch source.
CREATE OR REPLACE VIEW {database}.disqualification_reasons AS
SELECT source, assumeNotNull(reason) AS reason, from_stage,
       count() AS disqualifications, uniqExact(lead_id) AS leads
FROM {database}.stage_changes_live
WHERE to_stage = 'disqualified'
GROUP BY source, reason, from_stage;

-- Where leads wait and drop, per stay in a stage: every stage change into a stage is one entry
-- (a recycled lead that enters a stage again counts again; `re_entries` says how many of the
-- entries are such), and every entry ends in exactly one way, by the lead's next stage change:
-- to the next stage (moved_on), to a later one past it (skipped_ahead: a deal won before a quote),
-- to disqualified (dropped), or none yet (waiting). So entered = moved_on + skipped_ahead +
-- dropped + waiting. Days to move on, per entry that moved on; days waited so far by the entries
-- still waiting, measured to the latest stage change in the data (not the wall clock).
CREATE OR REPLACE VIEW {database}.bottlenecks AS
WITH
    (SELECT max(occurred_at) FROM {database}.stage_changes_live) AS data_time,
    ['subscriber', 'lead', 'mql', 'sql', 'opportunity', 'customer', 'evangelist'] AS stage_order,
    stays AS
    (
        SELECT
            to_stage AS stage,
            indexOf(stage_order, to_stage) AS position,
            occurred_at AS entered_at,
            row_number() OVER (PARTITION BY lead_id, to_stage ORDER BY sequence) AS entry_number,
            leadInFrame(toNullable(to_stage), 1, NULL) OVER next_change AS left_to,
            leadInFrame(toNullable(occurred_at), 1, NULL) OVER next_change AS left_at,
            indexOf(stage_order, left_to) AS left_to_position
        FROM {database}.stage_changes_live
        WINDOW next_change AS
            (PARTITION BY lead_id ORDER BY sequence ROWS BETWEEN CURRENT ROW AND 1 FOLLOWING)
    )
SELECT
    stage,
    position,
    count() AS entered,
    countIf(left_to_position = position + 1) AS moved_on,
    countIf(left_to_position > position + 1) AS skipped_ahead,
    countIf(left_to = 'disqualified') AS dropped,
    countIf(left_to IS NULL) AS waiting,
    countIf(entry_number > 1) AS re_entries,
    quantileExactInclusiveIf(0.5)(
        (toUnixTimestamp64Micro(left_at) - toUnixTimestamp64Micro(entered_at)) / 86400e6,
        left_to_position = position + 1
    ) AS median_days_to_move_on,
    quantileExactInclusiveIf(0.5)(
        (toUnixTimestamp64Micro(data_time) - toUnixTimestamp64Micro(entered_at)) / 86400e6,
        left_to IS NULL
    ) AS median_days_waiting
FROM stays
WHERE position BETWEEN 1 AND 6
GROUP BY stage, position;

-- Engagement per day: events by type and by the event's own source and campaign.
CREATE OR REPLACE VIEW {database}.engagement_daily AS
SELECT toDate(occurred_at) AS day, type AS event_type,
       ifNull(source, '(none)') AS source, ifNull(campaign, '(none)') AS campaign,
       count() AS events, uniqExact(lead_id) AS leads
FROM {database}.events FINAL
GROUP BY day, event_type, source, campaign;

-- Scoring feedback: for each event type, the SQL rate of MQLs that did it (up to the moment they
-- became MQL) against MQLs that did not. Marketing uses it to retune points in the rules file.
CREATE OR REPLACE VIEW {database}.scoring_feedback AS
WITH
    mqls AS
    (
        SELECT lead_id, assumeNotNull(mql_at) AS became_mql_at, sql_at IS NOT NULL AS became_sql
        FROM {database}.lead_status
        WHERE mql_at IS NOT NULL
    ),
    (SELECT count() FROM mqls) AS all_mqls,
    (SELECT countIf(became_sql) FROM mqls) AS all_sqls
SELECT
    type AS event_type,
    count() AS mqls_did,
    countIf(became_sql) AS sqls_did,
    sqls_did / mqls_did AS sql_rate_did,
    all_mqls - mqls_did AS mqls_did_not,
    all_sqls - sqls_did AS sqls_did_not,
    if(mqls_did_not = 0, NULL, sqls_did_not / mqls_did_not) AS sql_rate_did_not
FROM
(
    SELECT DISTINCT events.lead_id AS lead_id, events.type AS type, mqls.became_sql AS became_sql
    FROM {database}.events AS events FINAL
    INNER JOIN mqls ON mqls.lead_id = events.lead_id
    WHERE events.occurred_at <= mqls.became_mql_at
)
GROUP BY event_type;

-- The funnel: leads that ever reached each stage, and leads in it now.
CREATE OR REPLACE VIEW {database}.funnel_overview AS
SELECT pair.1 AS stage, pair.2 AS position,
       countIf(pair.3 IS NOT NULL) AS reached, countIf(current_stage = stage) AS current
FROM {database}.lead_status
ARRAY JOIN [
    ('subscriber', 1, subscriber_at),
    ('lead', 2, lead_at),
    ('mql', 3, mql_at),
    ('sql', 4, sql_at),
    ('opportunity', 5, opportunity_at),
    ('customer', 6, customer_at),
    ('evangelist', 7, evangelist_at),
    ('disqualified', 8, disqualified_at)
] AS pair
GROUP BY stage, position;

-- Accounts (the buying committee: leads rolled up to their company). Account stages only move
-- forward: engaged -> sales_ready -> customer.

-- Every account stage change that currently holds: latest revision, retractions removed.
CREATE OR REPLACE VIEW {database}.account_changes_live AS
SELECT change_id, account_id, from_stage, to_stage, occurred_at, rule, rules_version,
       causation_lead_id, causation_event_id, causation_change_id,
       people, leads, mqls, sqls, engagement_score, seniorities, sequence
FROM {database}.account_changes FINAL
WHERE NOT retracted;

-- One row per account with a stage: its current stage and the first time it entered each stage.
CREATE OR REPLACE VIEW {database}.account_status AS
SELECT
    account_id,
    argMax(to_stage, sequence) AS current_stage,
    argMax(occurred_at, sequence) AS stage_since,
    min(occurred_at) AS first_seen_at,
    minIfOrNull(occurred_at, to_stage = 'engaged') AS engaged_at,
    minIfOrNull(occurred_at, to_stage = 'sales_ready') AS sales_ready_at,
    minIfOrNull(occurred_at, to_stage = 'customer') AS customer_at
FROM {database}.account_changes_live
GROUP BY account_id;

-- The people of each account now: the latest signal of each (account, lead) that says member.
CREATE OR REPLACE VIEW {database}.account_members_live AS
SELECT account_id, lead_id, stage, seniority, engagement_score, occurred_at
FROM {database}.account_members FINAL
WHERE member;

-- People per account: how many, how many at lead / MQL / SQL or further (disqualified people
-- count in none of those), their seniorities (sorted, with repeats), and the account's stage.
CREATE OR REPLACE VIEW {database}.account_people AS
WITH counts AS
(
    SELECT
        account_id,
        count() AS people,
        countIf(stage IN ('lead', 'mql', 'sql', 'opportunity', 'customer', 'evangelist')) AS leads,
        countIf(stage IN ('mql', 'sql', 'opportunity', 'customer', 'evangelist')) AS mqls,
        countIf(stage IN ('sql', 'opportunity', 'customer', 'evangelist')) AS sqls,
        arraySort(groupArrayIf(assumeNotNull(seniority), seniority IS NOT NULL)) AS seniorities,
        max(occurred_at) AS last_activity_at
    FROM {database}.account_members_live
    GROUP BY account_id
)
SELECT counts.account_id AS account_id,
       if(status.account_id = '', '(none)', status.current_stage) AS account_stage,
       people, leads, mqls, sqls, seniorities, last_activity_at
FROM counts
LEFT JOIN {database}.account_status AS status ON status.account_id = counts.account_id;

-- How big buying committees are: accounts by their number of people, and how many of those
-- accounts have at least one MQL / SQL (or further).
CREATE OR REPLACE VIEW {database}.account_sizes AS
SELECT people, count() AS accounts, countIf(mqls > 0) AS with_mql, countIf(sqls > 0) AS with_sql
FROM {database}.account_people
GROUP BY people;

-- The accounts with the most people at SQL or further, then MQL, then people (the first 20).
CREATE OR REPLACE VIEW {database}.top_accounts AS
SELECT account_id, account_stage, people, leads, mqls, sqls, seniorities,
       toDate(last_activity_at) AS last_active_on
FROM {database}.account_people
ORDER BY sqls DESC, mqls DESC, people DESC, account_id
LIMIT 20;

-- The account funnel: accounts that ever reached each stage, and accounts in it now.
CREATE OR REPLACE VIEW {database}.account_funnel AS
SELECT pair.1 AS stage, pair.2 AS position,
       countIf(pair.3 IS NOT NULL) AS reached, countIf(current_stage = stage) AS current
FROM {database}.account_status
ARRAY JOIN [
    ('engaged', 1, engaged_at),
    ('sales_ready', 2, sales_ready_at),
    ('customer', 3, customer_at)
] AS pair
GROUP BY stage, position;

-- Each account's conversion steps: first entry into the step's first stage, and first entry
-- into the second one afterwards (NULL: not converted).
CREATE OR REPLACE VIEW {database}.account_conversions AS
SELECT account_id, pair.1 AS step, pair.2 AS entered_at,
       if(pair.3 >= pair.2, pair.3, NULL) AS converted_at,
       (toUnixTimestamp64Micro(converted_at) - toUnixTimestamp64Micro(entered_at)) / 86400e6
           AS days_to_convert
FROM {database}.account_status
ARRAY JOIN [
    ('engaged_to_sales_ready', engaged_at, sales_ready_at),
    ('sales_ready_to_customer', sales_ready_at, customer_at)
] AS pair
WHERE entered_at IS NOT NULL;

-- Account conversion per step over all accounts, with the time it took those that converted.
CREATE OR REPLACE VIEW {database}.account_conversion AS
SELECT step, count() AS entered, countIf(converted_at IS NOT NULL) AS converted,
       converted / entered AS rate,
       quantileExactInclusive(0.5)(days_to_convert) AS median_days,
       quantileExactInclusive(0.9)(days_to_convert) AS p90_days,
       avg(days_to_convert) AS mean_days
FROM {database}.account_conversions
GROUP BY step;

-- Cohort conversion of accounts: of those that first entered a step's first stage in week W,
-- how many went on to its second stage (at any time since).
CREATE OR REPLACE VIEW {database}.account_conversion_cohorts AS
SELECT step, toMonday(entered_at) AS cohort_week,
       count() AS entered, countIf(converted_at IS NOT NULL) AS converted,
       converted / entered AS rate
FROM {database}.account_conversions
GROUP BY step, cohort_week;

-- The challenger's stage changes that currently hold, as stage_changes_live for the live rules
-- (the challenger stitches the same events: a merged duplicate is left out here too).
CREATE OR REPLACE VIEW {database}.challenger_stage_changes_live AS
SELECT change_id, lead_id, from_stage, to_stage, occurred_at, causation_event_id, rule,
       rules_version, mql_kind, reason, fit_score, engagement_score, grade,
       ifNull(source, '(none)') AS source, ifNull(campaign, '(none)') AS campaign, sequence
FROM {database}.challenger_stage_changes FINAL
WHERE NOT retracted
    AND lead_id NOT IN
        (SELECT assumeNotNull(linked_id) FROM {database}.events WHERE linked_id IS NOT NULL);

-- Champion (the live rules) against challenger, each on its own stage history of the same
-- events: of the MQLs each made, how many became SQL and were won (with 95% Wilson intervals),
-- and of the won leads, how many each flagged as MQL before the win, how many it flagged
-- first (before the other, or alone) and the median days by which it was first when both
-- flagged the lead. Empty until a challenger runs.
CREATE OR REPLACE VIEW {database}.champion_challenger AS
WITH
    sides AS
    (
        SELECT 'champion' AS side, lead_id, occurred_at, to_stage, rules_version
        FROM {database}.stage_changes_live
        UNION ALL
        SELECT 'challenger' AS side, lead_id, occurred_at, to_stage, rules_version
        FROM {database}.challenger_stage_changes_live
    ),
    leads AS
    (
        SELECT side, lead_id,
               max(occurred_at) AS last_at,
               argMax(rules_version, occurred_at) AS version,
               minIfOrNull(occurred_at, to_stage = 'mql') AS mql_at,
               minIfOrNull(occurred_at, to_stage = 'sql') AS sql_at,
               minIfOrNull(occurred_at, to_stage = 'customer') AS won_at
        FROM sides
        GROUP BY side, lead_id
    ),
    paired AS
    (
        SELECT mine.side AS side, mine.last_at AS last_at, mine.version AS version,
               mine.mql_at AS mql_at, mine.sql_at AS sql_at, mine.won_at AS won_at,
               theirs.mql_at AS other_mql_at,
               won_at IS NOT NULL AND mql_at IS NOT NULL AND mql_at <= won_at AS flagged,
               other_mql_at IS NOT NULL AND other_mql_at <= won_at AS other_flagged
        FROM leads AS mine
        LEFT JOIN leads AS theirs
            ON theirs.lead_id = mine.lead_id AND theirs.side != mine.side
    ),
    (SELECT count() FROM {database}.challenger_stage_changes_live) AS challenger_changes,
    1.959963984540054 AS z
SELECT
    side,
    argMax(version, last_at) AS rules_version,
    countIf(mql_at IS NOT NULL) AS mqls,
    countIf(mql_at IS NOT NULL AND sql_at IS NOT NULL) AS became_sql,
    became_sql / mqls AS sql_rate,
    (sql_rate + z * z / (2 * mqls)
        - z * sqrt(sql_rate * (1 - sql_rate) / mqls + z * z / (4 * mqls * mqls)))
        / (1 + z * z / mqls) AS sql_rate_low,
    (sql_rate + z * z / (2 * mqls)
        + z * sqrt(sql_rate * (1 - sql_rate) / mqls + z * z / (4 * mqls * mqls)))
        / (1 + z * z / mqls) AS sql_rate_high,
    countIf(mql_at IS NOT NULL AND won_at IS NOT NULL) AS won,
    won / mqls AS won_rate,
    (won_rate + z * z / (2 * mqls)
        - z * sqrt(won_rate * (1 - won_rate) / mqls + z * z / (4 * mqls * mqls)))
        / (1 + z * z / mqls) AS won_rate_low,
    (won_rate + z * z / (2 * mqls)
        + z * sqrt(won_rate * (1 - won_rate) / mqls + z * z / (4 * mqls * mqls)))
        / (1 + z * z / mqls) AS won_rate_high,
    countIf(won_at IS NOT NULL) AS wins,
    countIf(flagged) AS wins_flagged,
    countIf(flagged AND (NOT other_flagged OR mql_at < other_mql_at)) AS wins_flagged_first,
    quantileExactInclusiveIf(0.5)(
        (toUnixTimestamp64Micro(other_mql_at) - toUnixTimestamp64Micro(mql_at)) / 86400e6,
        flagged AND other_flagged AND mql_at < other_mql_at
    ) AS median_days_first
FROM paired
WHERE challenger_changes > 0
GROUP BY side
SETTINGS join_use_nulls = 1;

-- Identity stitching: each identity linked to a lead, by the earliest event that links it
-- (events.linked_id; the core's rule: first by event time, then event id), with leads_claiming
-- the leads whose events link it (more than 1: the core refused the later ones as conflicts,
-- the identity stays the earliest one's). kind 'visitor': an anonymous id, linked by a lead's
-- event seen under it or by identity_linked; 'merged_lead': a CRM duplicate, when the
-- earliest link is a `leads_merged` (it is no lead of its own any more, stage_changes_live).
-- events and points: the identity's own events, which count for the lead through the link,
-- and their engagement points (events.points: as scored at each event, not decayed);
-- anonymous_events and anonymous_points: those seen under the anonymous id alone (a visitor's
-- visits, its engagement before identification; a merged duplicate has none). What the view
-- cannot see: the core also sorts a profile fact
-- before engagement before sales activity of one microsecond, and does not apply a link past
-- the rules' state.linked_ids or too late for its lead; such links count here all the same.
CREATE OR REPLACE VIEW {database}.identity_links AS
WITH
    links AS
    (
        SELECT
            assumeNotNull(linked_id) AS identity,
            argMin(lead_id, (occurred_at, event_id)) AS linked_lead,
            argMin(type, (occurred_at, event_id)) = 'leads_merged' AS merged,
            min(occurred_at) AS linked_at,
            uniqExact(lead_id) AS leads_claiming
        FROM {database}.events FINAL
        WHERE linked_id IS NOT NULL
        GROUP BY identity
    ),
    own AS
    (
        SELECT
            lead_id AS identity,
            count() AS events,
            sum(points) AS own_points,
            countIf(anonymous_id = lead_id) AS anonymous_events,
            sumIf(points, anonymous_id = lead_id) AS visit_points,
            minIfOrNull(occurred_at, anonymous_id = lead_id) AS first_visit_at
        FROM {database}.events FINAL
        WHERE lead_id IN (SELECT identity FROM links)
        GROUP BY lead_id
    )
SELECT
    links.identity AS identity,
    if(links.merged, 'merged_lead', 'visitor') AS kind,
    links.linked_lead AS lead_id,
    links.linked_at AS linked_at,
    links.leads_claiming AS leads_claiming,
    ifNull(own.events, 0) AS events,
    ifNull(own.own_points, 0) AS points,
    ifNull(own.anonymous_events, 0) AS anonymous_events,
    ifNull(own.visit_points, 0) AS anonymous_points,
    own.first_visit_at AS first_visit_at
FROM links
LEFT JOIN own ON own.identity = links.identity
SETTINGS join_use_nulls = 1;

-- Per day of the link: visitors linked (links, with_history: those with visits of their own),
-- the visits they attributed to leads and those visits' engagement points (as scored at each
-- event, not decayed); CRM duplicates merged (merges) apart.
CREATE OR REPLACE VIEW {database}.identity_links_daily AS
SELECT toDate(linked_at) AS day,
       countIf(kind = 'visitor') AS links,
       countIf(kind = 'merged_lead') AS merges,
       countIf(kind = 'visitor' AND anonymous_events > 0) AS with_history,
       sumIf(anonymous_events, kind = 'visitor') AS events_attributed,
       sumIf(anonymous_points, kind = 'visitor') AS points_attributed
FROM {database}.identity_links
GROUP BY day;

-- One row: how much of the funnel came through a link. links, merges, contested (identities
-- of either kind claimed by more than one lead), events_attributed and visitors_never_identified
-- count every identity; leads and leads_with_anonymous_history are leads of lead_status, where
-- a linked visitor or a merged duplicate is never a lead of its own: it counts once, as its lead.
-- Engagement before identification, in points as scored at each event (not decayed, so not
-- the score a lead has now): points_of_leads_with_anonymous_history sums the events that count
-- for those leads (their own, their visitors' and their merged duplicates'),
-- points_before_identification those of their visitors' visits (seen under an anonymous id
-- alone, before that id was identified: a second device's may come after the sign-up), and
-- the share is the second over the first.
CREATE OR REPLACE VIEW {database}.identity_stitching AS
WITH
    history AS
    (
        SELECT DISTINCT lead_id
        FROM {database}.identity_links
        WHERE kind = 'visitor' AND anonymous_events > 0
            AND lead_id IN (SELECT lead_id FROM {database}.lead_status)
    ),
    (SELECT count() FROM {database}.lead_status) AS all_leads,
    (SELECT count() FROM history) AS with_history,
    (SELECT ifNull(sum(points), 0) FROM {database}.events FINAL WHERE lead_id IN history)
        AS own_points,
    (SELECT sum(points) FROM {database}.identity_links WHERE lead_id IN history) AS linked_points,
    (
        SELECT sumIf(anonymous_points, kind = 'visitor')
        FROM {database}.identity_links
        WHERE lead_id IN history
    ) AS anonymous_points
SELECT
    (SELECT countIf(kind = 'visitor') FROM {database}.identity_links) AS links,
    (SELECT countIf(kind = 'merged_lead') FROM {database}.identity_links) AS merges,
    (SELECT countIf(leads_claiming > 1) FROM {database}.identity_links) AS contested,
    all_leads AS leads,
    with_history AS leads_with_anonymous_history,
    if(all_leads = 0, NULL, with_history / all_leads) AS share_with_anonymous_history,
    (SELECT sumIf(anonymous_events, kind = 'visitor') FROM {database}.identity_links)
        AS events_attributed,
    own_points + linked_points AS points_of_leads_with_anonymous_history,
    anonymous_points AS points_before_identification,
    if(points_of_leads_with_anonymous_history = 0, NULL,
       anonymous_points / points_of_leads_with_anonymous_history)
        AS share_of_points_before_identification,
    (
        SELECT uniqExact(lead_id)
        FROM {database}.events FINAL
        WHERE anonymous_id = lead_id
            AND lead_id NOT IN (SELECT identity FROM {database}.identity_links)
    ) AS visitors_never_identified;

-- The handoff of each MQL (docs/handoff.md, "Measures in ClickHouse"): one row per MQL stage
-- change (mql_change_id) whose handoff was not withdrawn, in its latest state. Each handoff
-- event carries the state when it happened, so the latest event by (at, handoff_id) gives the
-- MQL's time, kind, grade, source and deadline; the owner and queue are the latest `assigned`
-- one's (the rules' routing, then the CRM's owner; a CRM assignment without a queue leaves the
-- MQL in the queue the rules chose). The first attempt is the earliest `touched`
-- event of either touch (a contact is an attempt that reached the lead), the first contact the
-- earliest `touched` contact. Nullable fields are wrapped in tuples so that argMax keeps a NULL.
CREATE OR REPLACE VIEW {database}.handoff_status AS
WITH per_handoff AS
(
    SELECT
        mql_change_id,
        argMax(lead_id, (at, handoff_id)) AS latest_lead_id,
        argMax(mql_at, (at, handoff_id)) AS latest_mql_at,
        argMax((mql_kind, grade, source, campaign, due_at, target_minutes), (at, handoff_id))
            AS latest,
        if(countIf(kind = 'assigned') > 0,
           argMaxIf(tuple(owner), (at, handoff_id), kind = 'assigned'),
           argMax(tuple(owner), (at, handoff_id))).1 AS latest_owner,
        argMaxIf(queue, (at, handoff_id), kind = 'assigned' AND queue IS NOT NULL)
            AS assigned_queue,
        minIfOrNull(at, kind = 'touched') AS attempt_at,
        argMinIf(
            (response_business_minutes, response_wall_minutes, within_target), (at, handoff_id),
            kind = 'touched'
        ) AS attempt,
        minIfOrNull(at, kind = 'touched' AND touch = 'contact') AS contact_at,
        argMinIf(
            (response_business_minutes, response_wall_minutes), (at, handoff_id),
            kind = 'touched' AND touch = 'contact'
        ) AS contact,
        countIf(kind = 'breached') > 0 AS was_breached,
        countIf(kind = 'withdrawn') > 0 AS withdrawn
    FROM {database}.handoff_events FINAL
    GROUP BY mql_change_id
)
SELECT
    mql_change_id,
    latest_lead_id AS lead_id,
    latest_mql_at AS mql_at,
    ifNull(latest_owner, '(none)') AS owner,
    ifNull(assigned_queue, '(none)') AS queue,
    latest.1 AS mql_kind,
    ifNull(latest.2, '(none)') AS grade,
    ifNull(latest.3, '(none)') AS source,
    ifNull(latest.4, '(none)') AS campaign,
    latest.5 AS due_at,
    latest.6 AS target_minutes,
    attempt_at AS first_attempt_at,
    if(attempt_at IS NULL, NULL, attempt.1) AS first_attempt_business_minutes,
    if(attempt_at IS NULL, NULL, attempt.2) AS first_attempt_wall_minutes,
    if(attempt_at IS NULL, NULL, attempt.3) AS first_attempt_within_target,
    contact_at AS first_contact_at,
    if(contact_at IS NULL, NULL, contact.1) AS first_contact_business_minutes,
    if(contact_at IS NULL, NULL, contact.2) AS first_contact_wall_minutes,
    toBool(was_breached) AS breached
FROM per_handoff
WHERE NOT withdrawn;

-- Speed to lead per week of the MQL, by one dimension at a time: `dimension` is `all` (value
-- `(all)`), `owner`, `queue`, `source`, `mql_kind` or `grade`, `value` its value. One view
-- rather than one per dimension: the same percentiles are defined once. Rows with a NULL week
-- count every week together (a percentile of all the weeks is not one of the weekly ones).
-- Minutes from the MQL to the first attempt and to the first contact, in the owner's working
-- time (business) and on the wall clock, over the handoffs touched so far.
CREATE OR REPLACE VIEW {database}.speed_to_lead AS
SELECT
    toMonday(mql_at) AS week,
    pair.1 AS dimension,
    pair.2 AS value,
    count() AS mqls,
    countIf(first_attempt_at IS NOT NULL) AS touched,
    countIf(first_contact_at IS NOT NULL) AS contacted,
    quantileExactInclusive(0.5)(first_attempt_business_minutes) AS attempt_business_p50,
    quantileExactInclusive(0.9)(first_attempt_business_minutes) AS attempt_business_p90,
    quantileExactInclusive(0.5)(first_attempt_wall_minutes) AS attempt_wall_p50,
    quantileExactInclusive(0.9)(first_attempt_wall_minutes) AS attempt_wall_p90,
    quantileExactInclusive(0.5)(first_contact_business_minutes) AS contact_business_p50,
    quantileExactInclusive(0.9)(first_contact_business_minutes) AS contact_business_p90,
    quantileExactInclusive(0.5)(first_contact_wall_minutes) AS contact_wall_p50,
    quantileExactInclusive(0.9)(first_contact_wall_minutes) AS contact_wall_p90
FROM {database}.handoff_status
ARRAY JOIN [
    ('all', '(all)'),
    ('owner', owner),
    ('queue', queue),
    ('source', source),
    ('mql_kind', mql_kind),
    ('grade', grade)
] AS pair
GROUP BY GROUPING SETS ((week, dimension, value), (dimension, value))
SETTINGS group_by_use_nulls = 1;

-- SLA attainment per week of the MQL, owner and queue (of the handoffs with a target): of the
-- handoffs whose first attempt is decided (touched, or past due with no touch), the share whose
-- first attempt came by the deadline. within_target + late + open_past_due + pending =
-- with_target; pending: no touch and not yet due. `breached`: handoffs the worker said were past
-- their deadline untouched (touched since or not). Against now(): a pending handoff becomes
-- open_past_due as the clock passes its deadline, with no event.
CREATE OR REPLACE VIEW {database}.handoff_sla_weekly AS
SELECT
    toMonday(mql_at) AS week,
    owner,
    queue,
    count() AS handoffs,
    countIf(due_at IS NOT NULL) AS with_target,
    countIf(due_at IS NOT NULL AND first_attempt_within_target) AS within_target,
    countIf(due_at IS NOT NULL AND NOT first_attempt_within_target) AS late,
    countIf(due_at IS NOT NULL AND first_attempt_at IS NULL AND due_at < now64(6)) AS open_past_due,
    countIf(due_at IS NOT NULL AND first_attempt_at IS NULL AND due_at >= now64(6)) AS pending,
    countIf(breached) AS breached,
    if(within_target + late + open_past_due = 0, NULL,
       within_target / (within_target + late + open_past_due)) AS attainment
FROM {database}.handoff_status
GROUP BY week, owner, queue;

-- Open breaches now, per owner and queue: handoffs past their deadline (due_at before now())
-- with no touch yet, whether or not the worker's `breached` event has arrived.
CREATE OR REPLACE VIEW {database}.handoff_open_breaches AS
SELECT owner, queue, count() AS open_breaches, min(due_at) AS oldest_due_at,
       min(mql_at) AS oldest_mql_at
FROM {database}.handoff_status
WHERE first_attempt_at IS NULL AND due_at IS NOT NULL AND due_at < now64(6)
GROUP BY owner, queue;

-- The response-time curve on the team's own data, per week of the lead's first MQL with a
-- handoff (one row per lead: its earliest handoff not withdrawn) and band of the wall-clock
-- minutes to its first attempt: under 5, 5-15, 15-60, 60-1440 (1-24 h), 1440 and over (over a
-- day), never (no touch yet); each band holds its lower bound (exactly 5 minutes is 5-15). The
-- lead became SQL if a stage change to sql that holds (stage_changes_live: latest revision, not
-- retracted) came at or after that MQL, and was won if one to customer came at or after that
-- SQL. sql_rate = became_sql / leads (MQL -> SQL), won_rate = won / became_sql (SQL -> won).
CREATE OR REPLACE VIEW {database}.response_time_conversion AS
WITH
    first_handoffs AS
    (
        SELECT lead_id,
               min(mql_at) AS first_mql_at,
               argMin(tuple(first_attempt_wall_minutes), (mql_at, mql_change_id)).1 AS minutes
        FROM {database}.handoff_status
        GROUP BY lead_id
    ),
    outcomes AS
    (
        SELECT lead_id,
               groupArrayIf(occurred_at, to_stage = 'sql') AS sql_times,
               groupArrayIf(occurred_at, to_stage = 'customer') AS won_times
        FROM {database}.stage_changes_live
        WHERE lead_id IN (SELECT lead_id FROM first_handoffs)
        GROUP BY lead_id
    ),
    leads AS
    (
        SELECT
            first_handoffs.first_mql_at AS first_mql_at,
            multiIf(minutes IS NULL, 6, minutes < 5, 1, minutes < 15, 2, minutes < 60, 3,
                    minutes < 1440, 4, 5) AS position,
            arrayFilter(t -> t >= first_mql_at, outcomes.sql_times) AS sqls_after,
            notEmpty(sqls_after) AS became_sql,
            became_sql AND arrayExists(t -> t >= arrayMin(sqls_after), outcomes.won_times) AS won
        FROM first_handoffs
        LEFT JOIN outcomes ON outcomes.lead_id = first_handoffs.lead_id
    )
SELECT
    toMonday(first_mql_at) AS week,
    position,
    ['under 5 min', '5-15 min', '15-60 min', '1-24 h', 'over a day', 'never'][position] AS band,
    count() AS leads,
    countIf(became_sql) AS became_sql,
    countIf(won) AS won,
    became_sql / leads AS sql_rate,
    if(became_sql = 0, NULL, won / became_sql) AS won_rate
FROM leads
GROUP BY week, position;
