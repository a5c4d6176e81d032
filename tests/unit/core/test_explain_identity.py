"""`explain` and the account roll-up of a lead with anonymous history: the visitor's engagement
is shown line by line and adds up to the lead's stage changes, and its account hears it."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from streams.cli import app
from streams.core.account import Signal
from streams.core.explain import Ledger, explain, ledger, rounded_parts
from streams.core.identity import absorb, summary_of
from streams.core.lead import LeadStageChange
from streams.core.qualify import qualify_summary
from streams.core.rules import Rules
from streams.core.signals import summary_signals
from streams.offline.replay import Replayer, effective_changes, ids_bearing_on
from tests.support.factories import BUYER, as_lines, event
from tests.support.random_logs import WIDE, stitched_logs

VISITOR = "anon-1"
LEAD = "lead-1"


def pricing_views(count: int, visitor: str = VISITOR) -> list[dict[str, Any]]:
    """`count` pricing-page views under an anonymous id, an hour apart."""
    views = []
    for index in range(count):
        view = event("pricing_page_view", timedelta(hours=index), lead=visitor)
        view["event_id"] = f"{visitor}-view-{index}"
        view["anonymous_id"] = visitor
        views.append(view)
    return views


def sign_up(at_hours: float = 41, anonymous_id: str | None = VISITOR) -> dict[str, Any]:
    document = event("profile_updated", timedelta(hours=at_hours), event_id="signup", **BUYER)
    if anonymous_id is not None:
        document["anonymous_id"] = anonymous_id
    return document


def replayed(
    documents: list[dict[str, Any]], rules: Rules, accounts: bool = False
) -> tuple[Replayer, list[LeadStageChange], list[Signal]]:
    replayer = Replayer(rules, 1_000_000, accounts=accounts, keep_compacted=True)
    out = list(replayer.run(as_lines(documents)))
    changes = [item for item in out if isinstance(item, LeadStageChange)]
    return replayer, changes, [item for item in out if isinstance(item, Signal)]


def explained(replayer: Replayer, lead_id: str, upto_event: str, rules: Rules) -> Ledger:
    """The lead's ledger right after `upto_event`, as `leadflow explain --ledger` shows it."""
    state = replayer.states[lead_id]
    entries = [*replayer.compacted.get(lead_id, ()), *state.tail]
    upto = max(i for i, entry in enumerate(entries) if entry.event_id == upto_event)
    return ledger(entries, state.attribution, rules, upto, state.linked, visitors_of(replayer))


def visitors_of(replayer: Replayer) -> dict[str, list[Any]]:
    return {
        lead_id: [*replayer.compacted.get(lead_id, ()), *state.tail]
        for lead_id, state in replayer.states.items()
    }


def assert_adds_up(shown: Ledger, score: float) -> None:
    assert round(shown.engagement_score, 3) == score
    assert abs(sum(c.decayed_to for c in shown.engagement) - shown.engagement_score) < 5e-7
    printed = rounded_parts([c.decayed_to for c in shown.engagement], shown.engagement_score)
    assert f"{sum(printed):.3f}" == f"{score:.3f}"


def test_explain_shows_the_visitors_engagement_adding_up_to_the_stage_change(
    rules: Rules,
) -> None:
    replayer, changes, _ = replayed([*pricing_views(40), sign_up()], rules)
    to_lead = next(c for c in effective_changes(changes).values() if c.to_stage == "lead")
    assert to_lead.engagement_score > 39  # the visitor's 40 looks, capped at 40 and decayed
    state = replayer.states[LEAD]
    entries = [*replayer.compacted.get(LEAD, ()), *state.tail]
    rows = list(explain(entries, state.attribution, rules, state.linked, visitors_of(replayer)))
    visits = [row for row in rows if row.identity == VISITOR]
    assert [row.event_id for row in visits] == [f"{VISITOR}-view-{i}" for i in range(40)]
    assert all(row.points == 10 for row in visits)
    signed_up = next(row for row in rows if row.event_id == "signup")
    assert round(signed_up.engagement_score, 3) == to_lead.engagement_score
    assert [c.to_stage for c in signed_up.changes] == ["subscriber", "lead"]
    shown = explained(replayer, LEAD, "signup", rules)
    assert_adds_up(shown, to_lead.engagement_score)
    assert {c.identity for c in shown.engagement} == {VISITOR}
    assert len(shown.engagement) == 40


def test_a_visitor_linked_through_a_chain_is_explained_and_adds_up(rules: Rules) -> None:
    # anon-1 is a CRM duplicate's visitor; the CRM merges the duplicate into lead-1.
    duplicate = event(
        "profile_updated", timedelta(hours=40), lead="crm-dup", event_id="dup", **BUYER
    )
    duplicate["anonymous_id"] = VISITOR
    merge = event("leads_merged", timedelta(hours=42), event_id="merge", merged_lead_id="crm-dup")
    documents = [*pricing_views(20), duplicate, sign_up(anonymous_id=None), merge]
    demo = event("demo_request", timedelta(hours=43), event_id="demo")
    documents.append(demo)
    assert ids_bearing_on(as_lines(documents), LEAD, 1_000_000) == {LEAD, "crm-dup", VISITOR}
    replayer, changes, _ = replayed(documents, rules)
    mql = next(
        c for c in effective_changes(changes).values() if c.lead_id == LEAD and c.to_stage == "mql"
    )
    shown = explained(replayer, LEAD, "demo", rules)
    assert_adds_up(shown, mql.engagement_score)
    assert {c.identity for c in shown.engagement if c.event_id} == {VISITOR, None}


def test_a_cap_on_the_lead_and_visitor_sum_is_a_line_of_the_ledger(rules: Rules) -> None:
    own = [
        event("pricing_page_view", timedelta(hours=45 + i), event_id=f"own-{i}") for i in range(3)
    ]
    replayer, changes, _ = replayed([*pricing_views(4), sign_up(), *own], rules)
    last = max(
        (c for c in effective_changes(changes).values() if c.lead_id == LEAD),
        key=lambda c: c.sequence,
    )
    shown = explained(replayer, LEAD, last.causation_event_id, rules)
    assert_adds_up(shown, last.engagement_score)
    caps = [c for c in shown.engagement if not c.event_id]
    assert [c.type for c in caps] == ["cap: pricing_page_view"] and caps[0].decayed_to < 0


def test_the_account_hears_the_engagement_the_lead_stage_rules_use(rules: Rules) -> None:
    demo = event("demo_request", timedelta(hours=42), event_id="demo")
    _, changes, signals = replayed([*pricing_views(40), sign_up(), demo], rules, accounts=True)
    mql = next(c for c in effective_changes(changes).values() if c.to_stage == "mql")
    told = next(s for s in signals if s.causation_event_id == "demo")
    assert mql.engagement_score > 80  # the form's 50 and the visitor's pricing looks
    assert round(told.engagement_score, 3) == mql.engagement_score


def test_a_summary_tells_the_account_at_once(rules: Rules) -> None:
    """What `qualify_summary` needs to publish: the engagement the summary gives the lead."""
    replayer, changes, _ = replayed([*pricing_views(40), sign_up()], rules)
    to_lead = next(c for c in effective_changes(changes).values() if c.to_stage == "lead")
    visitor = replayer.states[VISITOR]
    summary = summary_of(visitor, rules)
    assert summary is not None
    # The lead as it was before the summary came: signed up, nothing linked yet.
    alone, _, _ = replayed([sign_up()], rules)
    before = alone.states[LEAD]._replace(links=replayer.states[LEAD].links)
    decision = absorb(before, summary, rules)
    told = summary_signals(before, summary, decision, rules)
    assert [s.account_id for s in told] == ["acme.com"]
    assert round(told[0].engagement_score, 3) == to_lead.engagement_score
    assert told[0].causation_event_id == f"{VISITOR}-view-39"


def test_explain_command_shows_the_visitor_and_the_ledger_adds_up(tmp_path: Any) -> None:
    log = tmp_path / "events.jsonl"
    log.write_bytes(b"\n".join(as_lines([*pricing_views(40), sign_up()])) + b"\n")
    runner = CliRunner()
    table = runner.invoke(app, ["explain", LEAD, str(log)])
    assert table.exit_code == 0, table.output
    assert table.output.count(f"(as {VISITOR})") == 40
    shown = runner.invoke(app, ["explain", LEAD, str(log), "--json"])
    assert shown.exit_code == 0, shown.output
    document = orjson.loads(shown.stdout)
    parts = sum(part["decayed_to"] for part in document["engagement"])
    assert abs(parts - document["engagement_score"]) < 5e-7
    assert document["engagement_score"] > 39


@settings(max_examples=60, deadline=None)
@given(stitched_logs(), st.data())
def test_the_ledger_adds_up_to_every_stage_change_of_a_stitched_lead(
    documents: list[dict[str, Any]], data: st.DataObject
) -> None:
    replayer, changes, _ = replayed(documents, WIDE)
    if LEAD not in replayer.states:
        return
    state = replayer.states[LEAD]
    entries = [*replayer.compacted.get(LEAD, ()), *state.tail]
    visitors = visitors_of(replayer)
    for change in effective_changes(changes).values():
        if change.lead_id != LEAD:
            continue
        upto = max(i for i, e in enumerate(entries) if e.event_id == change.causation_event_id)
        shown = ledger(entries, state.attribution, WIDE, upto, state.linked, visitors)
        assert_adds_up(shown, change.engagement_score)
    upto = data.draw(st.integers(0, len(entries) - 1))
    shown = ledger(entries, state.attribution, WIDE, upto, state.linked, visitors)
    assert abs(sum(c.decayed_to for c in shown.engagement) - shown.engagement_score) < 5e-7


def test_a_summary_before_any_event_of_its_lead_tells_no_account_and_fails_nothing(
    rules: Rules,
) -> None:
    """After a crash, a summary can reach its lead before the lead's own events are applied
    again: the lead has no event yet, so no account to tell."""
    replayer, _, _ = replayed([*pricing_views(40), sign_up()], rules)
    summary = summary_of(replayer.states[VISITOR], rules)
    assert summary is not None
    # The last: a visitor without engagement of its own (none of its events scores).
    quiet = summary._replace(steps=())
    for arriving in (summary, summary._replace(steps=(), withdrawn=True), quiet):
        applied = qualify_summary(None, arriving, rules, accounts=True)
        assert applied.signals == ()
