"""The account's model: the signals a lead sends its account(s), what an account keeps of its
people, and the account changes it publishes. No I/O.

The fold of an account's signals is in `streams.core.accounts`, the lead side (which signals a
lead sends) in `streams.core.signals`, the changes' ids and revisions in
`streams.core.publishing`. docs/design.md has a glossary of these words.
"""

from __future__ import annotations

from typing import Final, NamedTuple

from streams.core.revisions import NOTHING_PUBLISHED, Published


class Signal(NamedTuple):
    """One lead's facts as its account reads them; fields and order of `schemas.AccountSignal`
    (`occurred_at` in microseconds since the epoch)."""

    account_id: str
    lead_id: str
    revision: int
    occurred_at: int
    causation_event_id: str
    causation_change_id: str | None
    member: bool
    stage: str | None
    seniority: str | None
    engagement_score: float


class Member(NamedTuple):
    """What the account keeps of one of its people: their latest signal's facts. A person who
    left is kept as not `present`, so that an older signal of theirs cannot bring them back."""

    present: bool
    stage: str | None
    seniority: str | None
    engagement: float
    at: int
    revision: int


class Tally(NamedTuple):
    """Counts of an account's people, kept up to date as they change."""

    people: int
    leads: int
    mqls: int
    sqls: int
    customers: int
    decision_makers: int
    """People with a decision-maker seniority who are not disqualified."""
    positive: int
    """The positive engagement of its people who are not disqualified, in millionths of a
    point rounded up: an upper bound of their decayed engagement, so that it is summed only
    when it could matter. Integers, so that adding and taking away never drift."""


NO_ONE: Final = Tally(0, 0, 0, 0, 0, 0, 0)


class Makeup(NamedTuple):
    """The account's people and score at a moment."""

    people: int
    leads: int
    mqls: int
    sqls: int
    customers: int
    engagement: float
    """The sum of its people's decayed engagement, disqualified people left out."""
    seniorities: tuple[str, ...]
    decision_makers: int
    """People with a decision-maker seniority who are not disqualified."""


class AccountTransition(NamedTuple):
    from_stage: str | None
    to_stage: str
    at: int
    rule: str
    lead_id: str
    event_id: str
    lead_change_id: str | None
    makeup: Makeup
    late: bool


class Snapshot(NamedTuple):
    """An account up to its horizon: its stage, its people, their tally."""

    stage: str | None
    members: dict[str, Member]
    tally: Tally


class AccountFold(NamedTuple):
    """The snapshot with the signals in detail folded in."""

    stage: str | None
    changed: dict[str, Member]
    """The people those signals changed, over the snapshot's."""
    tally: Tally
    transitions: tuple[AccountTransition, ...]


SignalKey = tuple[int, str, int]
"""How signals sort: (occurred_at, lead_id, revision)."""


class AccountState(NamedTuple):
    """An account's snapshot, its recent signals in detail (sorted), and their fold."""

    account_id: str
    accepted: int
    """Signals accepted, all time: the revision of the changes the last one published."""
    horizon: SignalKey | None
    snapshot: Snapshot
    published: Published
    tail: tuple[Signal, ...]
    seen: frozenset[tuple[str, int]]
    """(lead_id, revision) of every signal in the tail."""
    moved: frozenset[tuple[str, int]]
    """(lead_id, revision) of the tail's signals that came older than the horizon, and were
    applied at the account's newest moment instead."""
    fold: AccountFold


class AccountStageChange(NamedTuple):
    """An account's stage change to publish; the fields and order of `schemas.AccountChange`
    (`occurred_at` in microseconds since the epoch)."""

    change_id: str
    account_id: str
    from_stage: str | None
    to_stage: str
    occurred_at: int
    rule: str
    rules_version: str
    causation_lead_id: str
    causation_event_id: str
    causation_change_id: str | None
    people: int
    leads: int
    mqls: int
    sqls: int
    engagement_score: float
    seniorities: tuple[str, ...]
    sequence: int
    revision: int
    retracted: bool
    applied_late: bool


class AccountDecision(NamedTuple):
    state: AccountState
    changes: tuple[AccountStageChange, ...]
    duplicate: bool
    late: bool = False
    """The signal was older than the account's horizon: applied at its newest moment."""


EMPTY_SNAPSHOT: Final = Snapshot(None, {}, NO_ONE)


def new_account(account_id: str) -> AccountState:
    """The state of an account leadflow has not seen yet."""
    return AccountState(
        account_id=account_id,
        accepted=0,
        horizon=None,
        snapshot=EMPTY_SNAPSHOT,
        published=NOTHING_PUBLISHED,
        tail=(),
        seen=frozenset(),
        moved=frozenset(),
        fold=AccountFold(stage=None, changed={}, tally=NO_ONE, transitions=()),
    )


def signal_key(signal: Signal) -> SignalKey:
    """How the signal sorts among its account's."""
    return (signal.occurred_at, signal.lead_id, signal.revision)
