"""The account roll-up: which account a lead belongs to, and when an account is engaged,
sales-ready and a customer; the same answer whatever order the signals arrive in."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.accounts import AccountChange, AccountSignal
from streams.common.account_signals_codec import decode_account_signal, encode_account_signal
from streams.common.account_state_codec import decode_account_state, encode_account_state
from streams.common.settings import DEFAULT_MAX_EVENT_BYTES
from streams.common.stage_changes_codec import encode_account_change
from streams.core.account import AccountStageChange, AccountState, Signal
from streams.core.accounts import account_horizon, compact_account, decide_account
from streams.core.revisions import latest_revisions, micros_of
from streams.core.rules import Rules, load_rules
from streams.core.signals import account_of
from streams.local.generator import TrafficShape, generate
from streams.offline.replay import Replayer
from tests.support.factories import BUYER, T0, days, event
from tests.support.outcomes import members_of

RULES = load_rules()


def roll_up(documents: list[dict[str, Any]], rules: Rules = RULES) -> list[Any]:
    """Everything a replay of `documents` publishes, in order."""
    replayer = Replayer(rules, DEFAULT_MAX_EVENT_BYTES, accounts=True)
    return list(replayer.run(orjson.dumps(d) for d in documents))


def account_changes(items: list[Any]) -> list[AccountStageChange]:
    return [item for item in items if isinstance(item, AccountStageChange)]


def signals(items: list[Any]) -> list[Signal]:
    return [item for item in items if isinstance(item, Signal)]


def person(lead: str, email: str, title: str, at: float = 0) -> list[dict[str, Any]]:
    """A fitting person who gives their profile with a content download."""
    profile = {**BUYER, "email": email, "job_title": title}
    return [
        event("profile_updated", days(at), lead=lead, **profile),
        event("content_download", days(at), lead=lead, content_category="blog"),
    ]


def demo(lead: str, at: float) -> dict[str, Any]:
    return event("demo_request", days(at), lead=lead)


@pytest.mark.parametrize(
    ("profile", "account"),
    [
        ({"email": "Jane@Acme.COM"}, "acme.com"),
        ({"email": "jane@www.acme.com."}, "acme.com"),
        ({"email": "jane@gmail.com"}, None),
        ({"email": "rival@eu.pipecraft.io"}, None),
        ({"email": "student@mit.edu"}, None),
        ({"email": "jane@acme.com", "account_id": " 0015g00000XyZ "}, "0015g00000XyZ"),
        ({"account_id": "crm-42"}, "crm-42"),
        ({"job_title": "CTO"}, None),
    ],
)
def test_the_account_is_the_crm_id_else_the_domain_of_a_company_we_sell_to(
    profile: dict[str, Any], account: str | None
) -> None:
    assert account_of(profile, RULES) == account


def test_two_mqls_at_one_company_make_it_sales_ready_citing_the_second() -> None:
    documents = [
        *person("ana", "ana@acme.com", "Marketing Manager"),
        *person("ben", "ben@acme.com", "Data Analyst", at=1),
        demo("ana", 2),
        demo("ben", 3),
    ]
    items = roll_up(documents)
    changes = account_changes(items)
    assert [(c.to_stage, c.rule) for c in changes] == [
        ("engaged", "account.engaged_people"),
        ("sales_ready", "account.sales_ready_mqls"),
    ]
    ready = changes[1]
    assert (ready.account_id, ready.causation_lead_id, ready.people, ready.mqls) == (
        "acme.com",
        "ben",
        2,
        2,
    )
    bens_mql = next(
        item
        for item in items
        if not isinstance(item, (Signal, AccountStageChange)) and item.lead_id == "ben"
        if item.to_stage == "mql"
    )
    assert ready.causation_change_id == bens_mql.change_id
    assert ready.causation_event_id == bens_mql.causation_event_id
    assert ready.seniorities == ("individual", "manager")


def test_one_mql_with_a_decision_maker_present_is_sales_ready() -> None:
    documents = [
        *person("cto", "cto@acme.com", "CTO"),
        *person("ana", "ana@acme.com", "Marketing Manager"),
        demo("ana", 1),
    ]
    changes = account_changes(roll_up(documents))
    assert [(c.to_stage, c.rule) for c in changes][-1] == (
        "sales_ready",
        "account.sales_ready_decision_maker",
    )
    assert changes[-1].seniorities == ("c_level", "manager")


def test_people_at_other_companies_or_on_free_mail_do_not_add_up() -> None:
    documents = [
        *person("ana", "ana@acme.com", "Marketing Manager"),
        *person("ben", "ben@other.com", "Marketing Manager"),
        *person("cai", "cai@gmail.com", "Marketing Manager"),
        demo("ana", 1),
        demo("ben", 1),
        demo("cai", 1),
    ]
    items = roll_up(documents)
    assert {s.account_id for s in signals(items)} == {"acme.com", "other.com"}
    assert all(c.to_stage != "sales_ready" for c in account_changes(items))


def test_a_disqualified_person_adds_no_engagement_and_is_no_decision_maker() -> None:
    documents = [
        *person("cto", "cto@acme.com", "CTO"),
        event("sales_disqualified", days(0.5), lead="cto", reason="no_authority"),
        *person("ana", "ana@acme.com", "Marketing Manager", at=1),
        demo("ana", 2),
    ]
    changes = account_changes(roll_up(documents))
    assert "sales_ready" not in [c.to_stage for c in changes]


def test_a_lead_that_changes_company_leaves_its_old_account() -> None:
    documents = [
        *person("ana", "ana@acme.com", "Marketing Manager"),
        event("profile_updated", days(1), lead="ana", email="ana@newco.com"),
    ]
    sent = signals(roll_up(documents))
    assert [(s.account_id, s.member) for s in sent][-2:] == [
        ("acme.com", False),
        ("newco.com", True),
    ]


def test_a_lead_event_that_changes_nothing_the_account_reads_sends_no_signal() -> None:
    documents = [
        *person("ana", "ana@acme.com", "Marketing Manager"),
        event("profile_updated", days(1), lead="ana", country="US"),
    ]
    assert len(signals(roll_up(documents))) == 2


def test_a_signal_seen_before_changes_nothing() -> None:
    items = roll_up([*person("ana", "ana@acme.com", "CTO"), demo("ana", 1)])
    state: AccountState | None = None
    for signal in signals(items):
        state = decide_account(state, signal, RULES).state
    assert state is not None
    again = decide_account(state, signals(items)[0], RULES)
    assert again.duplicate and again.changes == () and again.state == state


def test_signals_and_changes_are_the_contract_and_states_round_trip() -> None:
    items = roll_up(generate(200, seed=4))
    for signal in signals(items):
        raw = encode_account_signal(signal)
        AccountSignal.model_validate_json(raw)
        assert decode_account_signal(raw) == signal
    for change in account_changes(items):
        AccountChange.model_validate_json(encode_account_change(change))
    state: AccountState | None = None
    for signal in signals(items):
        if signal.account_id == signals(items)[0].account_id:
            state = decide_account(state, signal, RULES).state
    assert state is not None
    stored = encode_account_state(state, RULES)
    assert decode_account_state(stored, state.account_id, RULES) == compact_account(state, RULES)


def effective(changes: list[AccountStageChange]) -> dict[str, AccountStageChange]:
    """The latest revision of each change_id, retractions dropped, revision itself ignored:
    revisions stamp the order things arrived in, the rest is the account's history."""
    latest = latest_revisions(changes, lambda change: (change.change_id, change.revision))
    return {cid: c._replace(revision=0) for cid, c in latest.items() if not c.retracted}


NARROW = RULES.model_copy(update={"state": RULES.state.model_copy(update={"account_signals": 8})})
"""Rules that keep 8 signals of an account in detail: the sample's accounts go past it."""
SAMPLE = signals(roll_up(generate(200, seed=8, shape=TrafficShape(people_per_company=4))))


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 2**32), st.floats(0, 1))
def test_within_the_bound_the_account_history_does_not_depend_on_arrival_order(
    seed: int, duplicate_share: float
) -> None:
    """Every account of the sample has fewer signals than an account keeps in detail: in any
    order, some twice, with states stored and reloaded, the changes in effect of the in-order
    fold."""
    per_account = Counter(signal.account_id for signal in SAMPLE)
    assert max(per_account.values()) <= RULES.state.account_signals
    shuffle = random.Random(seed)
    in_order = _fold(SAMPLE)
    arrived = list(SAMPLE)
    shuffle.shuffle(arrived)
    arrived += [s for s in arrived if shuffle.random() < duplicate_share / 4]
    # Each account's state goes through its stored bytes now and then, as on a worker restart.
    folded: dict[str, AccountState] = {}
    assert _fold(arrived, store_every=7, states=folded) == in_order
    in_order_states: dict[str, AccountState] = {}
    _fold(SAMPLE, states=in_order_states)

    # Where each account's snapshot ends depends on arrival; who is in it and its stage do not.
    def content(states: dict[str, AccountState]) -> dict[str, object]:
        return {a: (s.fold.stage, members_of(s)) for a, s in states.items()}

    assert content(folded) == content(in_order_states)


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 2**32))
def test_in_any_order_every_person_ends_with_their_latest_facts(seed: int) -> None:
    """Past the bound (here 8 signals per account) the account's changes are approximate (a
    late signal is applied at the account's newest moment), but who belongs to it, with which
    facts, never is."""
    arrived = list(SAMPLE)
    random.Random(seed).shuffle(arrived)
    folded: dict[str, AccountState] = {}
    _fold(arrived, store_every=5, states=folded, rules=NARROW)
    in_order: dict[str, AccountState] = {}
    _fold(SAMPLE, states=in_order, rules=NARROW)

    def facts(states: dict[str, AccountState]) -> dict[str, object]:
        # A late signal's facts count from the account's newest moment: `at` is all it moves.
        return {
            a: {lead: m._replace(at=0) for lead, m in members_of(s).items()}
            for a, s in states.items()
        }

    assert facts(folded) == facts(in_order)


def _fold(
    arrived: list[Signal],
    store_every: int = 0,
    states: dict[str, AccountState] | None = None,
    rules: Rules = RULES,
) -> dict[str, AccountStageChange]:
    states = {} if states is None else states
    published: list[AccountStageChange] = []
    for n, signal in enumerate(arrived, start=1):
        decision = decide_account(states.get(signal.account_id), signal, rules)
        state = decision.state
        if store_every and n % store_every == 0:
            state = decode_account_state(
                encode_account_state(state, rules), state.account_id, rules
            )
        states[signal.account_id] = state
        published.extend(decision.changes)
    return effective(published)


def test_the_sample_has_committees_and_every_account_stage() -> None:
    changes = _fold(SAMPLE).values()
    assert {c.to_stage for c in changes} == {"engaged", "sales_ready", "customer"}
    assert max(c.people for c in changes) >= 3


def test_a_signal_older_than_the_horizon_is_applied_at_the_accounts_newest_moment() -> None:
    """Two people: one changes a lot over weeks (the account compacts its past), then the other
    is delivered weeks late as an MQL. It counts from the account's newest moment on, and the
    changes say so."""
    early, late = [], []
    for day in range(30):
        early.append(_signal("acme.com", "busy", day + 1, days(day), "lead", "manager", 10.0))
    late.append(_signal("acme.com", "late", 3, days(2), "mql", "vp", 5.0))
    state = None
    for signal in early:
        state = decide_account(state, signal, NARROW).state
    assert state is not None
    horizon = account_horizon(state, NARROW)
    assert horizon is not None and horizon[0] > late[0].occurred_at
    newest = state.tail[-1].occurred_at
    decision = decide_account(state, late[0], NARROW)
    assert decision.late
    assert [(c.to_stage, c.rule) for c in decision.changes] == [
        ("engaged", "account.engaged_people"),
        ("sales_ready", "account.sales_ready_decision_maker"),
    ]
    assert all(c.occurred_at == newest + 1 and c.applied_late for c in decision.changes)
    assert members_of(decision.state)["late"].revision == 3
    # The same signal again, or an older one of that person, changes nothing.
    again = decide_account(decision.state, late[0], NARROW)
    assert again.duplicate and again.changes == ()
    older = decide_account(decision.state, late[0]._replace(revision=2), NARROW)
    assert older.duplicate and older.changes == ()


def _signal(
    account: str,
    lead: str,
    revision: int,
    at: Any,
    stage: str,
    seniority: str,
    engagement: float,
) -> Signal:
    return Signal(
        account,
        lead,
        revision,
        micros_of(T0 + at),
        f"{lead}-{revision}",
        None,
        True,
        stage,
        seniority,
        engagement,
    )
