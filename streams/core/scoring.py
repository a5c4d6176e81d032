"""Scoring: fit from profile facts, engagement from behaviour. Pure functions, no I/O.

Engagement is kept as one bucket per event type, all anchored at the time of the lead's last
engagement: moving to a later time multiplies every bucket by the same half-life factor, then
the new points are added and the type's bucket is clamped to its cap. So a burst of low-value
actions saturates instead of piling up, and a cap never depends on how old the content is.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Mapping
from typing import Final

from streams.core.rules import (
    MICROS_PER_DAY,
    TITLE_PHRASE_MAX_WORDS,
    EngagementRules,
    ExclusionRules,
    FitRules,
    GradeBand,
    GradeRules,
)

PRUNE_BELOW: Final = 1e-3
"""Buckets that decayed below this are dropped: keeps per-lead state small and is deterministic."""

_NON_WORD = re.compile(r"[^a-z0-9]+")

Buckets = dict[str, float]


def fit_score(profile: Mapping[str, object], rules: FitRules) -> float:
    """Demographic and firmographic fit of a merged profile; missing facts score 0."""
    score = 0.0
    for _, _, points in fit_ledger(profile, rules):
        score += points
    return score


def fit_ledger(profile: Mapping[str, object], rules: FitRules) -> list[tuple[str, str, float]]:
    """Each (fact, value, points) that makes the fit score, in the order they add up, then what
    each group's cap takes away; the points sum to `fit_score` exactly."""
    ledger: list[tuple[str, str, float]] = []
    domain = email_domain(profile.get("email"))
    if domain is not None:
        free = domain in rules.free_email_domains
        points = rules.free_email_points if free else rules.business_email_points
        ledger.append(("email", f"{'free-mail' if free else 'business'} domain {domain}", points))
    phrases = title_phrases(profile.get("job_title"))
    seniority = _seniority(profile.get("seniority"), phrases, rules)
    if seniority is not None:
        ledger.append(("seniority", seniority, rules.seniority_points[seniority]))
    keyword = max(
        (p for p in phrases if p in rules.title_keyword_points),
        key=lambda p: (rules.title_keyword_points[p], p),
        default=None,
    )
    if keyword is not None:
        ledger.append(("title_keyword", keyword, rules.title_keyword_points[keyword]))
    size = profile.get("company_size")
    if isinstance(size, int):
        for band in reversed(rules.company_size_points):
            if size >= band.min_employees:
                ledger.append(("company_size", f"{size} (>= {band.min_employees})", band.points))
                break
    industry = profile.get("industry")
    if isinstance(industry, str) and industry.lower() in rules.industry_points:
        ledger.append(("industry", industry.lower(), rules.industry_points[industry.lower()]))
    country = profile.get("country")
    if isinstance(country, str) and country.upper() in rules.country_points:
        ledger.append(("country", country.upper(), rules.country_points[country.upper()]))
    for name, group in rules.groups.items():
        total = sum(points for fact, _, points in ledger if fact in group.facts)
        if abs(total) > group.cap:
            bound = group.cap if total > 0 else -group.cap
            ledger.append(("group cap", f"{name} at {bound:g}", bound - total))
    return ledger


def seniority_of(profile: Mapping[str, object], rules: FitRules) -> str | None:
    """The `seniority` fact if the rules score it, else the most senior one its job title
    shows (fit.title_seniority), else None."""
    return _seniority(profile.get("seniority"), title_phrases(profile.get("job_title")), rules)


def _seniority(stated: object, phrases: frozenset[str], rules: FitRules) -> str | None:
    if isinstance(stated, str) and stated.lower() in rules.seniority_points:
        return stated.lower()
    shown = [rules.title_seniority[p] for p in phrases if p in rules.title_seniority]
    # Ties in points are broken by name, so the answer never depends on set order.
    return max(shown, key=lambda level: (rules.seniority_points[level], level), default=None)


def title_phrases(title: object) -> frozenset[str]:
    """Every run of one to three words of a job title, lower-cased: "VP, Data" gives
    {"vp", "data", "vp data"}. Rules keywords are looked up in this set."""
    if not isinstance(title, str):
        return frozenset()
    return _phrases_of(title)


@functools.lru_cache(maxsize=4096)
def _phrases_of(title: str) -> frozenset[str]:
    # Titles repeat across leads and every event of a lead reads its title again (fit score,
    # seniority before and after): about 3% of the worker's time before this cache.
    words = _NON_WORD.sub(" ", title.lower()).split()
    return frozenset(
        " ".join(words[start : start + length])
        for length in range(1, TITLE_PHRASE_MAX_WORDS + 1)
        for start in range(len(words) - length + 1)
    )


def exclusion_of(profile: Mapping[str, object], rules: ExclusionRules, fit: FitRules) -> str | None:
    """Why this profile must fail the fit criteria: "competitor", "vendor", "student" or None.

    A student word in a job title counts only when the title shows no seniority worth points:
    "Student Intern" is a student, "Student Success Manager" is not."""
    domain = email_domain(profile.get("email"))
    company = profile.get("company")
    company_key = company.strip().lower() if isinstance(company, str) else None
    if (
        matches_domain(domain, rules.competitor_domains)
        or company_key in rules.competitor_companies
    ):
        return "competitor"
    if matches_domain(domain, rules.vendor_domains) or company_key in rules.vendor_companies:
        return "vendor"
    seniority = profile.get("seniority")
    if isinstance(seniority, str) and seniority.lower() in rules.student_seniorities:
        return "student"
    phrases = title_phrases(profile.get("job_title"))
    if not rules.student_title_keywords.isdisjoint(phrases) and not any(
        fit.seniority_points[fit.title_seniority[p]] > 0
        for p in phrases
        if p in fit.title_seniority
    ):
        return "student"
    if domain is not None and domain.endswith(rules.student_email_suffixes):
        return "student"
    return None


def email_domain(email: object) -> str | None:
    """The lower-cased domain of an email address, or None."""
    if not isinstance(email, str) or "@" not in email:
        return None
    return email.rpartition("@")[2].strip().lower() or None


def engagement_points(event_type: str, category: str | None, rules: EngagementRules) -> float:
    """Points of one engagement event: its content category's points if listed, else its type's."""
    if category is not None:
        points = rules.category_points.get(category)
        if points is not None:
            return points
    return rules.points.get(event_type, 0.0)


def decay_factor(elapsed_micros: int, rules: EngagementRules) -> float:
    """How much of a score is left after `elapsed_micros` of event time, at the half-life of
    the types no group gives their own."""
    return math.exp2(-elapsed_micros / (rules.half_life_days * MICROS_PER_DAY))


def type_decay(event_type: str, elapsed_micros: int, rules: EngagementRules) -> float:
    """How much of one type's points is left after `elapsed_micros`, at its group's half-life."""
    half_life = rules.half_life_micros.get(event_type)
    if half_life is None:
        return decay_factor(elapsed_micros, rules)
    return math.exp2(-elapsed_micros / half_life)


def decayed_sum(buckets: Buckets, elapsed_micros: int, rules: EngagementRules) -> float:
    """The sum of the buckets `elapsed_micros` later."""
    if not rules.half_life_micros:
        return sum(buckets.values()) * decay_factor(elapsed_micros, rules)
    return sum(
        value * type_decay(event_type, elapsed_micros, rules)
        for event_type, value in buckets.items()
    )


def add_engagement(
    buckets: Buckets, elapsed_micros: int, event_type: str, points: float, rules: EngagementRules
) -> Buckets:
    """New buckets: the old ones decayed over `elapsed_micros`, plus `points` in `event_type`'s
    bucket, within its type's cap, its group's cap and the total cap."""
    decayed = _decayed(buckets, elapsed_micros, rules)
    old = decayed.get(event_type, 0.0)
    value = old + points
    cap = rules.caps.get(event_type)
    if cap is not None:
        value = max(-cap, min(cap, value))
    members = rules.members.get(event_type)
    if members is not None:
        group_cap = rules.group_of[event_type].cap
        if group_cap is not None:
            others = sum(decayed.get(t, 0.0) for t in members if t != event_type)
            value = _within(value, old, points, group_cap - others, -group_cap - others)
    if rules.total_cap is not None and points > 0:
        others = sum(decayed.values()) - old
        value = _within(value, old, points, rules.total_cap - others, value)
    if abs(value) >= PRUNE_BELOW:
        decayed[event_type] = value
    else:
        decayed.pop(event_type, None)
    return decayed


def combined_engagement(parts: list[tuple[int, Buckets]], at: int, rules: EngagementRules) -> float:
    """The engagement of several identities' buckets together at `at` (each part: its buckets
    and the time they stand at, <= `at`): summed per type, then each type's cap, each group's
    cap and the total cap applied to the sums, so that two identities of one person saturate
    as one would."""
    totals: Buckets = {}
    for anchored_at, buckets in parts:
        for event_type, value in _decayed(buckets, at - anchored_at, rules).items():
            totals[event_type] = totals.get(event_type, 0.0) + value
    grouped: dict[str, float] = {}
    total = 0.0
    for event_type in sorted(totals):
        value = totals[event_type]
        cap = rules.caps.get(event_type)
        if cap is not None:
            value = max(-cap, min(cap, value))
        group = rules.group_of.get(event_type)
        if group is not None and group.cap is not None:
            key = ",".join(rules.members[event_type])
            grouped[key] = grouped.get(key, 0.0) + value
            continue
        total += value
    for event_type, value in sorted(grouped.items()):
        cap = rules.group_of[event_type.split(",")[0]].cap
        assert cap is not None
        total += max(-cap, min(cap, value))
    if rules.total_cap is not None:
        total = min(total, rules.total_cap)
    return total


def _decayed(buckets: Buckets, elapsed_micros: int, rules: EngagementRules) -> Buckets:
    if elapsed_micros == 0 or not buckets:
        return dict(buckets)
    factor = decay_factor(elapsed_micros, rules)
    own = rules.half_life_micros
    if not own:
        return {
            key: scaled
            for key, value in buckets.items()
            if abs(scaled := value * factor) >= PRUNE_BELOW
        }
    decayed: Buckets = {}
    for key, value in buckets.items():
        half_life = own.get(key)
        scaled = value * (factor if half_life is None else math.exp2(-elapsed_micros / half_life))
        if abs(scaled) >= PRUNE_BELOW:
            decayed[key] = scaled
    return decayed


def _within(value: float, old: float, points: float, high: float, low: float) -> float:
    """`value` (old + points) kept within [low, high] by clipping what the event adds only:
    a bucket already beyond a bound (the rules changed) is not pulled back by one event."""
    if points > 0:
        return min(value, max(old, high))
    if points < 0:
        return max(value, min(old, low))
    return value


def grade_of(fit_score: float, engagement_score: float, rules: GradeRules) -> str:
    """The fit band's grade followed by the engagement band's: "A1", "B3"..."""
    return _band(fit_score, rules.fit_bands) + _band(engagement_score, rules.engagement_bands)


def _band(score: float, bands: tuple[GradeBand, ...]) -> str:
    for band in bands:
        if band.min is None or score >= band.min:
            return band.grade
    raise AssertionError("the last band takes the rest")  # pragma: no cover


def matches_domain(domain: str | None, listed: frozenset[str]) -> bool:
    """Whether `domain` is one of `listed` or a subdomain of one."""
    if domain is None or not listed:
        return False
    if domain in listed:
        return True
    return any(domain.endswith("." + parent) for parent in listed)
