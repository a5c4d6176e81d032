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
from streams.core.compaction import FINGERPRINT_BYTES, compact, restore
from streams.core.handoff import CrmOwner, HandoffState, OpenHandoff
from streams.core.late import mark_engagement
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
from streams.core.revisions import NOTHING_PUBLISHED
from streams.core.rules import Rules
from streams.core.sla import next_deadline
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
    tail = _entries_out(state.tail, origin)
    horizon = state.horizon
    past = state.past
    stored_base = _fold_out(base, origin)
    if past != EMPTY_PAST and base.profile and base.profile == kept_profile(past):
        stored_base[1] = True  # the profile the kept facts make: not stored twice
    packed: bytes = msgpack.packb(
        [
            LEAD_STATE_FORMAT,
            state.accepted,
            time_out(origin, 0),
            None if horizon is None else _key_out(horizon, origin),
            stored_base,
            # With a kept past, the tally is that of its changes (derived on reading).
            published_out(state.published) if past == EMPTY_PAST else None,
            None if state.attribution is None else _attribution_out(state, origin),
            tail,
            None if state.told is None else [state.told[0], time_out(state.told[1], origin)],
            # Left out for a lead with no identity to stitch, no kept past, no handoff (most).
            *_identity_past_and_handoff_out(state, origin, rules),
        ],
        use_bin_type=True,
    )
    return packed


def kept_profile(past: Past) -> dict[str, Any]:
    """The profile the snapshot's kept facts make (its root's, then each kept profile fact)."""
    profile = dict(past.root.profile)
    for kept in past.kept:
        if kept.entry.rank == Rank.PROFILE:
            profile.update(kept.entry.detail)
    return profile


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


def _past_out(past: Past, origin: int, rules: Rules, base: Fold) -> list[Any]:
    """The snapshot's kept past: each kept entry (its time a step from the one before) with
    its mark (times as steps from the entry's; what can be derived, left out), the
    fingerprints as one byte string."""
    kept = []
    previous = origin
    engagement_before: tuple[int, dict[str, float], dict[str, tuple[int, ...]]] = (0, {}, {})
    for entry, mark in past.kept:
        at = entry.at
        prior: float | None = mark.prior
        if prior == _prior_of(entry, mark, rules):
            prior = None
        engagement = (mark.at, mark.buckets, mark.intent)
        stored: Any
        if engagement == engagement_before:
            stored = None  # as the kept entry before (or none yet)
        elif engagement == (base.engagement_at, base.buckets, base.intent):
            stored = True  # as the snapshot's
        else:
            stored = [
                time_out(mark.at, at) if mark.buckets else None,
                _buckets_out(mark.buckets),
                *_intent_out(mark.intent, at),
            ]
        engagement_before = engagement
        kept.append(
            [
                *_entry_out(entry, previous),
                mark.engaged,
                stored,
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
        b"".join(seen.to_bytes(FINGERPRINT_BYTES, "big") for seen in past.seen),
        None if root == EMPTY_FOLD else _fold_out(root, origin),
        None if past.root_published == NOTHING_PUBLISHED else published_out(past.root_published),
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
    return mark_engagement(mark, entry.at, rules)


def _past_in(stored: list[Any], origin: int, rules: Rules, base: Fold) -> Past:
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
    engagement_before: tuple[int, dict[str, float], dict[str, tuple[int, ...]]] = (0, {}, {})
    for item in stored_kept:
        entry = _entry_in(item[:4], previous)
        at = entry.at
        m_engaged, held, contact, prior, m_since, exact, m_first, *m_crossing = item[4:]
        if held is None:
            m_at, buckets, intent = engagement_before
        elif held is True:
            m_at, buckets, intent = base.engagement_at, base.buckets, base.intent
        else:
            m_stored_at, flat, *m_intent = held
            m_at = 0 if m_stored_at is None else time_in(m_stored_at, at)
            buckets, intent = _buckets_in(flat), _intent_in(m_intent, at)
        engagement_before = (m_at, buckets, intent)
        mark = Mark(
            m_engaged,
            m_at,
            buckets,
            intent,
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
        tuple(
            int.from_bytes(seen[i : i + FINGERPRINT_BYTES], "big")
            for i in range(0, len(seen), FINGERPRINT_BYTES)
        ),
        EMPTY_FOLD if root is None else _fold_in(root, origin),
        NOTHING_PUBLISHED if root_published is None else published_in(root_published),
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
        if version == LEAD_STATE_FORMAT:
            origin = time_in(origin, 0)
        identity = unpacked[9] if len(unpacked) > 9 and unpacked[9] else (False, None, [], [])
        anonymous, stored_link, stored_linked, stored_links = identity
        profile_is_kept = base[1] is True
        if profile_is_kept:
            base = [base[0], None, *base[2:]]
        fold = _fold_in(base, origin)
        past = EMPTY_PAST
        if len(unpacked) > 10 and unpacked[10] is not None:
            past = _past_in(unpacked[10], origin, rules, fold)
        if profile_is_kept:
            fold = fold._replace(profile=kept_profile(past))
        tail = _entries_in(stored_tail, origin) if version == LEAD_STATE_FORMAT else []
        if version != LEAD_STATE_FORMAT:
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
            None if published is None else published_in(published),
            None if attribution is None else _attribution_in(attribution, origin, tail, past),
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
        )._replace(handoff=_handoff_in(unpacked[11]) if len(unpacked) > 11 else None)
    except InvalidStateError:
        raise
    except (msgpack.UnpackException, TypeError, ValueError, KeyError, IndexError) as exc:
        raise InvalidStateError(f"cannot decode lead state: {exc!r}") from exc


def stored_deadline(raw: bytes, rules: Rules) -> int | None:
    """The next handoff deadline of a stored lead state (see `streams.core.sla.next_deadline`),
    read without decoding the rest; None when it has none or cannot be read."""
    try:
        unpacked = msgpack.unpackb(raw)
        if unpacked[0] not in _READABLE_FORMATS or len(unpacked) < 12:
            return None
        return next_deadline(_handoff_in(unpacked[11]))
    except (msgpack.UnpackException, TypeError, ValueError, KeyError, IndexError):
        return None


def _identity_past_and_handoff_out(state: LeadState, origin: int, rules: Rules) -> list[Any]:
    identity = _identity_out(state)
    past = state.past
    handoff = state.handoff
    if past == EMPTY_PAST and handoff is None:
        return identity
    stored = [
        identity[0] if identity else None,
        None if past == EMPTY_PAST else _past_out(past, origin, rules, state.base),
    ]
    return stored if handoff is None else [*stored, _handoff_out(handoff)]


_HANDOFF_BY: Final = ("rules", "crm")
_MQL_KINDS: Final = ("active", "passive")
_TOUCHES: Final = ("attempt", "contact")


def _handoff_out(handoff: HandoffState) -> list[Any]:
    current = handoff.current
    crm = handoff.crm_owner
    return [
        None if current is None else _open_handoff_out(current),
        [[at, _TOUCHES.index(touch), id_out(event_id)] for at, touch, event_id in handoff.touches],
        None if crm is None else [crm.at, id_out(crm.event_id), crm.owner, crm.team],
    ]


def _open_handoff_out(current: OpenHandoff) -> list[Any]:
    flags = current.warned | current.breached << 1 | current.live << 2
    return [
        bytes.fromhex(current.change_id),
        current.mql_at,
        _MQL_KINDS.index(current.mql_kind),
        current.grade,
        current.source,
        current.campaign,
        current.queue,
        current.owner,
        _HANDOFF_BY.index(current.assigned_by),
        current.team,
        current.target_seconds,
        current.due_at,
        current.warn_at,
        current.attempted_at,
        current.contacted_at,
        flags,
    ]


def _handoff_in(stored: list[Any]) -> HandoffState:
    current, touches, crm = stored
    return HandoffState(
        None if current is None else _open_handoff_in(current),
        tuple((at, _TOUCHES[touch], id_in(event_id)) for at, touch, event_id in touches),
        None if crm is None else CrmOwner(crm[0], id_in(crm[1]), crm[2], crm[3]),
    )


def _open_handoff_in(stored: list[Any]) -> OpenHandoff:
    (change_id, mql_at, kind, grade, source, campaign, queue, owner, by, team) = stored[:10]
    target, due, warn, attempted, contacted, flags = stored[10:]
    return OpenHandoff(
        change_id.hex(),
        mql_at,
        _MQL_KINDS[kind],
        grade,
        source,
        campaign,
        queue,
        owner,
        _HANDOFF_BY[by],
        team,
        target,
        due,
        warn,
        attempted,
        contacted,
        bool(flags & 1),
        bool(flags & 2),
        bool(flags & 4),
    )


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


def _attribution_out(state: LeadState, origin: int) -> list[Any]:
    """The first touch: the entry it was (an index into the tail, or minus one minus an index
    into the kept entries) when leadflow still holds it, else its sort key; then its source
    and campaign."""
    attribution = state.attribution
    assert attribution is not None
    at, rank, event_id, source, campaign = attribution
    key = attribution[:3]
    for index, entry in enumerate(state.tail):
        if entry[:3] == key:
            return [index, source, campaign]
    for index, kept in enumerate(state.past.kept):
        if kept.entry[:3] == key:
            return [-1 - index, source, campaign]
    return [time_out(at, origin), rank, id_out(event_id), source, campaign]


def _attribution_in(stored: list[Any], origin: int, tail: list[Entry], past: Past) -> Attribution:
    if len(stored) == 3:
        index, source, campaign = stored
        entry = tail[index] if index >= 0 else past.kept[-1 - index].entry
        return Attribution(entry.at, entry.rank, entry.event_id, source, campaign)
    at, rank, event_id, source, campaign = stored
    return Attribution(time_in(at, origin), rank, id_in(event_id), source, campaign)


def _entries_out(entries: tuple[Entry, ...], origin: int) -> list[Any]:
    """Entries as four columns: their times (steps from the one before), types, ids (one byte
    string when all are canonical UUIDs) and details (None when all are)."""
    steps, types, ids, details = [], bytearray(), [], []
    previous = origin
    for entry in entries:
        step, type_at, event_id, detail = _entry_out(entry, previous)
        previous = entry.at
        steps.append(step)
        types.append(type_at)
        ids.append(event_id)
        details.append(detail)
    packed: bytes | list[Any] = ids
    if all(isinstance(i, bytes) and len(i) == _UUID_BYTES for i in ids):
        packed = b"".join(ids)
    return [steps, bytes(types), packed, details if any(d is not None for d in details) else None]


def _entries_in(stored: list[Any], origin: int) -> list[Entry]:
    steps, types, ids, details = stored
    if isinstance(ids, bytes):
        ids = [ids[i : i + _UUID_BYTES] for i in range(0, len(ids), _UUID_BYTES)]
    entries = []
    previous = origin
    for index, step in enumerate(steps):
        detail = None if details is None else details[index]
        entry = _entry_in([step, types[index], ids[index], detail], previous)
        entries.append(entry)
        previous = entry.at
    return entries


_UUID_BYTES: Final = 16


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
