"""Properties the core guarantees for any log: checked with hypothesis on random event logs."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from schemas.stage_changes import STAGES, StageChange
from streams.common.lead_state_codec import decode_state, encode_state
from streams.common.stage_changes_codec import encode_change
from streams.core.compaction import compact
from streams.core.lead import LeadStageChange, entry_of
from streams.core.lifecycle import decide
from streams.core.revisions import instant_of
from streams.core.rules import Rules
from streams.offline.replay import effective_changes
from tests.support.factories import COMPETITOR, STUDENT, VENDOR, as_event, event, run
from tests.support.outcomes import current_stages
from tests.support.random_logs import RULES, WIDE, in_event_time_order, lead_logs

ORDER = {stage: rank for rank, stage in enumerate(STAGES[:-1])}


def encoded(changes: list[LeadStageChange]) -> list[bytes]:
    return [encode_change(c) for c in changes]


def without_revision(changes: dict[str, LeadStageChange]) -> dict[str, LeadStageChange]:
    return {cid: c._replace(revision=0) for cid, c in changes.items()}


@given(lead_logs())
def test_the_same_log_gives_the_same_bytes(documents: list[dict[str, Any]]) -> None:
    assert encoded(run(documents, RULES)[1]) == encoded(run(documents, RULES)[1])


@given(lead_logs(), st.data())
def test_duplicated_events_change_nothing(
    documents: list[dict[str, Any]], data: st.DataObject
) -> None:
    with_duplicates = list(documents)
    for original in data.draw(st.lists(st.sampled_from(documents), max_size=10)):
        first = with_duplicates.index(original)
        at = data.draw(st.integers(first + 1, len(with_duplicates)))
        with_duplicates.insert(at, dict(original))
    assert encoded(run(with_duplicates, RULES)[1]) == encoded(run(documents, RULES)[1])


def arrivals(documents: list[dict[str, Any]], rules: Rules) -> tuple[list[Any], list[Any]]:
    """Fold `documents` in the order given; return the changes published and the documents
    the lead accepted (not a duplicate)."""
    state = None
    changes: list[LeadStageChange] = []
    accepted = []
    for document in documents:
        decision = decide(state, as_event(document), rules)
        if not decision.duplicate:
            accepted.append(document)
        state = decision.state
        changes.extend(decision.changes)
    return changes, accepted


def same_outcome(changes: list[Any], sorted_changes: list[Any]) -> None:
    assert current_stages(changes) == current_stages(sorted_changes)
    # Keyed by change_id, the latest revisions equal what the log in event-time order publishes.
    assert without_revision(effective_changes(changes)) == without_revision(
        effective_changes(sorted_changes)
    )


def the_fold(state: Any) -> Any:
    """What the rules read of a lead (where its snapshot ends depends on arrival)."""
    return state.fold._replace(transitions=state.published.changes + len(state.fold.transitions))


@given(lead_logs(), st.randoms(use_true_random=False))
def test_arrival_order_does_not_change_the_outcome_when_the_log_fits_the_bound(
    documents: list[dict[str, Any]], random: Any
) -> None:
    """A log of 30 events or fewer within 120 days fits rules that keep 180 days and 64 events
    in detail: any arrival order gives the outcome of the log in event-time order."""
    shuffled = list(documents)
    random.shuffle(shuffled)
    states, changes = run(shuffled, WIDE)
    sorted_states, sorted_changes = run(in_event_time_order(documents), WIDE)
    assert the_fold(states["lead-1"]) == the_fold(sorted_states["lead-1"])
    same_outcome(changes, sorted_changes)


@given(lead_logs(), st.randoms(use_true_random=False))
def test_events_late_within_the_allowed_lateness_are_applied_exactly(
    documents: list[dict[str, Any]], random: Any
) -> None:
    """With the shipped rules (7 days), an event delivered up to 7 days after later ones is
    applied at its own time: the outcome is the event-time order's."""
    lateness = RULES.state.allowed_lateness_days * 24
    delayed = sorted(
        in_event_time_order(documents),
        key=lambda d: entry_of(as_event(d)).at + int(random.random() * lateness * 3.6e9),
    )
    changes, accepted = arrivals(delayed, RULES)
    assert len(accepted) == len(documents)
    same_outcome(changes, run(in_event_time_order(documents), RULES)[1])


@given(lead_logs(), st.randoms(use_true_random=False))
def test_any_arrival_order_gives_the_sorted_outcome_except_what_says_applied_late(
    documents: list[dict[str, Any]], random: Any
) -> None:
    """Every event is applied, however late (the shipped rules keep 7 days in detail): the
    changes in effect equal the event-time order's, stage-deciding ones and scores alike,
    except changes that say `applied_late` (and those an approximate change made go or come);
    an outcome with none of those is exact."""
    shuffled = list(documents)
    random.shuffle(shuffled)
    changes, accepted = arrivals(shuffled, RULES)
    assert len(accepted) == len({d["event_id"] for d in documents})
    arrived = without_revision(effective_changes(changes))
    expected = without_revision(effective_changes(run(in_event_time_order(documents), RULES)[1]))
    differing = {
        change_id
        for change_id in arrived.keys() | expected.keys()
        if _content(arrived.get(change_id)) != _content(expected.get(change_id))
    }
    if not any(change.applied_late for change in arrived.values()):
        assert not differing
    assert all(arrived[c].applied_late for c in differing if c in arrived)


def _content(change: LeadStageChange | None) -> Any:
    # A change that comes after one that moved keeps its content, not its place (`sequence`).
    return None if change is None else change._replace(applied_late=False, sequence=0)


@given(lead_logs(), st.data())
def test_a_stored_and_reloaded_state_continues_identically(
    documents: list[dict[str, Any]], data: st.DataObject
) -> None:
    cut = data.draw(st.integers(0, len(documents)))
    states, first = run(documents[:cut], RULES)
    state = states.get("lead-1")
    reloaded = (
        decode_state(encode_state(state, RULES), "lead-1", RULES) if state is not None else None
    )
    # Stored, every entry past the bound is in the snapshot: the same lead, compacted.
    assert reloaded == (compact(state, RULES)[1] if state is not None else None)
    rest = []
    for document in documents[cut:]:
        decision = decide(reloaded, as_event(document), RULES)
        reloaded = decision.state
        rest.extend(decision.changes)
    assert encoded(first + rest) == encoded(run(documents, RULES)[1])


@given(lead_logs())
def test_live_changes_chain_through_allowed_moves_only(documents: list[dict[str, Any]]) -> None:
    live = sorted(effective_changes(run(documents, RULES)[1]).values(), key=lambda c: c.sequence)
    assert [c.sequence for c in live] == list(range(len(live)))
    previous = None
    for change in live:
        assert change.from_stage == previous
        assert allowed(change.from_stage, change.to_stage), change
        previous = change.to_stage


def allowed(from_stage: str | None, to_stage: str) -> bool:
    """Forward moves; disqualification before customer; recycling; a won deal from anywhere."""
    if to_stage == "disqualified":
        return from_stage is None or (from_stage in ORDER and ORDER[from_stage] < ORDER["customer"])
    if from_stage == "disqualified":
        return to_stage in ("subscriber", "lead", "customer")
    if from_stage is None:
        return to_stage in ("subscriber", "customer")
    return ORDER[to_stage] > ORDER[from_stage]


@given(st.sampled_from([STUDENT, COMPETITOR, VENDOR]), lead_logs())
def test_excluded_people_never_reach_lead_to_opportunity(
    profile: dict[str, Any], documents: list[dict[str, Any]]
) -> None:
    # Every profile fact this person ever sends still shows the exclusion.
    documents = [
        {**d, "properties": profile} if d["type"] == "profile_updated" else d for d in documents
    ]
    documents.insert(0, event("profile_updated", lead="lead-1", event_id="first", **profile))
    _, changes = run(documents, RULES)
    reached = {c.to_stage for c in effective_changes(changes).values()}
    assert reached.isdisjoint({"lead", "mql", "sql", "opportunity"})


@given(lead_logs(lead="a", max_size=15), lead_logs(lead="b", max_size=15), st.randoms())
def test_leads_do_not_influence_each_other(
    a: list[dict[str, Any]], b: list[dict[str, Any]], random: Any
) -> None:
    mixed = a + b
    random.shuffle(mixed)
    _, changes = run(mixed, RULES)
    a_alone = [d for d in mixed if d["lead_id"] == "a"]
    b_alone = [d for d in mixed if d["lead_id"] == "b"]
    assert encoded([c for c in changes if c.lead_id == "a"]) == encoded(run(a_alone, RULES)[1])
    assert encoded([c for c in changes if c.lead_id == "b"]) == encoded(run(b_alone, RULES)[1])


@given(lead_logs())
def test_every_change_meets_the_published_contract(documents: list[dict[str, Any]]) -> None:
    for change in run(documents, RULES)[1]:
        contract = StageChange.model_validate_json(encode_change(change))
        at_instant = change._replace(occurred_at=instant_of(change.occurred_at))
        assert tuple(contract.model_dump().values()) == tuple(at_instant)


def test_rules_fixture_is_the_default(rules: Rules) -> None:
    assert rules == RULES
