"""Tune: a draft rules file learnt from what sales decided, with its evidence and a check on
the newest cohorts it did not learn from (docs/rules.md, "Tuning the rules from sales'
outcomes").

Plain counting, no model: among the MQLs whose outcome is known (reached SQL, or disqualified,
lost, or still open after `SETTLE_DAYS`), each candidate feature (an engagement type or content
category before the MQL, a fit fact, an intent pattern) is counted with and without, and the
difference in conversion gets a simultaneous 95% Newcombe interval. A feature whose interval
holds no difference keeps its points; the others get points from their log odds ratio on the
scale of the rules in force. The same log gives the same draft, byte for byte: everything is
sorted, nothing reads a clock or a random source.

Offline, beside `streams/offline/whatif.py`: functions over a replay's outputs, no printing
(`streams/offline/tune_terminal.py` prints).
"""

from __future__ import annotations

import bisect
import math
import statistics
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, Final, NamedTuple

import tomlkit
from tomlkit.items import AoT, Table

from schemas.countries import country_code
from schemas.events import ENGAGEMENT_TYPES, LINK_TYPES
from streams.common.events_codec import decode_event
from streams.core.fold import trace
from streams.core.lead import Entry, LeadStageChange, Rank, entry_of
from streams.core.rules import MICROS_PER_DAY, Rules, parse_rules
from streams.core.scoring import email_domain, seniority_of, title_phrases
from streams.core.stages import CUSTOMERS, SQL_OR_FURTHER
from streams.errors import InvalidEventError, LeadflowError
from streams.offline.replay import BadLine, Replayed, Replayer, effective_changes, replay_sharded
from streams.offline.whatif import ConversionRates

SETTLE_DAYS: Final = 30
"""An MQL still open this many days of event time before the log's end counts as not
converted; a younger one is left out (sales may not have worked it yet)."""
MIN_OUTCOMES: Final = 30
"""Fewer MQLs than this that converted, or that did not, in the learning cohorts: no draft."""
MIN_LEADS: Final = 20
"""A feature needs this many learning MQLs with it and as many without, else too little data."""
MIN_SCALED: Final = 3
"""A family of points (engagement, fit) needs this many scored features with enough data to
set its scale of points per unit of log odds."""
HELD_OUT_SHARE: Final = 0.25
"""The newest cohorts that hold at least this share of the known outcomes are held out."""
HELD_OUT_RANGE: Final = (0.15, 0.40)
"""Months are cohorts only when the newest ones hold out a share in this range."""
CONFIDENCE: Final = 0.95
"""Simultaneous over all the features tested (Bonferroni)."""
MIN_REASON_LEADS: Final = 15
"""A disqualification reason needs this many MQLs to suggest anything."""
MIN_SUGGESTED: Final = 5
"""A suggested fact needs this many of the reason's leads."""
SALES_VERDICTS: Final = ("disqualified.sales", "disqualified.deal_lost")
TUNED_SUFFIX: Final = "-tuned"


class TooLittleData(LeadflowError):
    """The log holds too few outcomes to learn anything: no draft."""


class Feature(NamedTuple):
    """A candidate: a table of the rules file (`engagement.points`, `fit.country_points`...,
    or `intent_patterns`) and the name in it ("" for a single value)."""

    table: str
    name: str

    @property
    def family(self) -> str:
        """engagement, fit or intent: points are put on the scale of their family."""
        return self.table.split(".", 1)[0].removesuffix("_patterns")

    @property
    def label(self) -> str:
        """What a marketer calls it."""
        kind = {
            "engagement.points": "engagement",
            "engagement.category_points": "content category",
            "fit.seniority_points": "seniority",
            "fit.company_size_points": "company size from",
            "fit.industry_points": "industry",
            "fit.country_points": "country",
            "fit.title_keyword_points": "title keyword",
            "fit.business_email_points": "business email",
            "intent_patterns": "intent pattern",
        }[self.table]
        if self.table == "fit.company_size_points":
            return f"company size {self.name}+ employees"
        return f"{kind} {self.name}".strip()


@dataclass(frozen=True)
class LeadOutcome:
    """One lead's first MQL under the rules in force, and what sales made of it."""

    lead_id: str
    mql_at: int
    mql_cause: str
    converted: bool | None
    """Reached SQL (True), disqualified, lost or settled open (False), too young (None)."""
    won: bool
    reasons: tuple[str, ...]
    """Sales' reasons of its disqualifications and lost deals after the MQL."""
    features: frozenset[Feature]
    cohort: str


@dataclass(frozen=True)
class Evidence:
    """One feature counted among the learning MQLs whose outcome is known."""

    feature: Feature
    with_leads: int
    with_converted: int
    without_leads: int
    without_converted: int
    difference: float | None
    """Conversion with minus without (None: too little data)."""
    low: float | None
    high: float | None
    log_odds_ratio: float | None
    points: float | None
    """In the rules in force (None: the rules do not name it)."""
    proposed: float | None = None
    """The draft's points, when they change."""

    @property
    def verdict(self) -> str:
        """too little data, noise (the interval holds no difference) or predicts."""
        if self.low is None or self.high is None:
            return "too little data"
        return "noise" if self.low <= 0 <= self.high else "predicts"

    @property
    def rate_with(self) -> float | None:
        return self.with_converted / self.with_leads if self.with_leads else None

    @property
    def rate_without(self) -> float | None:
        return self.without_converted / self.without_leads if self.without_leads else None


@dataclass(frozen=True)
class Suggestion:
    """A fit fact far more common among the leads sales disqualified for `reason` than among
    all MQLs."""

    reason: str
    feature: Feature
    leads: int
    """With the reason and the fact."""
    reason_leads: int
    low: float
    high: float
    """Interval of the fact's share among the reason's leads."""
    all_leads: int
    """MQLs with the fact."""
    all_mqls: int


@dataclass(frozen=True)
class HeldOutFigures(ConversionRates):
    """One rule set on the held-out cohorts (MQLs from `Tuned.held_out_from` on)."""

    rules_version: str
    mqls: int
    mqls_to_sql: int
    sqls: int
    sqls_to_won: int
    judged: int
    """Of its MQLs, those that were MQLs of the rules in force with an outcome sales decided."""
    judged_converted: int
    auc: float | None
    """How well the lead's score (fit + engagement) at its MQL under the rules in force ranks
    the judged leads that converted above those that did not (0.5: no better than chance)."""

    @property
    def precision(self) -> float | None:
        """Share of its judged MQLs that became SQL."""
        return self.judged_converted / self.judged if self.judged else None


@dataclass(frozen=True)
class Tuned:
    """The draft and everything behind it."""

    draft_toml: str
    draft_version: str
    live_version: str
    evidence: tuple[Evidence, ...]
    scales: dict[str, float | None]
    """Points per unit of log odds ratio, per family (None: too little data to set it)."""
    suggestions: tuple[Suggestion, ...]
    cohort_unit: str
    learning_cohorts: tuple[str, ...]
    held_out_cohorts: tuple[str, ...]
    held_out_from: str
    """ISO date the held-out cohorts start on."""
    mqls: int
    learning_outcomes: int
    learning_converted: int
    left_out: int
    """MQLs younger than `SETTLE_DAYS` and undecided."""
    live: HeldOutFigures
    draft: HeldOutFigures
    worse: tuple[str, ...]
    """Why the draft does worse on the held-out cohorts (empty: it does not)."""
    bad_lines: int

    @property
    def changed(self) -> tuple[Evidence, ...]:
        return tuple(e for e in self.evidence if e.proposed is not None)


def tune(
    lines: Sequence[bytes], live: Rules, live_text: str, max_event_bytes: int, jobs: int = 1
) -> Tuned:
    """Learn a draft of `live` (whose file is `live_text`) from the outcomes in `lines` (in
    event-time order), check it on the newest cohorts; raise TooLittleData when the learning
    cohorts hold too few outcomes. The log is replayed in `jobs` processes (the same draft)."""
    entries, end = _entries_by_lead(lines, max_event_bytes)
    live_changes, bad = _changes(lines, live, max_event_bytes, jobs)
    outcomes = _outcomes(live_changes, entries, live, end)
    unit, cohort_of = _cohort_unit(outcomes.values())
    outcomes = {lead: _in_cohort(o, cohort_of) for lead, o in outcomes.items()}
    known = [o for o in outcomes.values() if o.converted is not None]
    learning_cohorts, held_out_cohorts = _split(known)
    learning = [o for o in known if o.cohort in learning_cohorts]
    converted = sum(bool(o.converted) for o in learning)
    if min(converted, len(learning) - converted) < MIN_OUTCOMES or not held_out_cohorts:
        raise TooLittleData(
            f"too few outcomes to learn from: {len(learning)} MQLs with a known outcome in the "
            f"learning cohorts ({converted} became SQL, {len(learning) - converted} did not) "
            f"and {len(held_out_cohorts)} newer cohorts to check on; tune needs at least "
            f"{MIN_OUTCOMES} of each outcome and two cohorts ({len(outcomes)} MQLs in the log, "
            f"{len(known)} with a known outcome): no draft written"
        )
    evidence, scales = _evidence(learning, live)
    suggestions = _suggestions(list(outcomes.values()), live)
    draft_toml = draft_text(live_text, live, evidence, suggestions, learning_cohorts)
    draft = parse_rules(draft_toml.encode(), "the draft")
    held_out_from = _cohort_start(held_out_cohorts[0], unit)
    draft_changes, _ = _changes(lines, draft, max_event_bytes, jobs)
    judged = {o.lead_id: o for o in known if o.cohort in held_out_cohorts}
    held_out = {lead for lead, o in outcomes.items() if o.mql_at >= held_out_from} | {
        lead
        for lead, lead_changes in draft_changes.items()
        if lead not in outcomes
        and any(c.to_stage == "mql" and c.occurred_at >= held_out_from for c in lead_changes)
    }
    live_figures = _held_out(live_changes, live, held_out, judged, entries)
    draft_figures = _held_out(draft_changes, draft, held_out, judged, entries)
    return Tuned(
        draft_toml=draft_toml,
        draft_version=draft.version,
        live_version=live.rules_version,
        evidence=evidence,
        scales=scales,
        suggestions=suggestions,
        cohort_unit=unit,
        learning_cohorts=learning_cohorts,
        held_out_cohorts=held_out_cohorts,
        held_out_from=_iso_date(held_out_from),
        mqls=len(outcomes),
        learning_outcomes=len(learning),
        learning_converted=converted,
        left_out=len(outcomes) - len(known),
        live=live_figures,
        draft=draft_figures,
        worse=_worse(live_figures, draft_figures),
        bad_lines=bad,
    )


# The log: each lead's entries, and its stage changes under a rule set.


def _entries_by_lead(
    lines: Iterable[bytes], max_event_bytes: int
) -> tuple[dict[str, list[Entry]], int]:
    """Each lead's entries in sort order, each event once, and the log's latest event time."""
    found: dict[str, dict[str, Entry]] = {}
    end = 0
    for raw in lines:
        try:
            event = decode_event(raw, max_event_bytes)
        except InvalidEventError:
            continue  # the replay counts it
        if event.type in LINK_TYPES:
            continue
        entry = entry_of(event)
        found.setdefault(event.lead_id, {}).setdefault(entry.event_id, entry)
        end = max(end, entry.at)
    return {lead: sorted(kept.values()) for lead, kept in found.items()}, end


def _changes(
    lines: Sequence[bytes], rules: Rules, max_event_bytes: int, jobs: int
) -> tuple[dict[str, list[LeadStageChange]], int]:
    """Each lead's stage changes in effect under `rules`, in order, and the bad lines; the
    leads replayed in `jobs` processes, each a share of them (`replay_sharded`)."""
    [parts] = replay_sharded(lines, jobs, [partial(Replayer, rules, max_event_bytes)], _by_lead)
    by_lead: dict[str, list[LeadStageChange]] = {}
    for part, _ in parts:
        by_lead.update(part)  # a lead's changes all come from one process
    return by_lead, sum(bad for _, bad in parts)


def _by_lead(
    replayer: Replayer, items: Iterator[tuple[int, Replayed | BadLine]]
) -> tuple[dict[str, list[LeadStageChange]], int]:
    changes = [item for _, item in items if isinstance(item, LeadStageChange)]
    by_lead: dict[str, list[LeadStageChange]] = {}
    for change in effective_changes(changes).values():
        by_lead.setdefault(change.lead_id, []).append(change)
    for lead_changes in by_lead.values():
        lead_changes.sort(key=lambda change: change.sequence)
    return by_lead, replayer.counts.bad


def _outcomes(
    changes: dict[str, list[LeadStageChange]],
    entries: dict[str, list[Entry]],
    rules: Rules,
    end: int,
) -> dict[str, LeadOutcome]:
    settled_before = end - SETTLE_DAYS * MICROS_PER_DAY
    found = {}
    for lead_id in sorted(changes):
        lead_changes = changes[lead_id]
        mql = next((c for c in lead_changes if c.to_stage == "mql"), None)
        if mql is None:
            continue
        after = [c for c in lead_changes if c.sequence > mql.sequence]
        converted: bool | None = any(c.to_stage in SQL_OR_FURTHER for c in after)
        reasons = tuple(c.reason or c.rule for c in after if c.rule in SALES_VERDICTS)
        if not converted and not reasons and mql.occurred_at > settled_before:
            converted = None
        found[lead_id] = LeadOutcome(
            lead_id=lead_id,
            mql_at=mql.occurred_at,
            mql_cause=mql.causation_event_id,
            converted=converted,
            won=any(c.to_stage in CUSTOMERS for c in after),
            reasons=reasons,
            features=features_before(entries.get(lead_id, []), mql, rules),
            cohort="",
        )
    return found


def features_before(
    entries: Sequence[Entry], mql: LeadStageChange, rules: Rules
) -> frozenset[Feature]:
    """What the lead had done and was by its MQL (its entries up to the MQL's cause)."""
    found: set[Feature] = set()
    profile: dict[str, Any] = {}
    high_intent = rules.lifecycle.high_intent_event_types
    for entry in entries:
        if entry.at > mql.occurred_at:
            break
        if entry.rank == Rank.PROFILE:
            profile.update(entry.detail or {})
        elif entry.rank == Rank.ENGAGEMENT and entry.type in ENGAGEMENT_TYPES:
            if isinstance(entry.detail, str) and entry.type == "content_download":
                found.add(Feature("engagement.category_points", entry.detail))
            elif entry.type not in high_intent:
                found.add(Feature("engagement.points", entry.type))
        if entry.event_id == mql.causation_event_id:
            break
    found.update(_fit_features(profile, rules))
    if mql.rule.startswith("mql.intent."):
        found.add(Feature("intent_patterns", mql.rule.removeprefix("mql.intent.")))
    return frozenset(found)


def _fit_features(profile: dict[str, Any], rules: Rules) -> Iterable[Feature]:
    fit = rules.fit
    domain = email_domain(profile.get("email"))
    if domain is not None and domain not in fit.free_email_domains:
        yield Feature("fit.business_email_points", "")
    seniority = seniority_of(profile, fit)
    if seniority is not None:
        yield Feature("fit.seniority_points", seniority)
    phrases = title_phrases(profile.get("job_title"))
    for keyword in sorted(phrases & fit.title_keyword_points.keys()):
        yield Feature("fit.title_keyword_points", keyword)
    size = profile.get("company_size")
    if isinstance(size, int):
        band = next((b for b in reversed(fit.company_size_points) if size >= b.min_employees), None)
        if band is not None:
            yield Feature("fit.company_size_points", str(band.min_employees))
    industry = profile.get("industry")
    if isinstance(industry, str):
        yield Feature("fit.industry_points", industry.lower())
    country = profile.get("country")
    if isinstance(country, str):
        yield Feature("fit.country_points", country.upper())


def current_points(feature: Feature, rules: Rules) -> float | None:
    """The feature's points in `rules`; None when the rules do not name it (or it has none)."""
    fit, engagement = rules.fit, rules.engagement
    table, name = feature
    if table == "fit.business_email_points":
        return fit.business_email_points
    if table == "fit.company_size_points":
        return next(
            (b.points for b in fit.company_size_points if str(b.min_employees) == name), None
        )
    tables: dict[str, dict[str, float]] = {
        "engagement.points": engagement.points,
        "engagement.category_points": engagement.category_points,
        "fit.seniority_points": fit.seniority_points,
        "fit.industry_points": fit.industry_points,
        "fit.country_points": fit.country_points,
        "fit.title_keyword_points": fit.title_keyword_points,
    }
    return tables[table].get(name) if table in tables else None


# Cohorts: by month of the MQL (by ISO week when the log spans fewer than four months).


def _month(at: int) -> str:
    return datetime.fromtimestamp(at / 1_000_000, tz=UTC).strftime("%Y-%m")


def _week(at: int) -> str:
    year, week, _ = datetime.fromtimestamp(at / 1_000_000, tz=UTC).isocalendar()
    return f"{year}-W{week:02d}"


def _cohort_unit(outcomes: Iterable[LeadOutcome]) -> tuple[str, Any]:
    """Months, when there are at least four and the newest ones can hold out between
    `HELD_OUT_RANGE` of the known outcomes; else ISO weeks."""
    known = [o for o in outcomes if o.converted is not None]
    months = Counter(_month(o.mql_at) for o in known)
    if len(months) >= 4:
        held = 0
        for month in sorted(months, reverse=True)[:-1]:
            held += months[month]
            if held >= HELD_OUT_SHARE * len(known):
                low, high = HELD_OUT_RANGE
                if low * len(known) <= held <= high * len(known):
                    return "month", _month
                break
    return "week", _week


def _in_cohort(outcome: LeadOutcome, cohort_of: Any) -> LeadOutcome:
    return replace(outcome, cohort=cohort_of(outcome.mql_at))


def _cohort_start(cohort: str, unit: str) -> int:
    if unit == "month":
        start = datetime.strptime(f"{cohort}-01", "%Y-%m-%d").replace(tzinfo=UTC)
    else:
        start = datetime.strptime(f"{cohort}-1", "%G-W%V-%u").replace(tzinfo=UTC)
    return (start - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


def _iso_date(at: int) -> str:
    return datetime.fromtimestamp(at / 1_000_000, tz=UTC).date().isoformat()


def _split(known: Sequence[LeadOutcome]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The learning cohorts and the newest ones, holding at least `HELD_OUT_SHARE` of the known
    outcomes, held out (at least one of each when there are two cohorts)."""
    sizes = Counter(o.cohort for o in known)
    cohorts = sorted(sizes)
    if len(cohorts) < 2:
        return tuple(cohorts), ()
    held: list[str] = []
    while len(held) < len(cohorts) - 1 and sum(sizes[c] for c in held) < HELD_OUT_SHARE * len(
        known
    ):
        held.insert(0, cohorts[len(cohorts) - 1 - len(held)])
    return tuple(c for c in cohorts if c not in held), tuple(held)


# The evidence.


def wilson(successes: int, trials: int, z: float) -> tuple[float, float]:
    """Wilson score interval of a proportion."""
    if trials == 0:
        return 0.0, 1.0
    p = successes / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    spread = (
        z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
    )
    return max(0.0, centre - spread), min(1.0, centre + spread)


def newcombe(k1: int, n1: int, k2: int, n2: int, z: float) -> tuple[float, float, float]:
    """The difference of two proportions k1/n1 - k2/n2 and its Newcombe hybrid score interval
    (method 10: from the two Wilson intervals)."""
    p1, p2 = k1 / n1, k2 / n2
    l1, u1 = wilson(k1, n1, z)
    l2, u2 = wilson(k2, n2, z)
    difference = p1 - p2
    low = difference - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    high = difference + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return difference, low, high


def log_odds_ratio(k1: int, n1: int, k2: int, n2: int) -> float:
    """ln of the odds ratio of converting with against without (0.5 added to each cell, so an
    empty cell gives a finite number)."""
    return math.log(((k1 + 0.5) * (n2 - k2 + 0.5)) / ((n1 - k1 + 0.5) * (k2 + 0.5)))


def z_for(tests: int, confidence: float = CONFIDENCE) -> float:
    """The normal quantile of a two-sided interval that holds `confidence` for all `tests` at
    once (Bonferroni)."""
    alpha = (1 - confidence) / max(tests, 1)
    return statistics.NormalDist().inv_cdf(1 - alpha / 2)


def _evidence(
    learning: Sequence[LeadOutcome], rules: Rules
) -> tuple[tuple[Evidence, ...], dict[str, float | None]]:
    total = len(learning)
    converted = sum(bool(o.converted) for o in learning)
    seen = sorted({f for o in learning for f in o.features})
    counts = {
        f: (
            sum(f in o.features for o in learning),
            sum(f in o.features and bool(o.converted) for o in learning),
        )
        for f in seen
    }
    tested = [f for f in seen if min(counts[f][0], total - counts[f][0]) >= MIN_LEADS]
    z = z_for(len(tested))
    found: list[Evidence] = []
    for feature in seen:
        n1, k1 = counts[feature]
        n2, k2 = total - n1, converted - k1
        difference = low = high = odds = None
        if feature in tested:
            difference, low, high = newcombe(k1, n1, k2, n2, z)
            odds = log_odds_ratio(k1, n1, k2, n2)
        found.append(
            Evidence(
                feature, n1, k1, n2, k2, difference, low, high, odds, current_points(feature, rules)
            )
        )
    scales = {family: _scale(found, family) for family in ("engagement", "fit")}
    proposed = []
    for item in found:
        scale = scales.get(item.feature.family)
        if item.verdict == "predicts" and scale is not None and item.log_odds_ratio is not None:
            points = float(math.floor(scale * item.log_odds_ratio + 0.5))
            cap = _cap(item.feature, rules)
            if cap is not None:
                points = max(-cap, min(cap, points))  # more would be clipped by the cap
            if points != (item.points or 0.0):
                item = replace(item, proposed=points)
        proposed.append(item)
    return tuple(proposed), scales


def _cap(feature: Feature, rules: Rules) -> float | None:
    if feature.table == "engagement.points":
        return rules.engagement.caps.get(feature.name)
    if feature.table == "engagement.category_points":
        return rules.engagement.caps.get("content_download")
    return None


def _scale(evidence: Sequence[Evidence], family: str) -> float | None:
    """Points per unit of log odds ratio in `family`: the median points of the features the
    rules in force score, over the median size of their log odds ratio. So a feature with the
    evidence of the typical scored feature gets the typical points."""
    scored = [
        e
        for e in evidence
        if e.feature.family == family and e.points and e.log_odds_ratio is not None
    ]
    if len(scored) < MIN_SCALED:
        return None
    odds = statistics.median(abs(e.log_odds_ratio or 0.0) for e in scored)
    if odds == 0:
        return None
    return statistics.median(abs(e.points or 0.0) for e in scored) / odds


def _suggestions(outcomes: Sequence[LeadOutcome], rules: Rules) -> tuple[Suggestion, ...]:
    """For each reason sales gave often enough, the fit facts whose share among its leads is
    above their share among all MQLs beyond the interval (simultaneous over every pair)."""
    by_reason: dict[str, list[LeadOutcome]] = {}
    for outcome in outcomes:
        for reason in sorted(set(outcome.reasons)):
            by_reason.setdefault(reason, []).append(outcome)
    facts = sorted({f for o in outcomes for f in o.features if f.family == "fit"})
    everyone = Counter(f for o in outcomes for f in o.features if f.family == "fit")
    reasons = sorted(r for r, leads in by_reason.items() if len(leads) >= MIN_REASON_LEADS)
    z = z_for(len(reasons) * len(facts))
    found = []
    for reason in reasons:
        leads = by_reason[reason]
        among = Counter(f for o in leads for f in o.features if f.family == "fit")
        for fact in facts:
            k, n = among[fact], len(leads)
            low, high = wilson(k, n, z)
            if k >= MIN_SUGGESTED and low > everyone[fact] / len(outcomes):
                found.append(
                    Suggestion(reason, fact, k, n, low, high, everyone[fact], len(outcomes))
                )
    return tuple(found)


# Held out: the newest cohorts under both rule sets.


def _held_out(
    changes: dict[str, list[LeadStageChange]],
    rules: Rules,
    held_out: set[str],
    judged: dict[str, LeadOutcome],
    entries: dict[str, list[Entry]],
) -> HeldOutFigures:
    """`rules`' figures over the held-out leads: those whose MQL under the rules in force is in
    the held-out cohorts, and those that only the draft makes MQLs there."""
    mqls = sqls = to_sql = to_won = judged_mqls = judged_converted = 0
    for lead_id in sorted(held_out):
        lead_changes = changes.get(lead_id, [])
        mql = next((c for c in lead_changes if c.to_stage == "mql"), None)
        if mql is None:
            continue
        after = [c for c in lead_changes if c.sequence > mql.sequence]
        sql = any(c.to_stage in SQL_OR_FURTHER for c in after)
        mqls += 1
        to_sql += sql
        sqls += sql
        to_won += sql and any(c.to_stage in CUSTOMERS for c in after)
        outcome = judged.get(lead_id)
        if outcome is not None:
            judged_mqls += 1
            judged_converted += bool(outcome.converted)
    scores = [
        (score_at(entries.get(o.lead_id, []), o.mql_cause, rules), bool(o.converted))
        for _, o in sorted(judged.items())
    ]
    return HeldOutFigures(
        rules_version=rules.rules_version,
        mqls=mqls,
        mqls_to_sql=to_sql,
        sqls=sqls,
        sqls_to_won=to_won,
        judged=judged_mqls,
        judged_converted=judged_converted,
        auc=auc(scores),
    )


def score_at(entries: Sequence[Entry], event_id: str, rules: Rules) -> float:
    """The lead's fit + engagement under `rules` just before its event `event_id` (the one that
    made it an MQL under the rules in force: what it had shown, without the form's points)."""
    score = 0.0
    for entry, fold in trace(entries, None, rules):
        if entry.event_id == event_id:
            break
        score = fold.fit_score + fold.engagement
    return score


def auc(scored: Sequence[tuple[float, bool]]) -> float | None:
    """The chance that a lead that converted scores above one that did not (ties half):
    the area under the ROC curve. None without both kinds."""
    positives = [s for s, converted in scored if converted]
    negatives = sorted(s for s, converted in scored if not converted)
    if not positives or not negatives:
        return None
    wins = 0.0
    for score in positives:
        below = bisect.bisect_left(negatives, score)
        ties = bisect.bisect_right(negatives, score) - below
        wins += below + ties / 2
    return wins / (len(positives) * len(negatives))


def _worse(live: HeldOutFigures, draft: HeldOutFigures) -> tuple[str, ...]:
    found = []
    if live.auc is not None and draft.auc is not None and draft.auc < live.auc:
        found.append(f"AUC {draft.auc:.3f} < {live.auc:.3f}")
    if (
        live.precision is not None
        and draft.precision is not None
        and draft.precision < live.precision
    ):
        found.append(f"precision {draft.precision:.1%} < {live.precision:.1%}")
    return tuple(found)


# The draft: the rules file in force, edited in place (comments and layout kept).


def draft_text(
    live_text: str,
    live: Rules,
    evidence: Sequence[Evidence],
    suggestions: Sequence[Suggestion],
    learning_cohorts: Sequence[str],
) -> str:
    """The rules in force with each proposed change, its evidence as a trailing comment, the
    suggestions as comments under [exclusions], and the version marked as tuned."""
    document = tomlkit.parse(live_text)
    document["version"] = f"{live.version}{TUNED_SUFFIX}"
    for item in evidence:
        if item.proposed is not None:
            _set_points(document, item.feature, item.proposed, evidence_comment(item))
    exclusions = document.get("exclusions")
    if suggestions:
        if not isinstance(exclusions, Table):
            exclusions = tomlkit.table()
            document["exclusions"] = exclusions
        for suggestion in suggestions:
            exclusions.add(tomlkit.comment(f"suggestion: {suggestion_text(suggestion)}"))
    changed = sum(item.proposed is not None for item in evidence)
    header = (
        f"# Draft of rules {live.version} by `leadflow tune`: {changed} points changed from the "
        f"outcomes of the MQLs of cohorts {learning_cohorts[0]} to {learning_cohorts[-1]}.\n"
        "# Each changed value says why (conversion to SQL with and without it, the difference\n"
        "# with its simultaneous 95% Newcombe interval, the log odds ratio); suggestions from\n"
        "# sales' disqualification reasons are comments under [exclusions]. docs/rules.md,\n"
        '# "Tuning the rules from sales\' outcomes".\n'
    )
    return header + tomlkit.dumps(document)


def evidence_comment(item: Evidence) -> str:
    """One line: the change and the evidence behind it."""
    before = "unscored" if item.points is None else f"{item.points:g}"
    return (
        f"tuned {before} -> {item.proposed:g}: {item.with_leads} MQLs with it, "
        f"{item.rate_with:.0%} became SQL; {item.without_leads} without, "
        f"{item.rate_without:.0%}; difference {_signed(item.difference)} "
        f"(95% {_signed(item.low)} to {_signed(item.high)}), log OR {item.log_odds_ratio:+.2f}"
    )


def suggestion_text(s: Suggestion) -> str:
    """One line: the reason, the fact, and the counts."""
    share = s.leads / s.reason_leads
    return (
        f"{s.reason}: {s.leads} of {s.reason_leads} leads ({share:.0%}, 95% {s.low:.0%} to "
        f"{s.high:.0%}) have {s.feature.label}, against {s.all_leads} of {s.all_mqls} MQLs "
        f"({s.all_leads / s.all_mqls:.0%}): fewer points in [{s.feature.table}] or an exclusion?"
    )


def _signed(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:+.0f} pts"


def _set_points(document: Any, feature: Feature, points: float, comment: str) -> None:
    value = tomlkit.integer(int(points)) if points.is_integer() else tomlkit.float_(points)
    value.comment(comment)
    section, _, table_name = feature.table.partition(".")
    container = document[section]
    if feature.table == "fit.business_email_points":
        container["business_email_points"] = value
        return
    if feature.table == "fit.company_size_points":
        bands = container["company_size_points"]
        assert isinstance(bands, AoT)
        for band in bands:
            if str(band["min_employees"]) == feature.name:
                band["points"] = value
        return
    if table_name not in container:
        container[table_name] = tomlkit.table()
    table = container[table_name]
    key = next((k for k in table if _same_name(feature, str(k))), feature.name)
    table[key] = value


def _same_name(feature: Feature, key: str) -> bool:
    if feature.table == "fit.country_points":
        return country_code(key) == feature.name
    return key.lower() == feature.name
