"""The account roll-up: leads grouped by company, a pure and deterministic fold. No I/O.

Two sides, each run where its input is partitioned:
- `signals_of(before, event, decision, rules)` (in `streams.core.signals`), on the lead side:
  after an event of a lead, the signals to publish to its account(s), when the event changed
  what an account reads of the lead (its account, stage, seniority or engagement). A lead that
  changes company leaves its old account.
- `decide_account(state, signal, rules)`, on the account side: folds an account's signals in
  event-time order (`occurred_at`, then `lead_id`, then `revision`) and returns the account
  changes to publish. Signals of different leads reach an account in any interleaving (they
  come from different partitions); one that sorts before the account's latest refolds the
  account's recent past, and the changes whose content that alters are published again with a
  higher revision, or retracted, exactly as the lead core does with late events. A signal the
  account already has (same lead and revision) changes nothing.

The state stays small whatever the account's history: its people (the latest facts of each,
`Member`), a tally of them kept up to date signal by signal, and in detail only its latest
`state.account_signals` signals in event-time order; older ones are folded into a snapshot.
Within that bound the account's changes depend only on the set of signals, never on their
arrival order. A signal older than the snapshot's newest (the horizon) is applied as if it had
happened just after the account's newest signal, unless the account already holds that lead's
facts at that revision or a later one; the changes it causes say `applied_late`.

The model (`AccountState`, `Signal`...) is in `streams.core.account`, the lead side in
`streams.core.signals`.
"""

from __future__ import annotations

import bisect
import math
from typing import Final

from streams.core.account import (
    NO_ONE,
    AccountDecision,
    AccountFold,
    AccountState,
    AccountTransition,
    Makeup,
    Member,
    Signal,
    SignalKey,
    Snapshot,
    Tally,
    new_account,
    signal_key,
)
from streams.core.publishing import publish_account_new, publish_account_rewrite
from streams.core.revisions import Published, summarize
from streams.core.rules import Rules
from streams.core.scoring import decay_factor
from streams.core.stages import (
    ACCOUNT_STAGE_ORDER,
    CUSTOMERS,
    LEAD_OR_FURTHER,
    MQL_OR_FURTHER,
    SQL_OR_FURTHER,
)


def restore_account(
    account_id: str,
    accepted: int,
    horizon: SignalKey | None,
    stage: str | None,
    members: dict[str, Member],
    published: Published,
    tail: tuple[Signal, ...],
    moved: frozenset[tuple[str, int]],
    rules: Rules,
) -> AccountState:
    """A stored account state, from what a store keeps of it: the snapshot's tally is counted
    again from its people, and the fold is the snapshot with the tail folded in."""
    tally = NO_ONE
    for member in members.values():
        if member.present:
            tally = _tallied(tally, member, 1, rules)
    snapshot = Snapshot(stage, members, tally)
    return AccountState(
        account_id=account_id,
        accepted=accepted,
        horizon=horizon,
        snapshot=snapshot,
        published=published,
        tail=tail,
        seen=frozenset((signal.lead_id, signal.revision) for signal in tail),
        moved=moved,
        fold=refold_signals(snapshot, tail, moved, rules),
    )


def decide_account(state: AccountState | None, signal: Signal, rules: Rules) -> AccountDecision:
    """Apply one signal to an account's state. Pure and deterministic."""
    if state is None:
        state = new_account(signal.account_id)
    elif (signal.lead_id, signal.revision) in state.seen:
        return AccountDecision(state, (), True)
    key = signal_key(signal)
    tail = state.tail
    moved = state.moved
    late = False
    if tail and key < signal_key(tail[-1]):
        horizon = account_horizon(state, rules)
        late = horizon is not None and key <= horizon
    if late:
        changed = state.fold.changed
        lead_id = signal.lead_id
        known = changed[lead_id] if lead_id in changed else state.snapshot.members.get(lead_id)
        if known is not None and known.revision >= signal.revision:
            return AccountDecision(state, (), True)  # the account has these facts, or newer
        # Past the account's detail: the facts count from its newest moment on.
        signal = signal._replace(occurred_at=tail[-1].occurred_at + 1)
        key = signal_key(signal)
        moved = moved | {(signal.lead_id, signal.revision)}
    seen = state.seen | {(signal.lead_id, signal.revision)}
    snapshot = state.snapshot
    if not tail or key > signal_key(tail[-1]):
        fold = fold_signal(state.fold, signal, snapshot.members, rules, late)
        after = state._replace(
            accepted=state.accepted + 1, tail=(*tail, signal), seen=seen, moved=moved, fold=fold
        )
        changes = publish_account_new(after, len(state.fold.transitions), rules)
    else:
        at = bisect.bisect_right(tail, key, key=signal_key)
        tail = (*tail[:at], signal, *tail[at:])
        fold = _refold_signals_from(snapshot, tail, at, state.fold, moved, rules)
        after = state._replace(accepted=state.accepted + 1, tail=tail, seen=seen, fold=fold)
        changes = publish_account_rewrite(state.fold.transitions, after, fold.transitions, rules)
    if len(after.tail) >= rules.state.account_signals + COMPACT_AT_ONCE:
        after = compact_account(after, rules)
    return AccountDecision(after, changes, False, late)


def refold_signals(
    snapshot: Snapshot,
    signals: tuple[Signal, ...],
    moved: frozenset[tuple[str, int]],
    rules: Rules,
) -> AccountFold:
    """`snapshot` with sorted `signals` folded in (`moved`: those applied late)."""
    # One working dict of the people changed, filled in place: refolding a long tail must not
    # copy it at every signal.
    changed: dict[str, Member] = {}
    fold = AccountFold(snapshot.stage, changed, snapshot.tally, ())
    return _fold_on(fold, signals, snapshot.members, moved, rules)


def _fold_on(
    fold: AccountFold,
    signals: tuple[Signal, ...],
    snapshot_members: dict[str, Member],
    moved: frozenset[tuple[str, int]],
    rules: Rules,
) -> AccountFold:
    """Fold `signals` in order onto `fold`, whose `changed` dict is the caller's working copy
    (updated in place)."""
    working = fold.changed
    for signal in signals:
        late = (signal.lead_id, signal.revision) in moved if moved else False
        fold = fold_signal(fold, signal, snapshot_members, rules, late, working)
    return fold


def _refold_signals_from(
    snapshot: Snapshot,
    tail: tuple[Signal, ...],
    at: int,
    fold: AccountFold,
    moved: frozenset[tuple[str, int]],
    rules: Rules,
) -> AccountFold:
    """The fold of `tail` from the snapshot, where a signal was just inserted at `at`: the
    signals before it are only joined (who they are), not evaluated again, and the account's
    changes before it are taken from `fold`; from `at` on, each signal is folded as usual.

    A change is stamped with the instant and lead of the signal that made it, and signals are
    folded in that order: the changes from before `at` are those stamped earlier. A change of
    the same lead at the same instant may come from a signal on either side: then everything is
    refolded."""
    inserted = tail[at]
    cut = (inserted.occurred_at, inserted.lead_id)
    kept = 0
    for transition in fold.transitions:
        stamp = (transition.at, transition.lead_id)
        if stamp == cut:
            return refold_signals(snapshot, tail, moved, rules)
        if stamp > cut:
            break
        kept += 1
    members = snapshot.members
    changed: dict[str, Member] = {}
    tally = snapshot.tally
    for signal in tail[:at]:
        joined = _joined(changed, members, tally, signal, rules)
        if joined is not None:
            changed[signal.lead_id], tally = joined
    transitions = fold.transitions[:kept]
    stage = transitions[-1].to_stage if transitions else snapshot.stage
    return _fold_on(
        AccountFold(stage, changed, tally, transitions), tail[at:], members, moved, rules
    )


COMPACT_AT_ONCE: Final = 64
"""Signals past the bound are folded into the snapshot this many at a time (and all of them
before a state is stored): where the bound lies never depends on when that happens."""


def account_horizon(state: AccountState, rules: Rules) -> SignalKey | None:
    """The sort key of the newest signal folded into the snapshot, or past the bound (all but
    the latest `state.account_signals`): a signal at or before it is applied late. The bound
    is a count, not a time: an account's signals come from every partition of the leads, and
    how far apart partitions are in event time depends on how the workers drain them, not on
    the data."""
    limit = rules.state.account_signals
    tail = state.tail
    return signal_key(tail[-limit - 1]) if len(tail) > limit else state.horizon


def compact_account(state: AccountState, rules: Rules) -> AccountState:
    """Fold into the snapshot the signals past the bound. The fold, and every later decision,
    stays what it was."""
    tail = state.tail
    limit = rules.state.account_signals
    if len(tail) <= limit:
        return state
    cut = len(tail) - limit
    compacted, kept = tail[:cut], tail[cut:]
    snapshot = state.snapshot
    folded = refold_signals(snapshot, compacted, state.moved, rules)
    members = {**snapshot.members, **folded.changed}
    still_changed = {signal.lead_id for signal in kept}
    kept_keys = frozenset((signal.lead_id, signal.revision) for signal in kept)
    fold = state.fold
    return state._replace(
        horizon=signal_key(compacted[-1]),
        snapshot=Snapshot(folded.stage, members, folded.tally),
        published=summarize(state.published, folded.transitions),
        tail=kept,
        seen=kept_keys,
        moved=state.moved & kept_keys,
        fold=fold._replace(
            changed={k: v for k, v in fold.changed.items() if k in still_changed},
            transitions=fold.transitions[len(folded.transitions) :],
        ),
    )


def makeup_at(members: dict[str, Member], at: int, rules: Rules) -> Makeup:
    """The account's make-up at event time `at` (>= every member's latest signal)."""
    people = leads = mqls = sqls = customers = decision_makers = 0
    seniorities = []
    deciders = rules.accounts.decision_maker_seniorities
    for member in members.values():
        if not member.present:
            continue
        stage, seniority = member.stage, member.seniority
        people += 1
        leads += stage in LEAD_OR_FURTHER
        mqls += stage in MQL_OR_FURTHER
        sqls += stage in SQL_OR_FURTHER
        customers += stage in CUSTOMERS
        if seniority is not None:
            seniorities.append(seniority)
        if stage != "disqualified":
            decision_makers += seniority in deciders
    return Makeup(
        people,
        leads,
        mqls,
        sqls,
        customers,
        engagement_of(members, at, rules),
        tuple(sorted(seniorities)),
        decision_makers,
    )


def engagement_of(members: dict[str, Member], at: int, rules: Rules) -> float:
    """The sum of the people's engagement decayed to `at`, disqualified people left out."""
    engagement = 0.0
    # Sorted by lead id: a float sum in a fixed order gives the same bits on every replay.
    for lead_id in sorted(members):
        present, stage, _, score, since, _ = members[lead_id]
        if present and stage != "disqualified" and score:
            engagement += score * decay_factor(at - since, rules.engagement)
    return engagement


def _tallied(tally: Tally, member: Member, sign: int, rules: Rules) -> Tally:
    stage = member.stage
    active = stage != "disqualified"
    decider = active and member.seniority in rules.accounts.decision_maker_seniorities
    people, leads, mqls, sqls, customers, deciders, positive = tally
    return Tally(
        people + sign,
        leads + sign * (stage in LEAD_OR_FURTHER),
        mqls + sign * (stage in MQL_OR_FURTHER),
        sqls + sign * (stage in SQL_OR_FURTHER),
        customers + sign * (stage in CUSTOMERS),
        deciders + sign * decider,
        (positive + sign * math.ceil(max(member.engagement, 0.0) * 1e6)) if active else positive,
    )


def _joined(
    changed: dict[str, Member],
    snapshot_members: dict[str, Member],
    tally: Tally,
    signal: Signal,
    rules: Rules,
) -> tuple[Member, Tally] | None:
    """The person's facts after `signal`, and the tally with them; None when the account holds
    the person at a later revision already."""
    lead_id = signal.lead_id
    old = changed[lead_id] if lead_id in changed else snapshot_members.get(lead_id)
    if old is not None and old.revision > signal.revision:
        # An older signal of this person, moved after a newer one (it came past the bound):
        # the account keeps the newer facts.
        return None
    new = Member(
        signal.member,
        signal.stage,
        signal.seniority,
        signal.engagement_score,
        signal.occurred_at,
        signal.revision,
    )
    if old is not None and old.present:
        tally = _tallied(tally, old, -1, rules)
    if new.present:
        tally = _tallied(tally, new, 1, rules)
    return new, tally


def fold_signal(
    fold: AccountFold,
    signal: Signal,
    snapshot_members: dict[str, Member],
    rules: Rules,
    late: bool,
    working: dict[str, Member] | None = None,
) -> AccountFold:
    """Fold one signal (the latest in sort order) into the account's fold. `working`, when
    given, is `fold.changed` itself, owned by the caller and updated in place."""
    lead_id = signal.lead_id
    changed = fold.changed
    joined = _joined(changed, snapshot_members, fold.tally, signal, rules)
    if joined is None:
        return fold
    new, tally = joined
    if working is None:
        changed = {**changed, lead_id: new}
    else:
        working[lead_id] = new
        changed = working
    stage = fold.stage
    reached = _reached(tally, stage, signal.occurred_at, snapshot_members, changed, rules)
    if not reached:
        return AccountFold(stage, changed, tally, fold.transitions)
    start = ACCOUNT_STAGE_ORDER.index(stage) + 1 if stage is not None else 0
    top = max(ACCOUNT_STAGE_ORDER.index(s) for s in reached)
    if top < start:
        return AccountFold(stage, changed, tally, fold.transitions)
    makeup = makeup_at(_merged(snapshot_members, changed), signal.occurred_at, rules)
    # A stage implies those below it: an account that becomes sales-ready at once is engaged at
    # that moment too (by the rule that made it sales-ready, if no engaged rule holds), so every
    # account's path is engaged -> sales_ready -> customer and times between stages add up.
    target_rule = reached[ACCOUNT_STAGE_ORDER[top]]
    transitions = fold.transitions
    for to_stage in ACCOUNT_STAGE_ORDER[start : top + 1]:
        rule = reached.get(to_stage, target_rule)
        transitions = (
            *transitions,
            AccountTransition(
                from_stage=stage,
                to_stage=to_stage,
                at=signal.occurred_at,
                rule=rule,
                lead_id=lead_id,
                event_id=signal.causation_event_id,
                lead_change_id=signal.causation_change_id,
                makeup=makeup,
                late=late,
            ),
        )
        stage = to_stage
    return AccountFold(stage, changed, tally, transitions)


def _merged(snapshot_members: dict[str, Member], changed: dict[str, Member]) -> dict[str, Member]:
    return {**snapshot_members, **changed} if changed else snapshot_members


def _reached(
    tally: Tally,
    stage: str | None,
    at: int,
    snapshot_members: dict[str, Member],
    changed: dict[str, Member],
    rules: Rules,
) -> dict[str, str]:
    """The stages whose rules hold now, with the rule that holds (first listed)."""
    accounts = rules.accounts
    reached = {}
    # Engagement only decides the first stage; it is summed only while it could reach it.
    if stage is None and tally.positive >= accounts.engaged_threshold * 1e6:
        engagement = engagement_of(_merged(snapshot_members, changed), at, rules)
        if engagement >= accounts.engaged_threshold:
            reached["engaged"] = "account.engaged_score"
    if "engaged" not in reached and tally.leads >= accounts.engaged_min_leads:
        reached["engaged"] = "account.engaged_people"
    if tally.mqls >= accounts.sales_ready_min_mqls:
        reached["sales_ready"] = "account.sales_ready_mqls"
    elif tally.mqls >= 1 and tally.decision_makers >= 1:
        reached["sales_ready"] = "account.sales_ready_decision_maker"
    if tally.customers >= 1:
        reached["customer"] = "account.customer"
    return reached
