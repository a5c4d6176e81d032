"""What-if on the terminal: both funnels side by side, MQLs per week and per source, and the
leads whose stage history the draft changes, counted by kind with examples.

`leadflow whatif` prints it; `--json` has every differing lead, and `streams/offline/whatif_page.py`
writes the same comparison as an HTML page.
"""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from streams.offline.whatif import FunnelFigures, WhatIf
from streams.offline.whatif_page import MAX_LISTED_LEADS


def print_what_if(comparison: WhatIf, lines_read: int, console: Console) -> None:
    """Print `comparison` of a log of `lines_read` lines: what was compared, then its tables."""
    live, draft = comparison.live, comparison.draft
    bad = f", {comparison.bad_lines} bad" if comparison.bad_lines else ""
    console.print(
        f"{lines_read - comparison.bad_lines} events ({lines_read} lines{bad}) of {live.leads} "
        f"leads: rules {live.rules_version} (in force) against {draft.rules_version} (draft)"
    )
    console.print(_funnel_table(live, draft))
    console.print(_weekly_table(live, draft))
    console.print(_source_table(live, draft))
    if not comparison.differences:
        console.print("no lead's stage history differs")
        return
    console.print(_differences_table(comparison))
    console.print(
        "every one of them, with its stage histories: --json "
        f"(the --html page: {MAX_LISTED_LEADS:,})"
    )


def _funnel_table(live: FunnelFigures, draft: FunnelFigures) -> Table:
    funnel = Table(title="funnel", show_lines=False)
    for column in ("", "in force", "draft", "change"):
        funnel.add_column(column, justify="right" if column else "left")

    def row(name: str, before: float | None, after: float | None, form: str = "{:,.0f}") -> None:
        shown = [form.format(v) if v is not None else "-" for v in (before, after)]
        change = form.format(after - before) if before is not None and after is not None else "-"
        funnel.add_row(name, *shown, change if change.startswith("-") else f"+{change}")

    row("MQLs", live.mqls, draft.mqls)
    row("  active", live.active, draft.active)
    row("  passive", live.passive, draft.passive)
    for rule in sorted(live.mqls_by_rule.keys() | draft.mqls_by_rule.keys()):
        row(f"    {rule}", live.mqls_by_rule.get(rule, 0), draft.mqls_by_rule.get(rule, 0))
    row(
        "median days, first touch to MQL",
        live.median_days_to_mql,
        draft.median_days_to_mql,
        "{:.1f}",
    )
    row("MQLs that became SQL", live.mqls_to_sql, draft.mqls_to_sql)
    row("MQL -> SQL", live.mql_to_sql_rate, draft.mql_to_sql_rate, "{:.1%}")
    row("SQL -> won", live.sql_to_won_rate, draft.sql_to_won_rate, "{:.1%}")
    return funnel


def _weekly_table(live: FunnelFigures, draft: FunnelFigures) -> Table:
    weeks = Table(title="MQLs per week (event time)")
    for column in ("week", "in force", "draft"):
        weeks.add_column(column, justify="right")
    for week in sorted(live.mqls_by_week.keys() | draft.mqls_by_week.keys()):
        weeks.add_row(
            week, str(live.mqls_by_week.get(week, 0)), str(draft.mqls_by_week.get(week, 0))
        )
    return weeks


def _source_table(live: FunnelFigures, draft: FunnelFigures) -> Table:
    sources = Table(title="per source: MQLs / SQLs / won")
    for column in ("source", "in force", "draft"):
        sources.add_column(column, justify="right")
    for source in sorted(live.by_source.keys() | draft.by_source.keys()):
        cells = []
        for funnel_figures in (live, draft):
            figures = funnel_figures.by_source.get(source)
            cells.append(f"{figures.mqls} / {figures.sqls} / {figures.won}" if figures else "-")
        sources.add_row(source, *cells)
    return sources


def _differences_table(comparison: WhatIf) -> Table:
    leads = Table(title=f"{len(comparison.differences)} leads whose stage history differs")
    for column in ("difference", "leads", "examples (the rule that made the difference)"):
        leads.add_column(column, overflow="fold")
    for kind, count in comparison.kinds.items():
        examples = ", ".join(f"{d.lead_id} ({d.rule})" for d in comparison.examples(kind))
        leads.add_row(kind.replace("_", " "), str(count), examples)
    return leads
