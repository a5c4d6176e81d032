"""Attribution and conversion windows computed in plain Python from replay output and the log.

Written from the definitions in docs/funnel.md ("Attribution", "Conversion windows"),
independently of the SQL: tests compare the two.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import date, datetime, timedelta
from typing import Any

import orjson

from streams.common.events_codec import decode_event
from streams.common.settings import DEFAULT_MAX_EVENT_BYTES
from tests.support.funnel_reference import (
    _monday,
    lead_conversions,
    lead_status,
    linked_identities,
    live_changes,
)

Row = dict[str, Any]
Touch = tuple[datetime, str, str, str]
"""occurred_at, event_id, source, campaign"""
MODELS = ("first_touch", "lead_creating", "last_touch_before_mql", "linear", "u_shaped")
WINDOWS = (7, 30, 90)
NOTHING = ("(none)", "(none)")


def identity_owners(documents: Iterable[dict[str, Any]]) -> dict[str, str]:
    """Each linked identity's lead: the lead of the earliest event linking it (time, then id)."""
    earliest: dict[str, tuple[datetime, str, str]] = {}
    for document in documents:
        if document["type"] == "leads_merged":
            identity = document["properties"]["merged_lead_id"]
        elif document.get("anonymous_id") not in (None, document["lead_id"]):
            identity = document["anonymous_id"]
        else:
            continue
        key = (
            datetime.fromisoformat(document["occurred_at"]),
            document["event_id"],
            document["lead_id"],
        )
        earliest[identity] = min(earliest.get(identity, key), key)
    return {identity: lead for identity, (_, _, lead) in earliest.items()}


def model_credits(
    path: list[Touch], creating_event: str | None, mql_bound: datetime
) -> dict[str, list[tuple[str, str, float]]]:
    """The credits of one conversion under each model, from its path (sorted touches)."""
    n = len(path)

    def u_share(position: int) -> float:
        if n == 1:
            return 1.0
        if n == 2:
            return 0.5
        return 0.4 if position in (0, n - 1) else 0.2 / (n - 2)

    before_mql = [t for t in path if t[0] <= mql_bound]
    creating = [t for t in path if t[1] == creating_event]
    credits = {
        "first_touch": [(t[2], t[3], 1.0) for t in path[:1]],
        "lead_creating": [(t[2], t[3], 1.0) for t in creating],
        "last_touch_before_mql": [(t[2], t[3], 1.0) for t in before_mql[-1:]],
        "linear": [(t[2], t[3], 1 / n) for t in path],
        "u_shaped": [(t[2], t[3], u_share(i)) for i, t in enumerate(path)],
    }
    return {model: found or [(*NOTHING, 1.0)] for model, found in credits.items()}


def attribution_credits(
    effective: Iterable[bytes], event_documents: Iterable[dict[str, Any]]
) -> list[Row]:
    """What `attribution_credits` must hold (in no particular order)."""
    documents = list(event_documents)
    owners = identity_owners(documents)
    live = live_changes(effective, linked_identities(documents))
    status = lead_status(live)
    events = {}
    for document in documents:
        decoded = decode_event(orjson.dumps(document), DEFAULT_MAX_EVENT_BYTES)
        events[decoded.event_id] = decoded
    touches: dict[str, list[Touch]] = defaultdict(list)
    for e in events.values():
        if e.source is not None or e.campaign is not None:
            touches[owners.get(e.lead_id, e.lead_id)].append(
                (e.occurred_at, e.event_id, e.source or "(none)", e.campaign or "(none)")
            )
    for path in touches.values():
        path.sort()
    creating: dict[str, tuple[int, str]] = {}
    for change in live:
        if change["to_stage"] == "lead":
            key = (change["sequence"], change["causation_event_id"])
            creating[change["lead_id"]] = min(creating.get(change["lead_id"], key), key)

    conversions: list[tuple[str, str, str, datetime, str | None, float]] = []
    for lead_id, lead in status.items():
        for conversion, stage in (("mql", "mql"), ("sql", "sql"), ("won", "customer")):
            if lead[f"{stage}_at"] is not None:
                at = lead[f"{stage}_at"]
                conversions.append((f"{lead_id}/{conversion}", lead_id, conversion, at, None, 0.0))
    for e in events.values():
        if e.type == "deal_won" and e.properties.amount is not None:
            lead_id = owners.get(e.lead_id, e.lead_id)
            conversions.append(
                (
                    e.event_id,
                    lead_id,
                    "revenue",
                    e.occurred_at,
                    e.properties.currency,
                    e.properties.amount,
                )
            )

    rows: list[Row] = []
    for conversion_id, lead_id, conversion, at, currency, amount in conversions:
        path = [t for t in touches.get(lead_id, []) if t[0] <= at]
        mql_at = status[lead_id]["mql_at"] if lead_id in status else None
        mql_bound = mql_at if mql_at is not None and mql_at <= at else at
        creating_event = creating[lead_id][1] if lead_id in creating else None
        for model, credits in model_credits(path, creating_event, mql_bound).items():
            summed: dict[tuple[str, str], float] = defaultdict(float)
            for source, campaign, credit in credits:
                summed[(source, campaign)] += credit
            rows.extend(
                {
                    "conversion_id": conversion_id,
                    "lead_id": lead_id,
                    "conversion": conversion,
                    "converted_at": at,
                    "currency": currency,
                    "model": model,
                    "source": source,
                    "campaign": campaign,
                    "credit": credit,
                    "amount": credit * amount,
                }
                for (source, campaign), credit in summed.items()
            )
    return rows


def attribution(credits: Iterable[Row]) -> dict[tuple[Any, ...], Row]:
    """What `attribution` must hold, keyed by model, conversion, month, source, campaign,
    currency."""
    rows: dict[tuple[Any, ...], Row] = {}
    for credit in credits:
        month = credit["converted_at"].date().replace(day=1)
        key = (
            credit["model"],
            credit["conversion"],
            month,
            credit["source"],
            credit["campaign"],
            credit["currency"],
        )
        row = rows.setdefault(key, {"conversion_ids": set(), "credit": 0.0, "amount": 0.0})
        row["conversion_ids"].add(credit["conversion_id"])
        row["credit"] += credit["credit"]
        row["amount"] += credit["amount"]
    return {
        key: {
            "conversions": len(row["conversion_ids"]),
            "credit": row["credit"],
            "amount": row["amount"],
        }
        for key, row in rows.items()
    }


def conversion_windows(
    effective: Iterable[bytes], event_documents: Iterable[dict[str, Any]], now: datetime
) -> dict[tuple[str, date, int], Row]:
    """What `conversion_windows` must hold, keyed by step, cohort week and window, against
    `now`."""
    live = live_changes(effective, linked_identities(list(event_documents)))
    tallies: dict[tuple[str, date, int], list[int]] = defaultdict(lambda: [0, 0, 0])
    for row in lead_conversions(lead_status(live)):
        if row["step"] not in ("mql_to_sql", "sql_to_won"):
            continue
        for days in WINDOWS:
            tally = tallies[(row["step"], _monday(row["entered_at"]), days)]
            window_end = row["entered_at"] + timedelta(days=days)
            tally[0] += 1
            if row["converted_at"] is not None and row["converted_at"] <= window_end:
                tally[1] += 1
            elif window_end > now:
                tally[2] += 1
    found = {}
    for key, (entered, converted, still_open) in tallies.items():
        not_converted = entered - converted - still_open
        decided = converted + not_converted
        found[key] = {
            "entered": entered,
            "converted": converted,
            "still_open": still_open,
            "not_converted": not_converted,
            "rate": converted / entered,
            "open_share": still_open / entered,
            "decided_rate": converted / decided if decided else None,
        }
    return found
