"""What-if: the same log under two rule sets; the differences name exactly the leads they change."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.common.settings import DEFAULT_MAX_EVENT_BYTES
from streams.core.rules import Rules, load_rules
from streams.local.generator import generate
from streams.offline.whatif import what_if
from tests.support.command_line import leadflow
from tests.support.factories import BUYER, days, event, run

RULES = load_rules()


def lines(documents: list[dict[str, Any]]) -> list[bytes]:
    return [orjson.dumps(d) for d in documents]


def with_threshold(rules: Rules, threshold: float) -> Rules:
    engagement = rules.engagement.model_copy(update={"mql_threshold": threshold})
    return rules.model_copy(update={"engagement": engagement})


def test_a_lower_threshold_names_the_lead_it_makes_an_mql_and_no_other() -> None:
    webinars = [event("webinar_attended", days(1 + i), lead="warm") for i in range(2)]
    documents = [
        event("profile_updated", lead="warm", **BUYER),
        *webinars,  # 30 points, a little decayed
        event("content_download", days(3), lead="warm", content_category="case_study"),
        event("content_download", days(3), lead="warm", content_category="whitepaper"),
        event("profile_updated", lead="keen", **BUYER),
        event("demo_request", days(2), lead="keen"),
        event("sales_contacted", days(4), lead="keen"),
        event("page_view", days(1), lead="anonymous"),
    ]
    comparison = what_if(lines(documents), RULES, with_threshold(RULES, 45), 1_000_000)
    assert [(d.lead_id, d.kind, d.rule) for d in comparison.differences] == [
        ("warm", "newly_mql", "mql.passive_score")
    ]
    live, draft = comparison.live, comparison.draft
    assert (live.mqls, draft.mqls, live.active, draft.passive) == (1, 2, 1, 1)
    assert (live.mqls_to_sql, draft.mqls_to_sql) == (1, 1)
    assert live.median_days_to_mql == 2.0
    assert comparison.kinds == {"newly_mql": 1}


@settings(max_examples=10, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    edit=st.sampled_from(
        [
            ("engagement", "mql_threshold", 45.0),
            ("engagement", "half_life_days", 10.0),
            ("fit", "lead_threshold", 40.0),
        ]
    ),
)
def test_the_differences_are_exactly_the_leads_whose_changes_differ(
    seed: int, edit: tuple[str, str, float]
) -> None:
    section, name, value = edit
    draft = RULES.model_copy(
        update={section: getattr(RULES, section).model_copy(update={name: value})}
    )
    documents = generate(60, seed=seed)
    comparison = what_if(lines(documents), RULES, draft, DEFAULT_MAX_EVENT_BYTES)
    # Leads do not influence each other: each one replayed on its own under each rule set.
    changed = set()
    for lead_id in {d["lead_id"] for d in documents}:
        own = [d for d in documents if d["lead_id"] == lead_id]
        if in_effect(own, RULES) != in_effect(own, draft):
            changed.add(lead_id)
    assert {d.lead_id for d in comparison.differences} == changed


def in_effect(documents: list[dict[str, Any]], rules: Rules) -> list[tuple[str, str, int]]:
    _, changes = run(documents, rules)
    latest = {}
    for change in changes:
        latest[change.change_id] = change
    live = sorted((c for c in latest.values() if not c.retracted), key=lambda c: c.sequence)
    # The rules version differs between the two by construction; the history is what counts.
    return [(c.to_stage, c.rule, c.occurred_at) for c in live]


def test_whatif_prints_both_funnels_and_the_leads_that_differ(tmp_path: Path) -> None:
    log = tmp_path / "events.jsonl"
    log.write_bytes(b"\n".join(lines(generate(300, seed=4))) + b"\n")
    draft = tmp_path / "draft.toml"
    text = resources.files("streams.core").joinpath("rules.toml").read_text()
    draft.write_text(text.replace("mql_threshold = 60.0", "mql_threshold = 45.0"))
    result = leadflow("whatif", "--rules", str(draft), str(log))
    assert result.returncode == 0, result.stderr
    printed = result.stdout.decode()
    assert "in force" in printed and "draft" in printed
    assert "leads whose stage history differs" in printed
    assert "newly mql" in printed
    result = leadflow("whatif", "--rules", str(draft), str(log), "--json")
    parsed = orjson.loads(result.stdout)
    assert parsed["draft"]["mqls"] > parsed["live"]["mqls"]
    assert parsed["kinds"]["newly_mql"] >= 1
    page = tmp_path / "whatif.html"
    result = leadflow("whatif", "--rules", str(draft), str(log), "--html", str(page))
    assert result.returncode == 0, result.stderr
    shown = page.read_text()
    assert shown.startswith("<!DOCTYPE html>") and "leads whose stage history differs" in shown
    neither = leadflow("whatif", "--rules", str(draft))
    assert neither.returncode == 2 and b"an events file or --from-topic" in neither.stderr
