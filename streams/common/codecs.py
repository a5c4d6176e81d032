"""Bytes in and out: events, stage changes, account signals and changes, and the states the
worker stores. Shared by replay, the worker, the collector and the projector.

The same record gives the same bytes, always: replays compare byte for byte."""

from __future__ import annotations

import uuid
from typing import Any, Final

import msgpack
import orjson
from pydantic import ValidationError

from schemas.accounts import AccountSignal
from schemas.events import EVENT_ADAPTER, EVENT_TYPES, Event
from schemas.stage_changes import StageChange
from streams.core.accounts import (
    AccountStageChange,
    AccountState,
    Member,
    Signal,
    compact_account,
    restore_account,
)
from streams.core.lifecycle import (
    PROFILE_FIELDS,
    Attribution,
    Entry,
    Fold,
    LeadStageChange,
    LeadState,
    Link,
    LinkRequest,
    Rank,
    Step,
    Summary,
    compact,
    rank_of,
    restore,
)
from streams.core.revisions import Published, instant_of, micros_of
from streams.core.rules import Rules
from streams.errors import InvalidEventError, InvalidStateError

TOO_LARGE: Final = "too_large"
"""The dead-letter kind of a message over LEADFLOW_MAX_EVENT_BYTES."""
STATE_FORMAT: Final = 3
"""Version of the stored state layout; a worker refuses (dead-letters) a state of another."""


def decode_event(raw: bytes, max_bytes: int) -> Event:
    """Validate one JSON event; raise InvalidEventError with a one-line reason."""
    if len(raw) > max_bytes:
        raise InvalidEventError(
            f"message too large: {len(raw)} bytes > {max_bytes}", kind=TOO_LARGE
        )
    try:
        return EVENT_ADAPTER.validate_json(raw)
    except ValidationError as exc:
        raise InvalidEventError(describe_validation_error(exc)) from None


def describe_validation_error(exc: ValidationError) -> str:
    """A short, stable description of why a payload is not a valid event."""
    reasons = []
    for error in exc.errors(include_url=False, include_input=False)[:3]:
        location = error["loc"]
        if location and location[0] in EVENT_TYPES:
            location = location[1:]  # the union's tag, not a field
        where = ".".join(str(part) for part in location)
        kind = error["type"]
        if kind == "json_invalid":
            reasons.append(f"not JSON: {(error.get('ctx') or {}).get('error', error['msg'])}")
        elif kind == "union_tag_invalid":
            reasons.append(f"unknown type {(error.get('ctx') or {}).get('tag')!r}")
        elif kind == "union_tag_not_found":
            reasons.append("missing field 'type'")
        elif kind == "missing":
            reasons.append(f"missing field {where!r}")
        else:
            reasons.append(f"{where or 'event'}: {error['msg']}")
    return "; ".join(reasons) or "invalid event"


def encode_change(change: LeadStageChange) -> bytes:
    """One lead stage change as compact JSON in the `schemas.StageChange` contract (event time
    in UTC, with microseconds only when it has some)."""
    fields: dict[str, Any] = dict(zip(LeadStageChange._fields, change, strict=True))
    fields["occurred_at"] = instant_of(change.occurred_at)
    return orjson.dumps(fields, option=orjson.OPT_UTC_Z)


def decode_stage_change(raw: bytes) -> StageChange:
    return StageChange.model_validate_json(raw)


# Stored states: MessagePack arrays of what a state cannot be derived from (see `restore`).
# Names are stored as their position in these tables, which only ever grow at the end: a
# stored state must read the same after an upgrade (tests/unit/common/test_codecs.py holds
# the tables as they were). Event ids that are canonical UUIDs (most trackers' message ids)
# are kept as their 16 bytes; times in the tail as the step from the entry before.
STORED_STAGES: Final = (
    "subscriber",
    "lead",
    "mql",
    "sql",
    "opportunity",
    "customer",
    "evangelist",
    "disqualified",
)
STORED_ACCOUNT_STAGES: Final = ("engaged", "sales_ready", "customer")
STORED_EVENT_TYPES: Final = (
    "profile_updated",
    "page_view",
    "pricing_page_view",
    "content_download",
    "newsletter_subscribe",
    "webinar_registered",
    "webinar_attended",
    "email_open",
    "email_click",
    "social_engagement",
    "free_trial_signup",
    "demo_request",
    "contact_sales_request",
    "unsubscribe",
    "email_bounced",
    "sales_contacted",
    "sales_disqualified",
    "quote_requested",
    "deal_won",
    "deal_lost",
    "advocacy",
    "lead_recycled",
    "leads_merged",
    "identity_linked",
)
_STAGE_AT: Final = {stage: n for n, stage in enumerate(STORED_STAGES)}
_TYPE_AT: Final = {event_type: n for n, event_type in enumerate(STORED_EVENT_TYPES)}
_SECOND: Final = 1_000_000


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
    # entry before (short when whole seconds, as most trackers' times are).
    origin = state.tail[0].at if state.tail else 0
    tail = []
    previous = origin
    for entry in state.tail:
        tail.append(_entry_out(entry, previous))
        previous = entry.at
    horizon = state.horizon
    packed: bytes = msgpack.packb(
        [
            STATE_FORMAT,
            state.accepted,
            origin,
            None if horizon is None else _key_out(horizon, origin),
            [
                _stage_out(base.stage),
                _profile_out(base.profile),
                base.waived_exclusion,
                base.has_contact,
                [part for name, value in buckets.items() for part in (_TYPE_AT[name], value)],
                engagement,
                _time_out(base.engagement_at, origin),
                _bant_out(base.bant),
                *_intent_out(base.intent, origin),
            ],
            _published_out(state.published),
            None if state.attribution is None else _attribution_out(state.attribution, origin),
            tail,
            None if state.told is None else [state.told[0], _time_out(state.told[1], origin)],
            # Left out for a lead with no identity to stitch (most), so it stays as it was.
            *_identity_out(state),
        ],
        use_bin_type=True,
    )
    return packed


def _identity_out(state: LeadState) -> list[Any]:
    if not state.anonymous and state.link is None and not state.linked and not state.links:
        return []
    return [
        [
            state.anonymous,
            None if state.link is None else list(state.link),
            [_summary_out(summary) for summary in state.linked],
            [[identity, *key] for identity, key in state.links],
        ]
    ]


def _summary_out(summary: Summary) -> list[Any]:
    attribution = summary.attribution
    return [
        summary.from_id,
        summary.to_id,
        summary.revision,
        [_step_out(step) for step in summary.steps],
        None if attribution is None else list(attribution),
        summary.withdrawn,
    ]


def _summary_in(stored: list[Any]) -> Summary:
    from_id, to_id, revision, steps, attribution, withdrawn = stored
    return Summary(
        from_id,
        to_id,
        revision,
        tuple(_step_in(step) for step in steps),
        None if attribution is None else Attribution(*attribution),
        withdrawn,
    )


def _step_out(step: Step) -> list[Any]:
    flat = [part for name, value in step.buckets.items() for part in (_TYPE_AT[name], value)]
    intent = [[pattern, list(times)] for pattern, times in step.intent.items()]
    return [step.at, step.rank, step.cause, step.type, step.detail, step.anchor, flat, intent]


def _step_in(stored: list[Any]) -> Step:
    at, rank, cause, event_type, detail, anchor, flat, intent = stored
    return Step(
        at,
        rank,
        cause,
        event_type,
        detail,
        anchor,
        {STORED_EVENT_TYPES[flat[i]]: flat[i + 1] for i in range(0, len(flat), 2)},
        {pattern: tuple(times) for pattern, times in intent},
    )


_SUMMARY: Final = 0
_LINK_REQUEST: Final = 1


def encode_summary(summary: Summary) -> bytes:
    """A linked identity's summary as MessagePack, for the identity topic."""
    packed: bytes = msgpack.packb(
        [STATE_FORMAT, _SUMMARY, *_summary_out(summary)], use_bin_type=True
    )
    return packed


def encode_link_request(request: LinkRequest) -> bytes:
    """A known lead's link request as MessagePack, for the identity topic."""
    packed: bytes = msgpack.packb([STATE_FORMAT, _LINK_REQUEST, *request], use_bin_type=True)
    return packed


def decode_identity_record(raw: bytes) -> Summary | LinkRequest:
    """A record of the identity topic; InvalidEventError when it cannot be read."""
    try:
        version, kind, *stored = msgpack.unpackb(raw)
        if version != STATE_FORMAT:
            raise InvalidEventError(f"identity record format {version}, expected {STATE_FORMAT}")
        if kind == _LINK_REQUEST:
            identity, to_id, at, rank, event_id = stored
            return LinkRequest(identity, to_id, at, rank, event_id)
        return _summary_in(stored)
    except InvalidEventError:
        raise
    except (msgpack.UnpackException, TypeError, ValueError, KeyError, IndexError) as exc:
        raise InvalidEventError(f"not an identity record: {exc!r}") from None


def decode_state(raw: bytes, lead_id: str, rules: Rules) -> LeadState:
    """A lead state stored by `encode_state`; InvalidStateError when it cannot be read."""
    try:
        unpacked = msgpack.unpackb(raw)
        version = unpacked[0]
        if version != STATE_FORMAT:
            raise InvalidStateError(f"state format {version}, expected {STATE_FORMAT}")
        _, accepted, origin, horizon, base, published, attribution, stored_tail, told = unpacked[:9]
        identity = unpacked[9] if len(unpacked) > 9 else (False, None, [], [])
        anonymous, stored_link, stored_linked, stored_links = identity
        stage, profile, waived, has_contact, flat, engagement, engaged_at, bant, *intent = base
        buckets = {STORED_EVENT_TYPES[flat[i]]: flat[i + 1] for i in range(0, len(flat), 2)}
        if engagement is None:
            engagement = sum(buckets.values())
        fold = Fold(
            _stage_in(stage),
            _profile_in(profile),
            0.0,
            None,
            waived,
            has_contact,
            buckets,
            engagement,
            _time_in(engaged_at, origin),
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
            _published_in(published),
            None if attribution is None else _attribution_in(attribution, origin),
            tuple(tail),
            None if told is None else (told[0], _time_in(told[1], origin)),
            rules,
            anonymous,
            None if stored_link is None else Link(*stored_link),
            tuple(_summary_in(stored) for stored in stored_linked),
            tuple(
                (linked_id, (at, rank, event_id)) for linked_id, at, rank, event_id in stored_links
            ),
        )
    except InvalidStateError:
        raise
    except (msgpack.UnpackException, TypeError, ValueError, KeyError, IndexError) as exc:
        raise InvalidStateError(f"cannot decode lead state: {exc!r}") from exc


def _stage_out(stage: str | None) -> int | None:
    return None if stage is None else _STAGE_AT[stage]


def _stage_in(stored: int | None) -> str | None:
    return None if stored is None else STORED_STAGES[stored]


def _time_out(at: int, origin: int) -> int | list[int]:
    # A whole number of seconds from the origin as that number; anything else as [micros].
    step = at - origin
    return step // _SECOND if step % _SECOND == 0 else [step]


def _time_in(stored: int | list[int], origin: int) -> int:
    return origin + (stored[0] if isinstance(stored, list) else stored * _SECOND)


def _id_out(event_id: str) -> str | bytes:
    if len(event_id) == 36:
        try:
            parsed = uuid.UUID(event_id)
        except ValueError:
            return event_id
        if str(parsed) == event_id:
            return parsed.bytes
    return event_id


def _id_in(stored: str | bytes) -> str:
    return str(uuid.UUID(bytes=stored)) if isinstance(stored, bytes) else stored


def _key_out(key: tuple[int, int, str], origin: int) -> list[Any]:
    return [_time_out(key[0], origin), key[1], _id_out(key[2])]


def _key_in(stored: list[Any], origin: int) -> tuple[int, int, str]:
    return (_time_in(stored[0], origin), stored[1], _id_in(stored[2]))


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
            for part in (pattern, [_time_out(at, origin) for at in times])
        ]
    ]


def _intent_in(stored: list[Any], origin: int) -> dict[str, tuple[int, ...]]:
    if not stored:
        return {}
    (flat,) = stored
    return {
        flat[i]: tuple(_time_in(at, origin) for at in flat[i + 1]) for i in range(0, len(flat), 2)
    }


def _published_out(published: Published, stages: tuple[str, ...] = STORED_STAGES) -> list[Any]:
    at = {stage: n for n, stage in enumerate(stages)}
    flat: list[Any] = []
    for (from_stage, to_stage), n in published.pairs.items():
        flat += [None if from_stage is None else at[from_stage], at[to_stage], n]
    return [published.changes, flat]


def _published_in(stored: list[Any], stages: tuple[str, ...] = STORED_STAGES) -> Published:
    changes, flat = stored
    pairs = {
        (None if flat[i] is None else stages[flat[i]], stages[flat[i + 1]]): flat[i + 2]
        for i in range(0, len(flat), 3)
    }
    return Published(changes, pairs)


def _attribution_out(attribution: Attribution, origin: int) -> list[Any]:
    at, rank, event_id, source, campaign = attribution
    return [_time_out(at, origin), rank, _id_out(event_id), source, campaign]


def _attribution_in(stored: list[Any], origin: int) -> Attribution:
    at, rank, event_id, source, campaign = stored
    return Attribution(_time_in(at, origin), rank, _id_in(event_id), source, campaign)


def _entry_out(entry: Entry, previous: int) -> list[Any]:
    detail = entry.detail
    if entry.rank == Rank.PROFILE:
        detail = _profile_out(detail)
    elif entry.type == "sales_contacted":
        detail = _bant_out(detail)
    step = _time_out(entry.at, previous)
    return [step, _TYPE_AT[entry.type], _id_out(entry.event_id), detail]


def _entry_in(stored: list[Any], previous: int) -> Entry:
    step, type_at, event_id, detail = stored
    event_type = STORED_EVENT_TYPES[type_at]
    rank = rank_of(event_type)
    if rank == Rank.PROFILE:
        detail = _profile_in(detail)
    elif event_type == "sales_contacted":
        detail = _bant_in(detail)
    return Entry(_time_in(step, previous), rank, _id_in(event_id), event_type, detail)


def _iso(micros: int) -> str:
    return instant_of(micros).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def encode_account_signal(signal: Signal) -> bytes:
    """One account signal as compact JSON in the `schemas.AccountSignal` contract."""
    fields = dict(zip(Signal._fields, signal, strict=True))
    fields["occurred_at"] = _iso(signal.occurred_at)
    return orjson.dumps(fields)


def decode_account_signal(raw: bytes) -> Signal:
    """Validate one account signal; raise InvalidEventError with a one-line reason."""
    try:
        valid = AccountSignal.model_validate_json(raw)
    except ValidationError as exc:
        reason = describe_validation_error(exc)
        raise InvalidEventError(f"not an account signal: {reason}") from None
    return Signal(
        valid.account_id,
        valid.lead_id,
        valid.revision,
        micros_of(valid.occurred_at),
        valid.causation_event_id,
        valid.causation_change_id,
        valid.member,
        valid.stage,
        valid.seniority,
        valid.engagement_score,
    )


def encode_account_change(change: AccountStageChange) -> bytes:
    """One account change as compact JSON in the `schemas.AccountChange` contract."""
    fields = dict(zip(AccountStageChange._fields, change, strict=True))
    fields["occurred_at"] = _iso(change.occurred_at)
    return orjson.dumps(fields)


def encode_account_state(state: AccountState, rules: Rules) -> bytes:
    """An account state as compact MessagePack, with every signal past the bound folded into
    the snapshot first: its snapshot's stage and people, and its signals in detail; the account
    id is the table's key, the tally and fold are derived."""
    state = compact_account(state, rules)
    snapshot = state.snapshot
    members: list[Any] = []
    for lead_id, (present, stage, seniority, engagement, at, revision) in snapshot.members.items():
        members += [lead_id, present, _stage_out(stage), seniority, engagement, at, revision]
    tail: list[Any] = []
    previous = state.tail[0].occurred_at if state.tail else 0
    for signal in state.tail:
        tail.append(
            [
                signal.lead_id,
                signal.revision,
                _time_out(signal.occurred_at, previous),
                _id_out(signal.causation_event_id),
                _change_id_out(signal.causation_change_id),
                signal.member,
                _stage_out(signal.stage),
                signal.seniority,
                signal.engagement_score,
            ]
        )
        previous = signal.occurred_at
    horizon = state.horizon
    packed: bytes = msgpack.packb(
        [
            STATE_FORMAT,
            state.accepted,
            None if horizon is None else list(horizon),
            None if snapshot.stage is None else STORED_ACCOUNT_STAGES.index(snapshot.stage),
            members,
            _published_out(state.published, STORED_ACCOUNT_STAGES),
            state.tail[0].occurred_at if state.tail else 0,
            tail,
            # Sorted: a set iterates in an order that changes with each process's hash seed.
            [part for moved in sorted(state.moved) for part in moved],
        ],
        use_bin_type=True,
    )
    return packed


def decode_account_state(raw: bytes, account_id: str, rules: Rules) -> AccountState:
    """An account state stored by `encode_account_state`."""
    try:
        unpacked = msgpack.unpackb(raw)
        if unpacked[0] != STATE_FORMAT:
            raise InvalidStateError(f"state format {unpacked[0]}, expected {STATE_FORMAT}")
        _, accepted, horizon, stage, flat, published, origin, stored_tail, moved = unpacked
        members = {
            flat[i]: Member(
                flat[i + 1],
                _stage_in(flat[i + 2]),
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
            previous = _time_in(at, previous)
            signals.append(
                Signal(
                    account_id,
                    lead,
                    revision,
                    previous,
                    _id_in(event_id),
                    _change_id_in(change),
                    member,
                    _stage_in(lead_stage),
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
            _published_in(published, STORED_ACCOUNT_STAGES),
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


DEAD_LETTER_HEADER_PREFIX: Final = "leadflow-"


def dead_letter_headers(
    topic: str, partition: int, offset: int, kind: str, reason: str
) -> list[tuple[str, bytes]]:
    """Headers of a dead letter: why it was rejected, and where the original came from."""
    prefix = DEAD_LETTER_HEADER_PREFIX
    return [
        (f"{prefix}reason", reason.encode()),
        (f"{prefix}kind", kind.encode()),
        (f"{prefix}topic", topic.encode()),
        (f"{prefix}partition", str(partition).encode()),
        (f"{prefix}offset", str(offset).encode()),
    ]
