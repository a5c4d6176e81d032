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
from streams.core.fold import engagement_at
from streams.core.lead import (
    EMPTY_FOLD,
    EMPTY_PAST,
    LINK_ENTRY,
    PROFILE_FIELDS,
    Attribution,
    Entry,
    Fold,
    Kept,
    LeadState,
    Link,
    Mark,
    Past,
    Rank,
    rank_of,
)
from streams.core.rules import Rules
from streams.errors import InvalidStateError

LEAD_STATE_FORMAT: Final = 4
"""Version of the stored lead state layout; a worker refuses (dead-letters) a state of another
(format 3, the same without the snapshot's kept past, still reads)."""

_READABLE_FORMATS: Final = (3, LEAD_STATE_FORMAT)


def encode_state(state: LeadState, rules: Rules) -> bytes:
    """A lead state as compact MessagePack, with every entry past the bound folded into the
    snapshot first. The lead id is the table's key, not stored; the fold and the snapshot's
    scores are derived again on decoding."""
    _, state = compact(state, rules)
    base = state.base
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
            _fold_out(base, origin),
            published_out(state.published),
            None if state.attribution is None else _attribution_out(state.attribution, origin),
            tail,
            None if state.told is None else [state.told[0], time_out(state.told[1], origin)],
            # Left out for a lead with no identity to stitch and no kept past (most).
            *_identity_and_past_out(state, origin, rules),
        ],
        use_bin_type=True,
    )
    return packed


def _fold_out(fold: Fold, origin: int) -> list[Any]:
    buckets = fold.buckets
    # The engagement is the buckets' sum, except with no bucket left (0 or 0.0 then).
    engagement = fold.engagement if not buckets else None
    return [
        stage_out(fold.stage),
        _profile_out(fold.profile),
        fold.waived_exclusion,
        fold.has_contact,
        _buckets_out(buckets),
        engagement,
        time_out(fold.engagement_at, origin),
        _bant_out(fold.bant),
        *_intent_out(fold.intent, origin),
    ]


def _fold_in(stored: list[Any], origin: int) -> Fold:
    stage, profile, waived, has_contact, flat, engagement, engaged_at, bant, *intent = stored
    buckets = _buckets_in(flat)
    if engagement is None:
        engagement = sum(buckets.values())
    return Fold(
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


def _buckets_out(buckets: dict[str, float]) -> list[Any]:
    return [part for name, value in buckets.items() for part in (TYPE_AT[name], value)]


def _buckets_in(flat: list[Any]) -> dict[str, float]:
    return {STORED_EVENT_TYPES[flat[i]]: flat[i + 1] for i in range(0, len(flat), 2)}


def _past_out(past: Past, origin: int, rules: Rules) -> list[Any]:
    """The snapshot's kept past: each kept entry (its time a step from the one before) with
    its mark (times as steps from the entry's; what can be derived, left out), the
    fingerprints as one byte string."""
    kept = []
    previous = origin
    for entry, mark in past.kept:
        at = entry.at
        prior: float | None = mark.prior
        if prior == _prior_of(entry, mark, rules):
            prior = None
        kept.append(
            [
                *_entry_out(entry, previous),
                mark.engaged,
                time_out(mark.at, at) if mark.buckets else None,
                _buckets_out(mark.buckets),
                _intent_out(mark.intent, at),
                mark.contact,
                prior,
                time_out(mark.since, at) if mark.since else None,
                mark.exact,
                None if mark.first_at is None else time_out(mark.first_at, at),
                *_crossing_out(mark.crossing, at),
            ]
        )
        previous = at
    root = past.root
    return [
        kept,
        past.engaged,
        b"".join(seen.to_bytes(4, "big") for seen in past.seen),
        None if root == EMPTY_FOLD else _fold_out(root, origin),
        published_out(past.root_published),
        None if past.root_key is None else _key_out(past.root_key, origin),
        time_out(past.since, origin) if past.since else None,
        None if past.error is None else [past.error[0], time_out(past.error[1], origin)],
        None if past.first_at is None else time_out(past.first_at, origin),
        past.touched,
        *_crossing_out(past.crossing, origin),
    ]


def _crossing_out(crossing: tuple[int, int, str, float] | None, origin: int) -> list[Any]:
    if crossing is None:
        return []
    at, rank, event_id, engagement = crossing
    return [[time_out(at, origin), rank, id_out(event_id), engagement]]


def _crossing_in(stored: list[Any], origin: int) -> tuple[int, int, str, float] | None:
    if not stored:
        return None
    ((at, rank, event_id, engagement),) = stored
    return (time_in(at, origin), rank, id_in(event_id), engagement)


def _prior_of(entry: Entry, mark: Mark, rules: Rules) -> float | None:
    """The engagement before an entry without points of its own: its mark's, decayed."""
    if entry.rank == Rank.ENGAGEMENT and entry.type != LINK_ENTRY:
        return None
    fold = EMPTY_FOLD._replace(
        buckets=mark.buckets, engagement=sum(mark.buckets.values()), engagement_at=mark.at
    )
    return engagement_at(fold, entry.at, rules)


def _past_in(stored: list[Any], origin: int, rules: Rules) -> Past:
    (
        stored_kept,
        engaged,
        seen,
        root,
        root_published,
        root_key,
        since,
        error,
        first,
        touched,
        *crossing,
    ) = stored
    kept = []
    previous = origin
    for item in stored_kept:
        entry = _entry_in(item[:4], previous)
        at = entry.at
        m_engaged, m_at, flat, intent, contact, prior, m_since, exact, m_first, *m_crossing = item[
            4:
        ]
        mark = Mark(
            m_engaged,
            0 if m_at is None else time_in(m_at, at),
            _buckets_in(flat),
            _intent_in(intent, at),
            contact,
            0.0,
            0 if m_since is None else time_in(m_since, at),
            exact,
            _crossing_in(m_crossing, at),
            None if m_first is None else time_in(m_first, at),
        )
        if prior is None:
            prior = _prior_of(entry, mark, rules)
        mark = mark._replace(prior=prior)
        kept.append(Kept(entry, mark))
        previous = at
    return Past(
        tuple(kept),
        engaged,
        tuple(int.from_bytes(seen[i : i + 4], "big") for i in range(0, len(seen), 4)),
        EMPTY_FOLD if root is None else _fold_in(root, origin),
        published_in(root_published),
        None if root_key is None else _key_in(root_key, origin),
        0 if since is None else time_in(since, origin),
        crossing=_crossing_in(crossing, origin),
        first_at=None if first is None else time_in(first, origin),
        touched=touched,
        error=None if error is None else (error[0], time_in(error[1], origin)),
    )


def decode_state(raw: bytes, lead_id: str, rules: Rules) -> LeadState:
    """A lead state stored by `encode_state`; InvalidStateError when it cannot be read."""
    try:
        unpacked = msgpack.unpackb(raw)
        version = unpacked[0]
        if version not in _READABLE_FORMATS:
            raise InvalidStateError(f"state format {version}, expected {LEAD_STATE_FORMAT}")
        _, accepted, origin, horizon, base, published, attribution, stored_tail, told = unpacked[:9]
        identity = unpacked[9] if len(unpacked) > 9 and unpacked[9] else (False, None, [], [])
        anonymous, stored_link, stored_linked, stored_links = identity
        past = _past_in(unpacked[10], origin, rules) if len(unpacked) > 10 else EMPTY_PAST
        fold = _fold_in(base, origin)
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
            past,
        )
    except InvalidStateError:
        raise
    except (msgpack.UnpackException, TypeError, ValueError, KeyError, IndexError) as exc:
        raise InvalidStateError(f"cannot decode lead state: {exc!r}") from exc


def _identity_and_past_out(state: LeadState, origin: int, rules: Rules) -> list[Any]:
    identity = _identity_out(state)
    past = state.past
    if past == EMPTY_PAST:
        return identity
    return [identity[0] if identity else None, _past_out(past, origin, rules)]


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
