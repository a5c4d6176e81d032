"""Publishing: a fold's transitions as stage changes with ids and revisions, for leads and
accounts alike. Pure and deterministic, no I/O.

A change's id derives from what it is (its owner, its stages, how many times that pair came
before: its `ChangeKey`); its revision is the count of what its owner had accepted when it was
published. After a refold, `rewrites` says what to publish again (altered, new) and what to
retract (see `streams.core.revisions`).
"""

from __future__ import annotations

from streams.core.account import AccountStageChange, AccountState, AccountTransition
from streams.core.handoff import owner_of
from streams.core.late import PRINTED_PRECISION, error_at
from streams.core.lead import LeadStageChange, LeadState, Transition
from streams.core.revisions import ChangeKey, change_keys, derived_id, rewrites
from streams.core.rules import Rules
from streams.core.scoring import grade_of


def change_id(lead_id: str, from_stage: str | None, to_stage: str, occurrence: int) -> str:
    """The deterministic id of a lead's `occurrence`-th change from `from_stage` to `to_stage`."""
    return derived_id(lead_id, from_stage or "", to_stage, str(occurrence))


def publish_new(state: LeadState, first_new: int, rules: Rules) -> tuple[LeadStageChange, ...]:
    """The changes of the lead's transitions from `first_new` on (an event folded in order)."""
    transitions = state.fold.transitions
    if first_new == len(transitions):
        return ()
    found = change_keys(transitions, state.published)
    offset = state.published.changes
    return tuple(
        stage_change(
            state.lead_id,
            found[seq],
            offset + seq,
            transitions[seq],
            state.accepted,
            False,
            rules,
            state.past.error,
        )
        for seq in range(first_new, len(transitions))
    )


def publish_rewrite(
    before: LeadState, after: LeadState, rules: Rules
) -> tuple[LeadStageChange, ...]:
    """Changes to publish after a refold: retractions first, then new or altered changes."""
    error = after.past.error
    return tuple(
        stage_change(after.lead_id, key, seq, transition, after.accepted, retracted, rules, error)
        for key, seq, transition, retracted in rewrites(
            before.fold.transitions, after.fold.transitions, after.published
        )
    )


def publish_history_rewrite(
    before: LeadState, after: LeadState, rules: Rules
) -> tuple[LeadStageChange, ...]:
    """Changes to publish after a refold of the lead's whole kept history (an event older
    than its detail): the snapshot's kept changes and the detail's, from the oldest kept on;
    and those the snapshot's error now makes approximate, though their content is the same."""
    start = after.past.root_published
    error = after.past.error
    new = (*after.past.settled, *after.fold.transitions)
    published = rewrites((*before.past.settled, *before.fold.transitions), new, start)
    if error != before.past.error:
        done = {key for key, _, _, _ in published}
        for seq, (key, transition) in enumerate(
            zip(change_keys(new, start), new, strict=True), start=start.changes
        ):
            if (
                key not in done
                and _approximate(transition, error, rules)
                and not (_approximate(transition, before.past.error, rules))
            ):
                published.append((key, seq, transition, False))
    return tuple(
        stage_change(after.lead_id, key, seq, transition, after.accepted, retracted, rules, error)
        for key, seq, transition, retracted in published
    )


def _approximate(transition: Transition, error: tuple[float, int] | None, rules: Rules) -> bool:
    """Whether the snapshot's `error` shows in a change's scores (at the printed precision)."""
    return transition.late or (
        error is not None
        and transition.at >= error[1]
        and error_at(error, transition.at, rules) >= PRINTED_PRECISION
    )


def stage_change(
    lead_id: str,
    key: ChangeKey,
    sequence: int,
    transition: Transition,
    revision: int,
    retracted: bool,
    rules: Rules,
    error: tuple[float, int] | None = None,
) -> LeadStageChange:
    """A lead's transition as the stage change to publish; `error`: the lead's snapshot's
    (`Past.error`), which makes a later change approximate while it shows."""
    fit = round(transition.fit_score, 3)
    engagement = round(transition.engagement_score, 3)
    return LeadStageChange(
        change_id=change_id(lead_id, *key),
        lead_id=lead_id,
        from_stage=transition.from_stage,
        to_stage=transition.to_stage,
        occurred_at=transition.at,
        causation_event_id=transition.cause,
        rule=transition.rule,
        rules_version=rules.rules_version,
        mql_kind=transition.mql_kind,
        reason=transition.reason,
        fit_score=fit,
        engagement_score=engagement,
        grade=grade_of(fit, engagement, rules.grade) if rules.grade is not None else None,
        source=transition.source,
        campaign=transition.campaign,
        owner=_owner(lead_id, transition.queue, rules),
        queue=transition.queue,
        sequence=sequence,
        revision=revision,
        retracted=retracted,
        applied_late=_approximate(transition, error, rules),
    )


def _owner(lead_id: str, queue: str | None, rules: Rules) -> str | None:
    if queue is None or rules.handoff is None:
        return None
    return owner_of(lead_id, queue, rules.handoff)


def withdrawn(state: LeadState, revision: int, rules: Rules) -> tuple[LeadStageChange, ...]:
    """The lead's live changes in detail, retracted (an identity that stops being a lead of
    its own). Changes folded into the snapshot are only counted there and stay as they were."""
    if state.silent:
        return ()
    return tuple(
        stage_change(
            state.lead_id, key, seq, transition, revision, retracted, rules, state.past.error
        )
        for key, seq, transition, retracted in rewrites(state.fold.transitions, (), state.published)
    )


def account_change_id(account_id: str, from_stage: str | None, to_stage: str, n: int) -> str:
    """The deterministic id of an account's `n`-th change from `from_stage` to `to_stage`."""
    return derived_id("account", account_id, from_stage or "", to_stage, str(n))


def publish_account_new(
    state: AccountState, first_new: int, rules: Rules
) -> tuple[AccountStageChange, ...]:
    """The changes of the account's transitions from `first_new` on (a signal folded in
    order)."""
    transitions = state.fold.transitions
    found = change_keys(transitions, state.published)
    offset = state.published.changes
    return tuple(
        account_change(state, found[seq], offset + seq, transitions[seq], False, rules)
        for seq in range(first_new, len(transitions))
    )


def publish_account_rewrite(
    old: tuple[AccountTransition, ...],
    after: AccountState,
    new: tuple[AccountTransition, ...],
    rules: Rules,
) -> tuple[AccountStageChange, ...]:
    """An account's changes to publish after a refold: retractions first, then new or altered
    changes."""
    return tuple(
        account_change(after, key, seq, transition, retracted, rules)
        for key, seq, transition, retracted in rewrites(old, new, after.published)
    )


def account_change(
    state: AccountState,
    key: ChangeKey,
    sequence: int,
    transition: AccountTransition,
    retracted: bool,
    rules: Rules,
) -> AccountStageChange:
    """An account's transition as the account change to publish."""
    makeup = transition.makeup
    return AccountStageChange(
        change_id=account_change_id(state.account_id, *key),
        account_id=state.account_id,
        from_stage=transition.from_stage,
        to_stage=transition.to_stage,
        occurred_at=transition.at,
        rule=transition.rule,
        rules_version=rules.rules_version,
        causation_lead_id=transition.lead_id,
        causation_event_id=transition.event_id,
        causation_change_id=transition.lead_change_id,
        people=makeup.people,
        leads=makeup.leads,
        mqls=makeup.mqls,
        sqls=makeup.sqls,
        engagement_score=round(makeup.engagement, 3),
        seniorities=makeup.seniorities,
        sequence=sequence,
        revision=state.accepted,
        retracted=retracted,
        applied_late=transition.late,
    )
