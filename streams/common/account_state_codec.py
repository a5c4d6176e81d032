"""An account's stored state, as MessagePack: its snapshot's stage and people, and its signals
in detail. The same state gives the same bytes, in every process."""

from __future__ import annotations

from typing import Any, Final

import msgpack

from streams.common.codec_parts import (
    id_in,
    id_out,
    published_in,
    published_out,
    stage_in,
    stage_out,
    time_in,
    time_out,
)
from streams.core.account import AccountState, Member, Signal
from streams.core.accounts import compact_account, restore_account
from streams.core.rules import Rules
from streams.errors import InvalidStateError

ACCOUNT_STATE_FORMAT: Final = 3
"""Version of the stored account state layout; a worker refuses a state of another."""

# Account stages are stored as their position here; the table only ever grows at the end.
STORED_ACCOUNT_STAGES: Final = ("engaged", "sales_ready", "customer")


def encode_account_state(state: AccountState, rules: Rules) -> bytes:
    """An account state as compact MessagePack, with every signal past the bound folded into
    the snapshot first: its snapshot's stage and people, and its signals in detail; the account
    id is the table's key, the tally and fold are derived."""
    state = compact_account(state, rules)
    snapshot = state.snapshot
    members: list[Any] = []
    for lead_id, (present, stage, seniority, engagement, at, revision) in snapshot.members.items():
        members += [lead_id, present, stage_out(stage), seniority, engagement, at, revision]
    tail: list[Any] = []
    previous = state.tail[0].occurred_at if state.tail else 0
    for signal in state.tail:
        tail.append(
            [
                signal.lead_id,
                signal.revision,
                time_out(signal.occurred_at, previous),
                id_out(signal.causation_event_id),
                _change_id_out(signal.causation_change_id),
                signal.member,
                stage_out(signal.stage),
                signal.seniority,
                signal.engagement_score,
            ]
        )
        previous = signal.occurred_at
    horizon = state.horizon
    packed: bytes = msgpack.packb(
        [
            ACCOUNT_STATE_FORMAT,
            state.accepted,
            None if horizon is None else list(horizon),
            None if snapshot.stage is None else STORED_ACCOUNT_STAGES.index(snapshot.stage),
            members,
            published_out(state.published, STORED_ACCOUNT_STAGES),
            state.tail[0].occurred_at if state.tail else 0,
            tail,
            # Sorted: a set iterates in an order that changes with each process's hash seed.
            [part for moved in sorted(state.moved) for part in moved],
        ],
        use_bin_type=True,
    )
    return packed


def decode_account_state(raw: bytes, account_id: str, rules: Rules) -> AccountState:
    """An account state stored by `encode_account_state`; InvalidStateError when it cannot be
    read."""
    try:
        unpacked = msgpack.unpackb(raw)
        if unpacked[0] != ACCOUNT_STATE_FORMAT:
            raise InvalidStateError(f"state format {unpacked[0]}, expected {ACCOUNT_STATE_FORMAT}")
        _, accepted, horizon, stage, flat, published, origin, stored_tail, moved = unpacked
        members = {
            flat[i]: Member(
                flat[i + 1],
                stage_in(flat[i + 2]),
                flat[i + 3],
                flat[i + 4],
                flat[i + 5],
                flat[i + 6],
            )
            for i in range(0, len(flat), 7)
        }
        signals = []
        previous = origin
        for (
            lead,
            revision,
            at,
            event_id,
            change,
            member,
            lead_stage,
            seniority,
            score,
        ) in stored_tail:
            previous = time_in(at, previous)
            signals.append(
                Signal(
                    account_id,
                    lead,
                    revision,
                    previous,
                    id_in(event_id),
                    _change_id_in(change),
                    member,
                    stage_in(lead_stage),
                    seniority,
                    score,
                )
            )
        return restore_account(
            account_id,
            accepted,
            None if horizon is None else tuple(horizon),
            None if stage is None else STORED_ACCOUNT_STAGES[stage],
            members,
            published_in(published, STORED_ACCOUNT_STAGES),
            tuple(signals),
            frozenset(zip(moved[::2], moved[1::2], strict=True)),
            rules,
        )
    except InvalidStateError:
        raise
    except (msgpack.UnpackException, TypeError, ValueError, KeyError, IndexError) as exc:
        raise InvalidStateError(f"cannot decode account state: {exc!r}") from exc


def _change_id_out(change_id: str | None) -> str | bytes | None:
    # Stage change ids are 32 hex digits: kept as their 16 bytes.
    if change_id is not None and len(change_id) == 32:
        try:
            raw = bytes.fromhex(change_id)
        except ValueError:
            return change_id
        if raw.hex() == change_id:
            return raw
    return change_id


def _change_id_in(stored: str | bytes | None) -> str | None:
    return stored.hex() if isinstance(stored, bytes) else stored
