"""Reading what the pipeline produced, as the tests check it: stage changes from their JSON,
each lead's current stage, an account's people."""

from __future__ import annotations

from collections.abc import Iterable

from schemas.stage_changes import StageChange
from streams.core.account import AccountState, Member
from streams.core.lead import LeadStageChange
from streams.offline.replay import effective_changes


def decode_stage_change(raw: bytes) -> StageChange:
    """One stage change as `leadflow replay` prints it, validated against the contract."""
    return StageChange.model_validate_json(raw)


def current_stages(changes: Iterable[LeadStageChange]) -> dict[str, str]:
    """Each lead's stage according to its effective changes (the one with the last sequence)."""
    last: dict[str, LeadStageChange] = {}
    for change in effective_changes(changes).values():
        current = last.get(change.lead_id)
        if current is None or change.sequence > current.sequence:
            last[change.lead_id] = change
    return {lead_id: change.to_stage for lead_id, change in last.items()}


def members_of(state: AccountState) -> dict[str, Member]:
    """The account's people now, by lead id."""
    members = {**state.snapshot.members, **state.fold.changed}
    return {lead_id: member for lead_id, member in members.items() if member.present}
