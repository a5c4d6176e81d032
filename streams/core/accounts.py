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
        fold = fold_signal(state.fold, signal, snapshot.members, moved, rules)
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
    # A late signal refolds the account's detail from its place on: this loop is the accounts'
    # hot path, hence the joins inline and one AccountFold at the end.
    changed = fold.changed
    stage, tally, transitions = fold.stage, fold.tally, fold.transitions
    for signal in signals:
        lead_id = signal.lead_id
        old = changed[lead_id] if lead_id in changed else snapshot_members.get(lead_id)
        if old is not None and old.revision > signal.revision:
            # An older signal of this person, moved after a newer one (it came past the
            # bound): the account keeps the newer facts.
            continue
        new = _member_of(signal)
        changed[lead_id] = new
        tally = _retallied(tally, old, new, rules)
        reached = _reached(tally, stage, signal.occurred_at, snapshot_members, changed, rules)
        if reached:
            late = (lead_id, signal.revision) in moved if moved else False
            stage, transitions = _moved_up(
                stage, transitions, reached, signal, snapshot_members, changed, late, rules
            )
    return AccountFold(stage, changed, tally, transitions)


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
    changed = _people_after(members, tail[:at])
    tally = snapshot.tally
    for lead_id, new in changed.items():
        tally = _retallied(tally, members.get(lead_id), new, rules)
    transitions = fold.transitions[:kept]
    stage = transitions[-1].to_stage if transitions else snapshot.stage
    return _fold_on(
        AccountFold(stage, changed, tally, transitions), tail[at:], members, moved, rules
    )


_STAGE_INDEX: Final = {stage: index for index, stage in enumerate(ACCOUNT_STAGE_ORDER)}

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
        (positive + sign * _millionths(member.engagement)) if active else positive,
    )


def _millionths(engagement: float) -> int:
    return math.ceil(engagement * 1e6) if engagement > 0.0 else 0


def _retallied(tally: Tally, old: Member | None, new: Member, rules: Rules) -> Tally:
    """`tally` with one person's facts changed from `old` to `new` (either may be absent)."""
    # Once per signal folded, the accounts' hot path: one Tally built instead of two.
    if old is None or not old.present:
        return _tallied(tally, new, 1, rules) if new.present else tally
    if not new.present:
        return _tallied(tally, old, -1, rules)
    deciders_at = rules.accounts.decision_maker_seniorities
    before, after = old.stage, new.stage
    old_active, new_active = before != "disqualified", after != "disqualified"
    people, leads, mqls, sqls, customers, deciders, positive = tally
    if old_active:
        positive -= _millionths(old.engagement)
    if new_active:
        positive += _millionths(new.engagement)
    return Tally(
        people,
        leads - (before in LEAD_OR_FURTHER) + (after in LEAD_OR_FURTHER),
        mqls - (before in MQL_OR_FURTHER) + (after in MQL_OR_FURTHER),
        sqls - (before in SQL_OR_FURTHER) + (after in SQL_OR_FURTHER),
        customers - (before in CUSTOMERS) + (after in CUSTOMERS),
        deciders
        - (old_active and old.seniority in deciders_at)
        + (new_active and new.seniority in deciders_at),
        positive,
    )


def _member_of(signal: Signal) -> Member:
    return Member(
        signal.member,
        signal.stage,
        signal.seniority,
        signal.engagement_score,
        signal.occurred_at,
        signal.revision,
    )


def _people_after(
    snapshot_members: dict[str, Member], signals: tuple[Signal, ...]
) -> dict[str, Member]:
    """The people `signals` (in order) change over the snapshot's, as folding them one by
    one would leave them; the tally follows from the difference, person by person."""
    latest: dict[str, Signal] = {}
    for signal in signals:
        lead_id = signal.lead_id
        old = latest.get(lead_id)
        if old is not None:
            if old.revision <= signal.revision:
                latest[lead_id] = signal
        else:
            known = snapshot_members.get(lead_id)
            if known is None or known.revision <= signal.revision:
                latest[lead_id] = signal
    return {lead_id: _member_of(signal) for lead_id, signal in latest.items()}


def fold_signal(
    fold: AccountFold,
    signal: Signal,
    snapshot_members: dict[str, Member],
    moved: frozenset[tuple[str, int]],
    rules: Rules,
) -> AccountFold:
    """Fold one signal (the latest in sort order) into the account's fold (`moved`: the
    signals applied late)."""
    return _fold_on(
        fold._replace(changed=dict(fold.changed)), (signal,), snapshot_members, moved, rules
    )


def _moved_up(
    stage: str | None,
    transitions: tuple[AccountTransition, ...],
    reached: dict[str, str],
    signal: Signal,
    snapshot_members: dict[str, Member],
    changed: dict[str, Member],
    late: bool,
    rules: Rules,
) -> tuple[str | None, tuple[AccountTransition, ...]]:
    """The account's stage and transitions after `signal`, whose facts make the rules of the
    stages `reached` hold."""
    start = _STAGE_INDEX[stage] + 1 if stage is not None else 0
    top = _STAGE_INDEX[next(reversed(reached))]  # `_reached` lists stages in their order
    makeup = makeup_at(_merged(snapshot_members, changed), signal.occurred_at, rules)
    # A stage implies those below it: an account that becomes sales-ready at once is engaged at
    # that moment too (by the rule that made it sales-ready, if no engaged rule holds), so every
    # account's path is engaged -> sales_ready -> customer and times between stages add up.
    target_rule = reached[ACCOUNT_STAGE_ORDER[top]]
    for to_stage in ACCOUNT_STAGE_ORDER[start : top + 1]:
        rule = reached.get(to_stage, target_rule)
        transitions = (
            *transitions,
            AccountTransition(
                from_stage=stage,
                to_stage=to_stage,
                at=signal.occurred_at,
                rule=rule,
                lead_id=signal.lead_id,
                event_id=signal.causation_event_id,
                lead_change_id=signal.causation_change_id,
                makeup=makeup,
                late=late,
            ),
        )
        stage = to_stage
    return stage, transitions


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
    """The stages above `stage` whose rules hold now, in their order, with the rule that holds
    (first listed)."""
    accounts = rules.accounts
    reached = {}
    rank = _STAGE_INDEX[stage] if stage is not None else -1
    if rank < _STAGE_INDEX["engaged"]:
        # Engagement only decides the first stage; it is summed only while it could reach it.
        if tally.positive >= accounts.engaged_threshold * 1e6:
            engagement = engagement_of(_merged(snapshot_members, changed), at, rules)
            if engagement >= accounts.engaged_threshold:
                reached["engaged"] = "account.engaged_score"
        if "engaged" not in reached and tally.leads >= accounts.engaged_min_leads:
            reached["engaged"] = "account.engaged_people"
    if rank < _STAGE_INDEX["sales_ready"]:
        if tally.mqls >= accounts.sales_ready_min_mqls:
            reached["sales_ready"] = "account.sales_ready_mqls"
        elif tally.mqls >= 1 and tally.decision_makers >= 1:
            reached["sales_ready"] = "account.sales_ready_decision_maker"
    if rank < _STAGE_INDEX["customer"] and tally.customers >= 1:
        reached["customer"] = "account.customer"
    return reached
