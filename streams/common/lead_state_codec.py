"""A lead's stored state, as MessagePack: an array of what the state cannot be derived from
(see `restore`). The same state gives the same bytes, in every process.

Names are stored as their position in `codec_parts`' tables; event ids that are canonical
UUIDs as their 16 bytes; times in the tail as the step from the entry before."""

from __future__ import annotations

from typing import Any, Final

import msgpack

from streams.common.codec_parts import (
    STORED_EVENT_TYPES,
    TYPE_AT,
    id_in,
    id_out,
    published_in,
    published_out,
    stage_in,
    stage_out,
    summary_in,
    summary_out,
    time_in,
    time_out,
)
from streams.core.compaction import compact, restore
from streams.core.lead import (
    PROFILE_FIELDS,
    Attribution,
    Entry,
    Fold,
    LeadState,
    Link,
    Rank,
    rank_of,
)
from streams.core.rules import Rules
from streams.errors import InvalidStateError

LEAD_STATE_FORMAT: Final = 3
"""Version of the stored lead state layout; a worker refuses (dead-letters) a state of another."""


def encode_state(state: LeadState, rules: Rules) -> bytes:
    """A lead state as compact MessagePack, with every entry past the bound folded into the
    snapshot first. The lead id is the table's key, not stored; the fold and the snapshot's
    scores are derived again on decoding."""
    _, state = compact(state, rules)
    base = state.base
    buckets = base.buckets
    # The engagement is the buckets' sum, except with no bucket left (0 or 0.0 then).
    engagement = base.engagement if not buckets else None
    # One time is stored whole, the first entry's; the others as steps from it or from the
    # entry before.
    origin = state.tail[0].at if state.tail else 0
    tail = []
    previous = origin
    for entry in state.tail:
        tail.append(_entry_out(entry, previous))
        previous = entry.at
    horizon = state.horizon
    packed: bytes = msgpack.packb(
        [
            LEAD_STATE_FORMAT,
            state.accepted,
            origin,
            None if horizon is None else _key_out(horizon, origin),
            [
                stage_out(base.stage),
                _profile_out(base.profile),
                base.waived_exclusion,
                base.has_contact,
                [part for name, value in buckets.items() for part in (TYPE_AT[name], value)],
                engagement,
                time_out(base.engagement_at, origin),
                _bant_out(base.bant),
                *_intent_out(base.intent, origin),
            ],
            published_out(state.published),
            None if state.attribution is None else _attribution_out(state.attribution, origin),
            tail,
            None if state.told is None else [state.told[0], time_out(state.told[1], origin)],
            # Left out for a lead with no identity to stitch (most), so it stays as it was.
            *_identity_out(state),
        ],
        use_bin_type=True,
    )
    return packed


def decode_state(raw: bytes, lead_id: str, rules: Rules) -> LeadState:
    """A lead state stored by `encode_state`; InvalidStateError when it cannot be read."""
    try:
        unpacked = msgpack.unpackb(raw)
        version = unpacked[0]
        if version != LEAD_STATE_FORMAT:
            raise InvalidStateError(f"state format {version}, expected {LEAD_STATE_FORMAT}")
        _, accepted, origin, horizon, base, published, attribution, stored_tail, told = unpacked[:9]
        identity = unpacked[9] if len(unpacked) > 9 else (False, None, [], [])
        anonymous, stored_link, stored_linked, stored_links = identity
        stage, profile, waived, has_contact, flat, engagement, engaged_at, bant, *intent = base
        buckets = {STORED_EVENT_TYPES[flat[i]]: flat[i + 1] for i in range(0, len(flat), 2)}
        if engagement is None:
            engagement = sum(buckets.values())
        fold = Fold(
            stage_in(stage),
            _profile_in(profile),
            0.0,
            None,
            waived,
            has_contact,
            buckets,
            engagement,
            time_in(engaged_at, origin),
            _bant_in(bant),
            _intent_in(intent, origin),
            (),
        )
        tail = []
        previous = origin
        for stored in stored_tail:
            entry = _entry_in(stored, previous)
            tail.append(entry)
            previous = entry.at
        return restore(
            lead_id,
            accepted,
            None if horizon is None else _key_in(horizon, origin),
            fold,
            published_in(published),
            None if attribution is None else _attribution_in(attribution, origin),
            tuple(tail),
            None if told is None else (told[0], time_in(told[1], origin)),
            rules,
            anonymous,
            None if stored_link is None else Link(*stored_link),
            tuple(summary_in(stored) for stored in stored_linked),
            tuple(
                (linked_id, (at, rank, event_id)) for linked_id, at, rank, event_id in stored_links
            ),
        )
    except InvalidStateError:
        raise
    except (msgpack.UnpackException, TypeError, ValueError, KeyError, IndexError) as exc:
        raise InvalidStateError(f"cannot decode lead state: {exc!r}") from exc


def _identity_out(state: LeadState) -> list[Any]:
    if not state.anonymous and state.link is None and not state.linked and not state.links:
        return []
    return [
        [
            state.anonymous,
            None if state.link is None else list(state.link),
            [summary_out(summary) for summary in state.linked],
            [[identity, *key] for identity, key in state.links],
        ]
    ]


def _key_out(key: tuple[int, int, str], origin: int) -> list[Any]:
    return [time_out(key[0], origin), key[1], id_out(key[2])]


def _key_in(stored: list[Any], origin: int) -> tuple[int, int, str]:
    return (time_in(stored[0], origin), stored[1], id_in(stored[2]))


def _profile_out(profile: dict[str, Any]) -> list[Any] | None:
    return [profile.get(name) for name in PROFILE_FIELDS] if profile else None


def _profile_in(stored: list[Any] | None) -> dict[str, Any]:
    if not stored:
        return {}
    pairs = zip(PROFILE_FIELDS, stored, strict=True)
    return {name: value for name, value in pairs if value is not None}


_BANT: Final = ("budget", "authority", "need", "timeline")


def _bant_out(bant: dict[str, bool | None] | None) -> list[Any] | None:
    return None if bant is None else [bant.get(name) for name in _BANT]


def _bant_in(stored: list[Any] | None) -> dict[str, bool | None] | None:
    return None if stored is None else dict(zip(_BANT, stored, strict=True))


def _intent_out(intent: dict[str, tuple[int, ...]], origin: int) -> list[Any]:
    # Left out when empty (most leads), so a state without intent is as small as before.
    if not intent:
        return []
    return [
        [
            part
            for pattern, times in intent.items()
            for part in (pattern, [time_out(at, origin) for at in times])
        ]
    ]


def _intent_in(stored: list[Any], origin: int) -> dict[str, tuple[int, ...]]:
    if not stored:
        return {}
    (flat,) = stored
    return {
        flat[i]: tuple(time_in(at, origin) for at in flat[i + 1]) for i in range(0, len(flat), 2)
    }


def _attribution_out(attribution: Attribution, origin: int) -> list[Any]:
    at, rank, event_id, source, campaign = attribution
    return [time_out(at, origin), rank, id_out(event_id), source, campaign]


def _attribution_in(stored: list[Any], origin: int) -> Attribution:
    at, rank, event_id, source, campaign = stored
    return Attribution(time_in(at, origin), rank, id_in(event_id), source, campaign)


def _entry_out(entry: Entry, previous: int) -> list[Any]:
    detail = entry.detail
    if entry.rank == Rank.PROFILE:
        detail = _profile_out(detail)
    elif entry.type == "sales_contacted":
        detail = _bant_out(detail)
    step = time_out(entry.at, previous)
    return [step, TYPE_AT[entry.type], id_out(entry.event_id), detail]


def _entry_in(stored: list[Any], previous: int) -> Entry:
    step, type_at, event_id, detail = stored
    event_type = STORED_EVENT_TYPES[type_at]
    rank = rank_of(event_type)
    if rank == Rank.PROFILE:
        detail = _profile_in(detail)
    elif event_type == "sales_contacted":
        detail = _bant_in(detail)
    return Entry(time_in(step, previous), rank, id_in(event_id), event_type, detail)
