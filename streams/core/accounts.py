"""The account roll-up: leads grouped by company, a pure and deterministic fold. No I/O.

Two steps, each run where its input is partitioned:
- `signals_of(before, decision, rules)`, on the lead side: after an event of a lead, the signals
  to publish to its account(s), when the event changed what an account reads of the lead (its
  account, stage, seniority or engagement). A lead that changes company leaves its old account.
- `decide_account(state, signal, rules)`, on the account side: folds an account's signals in
  event-time order (`occurred_at`, then `lead_id`, then `revision`) and returns the account
  changes to publish. Signals of different leads reach an account in any interleaving (they come
  from different partitions); one that sorts before the account's latest refolds the signals
  from it on, and the changes whose content that alters are published again with a higher
  revision, or retracted, exactly as the lead core does with late events. So, keyed by
  `change_id`, the latest revision of every account change depends only on the set of signals,
  never on their arrival order. A signal the account already has (same lead and revision)
  changes nothing.
"""

from __future__ import annotations

import bisect
from typing import Final, NamedTuple

from schemas.events import Event
from streams.core.lifecycle import Decision, LeadState, engagement_at
from streams.core.revisions import Identity, derived_id, identities, rewrites
from streams.core.rules import Rules
from streams.core.scoring import decay_factor, email_domain, matches_domain, seniority_of
from streams.core.stages import (
    ACCOUNT_STAGE_ORDER,
    CUSTOMERS,
    LEAD_OR_FURTHER,
    MQL_OR_FURTHER,
    SQL_OR_FURTHER,
)


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
    """What the account keeps of one of its people: their latest signal's facts."""

    stage: str | None
    seniority: str | None
    engagement: float
    at: int


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


class AccountFold(NamedTuple):
    stage: str | None
    members: dict[str, Member]
    transitions: tuple[AccountTransition, ...]


class AccountState(NamedTuple):
    """An account's signals, sorted, and their fold."""

    account_id: str
    signals: tuple[Signal, ...]
    seen: frozenset[tuple[str, int]]
    """(lead_id, revision) of every signal folded in."""
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


class AccountDecision(NamedTuple):
    state: AccountState
    changes: tuple[AccountStageChange, ...]
    duplicate: bool


EMPTY_ACCOUNT_FOLD: Final = AccountFold(None, {}, ())


def new_account(account_id: str) -> AccountState:
    return AccountState(account_id, (), frozenset(), EMPTY_ACCOUNT_FOLD)


# The lead side.


class _LeadFacts(NamedTuple):
    account_id: str | None
    stage: str | None
    seniority: str | None
    engagement: float
    engagement_at: int


def account_of(profile: dict[str, object], rules: Rules) -> str | None:
    """The account a profile belongs to: its `account_id` fact, else its email's domain, unless
    that names no company leadflow sells to (free mail, a competitor, a vendor, a university)."""
    explicit = profile.get("account_id")
    if isinstance(explicit, str) and explicit.strip():
        return explicit.strip()
    domain = email_domain(profile.get("email"))
    if domain is None:
        return None
    domain = domain.rstrip(".").removeprefix("www.")
    exclusions = rules.exclusions
    if (
        not domain
        or domain in rules.fit.free_email_domains
        or matches_domain(domain, exclusions.competitor_domains)
        or matches_domain(domain, exclusions.vendor_domains)
        or domain.endswith(exclusions.student_email_suffixes)
    ):
        return None
    return domain


def _facts(state: LeadState | None, rules: Rules) -> _LeadFacts | None:
    if state is None or not state.history:
        return None
    fold = state.fold
    return _LeadFacts(
        account_of(fold.profile, rules),
        fold.stage,
        seniority_of(fold.profile, rules.fit),
        fold.engagement,
        fold.engagement_at,
    )


def signals_of(
    before: LeadState | None, event: Event, decision: Decision, rules: Rules
) -> tuple[Signal, ...]:
    """The signals to publish after `decision` on `event` of a lead, in order."""
    if decision.duplicate:
        return ()
    after = decision.state
    old = _facts(before, rules)
    new = _facts(after, rules)
    if new is None or new == old:
        return ()
    latest = after.history[-1]
    lead_change = next(
        (change.change_id for change in reversed(decision.changes) if not change.retracted), None
    )
    at = latest.at
    engagement = engagement_at(after.fold, at, rules)

    def signal(account_id: str, member: bool) -> Signal:
        return Signal(
            account_id,
            after.lead_id,
            len(after.history),
            at,
            event.event_id,
            lead_change,
            member,
            new.stage,
            new.seniority,
            engagement,
        )

    signals = []
    if old is not None and old.account_id is not None and old.account_id != new.account_id:
        signals.append(signal(old.account_id, member=False))
    if new.account_id is not None:
        signals.append(signal(new.account_id, member=True))
    return tuple(signals)


# The account side.


def decide_account(state: AccountState | None, signal: Signal, rules: Rules) -> AccountDecision:
    """Apply one signal to an account's state. Pure and deterministic."""
    if state is None:
        state = new_account(signal.account_id)
    elif (signal.lead_id, signal.revision) in state.seen:
        return AccountDecision(state, (), True)
    seen = state.seen | {(signal.lead_id, signal.revision)}
    signals = state.signals
    if not signals or _order(signal) > _order(signals[-1]):
        fold = _step(state.fold, signal, rules)
        after = AccountState(state.account_id, (*signals, signal), seen, fold)
        first_new = len(state.fold.transitions)
        found = identities(fold.transitions)
        published = tuple(
            _record(after, found[seq], seq, fold.transitions[seq], False, rules)
            for seq in range(first_new, len(fold.transitions))
        )
        return AccountDecision(after, published, False)
    late = bisect.bisect_right(signals, _order(signal), key=_order)
    signals = (*signals[:late], signal, *signals[late:])
    before = _fold_before(state.fold, signals[:late], signal)
    fold, refolded = (
        (before, signals[late:]) if before is not None else (EMPTY_ACCOUNT_FOLD, signals)
    )
    for each in refolded:
        fold = _step(fold, each, rules)
    after = AccountState(state.account_id, signals, seen, fold)
    return AccountDecision(
        after,
        tuple(
            _record(after, identity, seq, transition, retracted, rules)
            for identity, seq, transition, retracted in rewrites(
                state.fold.transitions, fold.transitions
            )
        ),
        False,
    )


def _fold_before(
    fold: AccountFold, earlier: tuple[Signal, ...], late: Signal
) -> AccountFold | None:
    """The fold of the `earlier` signals, taken from `fold` (theirs and later ones'), so that a
    late signal refolds only what comes after it; None when that cannot be told apart.

    A transition is stamped with the instant and lead of the signal that made it, and signals
    are folded in that order: the transitions from before `late` are those stamped earlier.
    A transition of the same lead at the same instant may come from a signal on either side."""
    cut = (late.occurred_at, late.lead_id)
    kept = 0
    for transition in fold.transitions:
        stamp = (transition.at, transition.lead_id)
        if stamp == cut:
            return None
        if stamp > cut:
            break
        kept += 1
    members: dict[str, Member] = {}
    for signal in earlier:
        _join_or_leave(members, signal)
    transitions = fold.transitions[:kept]
    stage = transitions[-1].to_stage if transitions else EMPTY_ACCOUNT_FOLD.stage
    return AccountFold(stage, members, transitions)


def _order(signal: Signal) -> tuple[int, str, int]:
    return (signal.occurred_at, signal.lead_id, signal.revision)


def makeup_at(members: dict[str, Member], at: int, rules: Rules) -> Makeup:
    """The account's make-up at event time `at` (>= every member's latest signal)."""
    people = leads = mqls = sqls = customers = decision_makers = 0
    engagement = 0.0
    seniorities = []
    deciders = rules.accounts.decision_maker_seniorities
    # Sorted by lead id: a float sum in a fixed order gives the same bits on every replay.
    for lead_id in sorted(members):
        stage, seniority, score, since = members[lead_id]
        people += 1
        leads += stage in LEAD_OR_FURTHER
        mqls += stage in MQL_OR_FURTHER
        sqls += stage in SQL_OR_FURTHER
        customers += stage in CUSTOMERS
        if seniority is not None:
            seniorities.append(seniority)
        if stage == "disqualified":
            continue  # a competitor, a student or a lost cause does not make the account warmer
        if score:
            engagement += score * decay_factor(at - since, rules.engagement)
        decision_makers += seniority in deciders
    return Makeup(
        people,
        leads,
        mqls,
        sqls,
        customers,
        engagement,
        tuple(sorted(seniorities)),
        decision_makers,
    )


def _step(fold: AccountFold, signal: Signal, rules: Rules) -> AccountFold:
    members = dict(fold.members)
    _join_or_leave(members, signal)
    makeup = makeup_at(members, signal.occurred_at, rules)
    stage = fold.stage
    transitions = fold.transitions
    reached = _reached(makeup, rules)
    start = ACCOUNT_STAGE_ORDER.index(stage) + 1 if stage is not None else 0
    top = max((ACCOUNT_STAGE_ORDER.index(s) for s in reached), default=-1)
    # A stage implies those below it: an account that becomes sales-ready at once is engaged at
    # that moment too (by the rule that made it sales-ready, if no engaged rule holds), so every
    # account's path is engaged -> sales_ready -> customer and times between stages add up.
    target_rule = reached[ACCOUNT_STAGE_ORDER[top]] if top >= 0 else ""
    for to_stage in ACCOUNT_STAGE_ORDER[start : top + 1]:
        rule = reached.get(to_stage, target_rule)
        transitions = (
            *transitions,
            AccountTransition(
                stage,
                to_stage,
                signal.occurred_at,
                rule,
                signal.lead_id,
                signal.causation_event_id,
                signal.causation_change_id,
                makeup,
            ),
        )
        stage = to_stage
    return AccountFold(stage, members, transitions)


def _join_or_leave(members: dict[str, Member], signal: Signal) -> None:
    if signal.member:
        members[signal.lead_id] = Member(
            signal.stage, signal.seniority, signal.engagement_score, signal.occurred_at
        )
    else:
        members.pop(signal.lead_id, None)


def _reached(makeup: Makeup, rules: Rules) -> dict[str, str]:
    """The stages whose rules hold for this make-up, with the rule that holds (first listed)."""
    accounts = rules.accounts
    reached = {}
    if makeup.engagement >= accounts.engaged_threshold:
        reached["engaged"] = "account.engaged_score"
    elif makeup.leads >= accounts.engaged_min_leads:
        reached["engaged"] = "account.engaged_people"
    if makeup.mqls >= accounts.sales_ready_min_mqls:
        reached["sales_ready"] = "account.sales_ready_mqls"
    elif makeup.mqls >= 1 and makeup.decision_makers >= 1:
        reached["sales_ready"] = "account.sales_ready_decision_maker"
    if makeup.customers >= 1:
        reached["customer"] = "account.customer"
    return reached


def account_change_id(account_id: str, from_stage: str | None, to_stage: str, n: int) -> str:
    """The deterministic id of an account's `n`-th change from `from_stage` to `to_stage`."""
    return derived_id("account", account_id, from_stage or "", to_stage, str(n))


def _record(
    state: AccountState,
    identity: Identity,
    sequence: int,
    transition: AccountTransition,
    retracted: bool,
    rules: Rules,
) -> AccountStageChange:
    makeup = transition.makeup
    return AccountStageChange(
        account_change_id(state.account_id, *identity),
        state.account_id,
        transition.from_stage,
        transition.to_stage,
        transition.at,
        transition.rule,
        rules.rules_version,
        transition.lead_id,
        transition.event_id,
        transition.lead_change_id,
        makeup.people,
        makeup.leads,
        makeup.mqls,
        makeup.sqls,
        round(makeup.engagement, 3),
        makeup.seniorities,
        sequence,
        len(state.signals),
        retracted,
    )
