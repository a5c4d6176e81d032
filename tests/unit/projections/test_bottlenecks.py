"""The bottlenecks reference (tests/support/funnel_reference.py), as docs/funnel.md defines it: per
entry into a stage, exactly one outcome."""

from __future__ import annotations

from typing import Any

from hypothesis import given

from streams.core.rules import Rules
from tests.support.funnel_reference import BOTTLENECK_OUTCOMES, expected_metrics
from tests.support.lead_paths import example_paths, latest, lead_histories, replayed


def metrics_of(documents: list[dict[str, Any]], rules: Rules) -> dict[str, list[dict[str, Any]]]:
    return expected_metrics(latest(replayed(documents, rules)), documents)


def figures(rows: list[dict[str, Any]]) -> dict[str, tuple[int, ...]]:
    """Per stage: entered, moved_on, skipped_ahead, dropped, waiting, re_entries."""
    names = ("entered", *BOTTLENECK_OUTCOMES, "re_entries")
    return {row["stage"]: tuple(row[name] for name in names) for row in rows}


def test_each_entry_into_a_stage_ends_in_one_way_recycled_and_skipping_leads_included(
    rules: Rules,
) -> None:
    metrics = metrics_of(example_paths(), rules)
    # entered, moved_on, skipped_ahead, dropped, waiting, re_entries: see EXAMPLE_PATHS.
    assert figures(metrics["bottlenecks"]) == {
        # Six sign-ups and one recycled unfit lead; one sign-up is unfit and dropped.
        "subscriber": (7, 5, 0, 1, 1, 1),
        # Entries: five sign-ups, two recycled. Skipped ahead by a win: "skips" and the
        # recycled "lost_recycled_won".
        "lead": (7, 5, 2, 0, 0, 2),
        # "recycled" enters twice: dropped, then moved on; "skips_from_mql" wins.
        "mql": (5, 3, 1, 1, 0, 1),
        # "skips_from_sql" wins; "recycled" waits.
        "sql": (3, 1, 1, 0, 1, 0),
        "opportunity": (1, 0, 0, 1, 0, 0),
        # Five wins ("no_stage" from disqualified); "skips" advocates.
        "customer": (5, 1, 0, 0, 4, 0),
    }


@given(documents=lead_histories())
def test_entered_is_moved_on_plus_skipped_ahead_plus_dropped_plus_waiting(
    rules: Rules, documents: list[dict[str, Any]]
) -> None:
    metrics = metrics_of(documents, rules)
    reached = {row["stage"]: row["reached"] for row in metrics["funnel_overview"]}
    reasons = metrics["disqualification_reasons"]
    for row in metrics["bottlenecks"]:
        assert row["entered"] == sum(row[outcome] for outcome in BOTTLENECK_OUTCOMES), row
        # Leads count once: entries less re-entries are the funnel's leads that reached it.
        assert row["entered"] - row["re_entries"] == reached[row["stage"]], row
        # Dropped: the disqualifications from the stage, as disqualification_reasons counts.
        dropped = sum(r["disqualifications"] for r in reasons if r["from_stage"] == row["stage"])
        assert row["dropped"] == dropped, row
