"""One lead explained, as `leadflow explain` shows it: its score history with the rule behind
each stage change, and its ledger (what makes the scores) as tables or as JSON.

The figures come from `streams/core/explain.py`; this module only lays them out.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from rich.console import Console
from rich.table import Table

from streams.core.explain import ExplainedEvent, Ledger, rounded_parts

HISTORY_COLUMNS = ("occurred_at", "event", "detail", "points", "engagement", "fit", "stage")


def print_history(
    lead_id: str, rules_version: str, events: Iterable[ExplainedEvent], console: Console
) -> None:
    """The lead's events in order, each with its points and the scores after it, and under
    each event the stage changes it caused with their rule."""
    table = Table(title=f"lead {lead_id} (rules {rules_version})", show_lines=False)
    for column in HISTORY_COLUMNS:
        table.add_column(column, overflow="fold")
    for event in events:
        table.add_row(
            _utc(event.occurred_at),
            event.type if event.identity is None else f"{event.type} (as {event.identity})",
            event.detail,
            "" if event.points is None else f"{event.points:+g}",
            f"{event.engagement_score:.1f}",
            f"{event.fit_score:g}",
            event.stage or "-",
        )
        for change in event.changes:
            because = change.mql_kind or change.reason or ""
            table.add_row(
                "",
                f"[bold]-> {change.to_stage}[/bold]",
                f"rule {change.rule} {because}".strip(),
                "",
                "",
                "",
                "",
                style="green",
            )
    console.print(table)


def print_ledger(shown: Ledger, console: Console) -> None:
    """The fit score fact by fact, then the engagement score event by event: each event's
    points, what a cap clipped and what is left now, rounded so that the rows add up to the
    printed sum."""
    when = _utc(shown.at)
    fit = Table(title=f"fit score {shown.fit_score:g} at {when}")
    for column in ("fact", "value", "points"):
        fit.add_column(column, justify="right" if column == "points" else "left")
    for fact, value, points in shown.fit:
        fit.add_row(fact, value, f"{points:+g}")
    console.print(fit)
    engagement = Table(title=f"engagement score {shown.engagement_score:.3f} at {when}")
    engagement.add_column("occurred_at")
    engagement.add_column("event")
    for column in ("points", "clipped by cap", "now"):
        engagement.add_column(column, justify="right")
    printed = rounded_parts([c.decayed_to for c in shown.engagement], shown.engagement_score)
    for contribution, now in zip(shown.engagement, printed, strict=True):
        event = contribution.type
        if contribution.identity is not None:
            event = f"{event} (as {contribution.identity})"
        capped_sum = not contribution.event_id  # a cap on the lead's and its identities' sum
        engagement.add_row(
            _utc(contribution.occurred_at),
            f"{event} on the sum" if capped_sum else event,
            "" if capped_sum else f"{contribution.points:+g}",
            f"{contribution.clipped:.3f}" if round(contribution.clipped, 3) else "",
            f"{now:.3f}",
        )
    engagement.add_row("", "sum", "", "", f"{sum(printed):.3f}", style="bold")
    console.print(engagement)


def ledger_document(lead_id: str, shown: Ledger) -> dict[str, Any]:
    """The ledger as JSON: exact figures, so a reader's sums match the scores to 1e-6."""
    return {
        "lead_id": lead_id,
        "at": shown.at,
        "fit_score": shown.fit_score,
        "fit": [{"fact": f, "value": v, "points": p} for f, v, p in shown.fit],
        "engagement_score": shown.engagement_score,
        "engagement": [c._asdict() for c in shown.engagement],
    }


def _utc(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")
