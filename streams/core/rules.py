"""The rules file: load, validate and describe the qualification rules.

The default rules ship with the package (`streams/core/rules.toml`); `--rules FILE` or
`LEADFLOW_RULES_FILE` replaces them. A typo or a wrong value fails at load time with the path of
the offending key, never half-way through a stream.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from collections.abc import Iterable
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Annotated, Final

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    field_validator,
    model_validator,
)

from schemas.countries import country_code
from schemas.events import ENGAGEMENT_TYPES, EVENT_TYPES, SALES_TYPES
from streams.core.handoff_rules import HandoffRules
from streams.errors import RulesError

MICROS_PER_DAY: Final = 86_400_000_000
"""Event times are microseconds since the epoch; the rules count in days."""

DEFAULT_RULES_RESOURCE = "rules.toml"
TITLE_PHRASE_MAX_WORDS = 3
"""Job-title keywords are matched as whole phrases of up to this many words."""

Points = Annotated[float, Field(allow_inf_nan=False)]
NameSet = Annotated[frozenset[str], PlainSerializer(sorted, return_type=list[str])]
"""A set of names; printed sorted, so `leadflow rules show` says the same thing every time."""


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class LifecycleRules(_Section):
    contact_event_types: NameSet
    high_intent_event_types: NameSet
    disqualify_on_exclusion: bool = True
    reset_engagement_on_recycle: bool = True

    @field_validator("contact_event_types", "high_intent_event_types")
    @classmethod
    def _known_event_types(cls, value: frozenset[str]) -> frozenset[str]:
        _check_known(value, EVENT_TYPES, "event type")
        return value


class CompanySizePoints(_Section):
    min_employees: Annotated[int, Field(ge=0)]
    points: Points


FIT_FACTS: Final = (
    "email",
    "seniority",
    "title_keyword",
    "company_size",
    "industry",
    "country",
)
"""The facts a fit score adds up, in the order it adds them."""

GroupName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,39}$")]


class FitGroup(_Section):
    """Fit facts scored together, with a cap on their sum (e.g. role: seniority and keyword)."""

    facts: Annotated[tuple[str, ...], Field(min_length=1)]
    cap: Annotated[float, Field(gt=0, allow_inf_nan=False)]

    @field_validator("facts")
    @classmethod
    def _known_facts(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        _check_known(value, FIT_FACTS, "fit fact")
        return value


class FitRules(_Section):
    lead_threshold: Points
    business_email_points: Points = 0
    free_email_points: Points = 0
    free_email_domains: NameSet = frozenset()
    seniority_points: dict[str, Points] = {}
    title_seniority: dict[str, str] = {}
    title_keyword_points: dict[str, Points] = {}
    company_size_points: tuple[CompanySizePoints, ...] = ()
    industry_points: dict[str, Points] = {}
    country_points: dict[str, Points] = {}
    groups: dict[GroupName, FitGroup] = {}
    """Caps on the sum of some facts' points; a fact belongs to at most one group."""

    @field_validator("free_email_domains")
    @classmethod
    def _lower_domains(cls, value: frozenset[str]) -> frozenset[str]:
        return frozenset(d.lower() for d in value)

    @field_validator("title_seniority", "title_keyword_points", "industry_points")
    @classmethod
    def _lower_keys(cls, value: dict[str, object]) -> dict[str, object]:
        return {k.lower(): v for k, v in value.items()}

    @field_validator("country_points")
    @classmethod
    def _country_codes(cls, value: dict[str, float]) -> dict[str, float]:
        # Events carry ISO alpha-2 codes (the contract normalises them): a key the contract
        # would not normalise the same way could never score.
        codes = {}
        for key, points in value.items():
            code = country_code(key)
            if code is None:
                raise ValueError(f"{key!r} is not a country (an ISO code or an English name)")
            codes[code] = points
        return codes

    @field_validator("company_size_points")
    @classmethod
    def _sorted_bands(cls, value: tuple[CompanySizePoints, ...]) -> tuple[CompanySizePoints, ...]:
        return tuple(sorted(value, key=lambda band: band.min_employees))

    @model_validator(mode="after")
    def _title_seniorities_are_scored(self) -> FitRules:
        _check_known(self.title_seniority.values(), self.seniority_points, "seniority")
        _check_phrases(self.title_seniority)
        _check_phrases(self.title_keyword_points)
        return self

    @model_validator(mode="after")
    def _facts_in_one_group(self) -> FitRules:
        _check_one_group({name: group.facts for name, group in self.groups.items()}, "fact")
        return self

    @cached_property
    def group_of(self) -> dict[str, tuple[str, FitGroup]]:
        """Each grouped fact's (group name, group)."""
        return {fact: (n, g) for n, g in self.groups.items() for fact in g.facts}


class ExclusionRules(_Section):
    competitor_domains: NameSet = frozenset()
    competitor_companies: NameSet = frozenset()
    vendor_domains: NameSet = frozenset()
    vendor_companies: NameSet = frozenset()
    student_title_keywords: NameSet = frozenset()
    student_seniorities: NameSet = frozenset()
    student_email_suffixes: tuple[str, ...] = ()

    @field_validator(
        "competitor_domains",
        "competitor_companies",
        "vendor_domains",
        "vendor_companies",
        "student_seniorities",
        "student_title_keywords",
    )
    @classmethod
    def _lower_set(cls, value: frozenset[str]) -> frozenset[str]:
        return frozenset(v.strip().lower() for v in value)

    @field_validator("student_title_keywords")
    @classmethod
    def _short_phrases(cls, value: frozenset[str]) -> frozenset[str]:
        _check_phrases(value)
        return value

    @field_validator("student_email_suffixes")
    @classmethod
    def _lower_tuple(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(v.strip().lower() for v in value)


Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class ScoreGroup(_Section):
    """Engagement types scored together (web, email, content, events, intent...): their own
    half-life, and a cap on what the group adds up to at any moment."""

    types: Annotated[NameSet, Field(min_length=1)]
    half_life_days: Positive | None = None
    """None: `engagement.half_life_days`."""
    cap: Positive | None = None

    @field_validator("types")
    @classmethod
    def _engagement_types(cls, value: frozenset[str]) -> frozenset[str]:
        _check_known(value, ENGAGEMENT_TYPES, "engagement event type")
        return value


class EngagementRules(_Section):
    half_life_days: Positive
    """The half-life of the types no group gives one."""
    mql_threshold: Positive
    points: dict[str, Points]
    category_points: dict[str, Points] = {}
    caps: dict[str, Positive] = {}
    groups: dict[GroupName, ScoreGroup] = {}
    """A type belongs to at most one group."""
    total_cap: Positive | None = None
    """The most new points can lift all engagement to (docs/rules.md, "Score groups")."""

    @field_validator("points", "caps")
    @classmethod
    def _engagement_types(cls, value: dict[str, float]) -> dict[str, float]:
        _check_known(value, ENGAGEMENT_TYPES, "engagement event type")
        return value

    @model_validator(mode="after")
    def _groups_and_total_cap(self) -> EngagementRules:
        _check_one_group({name: group.types for name, group in self.groups.items()}, "type")
        if self.total_cap is not None and self.total_cap < self.mql_threshold:
            raise ValueError(
                f"total_cap {self.total_cap:g} is below mql_threshold {self.mql_threshold:g}:"
                " no lead could become a passive MQL"
            )
        return self

    @cached_property
    def group_of(self) -> dict[str, ScoreGroup]:
        """Each grouped type's group."""
        return {t: group for group in self.groups.values() for t in group.types}

    @cached_property
    def members(self) -> dict[str, tuple[str, ...]]:
        """Each grouped type's group members, sorted: sums over a group run in this order, so
        they give the same bits on every replay (a set's order changes between processes)."""
        return {t: tuple(sorted(g.types)) for g in self.groups.values() for t in g.types}

    @cached_property
    def slowest_half_life_micros(self) -> float:
        """The longest half-life of any type: how slowly an error in the score fades."""
        return (
            max([self.half_life_days, *(g.half_life_days or 0.0 for g in self.groups.values())])
            * MICROS_PER_DAY
        )

    @cached_property
    def half_life_micros(self) -> dict[str, float]:
        """The half-life of each type whose group gives it its own, in microseconds."""
        return {
            t: group.half_life_days * MICROS_PER_DAY
            for group in self.groups.values()
            if group.half_life_days is not None and group.half_life_days != self.half_life_days
            for t in group.types
        }


class GradeBand(_Section):
    """One band of a grade: its name, and the least score that earns it (none: the rest)."""

    grade: Annotated[str, Field(pattern=r"^[A-Za-z0-9+-]{1,3}$")]
    min: Points | None = None


class GradeRules(_Section):
    """A lead's grade: a band of its fit score and a band of its engagement score, side by
    side ("A1": best fit, most engaged), so sales can sort leads by both at once."""

    fit_bands: Annotated[tuple[GradeBand, ...], Field(min_length=1)]
    engagement_bands: Annotated[tuple[GradeBand, ...], Field(min_length=1)]

    @field_validator("fit_bands", "engagement_bands")
    @classmethod
    def _best_first_then_the_rest(cls, value: tuple[GradeBand, ...]) -> tuple[GradeBand, ...]:
        *scored, rest = value
        if rest.min is not None or any(band.min is None for band in scored):
            raise ValueError("every band but the last needs a min; the last takes the rest")
        mins = [band.min for band in scored if band.min is not None]
        if mins != sorted(mins, reverse=True) or len(set(mins)) != len(mins):
            raise ValueError("bands go from the highest min down, each min lower than the last")
        names = [band.grade for band in value]
        if len(set(names)) != len(names):
            raise ValueError(f"a grade is named twice: {', '.join(names)}")
        return value


class IntentPattern(_Section):
    """A run of events that shows buying intent as clearly as a form: `count` of them within
    `within_days` of event time make a lead an active MQL (rule `mql.intent.<id>`)."""

    id: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,39}$")]
    event_types: NameSet = frozenset()
    """Engagement types that count."""
    content_categories: NameSet = frozenset()
    """Content downloads of these categories count too."""
    count: Annotated[int, Field(ge=2, le=20)]
    within_days: Annotated[float, Field(gt=0, le=90, allow_inf_nan=False)]

    @field_validator("event_types")
    @classmethod
    def _engagement_types(cls, value: frozenset[str]) -> frozenset[str]:
        _check_known(value, ENGAGEMENT_TYPES, "engagement event type")
        return value

    @model_validator(mode="after")
    def _something_counts(self) -> IntentPattern:
        if not self.event_types and not self.content_categories:
            raise ValueError("name event_types or content_categories (or both)")
        return self

    @cached_property
    def rule(self) -> str:
        """The rule id a stage change cites."""
        return f"mql.intent.{self.id}"

    @cached_property
    def within_micros(self) -> int:
        return round(self.within_days * MICROS_PER_DAY)

    def counts(self, event_type: str, category: object) -> bool:
        """Whether an engagement event of this type (and content category) counts."""
        return event_type in self.event_types or (
            event_type == "content_download" and category in self.content_categories
        )


class CollectorRules(_Section):
    """How the collector turns tracker messages into events (`streams/collector/segment.py`)."""

    pricing_url_pattern: str = "/pricing"
    """A `page` whose URL matches this regular expression is a `pricing_page_view`."""
    track_events: dict[str, str] = {}
    """Segment `track` event name -> leadflow event type."""

    @field_validator("pricing_url_pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a regular expression: {exc}") from None
        return value

    @field_validator("track_events")
    @classmethod
    def _known_types(cls, value: dict[str, str]) -> dict[str, str]:
        _check_known(value.values(), EVENT_TYPES, "event type")
        sales = sorted(f"{name!r} -> {kind}" for name, kind in value.items() if kind in SALES_TYPES)
        if sales:
            # The write key of the tracking endpoints is public: anyone could send these.
            raise ValueError(
                f"sales event types cannot come from a tracker ({', '.join(sales)}): sales "
                "activity enters through the signed CRM webhook or the events topic"
            )
        return value


class AccountRules(_Section):
    """When an account (the people at one company) is engaged and sales-ready."""

    engaged_threshold: Annotated[float, Field(gt=0, allow_inf_nan=False)]
    engaged_min_leads: Annotated[int, Field(ge=1)]
    sales_ready_min_mqls: Annotated[int, Field(ge=1)]
    decision_maker_seniorities: NameSet = frozenset()
    engagement_step: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 1.0
    """A lead tells its account a change of its engagement alone only once it is this many
    points from what the account holds (0: every change)."""

    @field_validator("decision_maker_seniorities")
    @classmethod
    def _lower_seniorities(cls, value: frozenset[str]) -> frozenset[str]:
        return frozenset(v.strip().lower() for v in value)


class StateRules(_Section):
    """How much of each lead's and account's past leadflow keeps in detail (docs/rules.md).

    A lead keeps its events of the last `allowed_lateness_days` (event time, back from its
    second newest event) in detail, at most `lead_events` of them; older ones are folded into
    a snapshot, which keeps its stage-deciding events (at most `lead_facts`) and a fingerprint
    of the others (the latest `lead_seen_ids`). An event older than the detail is still
    applied (docs/rules.md says how exactly). An account keeps its latest `account_signals`
    signals; a signal older than the oldest one kept is applied at the account's newest moment
    instead of its own."""

    allowed_lateness_days: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 7.0
    lead_events: Annotated[int, Field(ge=4, le=4096)] = 64
    lead_facts: Annotated[int, Field(ge=4, le=65536)] = 1024
    """Stage-deciding events a lead keeps in its snapshot; past it, the oldest are let go and
    an event older than the newest of those is applied right after it (`applied_late`)."""
    lead_seen_ids: Annotated[int, Field(ge=0, le=1_000_000)] = 1024
    """Ids of the other events folded into a lead's snapshot that it remembers (4 bytes
    each), to recognise a redelivered one."""
    account_signals: Annotated[int, Field(ge=4, le=65536)] = 256
    linked_ids: Annotated[int, Field(ge=1, le=1024)] = 16
    """At most this many identities (anonymous ids, merged duplicates) count for one lead;
    a link past it is refused (dead letter `too_many_links`)."""
    linked_steps: Annotated[int, Field(ge=1, le=1024)] = 16
    """Of each linked identity, its latest this many engagement events count for the lead at
    their own times; the older ones count from the oldest of those on."""

    @cached_property
    def allowed_lateness_micros(self) -> int:
        return round(self.allowed_lateness_days * MICROS_PER_DAY)


class Rules(_Section):
    """The whole rules file, validated. `rules_version` is what stage changes cite."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: Annotated[str, Field(min_length=1, max_length=64)]
    lifecycle: LifecycleRules
    fit: FitRules
    exclusions: ExclusionRules = ExclusionRules()
    engagement: EngagementRules
    intent_patterns: tuple[IntentPattern, ...] = ()
    grade: GradeRules | None = None
    """None: stage changes carry no grade."""
    collector: CollectorRules = CollectorRules()
    accounts: AccountRules = AccountRules(
        engaged_threshold=60.0, engaged_min_leads=2, sales_ready_min_mqls=2
    )
    state: StateRules = StateRules()
    handoff: HandoffRules | None = None
    """None: MQLs get no queue and no owner."""
    content_digest: str = Field(default="", exclude=True)

    @model_validator(mode="after")
    def _decision_makers_are_seniorities(self) -> Rules:
        try:
            _check_known(
                self.accounts.decision_maker_seniorities, self.fit.seniority_points, "seniority"
            )
        except ValueError as exc:
            raise ValueError(f"accounts.decision_maker_seniorities: {exc}") from None
        return self

    @model_validator(mode="after")
    def _pattern_ids_are_unique(self) -> Rules:
        ids = [pattern.id for pattern in self.intent_patterns]
        repeated = sorted({i for i in ids if ids.count(i) > 1})
        if repeated:
            raise ValueError(f"intent_patterns: ids used twice: {', '.join(repeated)}")
        return self

    @cached_property
    def rules_version(self) -> str:
        """`version` plus a digest of the file, so an unversioned edit is still told apart."""
        return f"{self.version}+{self.content_digest[:8]}" if self.content_digest else self.version


def load_rules(path: Path | None = None) -> Rules:
    """Load the rules file at `path`, or the default rules shipped with leadflow."""
    if path is None:
        raw = resources.files("streams.core").joinpath(DEFAULT_RULES_RESOURCE).read_bytes()
        origin = "the default rules"
    else:
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise RulesError(f"cannot read rules file {path}: {exc.strerror}") from exc
        origin = str(path)
    return parse_rules(raw, origin)


def parse_rules(raw: bytes, origin: str = "rules") -> Rules:
    """Validate rules from TOML bytes; errors name the offending key."""
    try:
        document = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise RulesError(f"{origin}: not valid TOML: {exc}") from exc
    document["content_digest"] = hashlib.sha256(raw).hexdigest()
    try:
        return Rules.model_validate(document)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}" for error in exc.errors()
        )
        raise RulesError(f"{origin}: invalid rules: {problems}") from exc


def _check_phrases(phrases: object) -> None:
    too_long = sorted(p for p in phrases if len(p.split()) > TITLE_PHRASE_MAX_WORDS)  # type: ignore[attr-defined]
    if too_long:
        raise ValueError(
            f"title phrases have at most {TITLE_PHRASE_MAX_WORDS} words: {', '.join(too_long)}"
        )


def _check_one_group(groups: dict[str, Iterable[str]], what: str) -> None:
    seen: dict[str, str] = {}
    for name, members in groups.items():
        for member in sorted(members):
            if member in seen:
                raise ValueError(f"{what} {member} is in two groups: {seen[member]} and {name}")
            seen[member] = name


def _check_known(values: object, known: object, what: str) -> None:
    unknown = sorted(v for v in values if v not in known)  # type: ignore[attr-defined,operator]
    if unknown:
        raise ValueError(f"unknown {what}: {', '.join(unknown)}")
