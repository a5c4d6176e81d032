"""The lead side of the account roll-up: after an event of a lead (or a linked identity's
summary), the signals to publish to its account(s), when what an account reads of the lead
changed (its account, stage, seniority or engagement). A lead that changes company leaves its
old account. Pure and deterministic, no I/O.
"""

from __future__ import annotations

from typing import NamedTuple

from schemas.events import Event
from streams.core.account import Signal
from streams.core.fold import lead_engagement, step_at
from streams.core.lead import Decision, LeadState, Step, Summary
from streams.core.rules import Rules
from streams.core.scoring import decay_factor, email_domain, matches_domain, seniority_of


class _LeadFacts(NamedTuple):
    account_id: str | None
    stage: str | None
    seniority: str | None
    engagement: float
    engagement_at: int
    steps: tuple[tuple[str, Step], ...] = ()
    """The step in force of each linked identity: with the lead's own engagement (the two
    fields before), what its engagement as its stage rules read it comes from."""


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
    if state is None or not state.tail:
        return None
    fold = state.fold
    latest = state.tail[-1]
    return _LeadFacts(
        account_of(fold.profile, rules),
        fold.stage,
        seniority_of(fold.profile, rules.fit),
        fold.engagement,
        fold.engagement_at,
        tuple(
            (summary.from_id, step)
            for summary in state.linked
            if (step := step_at(summary, latest)) is not None
        ),
    )


def signals_of(
    before: LeadState | None, event: Event, decision: Decision, rules: Rules
) -> tuple[Signal, ...]:
    """The signals to publish after `decision` on `event` of a lead, in order."""
    if decision.duplicate:
        return ()
    return _signals(before, decision, event.event_id, rules)


def summary_signals(
    before: LeadState | None, summary: Summary, decision: Decision, rules: Rules
) -> tuple[Signal, ...]:
    """The signals to publish after `decision` applied a linked identity's `summary` to its
    known lead: the account hears the engagement (and a stage) the summary gives the lead at
    once, not at the lead's next event. They cite the identity's latest event."""
    after = decision.state
    if decision.duplicate or decision.refused is not None or after.silent or not after.tail:
        # A lead with no event yet (a summary can come first after a crash) has no account.
        return ()
    cause = summary.steps[-1].cause if summary.steps else after.tail[-1].event_id
    return _signals(before, decision, cause, rules)


def _signals(
    before: LeadState | None, decision: Decision, cause: str, rules: Rules
) -> tuple[Signal, ...]:
    after = decision.state
    old = _facts(before, rules)
    new = _facts(after, rules)
    if new is None or new == old:
        return ()
    latest = after.tail[-1]
    at = latest.at
    # The engagement the lead's stage rules read, its linked identities' included.
    engagement = lead_engagement(after.fold, latest, rules, after.linked)
    least_change = rules.accounts.engagement_step
    if old is not None and old[:3] == new[:3] and least_change > 0 and before is not None:
        # Only the engagement moved: tell the account once it is `engagement_step` away from
        # what the account holds (the last score told, decayed), not at every page view.
        told = before.told
        if told is not None:
            held = told[0] * decay_factor(at - told[1], rules.engagement) if told[0] else 0.0
            if abs(engagement - held) < least_change:
                return ()
    lead_change = next(
        (change.change_id for change in reversed(decision.changes) if not change.retracted), None
    )

    def signal(account_id: str, member: bool) -> Signal:
        return Signal(
            account_id,
            after.lead_id,
            after.accepted,
            at,
            cause,
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
