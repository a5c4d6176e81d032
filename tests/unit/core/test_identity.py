"""Identity stitching: properties of the core for any log of a visitor and the lead it becomes.

The stream routes links and summaries through topics, so they reach their state at any later
moment, maybe twice: `deliver` folds a log that way, with hypothesis choosing the moments.
"""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.events import EVENT_ADAPTER, Event
from streams.common.lead_state_codec import decode_state, encode_state
from streams.core.lead import LeadStageChange, LeadState, LinkRequest, Summary
from streams.core.qualify import Qualified, qualify, qualify_request, qualify_summary
from streams.core.revisions import micros_of
from streams.core.rules import Rules
from streams.offline.replay import Replayer, effective_changes
from tests.support.factories import BUYER, T0, as_lines, event
from tests.support.random_logs import (
    LEAD,
    RULES,
    VISITOR,
    WIDE,
    hours,
    link_event,
    stitched_logs,
)


def as_event(document: dict[str, Any]) -> Event:
    return EVENT_ADAPTER.validate_python(document)


def deliver(
    documents: list[dict[str, Any]],
    chooser: random.Random,
    duplicates: bool = True,
    rules: Rules = WIDE,
    eagerness: float = 0.5,
) -> tuple[list[LeadStageChange], dict[str, LeadState]]:
    """Fold `documents` in the order given, routing links and summaries as a stream would:
    each reaches its state at a moment chosen at random, some twice."""
    states: dict[str, LeadState] = {}
    changes: list[LeadStageChange] = []
    pending: list[LinkRequest | Summary] = []

    def apply(item: Event | LinkRequest | Summary) -> None:
        done: Qualified
        if isinstance(item, Summary):
            key = item.to_id
            done = qualify_summary(states.get(key), item, rules)
        elif isinstance(item, LinkRequest):
            key = item.identity
            done = qualify_request(states.get(key), item, rules)
        else:
            key = item.lead_id
            done = qualify(states.get(key), item, rules, False)
        if done.refused is not None:
            return
        states[key] = done.state
        changes.extend(done.changes)
        for routed in (*done.requests, *done.summaries):
            pending.append(routed)
            if duplicates and chooser.random() < 0.2:
                pending.append(routed)

    def flush_some() -> None:
        while pending and chooser.random() < eagerness:
            apply(pending.pop(chooser.randrange(len(pending))))

    for document in documents:
        apply(as_event(document))
        flush_some()
    while pending:
        apply(pending.pop(chooser.randrange(len(pending))))
    return changes, states


def in_effect(changes: list[LeadStageChange]) -> dict[str, LeadStageChange]:
    """The changes consumers keep, without the revision (which stamps the arrival order)."""
    return {cid: c._replace(revision=0) for cid, c in effective_changes(changes).items()}


def replayed(documents: list[dict[str, Any]], rules: Rules = WIDE) -> list[LeadStageChange]:
    replayer = Replayer(rules, 1_000_000)
    return [c for c in replayer.run(as_lines(documents)) if isinstance(c, LeadStageChange)]


UNCAPPED = WIDE.model_copy(
    update={
        "engagement": WIDE.engagement.model_copy(
            update={
                "caps": {},
                "total_cap": None,
                "groups": {
                    name: group.model_copy(update={"cap": None})
                    for name, group in WIDE.engagement.groups.items()
                },
            }
        )
    }
)
"""Rules without caps: a cap applied to the sum of two histories is not the cap applied to
each event in turn, so only without them are a lead's and a visitor's points the same sums."""


@st.composite
def cross_device_logs(draw: st.DrawFn) -> list[dict[str, Any]]:
    """A lead that signed up, then its events and a visitor's (the same person on another
    device), and the links between them at any moment."""
    documents = draw(stitched_logs())
    sign_up = next(d for d in documents if d["event_id"] == "signup")
    start = as_event(sign_up).occurred_at
    for document in documents:
        if document["lead_id"] == VISITOR:
            at = as_event(document).occurred_at
            document["occurred_at"] = (start + (at - T0) + timedelta(minutes=1)).isoformat()
    return documents


def as_the_leads_own(documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The visitor's events made the lead's own (what stitching should amount to)."""
    own = []
    for document in documents:
        if document["lead_id"] == VISITOR:
            document = {**document, "lead_id": LEAD}
            del document["anonymous_id"]
        own.append(document)
    return own


@given(cross_device_logs(), st.randoms(use_true_random=False))
def test_a_visitors_events_count_for_the_lead_as_its_own_at_their_own_times(
    documents: list[dict[str, Any]], chooser: random.Random
) -> None:
    stitched, _ = deliver(documents, chooser, rules=UNCAPPED)
    own = replayed(as_the_leads_own(documents), UNCAPPED)

    def history(changes: list[LeadStageChange]) -> list[tuple[Any, ...]]:
        kept = sorted(in_effect(changes).values(), key=lambda c: c.sequence)
        return [
            (c.from_stage, c.to_stage, c.occurred_at, c.causation_event_id, c.rule, c.source)
            for c in kept
        ]

    assert history(stitched) == history(own)


@given(stitched_logs(), st.randoms(use_true_random=False))
def test_the_outcome_does_not_depend_on_arrival_order_nor_on_duplicates(
    documents: list[dict[str, Any]], chooser: random.Random
) -> None:
    reference = in_effect(replayed(documents))
    shuffled = list(documents)
    chooser.shuffle(shuffled)
    with_duplicates = shuffled + [dict(d) for d in shuffled if chooser.random() < 0.3]
    changes, _ = deliver(with_duplicates, chooser)
    assert in_effect(changes) == reference


@given(stitched_logs(), st.randoms(use_true_random=False))
def test_the_link_counts_the_same_before_between_or_after_the_visitors_events(
    documents: list[dict[str, Any]], chooser: random.Random
) -> None:
    links = [d for d in documents if d["type"] == "identity_linked"]
    others = [d for d in documents if d["type"] != "identity_linked"]
    reference = in_effect(replayed(documents))
    for at in (0, len(others) // 2, len(others)):
        arrival = others[:at] + links + others[at:]
        changes, _ = deliver(arrival, chooser)
        assert in_effect(changes) == reference


@given(stitched_logs(), hours, st.randoms(use_true_random=False))
def test_linking_twice_changes_nothing(
    documents: list[dict[str, Any]], later: int, chooser: random.Random
) -> None:
    changes, states = deliver(documents, chooser)
    winner = states[VISITOR].link
    assert winner is not None
    again = link_event(later, "again")
    if micros_of(as_event(again).occurred_at) <= winner.at:
        return  # an earlier link is another link, not the same one again
    twice, _ = deliver([*documents, again, *documents], chooser)
    assert in_effect(twice) == in_effect(changes)


@given(stitched_logs(), st.randoms(use_true_random=False))
def test_a_linked_visitor_publishes_nothing_of_its_own(
    documents: list[dict[str, Any]], chooser: random.Random
) -> None:
    changes, states = deliver(documents, chooser)
    assert not [c for c in in_effect(changes).values() if c.lead_id == VISITOR]
    assert states[VISITOR].link is not None
    assert [s.from_id for s in states[LEAD].linked] == [VISITOR]


@given(stitched_logs())
def test_a_visitor_never_identified_publishes_nothing(documents: list[dict[str, Any]]) -> None:
    anonymous = [d for d in documents if d["lead_id"] == VISITOR and d["type"] != "identity_linked"]
    # Even a newsletter sign-up (a contact) under an anonymous id makes no subscriber.
    subscribed = event("newsletter_subscribe", lead=VISITOR, event_id="news")
    subscribed["anonymous_id"] = VISITOR
    assert replayed([*anonymous, subscribed]) == []


def test_the_visitors_history_makes_the_lead_a_passive_mql_from_the_moment_it_is_known() -> None:
    views = []
    for index in range(8):
        view = event(
            "content_download",
            timedelta(hours=index),
            lead=VISITOR,
            event_id=f"download-{index}",
            source="linkedin",
            campaign="data-leaders",
            content_category="case_study",
        )
        view["anonymous_id"] = VISITOR
        views.append(view)
    for index in range(4):
        view = event(
            "pricing_page_view", timedelta(hours=9 + index), lead=VISITOR, event_id=f"p-{index}"
        )
        view["anonymous_id"] = VISITOR
        views.append(view)
    sign_up = event("profile_updated", timedelta(hours=20), lead=LEAD, event_id="signup", **BUYER)
    alone = replayed([sign_up])
    assert [c.to_stage for c in alone] == ["subscriber", "lead"]
    # The link comes a day after the sign-up: the visitor's points, each counted from its own
    # time, made the lead an MQL as soon as it was a lead.
    link = link_event(44, "alias-1")
    changes = in_effect(replayed([*views, sign_up, link]))
    mql = [c for c in changes.values() if c.to_stage == "mql"]
    assert len(mql) == 1
    assert mql[0].rule == "mql.passive_score"
    assert mql[0].causation_event_id == "signup"
    assert mql[0].lead_id == LEAD
    assert mql[0].engagement_score >= RULES.engagement.mql_threshold
    # The first touch is the visitor's, which came before the sign-up.
    assert (mql[0].source, mql[0].campaign) == ("linkedin", "data-leaders")
    assert {c.lead_id for c in changes.values()} == {LEAD}


def visits_of(owner: str, start: int) -> list[dict[str, Any]]:
    """Six case-study downloads then six pricing looks, an hour apart, as `owner`'s events."""
    views = []
    for index, kind in enumerate(["content_download"] * 6 + ["pricing_page_view"] * 6):
        view = event(
            kind,
            timedelta(hours=start + index),
            lead=owner,
            event_id=f"visit-{index:02}",
            content_category="case_study" if kind == "content_download" else None,
        )
        if owner == VISITOR:
            view["anonymous_id"] = VISITOR
        views.append(view)
    return views


@pytest.mark.parametrize("linked_at", [1, 30], ids=["link-before-visits", "link-after-visits"])
def test_a_known_leads_visits_on_another_device_count_at_their_own_times(linked_at: int) -> None:
    # The lead signed up on one device, then browsed on another under an anonymous id; the
    # link (before the visits or after them) makes them the lead's: the MQL is at the visit
    # whose points crossed the threshold and cites it, exactly as if the lead had made them.
    sign_up = event("profile_updated", timedelta(hours=0), lead=LEAD, event_id="signup", **BUYER)
    link = link_event(linked_at, "alias-1")
    changes = in_effect(replayed([sign_up, link, *visits_of(VISITOR, 2)]))
    (mql,) = [c for c in changes.values() if c.to_stage == "mql"]
    alone = in_effect(replayed([sign_up, *visits_of(LEAD, 2)]))
    (own,) = [c for c in alone.values() if c.to_stage == "mql"]
    assert (mql.causation_event_id, mql.occurred_at, mql.rule) == (
        own.causation_event_id,
        own.occurred_at,
        own.rule,
    )
    assert (mql.causation_event_id, mql.rule) == ("visit-08", "mql.intent.pricing_research")
    assert mql.engagement_score == pytest.approx(own.engagement_score, abs=1e-3)


def test_an_identity_links_to_one_lead_the_earliest_link_wins_in_any_order() -> None:
    first = link_event(5, "to-2", lead="lead-2")
    second = link_event(9, "to-1", lead=LEAD)
    for order in ([first, second], [second, first]):
        replayer = Replayer(WIDE, 1_000_000)
        out = list(replayer.run(as_lines(order)))
        assert replayer.states[VISITOR].link is not None
        assert replayer.states[VISITOR].link.to_lead_id == "lead-2"
        assert [s.from_id for s in replayer.states["lead-2"].linked] == [VISITOR]
        assert not replayer.states.get(LEAD) or not replayer.states[LEAD].linked
        assert replayer.counts.identity_conflicts == 1
        refused = [line for line in out if hasattr(line, "reason")]
        assert len(refused) == (1 if order[0] is first else 0)


def test_a_lead_counts_at_most_the_rules_number_of_linked_identities() -> None:
    limit = WIDE.state.linked_ids
    links = [link_event(i, f"link-{i}", anonymous=f"anon-{i}") for i in range(limit + 1)]
    replayer = Replayer(WIDE, 1_000_000)
    out = list(replayer.run(as_lines(links)))
    assert len(replayer.states[LEAD].linked) == limit
    reasons = [line.reason for line in out if hasattr(line, "reason")]
    assert len(reasons) == 1 and reasons[0].startswith("too_many_links")


def test_a_crm_merge_retracts_the_duplicates_changes_and_counts_it_for_the_survivor() -> None:
    duplicate = event("profile_updated", lead="crm-9", event_id="dup", **BUYER)
    survivor = event("profile_updated", lead="crm-1", event_id="keep", **BUYER)
    merged = event(
        "leads_merged", timedelta(hours=1), lead="crm-1", event_id="m", merged_lead_id="crm-9"
    )
    changes = replayed([duplicate, survivor, merged])
    assert [c.lead_id for c in changes if c.lead_id == "crm-9" and not c.retracted] == [
        "crm-9",
        "crm-9",
    ]
    assert {c.lead_id for c in in_effect(changes).values()} == {"crm-1"}


@given(stitched_logs(), st.randoms(use_true_random=False))
def test_stored_and_reloaded_identity_states_continue_identically(
    documents: list[dict[str, Any]], chooser: random.Random
) -> None:
    _, states = deliver(documents, chooser, duplicates=False)
    for lead_id, state in states.items():
        reloaded = decode_state(encode_state(state, WIDE), lead_id, WIDE)
        assert reloaded.linked == state.linked
        assert reloaded.link == state.link
        assert reloaded.anonymous == state.anonymous
        assert reloaded.fold == state.fold._replace(transitions=reloaded.fold.transitions)


def test_pricing_looks_before_the_sign_up_complete_an_intent_pattern_after_it() -> None:
    looks = []
    for index in range(2):
        look = event(
            "pricing_page_view", timedelta(hours=index), lead=VISITOR, event_id=f"look-{index}"
        )
        look["anonymous_id"] = VISITOR
        looks.append(look)
    sign_up = event("profile_updated", timedelta(hours=5), lead=LEAD, event_id="signup", **BUYER)
    sign_up["anonymous_id"] = VISITOR
    third = event("pricing_page_view", timedelta(hours=6), lead=LEAD, event_id="look-own")
    alone = in_effect(replayed([sign_up, third]))
    assert not [c for c in alone.values() if c.to_stage == "mql"]
    for arrival in ([*looks, sign_up, third], [third, sign_up, *looks]):
        (mql,) = [c for c in in_effect(replayed(arrival)).values() if c.to_stage == "mql"]
        assert (mql.rule, mql.causation_event_id) == ("mql.intent.pricing_research", "look-own")


@given(stitched_logs(), st.integers(10, 40), st.randoms(use_true_random=False))
def test_a_summary_late_by_weeks_of_the_leads_events_still_counts_exactly(
    documents: list[dict[str, Any]], later: int, chooser: random.Random
) -> None:
    # The lead's events run weeks past its link before the summary comes (the rules' bound:
    # 7 days): it keeps them in detail since the link, so the late summary finds them.
    signed_up = max(as_event(d).occurred_at for d in documents if d["lead_id"] == LEAD)
    for index in range(later):
        documents.append(
            event(
                "email_open", signed_up + timedelta(days=index), lead=LEAD, event_id=f"late-{index}"
            )
        )
    # The same arrival for both: under the bound, what is too late depends on it.
    arrival = sorted(documents, key=lambda d: (d["occurred_at"], d["event_id"]))
    reference = in_effect(replayed(arrival, RULES))
    changes, _ = deliver(arrival, chooser, rules=RULES, eagerness=0.0)
    assert in_effect(changes) == reference


@given(st.randoms(use_true_random=False))
def test_a_visitor_of_a_merged_duplicate_counts_for_the_lead_that_survives(
    chooser: random.Random,
) -> None:
    # A chain of links: the visitor is linked to a CRM contact, which the CRM then merges
    # into another (in any arrival order): the survivor counts the visitor's history too.
    visits = []
    for index, kind in enumerate(["content_download"] * 6 + ["pricing_page_view"] * 4):
        visit = event(
            kind,
            timedelta(hours=index),
            lead=VISITOR,
            event_id=f"visit-{index}",
            content_category="case_study" if kind == "content_download" else None,
        )
        visit["anonymous_id"] = VISITOR
        visits.append(visit)
    duplicate = event("newsletter_subscribe", timedelta(hours=20), lead="crm-9", event_id="dup")
    duplicate["anonymous_id"] = VISITOR
    survivor = event("profile_updated", timedelta(hours=21), lead="crm-1", event_id="keep", **BUYER)
    merge = event(
        "leads_merged", timedelta(hours=30), lead="crm-1", event_id="m", merged_lead_id="crm-9"
    )
    documents = [*visits, duplicate, survivor, merge]
    without_the_visitor = in_effect(replayed([duplicate, survivor, merge]))
    assert not [c for c in without_the_visitor.values() if c.to_stage == "mql"]
    reference = in_effect(replayed(documents))
    (mql,) = [c for c in reference.values() if c.to_stage == "mql"]
    assert (mql.lead_id, mql.rule) == ("crm-1", "mql.passive_score")
    assert {c.lead_id for c in reference.values()} == {"crm-1"}
    shuffled = list(documents)
    chooser.shuffle(shuffled)
    changes, states = deliver(shuffled, chooser)
    assert in_effect(changes) == reference
    assert [s.from_id for s in states["crm-1"].linked] == [VISITOR, "crm-9"]
