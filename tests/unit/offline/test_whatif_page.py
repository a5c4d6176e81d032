"""The what-if page: well-formed, both rule versions, both funnels charted, every differing lead."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from html.parser import HTMLParser
from importlib import resources
from pathlib import Path

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.common.settings import DEFAULT_MAX_EVENT_BYTES
from streams.core.rules import load_rules
from streams.local.generator import generate
from streams.offline import whatif_page
from streams.offline.whatif import FunnelFigures, LeadDifference, SourceFigures, WhatIf, what_if
from streams.offline.whatif_page import write_what_if_html

RULES = load_rules()
VOID = frozenset({"area", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source"})
SVG_PREFIX = "data:image/svg+xml;base64,"


@dataclass
class Page:
    """What a browser would make of the page: its structure, tables, charts and text."""

    errors: list[str] = field(default_factory=list)
    title: str = ""
    text: str = ""
    tables: list[tuple[str, list[list[str]]]] = field(default_factory=list)
    """Each table's class and its rows of cell texts (header cells included)."""
    images: list[str] = field(default_factory=list)


class _Reader(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.page = Page()
        self.open: list[str] = []
        self.cell: list[str] | None = None
        self.texts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "img":
            self.page.images.append(attributes.get("src") or "")
        if tag == "table":
            self.page.tables.append((attributes.get("class") or "", []))
        if tag == "tr":
            self.page.tables[-1][1].append([])
        if tag in ("td", "th"):
            self.cell = []
        if tag not in VOID:
            self.open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.open or self.open[-1] != tag:
            self.page.errors.append(f"</{tag}> closes {self.open[-1:]}")
            return
        self.open.pop()
        if tag in ("td", "th") and self.cell is not None:
            self.page.tables[-1][1][-1].append(" ".join("".join(self.cell).split()))
            self.cell = None

    def handle_data(self, data: str) -> None:
        if self.open and self.open[-1] == "title":
            self.page.title += data
        if self.cell is not None:
            self.cell.append(data)
        if not (self.open and self.open[-1] in ("style", "title")):
            self.texts.append(data)


def read_page(path: Path) -> Page:
    document = path.read_text(encoding="utf-8")
    assert document.startswith("<!DOCTYPE html>")
    reader = _Reader()
    reader.feed(document)
    reader.close()
    page = reader.page
    page.text = " ".join(" ".join(reader.texts).split())
    if reader.open:
        page.errors.append(f"never closed: {reader.open}")
    return page


def listed_leads(page: Page) -> list[str]:
    return [row[0] for kind, rows in page.tables if kind == "leads" for row in rows[1:]]


BAD_LINES = [b"not json", b'{"lead_id": "lead-x", "type": "page_view"}']


@pytest.fixture(scope="module")
def log() -> list[bytes]:
    return [orjson.dumps(document) for document in generate(300, seed=4)] + BAD_LINES


@pytest.fixture(scope="module")
def comparison(log: list[bytes], tmp_path_factory: pytest.TempPathFactory) -> WhatIf:
    # From a file, as a person drafts it: the draft then has a version of its own.
    draft = tmp_path_factory.mktemp("rules") / "draft.toml"
    text = resources.files("streams.core").joinpath("rules.toml").read_text()
    draft.write_text(text.replace("mql_threshold = 60.0", "mql_threshold = 45.0"))
    return what_if(log, RULES, load_rules(draft), DEFAULT_MAX_EVENT_BYTES)


def test_the_page_shows_both_versions_both_funnels_and_every_lead_that_differs(
    tmp_path: Path, log: list[bytes], comparison: WhatIf
) -> None:
    assert len(comparison.differences) > 10 and comparison.bad_lines == len(BAD_LINES)
    path = tmp_path / "whatif.html"
    write_what_if_html(comparison, path, len(log))
    page = read_page(path)
    assert page.errors == []
    live, draft = comparison.live, comparison.draft
    assert live.rules_version != draft.rules_version
    for version in (live.rules_version, draft.rules_version):
        assert version in page.title and version in page.text
    assert sorted(listed_leads(page)) == sorted(d.lead_id for d in comparison.differences)
    assert f"{len(comparison.differences)} leads whose stage history differs" in page.text
    assert f"{len(BAD_LINES)} of {len(log):,} lines were bad" in page.text
    assert f"{len(log) - len(BAD_LINES):,} events of {live.leads:,} leads" in page.text
    funnel = next(rows for _, rows in page.tables if rows[0] == ["", "in force", "draft", "change"])
    assert ["MQLs", str(live.mqls), str(draft.mqls), f"+{draft.mqls - live.mqls}"] in funnel
    sources = next(rows for _, rows in page.tables if rows[0][0] == "source")
    assert {row[0] for row in sources[2:]} == live.by_source.keys() | draft.by_source.keys()


def test_the_charts_are_inline_svgs_of_both_funnels_and_of_mqls_per_week(
    tmp_path: Path, log: list[bytes], comparison: WhatIf
) -> None:
    path = tmp_path / "whatif.html"
    write_what_if_html(comparison, path, len(log))
    charts = [
        base64.b64decode(src.removeprefix(SVG_PREFIX)).decode()
        for src in read_page(path).images
        if src.startswith(SVG_PREFIX)
    ]
    assert len(charts) == 3 and all("<svg" in chart for chart in charts)
    funnel, conversion, weekly = charts
    live, draft = comparison.live, comparison.draft
    assert "Both funnels" in funnel and "What sales made of them" in conversion
    assert "MQLs per week" in weekly
    for figures in (live, draft):  # the bars' labels: each side's figures
        for figure in (figures.mqls, figures.passive, figures.sqls, figures.sqls_to_won):
            assert f">{figure:,}<" in funnel
    assert "in force" in weekly and "draft" in weekly


def test_a_long_list_is_capped_and_says_how_many_are_left_out(
    tmp_path: Path, log: list[bytes], comparison: WhatIf, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(whatif_page, "MAX_LISTED_LEADS", 5)
    path = tmp_path / "whatif.html"
    write_what_if_html(comparison, path, len(log))
    page = read_page(path)
    listed = listed_leads(page)
    assert len(listed) == 5 and set(listed) <= {d.lead_id for d in comparison.differences}
    assert len({d.kind for d in comparison.differences if d.lead_id in listed}) == min(
        5, len(comparison.kinds)
    )
    left_out = len(comparison.differences) - 5
    assert f"lists at most 5 leads: {left_out} are left out" in page.text
    assert "leadflow whatif --json lists every one" in page.text


def test_without_differences_or_bad_lines_the_page_says_so(tmp_path: Path) -> None:
    log = [orjson.dumps(document) for document in generate(40, seed=2)]
    comparison = what_if(log, RULES, RULES, DEFAULT_MAX_EVENT_BYTES)
    path = tmp_path / "whatif.html"
    write_what_if_html(comparison, path, len(log))
    page = read_page(path)
    assert page.errors == []
    assert "No lead's stage history differs" in page.text and listed_leads(page) == []
    assert "bad" not in page.text


def test_whatever_comes_from_the_log_is_escaped(tmp_path: Path) -> None:
    def funnel(version: str, source: str) -> FunnelFigures:
        return FunnelFigures(version, 1, 0, {}, {}, None, 0, 0, 0, {source: SourceFigures(mqls=1)})

    lead = "<script>alert(1)</script>&co"
    comparison = WhatIf(
        live=funnel("1+<a>", "<i>ads</i>"),
        draft=funnel("2+<b>", "<i>ads</i>"),
        differences=(LeadDifference(lead, "newly_mql", (), (("mql", "mql.x", 0),), "mql.x"),),
        bad_lines=0,
        kinds={"newly_mql": 1},
    )
    path = tmp_path / "whatif.html"
    write_what_if_html(comparison, path, 1)
    page = read_page(path)
    assert page.errors == [] and "<script>" not in path.read_text()
    assert listed_leads(page) == [lead] and "1+<a>" in page.title
    assert "<i>ads</i>" in page.text


@given(kinds=st.dictionaries(st.sampled_from("abcdef"), st.integers(1, 50)), cap=st.integers(0, 90))
def test_the_cap_is_shared_fairly_between_the_kinds(kinds: dict[str, int], cap: int) -> None:
    listed = whatif_page._listed_per_kind(kinds, cap)
    assert sum(listed.values()) == min(cap, sum(kinds.values()))
    assert all(0 <= listed[kind] <= count for kind, count in kinds.items())
    # Fair: a kind lists fewer than another only when it has no more to list.
    for kind, count in kinds.items():
        for other in kinds:
            assert listed[kind] >= min(count, listed[other] - 1)
