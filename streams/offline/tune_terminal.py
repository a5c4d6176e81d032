"""`leadflow tune` on the terminal: a warning first if the draft does worse on the held-out
cohorts, where the draft went, the evidence per feature, sales' reasons turned into
suggestions, both rule sets side by side on the held-out cohorts, and the next commands."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from streams.offline.tune import MIN_LEADS, HeldOutFigures, Tuned, suggestion_text


def worse_line(tuned: Tuned) -> str | None:
    """The first line of the output when the draft does worse on the held-out cohorts."""
    if not tuned.worse:
        return None
    return (
        f"WARNING: the draft does worse than the rules in force on the held-out cohorts "
        f"({'; '.join(tuned.worse)}): check before you use it"
    )


def print_tuned(tuned: Tuned, draft_path: str, whatif_command: str, console: Console) -> None:
    """Print `tuned`, whose draft was written to `draft_path`."""
    warning = worse_line(tuned)
    if warning is not None:
        console.print(warning, markup=False, highlight=False)
    changed = tuned.changed
    console.print(
        f"wrote {draft_path} (rules {tuned.draft_version}): {len(changed)} points changed, "
        f"learnt from {tuned.learning_outcomes} MQLs with a known outcome "
        f"({tuned.learning_converted} became SQL) of the {tuned.cohort_unit}s "
        f"{tuned.learning_cohorts[0]} to {tuned.learning_cohorts[-1]}; checked on the "
        f"{tuned.cohort_unit}s {tuned.held_out_cohorts[0]} to {tuned.held_out_cohorts[-1]} "
        f"(from {tuned.held_out_from}); {tuned.left_out} MQLs too young to judge left out",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    console.print(_evidence_table(tuned))
    scarce = [e.feature.label for e in tuned.evidence if e.verdict == "too little data"]
    if scarce:
        console.print(
            f"too little data (fewer than {MIN_LEADS} MQLs with or without), points kept: "
            + ", ".join(scarce),
            markup=False,
            highlight=False,
        )
    for family, scale in sorted(tuned.scales.items()):
        shown = "too few scored features to set it" if scale is None else f"{scale:.1f}"
        console.print(f"{family} points per unit of log odds ratio: {shown}", highlight=False)
    if tuned.suggestions:
        console.print("from sales' disqualification reasons (comments in the draft):")
        for suggestion in tuned.suggestions:
            console.print(
                f"  {suggestion_text(suggestion)}", markup=False, highlight=False, soft_wrap=True
            )
    console.print(_held_out_table(tuned.live, tuned.draft))
    # Whole lines, however narrow the terminal: they are commands to copy.
    console.print(f"next: {whatif_command}", markup=False, highlight=False, soft_wrap=True)
    console.print(
        f"then live in the shadow: LEADFLOW_WORKER__CHALLENGER_RULES={draft_path} leadflow worker",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )


def _evidence_table(tuned: Tuned) -> Table:
    table = Table(
        title="conversion of the learning MQLs to SQL, with and without "
        "(difference: simultaneous 95% Newcombe interval)"
    )
    for column in ("feature", "with", "without", "difference", "log OR", "verdict", "points"):
        table.add_column(column, justify="left" if column in ("feature", "verdict") else "right")
    shown = [e for e in tuned.evidence if e.verdict != "too little data"]
    order = {"predicts": 0, "noise": 1}
    for e in sorted(shown, key=lambda e: (order[e.verdict], e.feature)):
        in_force = "-" if e.points is None else f"{e.points:g}"
        points = in_force if e.proposed is None else f"{in_force} -> {e.proposed:g}"
        table.add_row(
            e.feature.label,
            f"{e.with_converted}/{e.with_leads} {e.rate_with:.0%}",
            f"{e.without_converted}/{e.without_leads} {e.rate_without:.0%}",
            f"{_pts(e.difference)} [{_pts(e.low)}, {_pts(e.high)}]",
            f"{e.log_odds_ratio:+.2f}",
            e.verdict,
            points,
        )
    return table


def _held_out_table(live: HeldOutFigures, draft: HeldOutFigures) -> Table:
    table = Table(title="held-out cohorts (not learnt from)")
    for column in ("", "in force", "draft"):
        table.add_column(column, justify="right" if column else "left")

    def row(name: str, before: float | None, after: float | None, form: str) -> None:
        table.add_row(name, *(form.format(v) if v is not None else "-" for v in (before, after)))

    row("MQLs", live.mqls, draft.mqls, "{:,.0f}")
    row("MQL -> SQL", live.mql_to_sql_rate, draft.mql_to_sql_rate, "{:.1%}")
    row("SQL -> won", live.sql_to_won_rate, draft.sql_to_won_rate, "{:.1%}")
    row("MQLs sales judged", live.judged, draft.judged, "{:,.0f}")
    row("precision (judged MQLs that became SQL)", live.precision, draft.precision, "{:.1%}")
    row("AUC of the score before the MQL", live.auc, draft.auc, "{:.3f}")
    return table


def _pts(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:+.0f}"
