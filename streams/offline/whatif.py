"""What-if: the same events under the rules in force and under a draft, side by side.

Both rule sets replay the same log through the same core as the workers. Sales' outcomes are in
the log (contacts, quotes, wins), so each rule set's MQLs can be judged by what sales later made
of them: how many became SQL, how many were won. Nothing is published; a draft is seen before
anyone ships it.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial

import orjson

from streams.common.forked import over_ranges
from streams.core.lead import LeadStageChange
from streams.core.revisions import micros_of
from streams.core.rules import MICROS_PER_DAY, Rules
from streams.core.stages import CUSTOMERS, SQL_OR_FURTHER, at_or_past
from streams.offline.replay import BadLine, Replayed, Replayer, effective_changes, replay_sharded

AFTER_MQL = SQL_OR_FURTHER
AFTER_SQL = at_or_past("opportunity")
WON = CUSTOMERS
EXAMPLES = 5


@dataclass(frozen=True)
class LeadHistory:
    """The stages one lead entered under one rule set, in order, and its first event's time."""

    steps: tuple[tuple[str, str, int], ...]
    first_touch: int
    source: str | None

    @property
    def mql(self) -> tuple[str, str, int] | None:
        return next((step for step in self.steps if step[0] == "mql"), None)

    def reached(self, stages: frozenset[str]) -> bool:
        return any(step[0] in stages for step in self.steps)


@dataclass(frozen=True)
class SourceFigures:
    mqls: int = 0
    sqls: int = 0
    won: int = 0


class ConversionRates:
    """MQL -> SQL and SQL -> won of a funnel's counts (None where nothing was converted from)."""

    mqls: int
    mqls_to_sql: int
    sqls: int
    sqls_to_won: int

    @property
    def mql_to_sql_rate(self) -> float | None:
        return self.mqls_to_sql / self.mqls if self.mqls else None

    @property
    def sql_to_won_rate(self) -> float | None:
        return self.sqls_to_won / self.sqls if self.sqls else None


@dataclass(frozen=True)
class FunnelFigures(ConversionRates):
    """One rule set's funnel over the log."""

    rules_version: str
    leads: int
    mqls: int
    mqls_by_rule: dict[str, int]
    mqls_by_week: dict[str, int]
    """ISO week of the MQL's event time -> MQLs."""
    median_days_to_mql: float | None
    """From the lead's first event to its MQL."""
    mqls_to_sql: int
    """Of the MQLs, how many sales later made SQL (or further)."""
    sqls_to_won: int
    sqls: int
    by_source: dict[str, SourceFigures]

    @property
    def active(self) -> int:
        return sum(n for rule, n in self.mqls_by_rule.items() if rule != "mql.passive_score")

    @property
    def passive(self) -> int:
        return self.mqls_by_rule.get("mql.passive_score", 0)


@dataclass(frozen=True)
class LeadDifference:
    """How one lead's stage history differs between the rules in force and the draft."""

    lead_id: str
    kind: str
    """newly_mql, no_longer_mql, mql_earlier, mql_later, mql_rule, other_stages."""
    live: tuple[tuple[str, str, int], ...]
    draft: tuple[tuple[str, str, int], ...]
    rule: str
    """The rule that made the difference: the draft's MQL rule, or the live one it lost."""


@dataclass(frozen=True)
class WhatIf:
    """The comparison: each rule set's figures, and every lead whose history differs."""

    live: FunnelFigures
    draft: FunnelFigures
    differences: tuple[LeadDifference, ...]
    bad_lines: int
    kinds: dict[str, int] = field(default_factory=dict)

    def examples(self, kind: str, limit: int = EXAMPLES) -> list[LeadDifference]:
        return [d for d in self.differences if d.kind == kind][:limit]


def what_if(
    lines: Sequence[bytes], live: Rules, draft: Rules, max_event_bytes: int, jobs: int = 1
) -> WhatIf:
    """Replay `lines` under `live` and under `draft` and compare what each makes of them; in
    `jobs` processes (the two rule sets side by side, each over shards of the log beyond 2),
    with the same result."""
    touches = first_touches(lines, jobs)
    if jobs > 1:

        def histories_of(
            replayer: Replayer, items: Iterator[tuple[int, Replayed | BadLine]]
        ) -> tuple[dict[str, LeadHistory], int, FunnelCounts]:
            # The funnel is counted where the histories are, in the processes.
            found, bad = _histories_of(replayer, items, touches)
            return found, bad, funnel_counts(found)

        live_parts, draft_parts = replay_sharded(
            lines,
            jobs,
            [partial(Replayer, live, max_event_bytes), partial(Replayer, draft, max_event_bytes)],
            histories_of,
        )
        live_histories = {lead: h for part, _, _ in live_parts for lead, h in part.items()}
        draft_histories = {lead: h for part, _, _ in draft_parts for lead, h in part.items()}
        bad = sum(part_bad for _, part_bad, _ in live_parts)
        live_counts = [counts for _, _, counts in live_parts]
        draft_counts = [counts for _, _, counts in draft_parts]
    else:
        live_histories, bad = histories(lines, live, max_event_bytes, touches)
        draft_histories, _ = histories(lines, draft, max_event_bytes, touches)
        live_counts = [funnel_counts(live_histories)]
        draft_counts = [funnel_counts(draft_histories)]
    differences = tuple(
        difference
        for lead_id in sorted(live_histories.keys() | draft_histories.keys())
        if (
            difference := _difference(
                lead_id, live_histories.get(lead_id), draft_histories.get(lead_id)
            )
        )
        is not None
    )
    return WhatIf(
        live=figures(live_counts, live.rules_version),
        draft=figures(draft_counts, draft.rules_version),
        differences=differences,
        bad_lines=bad,
        kinds=dict(sorted(Counter(d.kind for d in differences).items())),
    )


def first_touches(lines: Sequence[bytes], jobs: int = 1) -> dict[str, int]:
    """Each lead's earliest event time in the log (microseconds), whatever the rules; read in
    `jobs` processes."""
    found: dict[str, int] = {}
    for part in over_ranges(lines, jobs, _first_touches):
        for lead_id, at in part.items():
            if lead_id not in found or at < found[lead_id]:
                found[lead_id] = at
    return found


def _first_touches(lines: Iterable[bytes]) -> dict[str, int]:
    found: dict[str, int] = {}
    for raw in lines:
        try:
            document = orjson.loads(raw)
            lead_id, at = (
                document["lead_id"],
                micros_of(datetime.fromisoformat(document["occurred_at"])),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            continue  # the replay reports it
        if isinstance(lead_id, str) and (lead_id not in found or at < found[lead_id]):
            found[lead_id] = at
    return found


def histories(
    lines: Iterable[bytes], rules: Rules, max_event_bytes: int, touches: dict[str, int]
) -> tuple[dict[str, LeadHistory], int]:
    """Each lead's stage history under `rules` (the changes in effect), and the bad lines."""
    replayer = Replayer(rules, max_event_bytes=max_event_bytes)
    return _histories_of(replayer, replayer.run_numbered(enumerate(lines, start=1)), touches)


def _histories_of(
    replayer: Replayer, items: Iterator[tuple[int, Replayed | BadLine]], touches: dict[str, int]
) -> tuple[dict[str, LeadHistory], int]:
    """The stage histories of the leads `replayer` replays (`items`: its outputs), and the bad
    lines among them."""
    changes = [item for _, item in items if isinstance(item, LeadStageChange)]
    by_lead: dict[str, list[LeadStageChange]] = {}
    for change in effective_changes(changes).values():
        if not change.retracted:
            by_lead.setdefault(change.lead_id, []).append(change)
    found = {}
    for lead_id, state in replayer.states.items():
        lead_changes = sorted(by_lead.get(lead_id, ()), key=lambda c: c.sequence)
        found[lead_id] = LeadHistory(
            steps=tuple((c.to_stage, c.rule, c.occurred_at) for c in lead_changes),
            first_touch=touches.get(lead_id, 0),
            source=state.attribution.source if state.attribution else None,
        )
    return found, replayer.counts.bad


@dataclass
class FunnelCounts:
    """What one rule set's funnel is made of, over some of the leads: counts that add up over
    the shards of a log (and the days to MQL, whose median is taken over them all)."""

    leads: int = 0
    mqls_by_rule: Counter[str] = field(default_factory=Counter)
    mqls_by_week: Counter[str] = field(default_factory=Counter)
    days_to_mql: list[float] = field(default_factory=list)
    mqls_to_sql: int = 0
    sqls: int = 0
    sqls_to_won: int = 0
    by_source: dict[str, Counter[str]] = field(default_factory=dict)


def funnel_counts(leads: dict[str, LeadHistory]) -> FunnelCounts:
    """The funnel's counts over the leads' histories."""
    counts = FunnelCounts(leads=len(leads))
    for history in leads.values():
        mql = history.mql
        sql = history.reached(AFTER_MQL)
        won = history.reached(WON)
        if mql is not None:
            counts.mqls_by_rule[mql[1]] += 1
            counts.mqls_by_week[_iso_week(mql[2])] += 1
            counts.days_to_mql.append((mql[2] - history.first_touch) / MICROS_PER_DAY)
            counts.mqls_to_sql += sql
        if sql:
            counts.sqls += 1
            counts.sqls_to_won += won
        tally = counts.by_source.setdefault(history.source or "(none)", Counter())
        tally["mqls"] += mql is not None
        tally["sqls"] += sql
        tally["won"] += won
    return counts


def figures(parts: Iterable[FunnelCounts], rules_version: str) -> FunnelFigures:
    """The funnel of one rule set, from its counts over all the leads (in parts)."""
    total = FunnelCounts()
    for part in parts:
        total.leads += part.leads
        total.mqls_by_rule.update(part.mqls_by_rule)
        total.mqls_by_week.update(part.mqls_by_week)
        total.days_to_mql += part.days_to_mql
        total.mqls_to_sql += part.mqls_to_sql
        total.sqls += part.sqls
        total.sqls_to_won += part.sqls_to_won
        for source, tally in part.by_source.items():
            total.by_source.setdefault(source, Counter()).update(tally)
    days = total.days_to_mql
    return FunnelFigures(
        rules_version=rules_version,
        leads=total.leads,
        mqls=len(days),
        mqls_by_rule=dict(sorted(total.mqls_by_rule.items())),
        mqls_by_week=dict(sorted(total.mqls_by_week.items())),
        median_days_to_mql=statistics.median(days) if days else None,
        mqls_to_sql=total.mqls_to_sql,
        sqls=total.sqls,
        sqls_to_won=total.sqls_to_won,
        by_source={
            source: SourceFigures(t["mqls"], t["sqls"], t["won"])
            for source, t in sorted(total.by_source.items())
            if t["mqls"] or t["sqls"] or t["won"]
        },
    )


def _difference(
    lead_id: str, live: LeadHistory | None, draft: LeadHistory | None
) -> LeadDifference | None:
    live_steps = live.steps if live else ()
    draft_steps = draft.steps if draft else ()
    if live_steps == draft_steps:
        return None
    live_mql = live.mql if live else None
    draft_mql = draft.mql if draft else None
    if live_mql is None and draft_mql is not None:
        kind, rule = "newly_mql", draft_mql[1]
    elif live_mql is not None and draft_mql is None:
        kind, rule = "no_longer_mql", live_mql[1]
    elif live_mql is not None and draft_mql is not None and live_mql != draft_mql:
        if draft_mql[2] < live_mql[2]:
            kind = "mql_earlier"
        elif draft_mql[2] > live_mql[2]:
            kind = "mql_later"
        else:
            kind = "mql_rule"
        rule = draft_mql[1]
    else:
        kind = "other_stages"
        changed = next(
            (new for new, old in zip(draft_steps, live_steps, strict=False) if new != old),
            (draft_steps or live_steps)[-1],
        )
        rule = changed[1]
    return LeadDifference(lead_id, kind, live_steps, draft_steps, rule)


def _iso_week(micros: int) -> str:
    year, week, _ = datetime.fromtimestamp(micros / 1_000_000, tz=UTC).isocalendar()
    return f"{year}-W{week:02d}"
