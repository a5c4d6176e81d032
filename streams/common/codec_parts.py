"""Pieces several formats share: event times as text, and the MessagePack forms of names, times,
ids, tallies and linked identities' summaries used by the stored states and the identity topic.

A change here changes every format that uses the piece: bump each one's own version."""

from __future__ import annotations

import uuid
from typing import Any, Final

from streams.core.lead import Attribution, Step, Summary
from streams.core.revisions import Published, instant_of

# Names are stored as their position in these tables, which only ever grow at the end: a
# stored state must read the same after an upgrade (tests/unit/common/test_codecs.py holds
# the tables as they were).
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
    "sales_attempted",
    "owner_assigned",
)
TYPE_AT: Final = {event_type: n for n, event_type in enumerate(STORED_EVENT_TYPES)}
"""Each event type's position in `STORED_EVENT_TYPES`."""
_STAGE_AT: Final = {stage: n for n, stage in enumerate(STORED_STAGES)}
_SECOND: Final = 1_000_000


def instant_text(micros: int) -> str:
    """An event time as ISO 8601 text in UTC, always with microseconds."""
    return instant_of(micros).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def stage_out(stage: str | None) -> int | None:
    """A lead stage as its position in `STORED_STAGES`."""
    return None if stage is None else _STAGE_AT[stage]


def stage_in(stored: int | None) -> str | None:
    """The lead stage `stage_out` stored."""
    return None if stored is None else STORED_STAGES[stored]


def time_out(at: int, origin: int) -> int | list[int]:
    """A time as its step from `origin`: whole seconds as that number, anything else as
    [microseconds] (most trackers' times are whole seconds, and short so)."""
    step = at - origin
    return step // _SECOND if step % _SECOND == 0 else [step]


def time_in(stored: int | list[int], origin: int) -> int:
    """The time `time_out` stored."""
    return origin + (stored[0] if isinstance(stored, list) else stored * _SECOND)


def id_out(event_id: str) -> str | bytes:
    """An event id: a canonical UUID (most trackers' message ids) as its 16 bytes."""
    if len(event_id) == 36:
        try:
            parsed = uuid.UUID(event_id)
        except ValueError:
            return event_id
        if str(parsed) == event_id:
            return parsed.bytes
    return event_id


def id_in(stored: str | bytes) -> str:
    """The event id `id_out` stored."""
    return str(uuid.UUID(bytes=stored)) if isinstance(stored, bytes) else stored


def published_out(published: Published, stages: tuple[str, ...] = STORED_STAGES) -> list[Any]:
    """The tally of published changes, its stages as positions in `stages`."""
    at = {stage: n for n, stage in enumerate(stages)}
    flat: list[Any] = []
    for (from_stage, to_stage), n in published.pairs.items():
        flat += [None if from_stage is None else at[from_stage], at[to_stage], n]
    return [published.changes, flat]


def published_in(stored: list[Any], stages: tuple[str, ...] = STORED_STAGES) -> Published:
    """The tally `published_out` stored."""
    changes, flat = stored
    pairs = {
        (None if flat[i] is None else stages[flat[i]], stages[flat[i + 1]]): flat[i + 2]
        for i in range(0, len(flat), 3)
    }
    return Published(changes, pairs)


def summary_out(summary: Summary) -> list[Any]:
    """A linked identity's summary, as a lead state and the identity topic store it."""
    attribution = summary.attribution
    return [
        summary.from_id,
        summary.to_id,
        summary.revision,
        [_step_out(step) for step in summary.steps],
        None if attribution is None else list(attribution),
        summary.withdrawn,
    ]


def summary_in(stored: list[Any]) -> Summary:
    """The summary `summary_out` stored."""
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
    flat = [part for name, value in step.buckets.items() for part in (TYPE_AT[name], value)]
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
