"""What-if as one self-contained HTML page: both funnels side by side, in tables and charts,
and every lead whose stage history the draft changes.

`leadflow whatif --html FILE` writes it, to share a draft of the rules with people who will not
run the CLI. Charts are matplotlib SVGs inlined as data URIs, so the page opens anywhere, offline.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from streams.offline.whatif import FunnelFigures, LeadDifference, WhatIf

MAX_LISTED_LEADS: Final = 1000
"""At most this many differing leads are listed on the page (`--json` has them all)."""
KIND_MEANINGS: Final = {
    "newly_mql": "MQL under the draft only",
    "no_longer_mql": "MQL under the rules in force only",
    "mql_earlier": "MQL under both, earlier under the draft",
    "mql_later": "MQL under both, later under the draft",
    "mql_rule": "MQL at the same time, by another rule",
    "other_stages": "the same MQL, other stages differ",
}
IN_FORCE_COLOUR: Final = "#3b7dd8"
DRAFT_COLOUR: Final = "#e8833a"


def write_what_if_html(comparison: WhatIf, path: Path, lines_read: int) -> None:
    """Write `comparison` of a log of `lines_read` lines to `path` as one HTML page: both
    funnels as tables and charts, MQLs per week, per source, the bad lines if any, and the
    leads whose history differs (at most MAX_LISTED_LEADS; the page says how many more)."""
    live, draft = comparison.live, comparison.draft
    bad_lines = comparison.bad_lines
    title = f"What if: rules {draft.rules_version} (draft) against {live.rules_version} (in force)"
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    summary = (
        f"{lines_read - bad_lines:,} events of {live.leads:,} leads, replayed under both rule "
        f"sets. Generated {generated}."
    )
    bad = ""
    if bad_lines:
        bad = (
            f"<p class='bad'>{bad_lines:,} of {lines_read:,} lines were bad (not a valid event) "
            "and left out of both funnels: <code>leadflow replay</code> of the same log lists "
            "them.</p>"
        )
    charts = "".join(
        f'<figure><img alt="{html.escape(alt)}" src="{src}"></figure>'
        for alt, src in (
            _funnel_chart(live, draft),
            _conversion_chart(live, draft),
            _weekly_chart(live, draft),
        )
    )
    body = (
        f"<h1>{html.escape(title)}</h1><p>{html.escape(summary)}</p>{bad}"
        f"<div class='charts'>{charts}</div>"
        f"{_funnel_section(live, draft)}{_weekly_section(live, draft)}"
        f"{_source_section(live, draft)}{_differences_section(comparison)}"
    )
    path.write_text(
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>"
        f"<body>{body}</body></html>",
        encoding="utf-8",
    )


_CSS: Final = (
    "body{font-family:system-ui,sans-serif;margin:2rem;color:#222;max-width:1400px}"
    "h1{font-size:1.4rem}h2{margin-top:2rem}"
    "table{border-collapse:collapse;margin:0 0 1.5rem}"
    "td,th{padding:.25rem .6rem;border-bottom:1px solid #ddd;text-align:right;"
    "vertical-align:top}"
    "td.text,th.text{text-align:left}th{background:#f4f4f4}"
    "td.indent{padding-left:1.6rem}td.indent2{padding-left:2.8rem;color:#555}"
    ".charts{display:flex;flex-wrap:wrap;gap:1rem;align-items:flex-end}figure{margin:0}"
    "img{max-width:100%}th.group{text-align:center}.group-start{border-left:1px solid #ccc}"
    ".bad{background:#fff3cd;border:1px solid #e0c36a;padding:.5rem .8rem;display:inline-block}"
    ".leads td{font-size:.9rem;white-space:nowrap}.leads td.steps{text-align:left;"
    "font-family:ui-monospace,monospace;font-size:.8rem}.leads td.shared{white-space:normal;"
    "max-width:16rem;color:#555}.steps .same{color:#888}.note{color:#555}"
)


def _funnel_section(live: FunnelFigures, draft: FunnelFigures) -> str:
    count, days, rate = "{:,.0f}", "{:.1f}", "{:.1%}"
    rows: list[tuple[str, str, float | None, float | None, str]] = [
        ("MQLs", "text", live.mqls, draft.mqls, count),
        ("active", "text indent", live.active, draft.active, count),
        ("passive", "text indent", live.passive, draft.passive, count),
    ]
    for rule in sorted(live.mqls_by_rule.keys() | draft.mqls_by_rule.keys()):
        before, after = live.mqls_by_rule.get(rule, 0), draft.mqls_by_rule.get(rule, 0)
        rows.append((rule, "text indent2", before, after, count))
    rows += [
        ("MQLs that became SQL", "text", live.mqls_to_sql, draft.mqls_to_sql, count),
        ("SQLs", "text", live.sqls, draft.sqls, count),
        ("SQLs won", "text", live.sqls_to_won, draft.sqls_to_won, count),
        ("MQL → SQL", "text", live.mql_to_sql_rate, draft.mql_to_sql_rate, rate),
        ("SQL → won", "text", live.sql_to_won_rate, draft.sql_to_won_rate, rate),
        (
            "median days, first touch to MQL",
            "text",
            live.median_days_to_mql,
            draft.median_days_to_mql,
            days,
        ),
    ]
    body = "".join(
        f"<tr><td class='{css}'>{html.escape(name)}</td>"
        f"<td>{_shown(before, form)}</td><td>{_shown(after, form)}</td>"
        f"<td>{_change(before, after, form)}</td></tr>"
        for name, css, before, after, form in rows
    )
    head = _header_row(["", "in force", "draft", "change"])
    return (
        f"<h2>Funnel</h2><table>{head}{body}</table>"
        "<p class='note'>Rates change in percentage points (pp). An SQL need not have been an "
        "MQL: sales may qualify a lead directly.</p>"
    )


def _weekly_section(live: FunnelFigures, draft: FunnelFigures) -> str:
    weeks = sorted(live.mqls_by_week.keys() | draft.mqls_by_week.keys())
    rows = []
    for week in weeks:
        before, after = live.mqls_by_week.get(week, 0), draft.mqls_by_week.get(week, 0)
        rows.append([week, before, after, _change(before, after, "{:,.0f}")])
    table = _table(["week", "in force", "draft", "change"], rows, text_columns=1)
    return (
        "<h2>MQLs per week (ISO week of the MQL's event time)</h2>"
        f"<details><summary>The figures of the chart above</summary>{table}</details>"
    )


def _source_section(live: FunnelFigures, draft: FunnelFigures) -> str:
    groups = "".join(
        f"<th class='group group-start' colspan='3'>{name}</th>" for name in ("MQLs", "SQLs", "won")
    )
    head = (
        f"<tr><th class='text' rowspan='2'>source</th>{groups}</tr>"
        + "<tr>"
        + "<th class='group-start'>in force</th><th>draft</th><th>change</th>" * 3
        + "</tr>"
    )
    body = ""
    for source in sorted(live.by_source.keys() | draft.by_source.keys()):
        before, after = live.by_source.get(source), draft.by_source.get(source)
        cells = ""
        for measure in ("mqls", "sqls", "won"):
            old = getattr(before, measure) if before else 0
            new = getattr(after, measure) if after else 0
            cells += (
                f"<td class='group-start'>{old:,}</td><td>{new:,}</td>"
                f"<td>{_change(old, new, '{:,.0f}')}</td>"
            )
        body += f"<tr><td class='text'>{html.escape(source)}</td>{cells}</tr>"
    return f"<h2>Per source (the lead's first-touch source)</h2><table>{head}{body}</table>"


def _differences_section(comparison: WhatIf) -> str:
    differences = comparison.differences
    if not differences:
        return "<h2>0 leads whose stage history differs</h2><p>No lead's stage history differs.</p>"
    # The order of KIND_MEANINGS (gained, lost, moved...), any kind it does not know last.
    order = list(KIND_MEANINGS)
    counts = dict(
        sorted(
            comparison.kinds.items(),
            key=lambda item: (order.index(item[0]) if item[0] in order else len(order), item[0]),
        )
    )
    listed = _listed_per_kind(counts, MAX_LISTED_LEADS)
    kinds = _table(
        ["difference", "meaning", "leads", "listed below"],
        [
            [kind.replace("_", " "), KIND_MEANINGS.get(kind, ""), count, listed[kind]]
            for kind, count in counts.items()
        ],
        text_columns=2,
    )
    left_out = len(differences) - sum(listed.values())
    note = ""
    if left_out:
        note = (
            f"<p class='bad'>The page lists at most {MAX_LISTED_LEADS:,} leads: "
            f"{left_out:,} are left out (the first ones by lead id of each kind are shown). "
            "<code>leadflow whatif --json</code> lists every one.</p>"
        )
    by_kind: dict[str, list[LeadDifference]] = {kind: [] for kind in counts}
    for difference in differences:
        by_kind[difference.kind].append(difference)
    tables = "".join(
        _leads_table(kind, counts[kind], leads[: listed[kind]]) for kind, leads in by_kind.items()
    )
    return (
        f"<h2>{len(differences):,} leads whose stage history differs</h2>{kinds}{note}"
        "<p class='note'>Each lead's stages (UTC) from the first one where the two rule sets "
        "part; <q>rule</q> is the rule that made the difference.</p>"
        f"{tables}"
    )


def _leads_table(kind: str, count: int, differences: list[LeadDifference]) -> str:
    rows = []
    for difference in differences:
        shared, live, draft = _parted(difference.live, difference.draft)
        rows.append(
            "<tr>"
            f"<td class='text'>{html.escape(difference.lead_id)}</td>"
            f"<td class='text'>{html.escape(difference.rule)}</td>"
            f"<td class='steps shared'>{html.escape(' → '.join(s[0] for s in shared) or '-')}</td>"
            f"<td class='steps'>{_steps(live, draft)}</td>"
            f"<td class='steps'>{_steps(draft, live)}</td>"
            "</tr>"
        )
    head = _header_row(["lead", "rule", "same stages first", "then in force", "then draft"], 5)
    name = html.escape(kind.replace("_", " "))
    listed = f", the first {len(differences):,} listed" if len(differences) < count else ""
    return (
        f"<h3 id='{html.escape(kind)}'>{name}: {count:,} leads{listed}</h3>"
        f"<table class='leads'>{head}{''.join(rows)}</table>"
    )


Step = tuple[str, str, int]


def _parted(
    live: tuple[Step, ...], draft: tuple[Step, ...]
) -> tuple[tuple[Step, ...], tuple[Step, ...], tuple[Step, ...]]:
    """The steps both histories share from the start, then each one's own."""
    shared = 0
    while shared < min(len(live), len(draft)) and live[shared] == draft[shared]:
        shared += 1
    return live[:shared], live[shared:], draft[shared:]


def _steps(steps: Iterable[Step], other: Iterable[Step]) -> str:
    """One side's steps, one a line; those the other side has too (same stage, rule and time)
    greyed, so what differs stands out."""
    both = set(other)
    shown = [
        (step in both, f"{step[0]} {_at(step[2])}" + (f" ({step[1]})" if step[0] == "mql" else ""))
        for step in steps
    ]
    return (
        "<br>".join(
            f"<span class='same'>{html.escape(text)}</span>" if same else html.escape(text)
            for same, text in shown
        )
        or "(nothing more)"
    )


def _at(micros: int) -> str:
    return datetime.fromtimestamp(micros / 1_000_000, tz=UTC).strftime("%Y-%m-%d %H:%M")


def _listed_per_kind(kinds: dict[str, int], cap: int) -> dict[str, int]:
    """How many leads of each kind to list so that at most `cap` are, shared fairly: a kind
    with fewer leads than an equal share lists all, the others split what is left."""
    listed = dict.fromkeys(kinds, 0)
    left, open_kinds = cap, sorted(kinds, key=lambda kind: kinds[kind])
    while open_kinds:
        share = left // len(open_kinds)
        kind = open_kinds[0]
        if kinds[kind] > share:
            for index, other in enumerate(open_kinds):
                # The remainder goes to the first kinds, so exactly `cap` are listed.
                listed[other] = share + (index < left % len(open_kinds))
            break
        listed[kind] = kinds[kind]
        left -= kinds[kind]
        open_kinds.pop(0)
    return listed


def _shown(value: float | None, form: str) -> str:
    return form.format(value) if value is not None else "-"


def _change(before: float | None, after: float | None, form: str) -> str:
    """The draft's change as shown (a rate's in percentage points); `0` when it rounds away."""
    if before is None or after is None:
        return "-"
    unit = ""
    if form.endswith("%}"):
        form, unit, before, after = "{:.1f}", " pp", before * 100, after * 100
    shown = form.format(abs(after - before))
    if not shown.strip("0.,"):
        return "0" + unit
    return ("+" if after > before else "\N{MINUS SIGN}") + shown + unit


def _header_row(names: list[str], text_columns: int = 1) -> str:
    return (
        "<tr>"
        + "".join(
            f"<th class='{'text' if index < text_columns else ''}'>{html.escape(name)}</th>"
            for index, name in enumerate(names)
        )
        + "</tr>"
    )


def _table(names: list[str], rows: Iterable[list[Any]], text_columns: int) -> str:
    def cell(index: int, value: Any) -> str:
        css = " class='text'" if index < text_columns else ""
        shown = f"{value:,}" if isinstance(value, int) else str(value)
        return f"<td{css}>{html.escape(shown)}</td>"

    body = "".join(
        "<tr>" + "".join(cell(i, value) for i, value in enumerate(row)) + "</tr>" for row in rows
    )
    return f"<table>{_header_row(names, text_columns)}{body}</table>"


@contextmanager
def _figure(width: float, height: float = 3.4) -> Iterator[tuple[Any, Any]]:
    import matplotlib

    matplotlib.use("Agg")  # no display: render to files only
    import matplotlib.pyplot as plt

    # Text stays text in the SVG: smaller, selectable, and searchable in the page.
    with matplotlib.rc_context({"svg.fonttype": "none"}):
        figure, axes = plt.subplots(figsize=(width, height))
        try:
            yield figure, axes
        finally:
            plt.close(figure)


def _svg(figure: Any) -> str:
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    return "data:image/svg+xml;base64," + base64.b64encode(buffer.getvalue().encode()).decode()


def _paired_bars(
    axes: Any,
    names: list[str],
    live: list[float],
    draft: list[float],
    label: Callable[[float], str],
) -> None:
    positions = range(len(names))
    for offset, values, side, colour in (
        (-0.2, live, "in force", IN_FORCE_COLOUR),
        (0.2, draft, "draft", DRAFT_COLOUR),
    ):
        bars = axes.bar([p + offset for p in positions], values, 0.4, label=side, color=colour)
        axes.bar_label(bars, labels=[label(v) for v in values], fontsize=7, padding=2)
    axes.set_xticks(list(positions), names)
    axes.spines[["top", "right"]].set_visible(False)
    axes.legend(frameon=False, fontsize=8)


def _funnel_chart(live: FunnelFigures, draft: FunnelFigures) -> tuple[str, str]:
    names = ["MQLs", "active", "passive", "MQLs\nthen SQL", "SQLs", "SQLs\nwon"]

    def values(f: FunnelFigures) -> list[float]:
        return [f.mqls, f.active, f.passive, f.mqls_to_sql, f.sqls, f.sqls_to_won]

    with _figure(6) as (figure, axes):
        _paired_bars(axes, names, values(live), values(draft), lambda v: f"{v:,.0f}")
        axes.set_title("Both funnels: leads at each step")
        axes.set_ylabel("leads")
        axes.margins(y=0.12)
        return "Bar chart: MQLs (active, passive), SQLs and wins, in force and draft", _svg(figure)


def _conversion_chart(live: FunnelFigures, draft: FunnelFigures) -> tuple[str, str]:
    def values(f: FunnelFigures) -> list[float]:
        return [f.mql_to_sql_rate or 0.0, f.sql_to_won_rate or 0.0]

    with _figure(4) as (figure, axes):
        _paired_bars(axes, ["MQL → SQL", "SQL → won"], values(live), values(draft), "{:.1%}".format)
        axes.set_title("What sales made of them")
        axes.set_ylabel("rate")
        axes.set_ylim(0, 1.1)
        return "Bar chart: MQL to SQL and SQL to won rates, in force and draft", _svg(figure)


def _weekly_chart(live: FunnelFigures, draft: FunnelFigures) -> tuple[str, str]:
    weeks = sorted(live.mqls_by_week.keys() | draft.mqls_by_week.keys())
    with _figure(9) as (figure, axes):
        for figures, side, colour in (
            (live, "in force", IN_FORCE_COLOUR),
            (draft, "draft", DRAFT_COLOUR),
        ):
            axes.plot(
                weeks,
                [figures.mqls_by_week.get(week, 0) for week in weeks],
                marker="o",
                markersize=3,
                label=side,
                color=colour,
            )
        axes.set_title("MQLs per week (event time)")
        axes.set_ylabel("MQLs")
        # Every label of a long log would overlap: label at most about 30 weeks, evenly.
        step = -(-len(weeks) // 30) or 1
        axes.set_xticks(range(0, len(weeks), step), weeks[::step], rotation=45, ha="right")
        axes.spines[["top", "right"]].set_visible(False)
        axes.legend(frameon=False, fontsize=8)
        axes.set_ylim(bottom=0)
        return "Line chart: MQLs per ISO week, in force and draft", _svg(figure)
