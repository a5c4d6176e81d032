"""Handoff events built in the contract for the MQL stage changes of a log, as the worker would
publish them: the rules' assignment, sometimes the CRM's, warnings, breaches, first attempts and
contacts over every response band, and withdrawals. The pydantic model
defines the bytes (`model_dump_json`)."""

from __future__ import annotations

import random
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

import orjson

from schemas.handoff import HandoffEvent

OWNERS = ("ana", "ben", "carl", "eva", "ivy")
QUEUES = ("enterprise", "emea", "americas", "everyone-else")
TARGETS = (15.0, 30.0, 60.0, 480.0)
RESPONSE_MINUTES = (0.5, 3.0, 4.99, 5.0, 9.0, 14.0, 15.0, 40.0, 60.0, 300.0, 1439.0, 1440.0, 4000.0)
"""Wall-clock minutes to a first attempt: every band, and each band's bounds."""


def handoff_event(
    kind: str,
    mql_change_id: str,
    lead_id: str,
    at: datetime,
    mql_at: datetime,
    number: int = 0,
    **fields: Any,
) -> bytes:
    """One handoff event's bytes; its id is derived from the MQL, the kind and `number`."""
    values: dict[str, Any] = {
        "owner": "ana",
        "queue": "emea",
        "mql_kind": "active",
        "rules_version": "test",
        "due_at": mql_at + timedelta(minutes=60),
        "target_minutes": 60.0,
        **fields,
    }
    return (
        HandoffEvent(
            handoff_id=f"{mql_change_id}:{kind}:{number}",
            lead_id=lead_id,
            kind=kind,  # type: ignore[arg-type]
            at=at,
            mql_change_id=mql_change_id,
            mql_at=mql_at,
            **values,
        )
        .model_dump_json()
        .encode()
    )


def handoff_log(effective_changes: Iterable[bytes], seed: int = 3) -> list[bytes]:
    """The handoff events of every MQL among the stage changes (latest revision of each,
    retracted ones included: their handoff is withdrawn), in publication order."""
    rng = random.Random(seed)
    log: list[bytes] = []
    mqls = [orjson.loads(value) for value in effective_changes]
    for change in sorted((c for c in mqls if c["to_stage"] == "mql"), key=lambda c: c["change_id"]):
        log.extend(_handoff(rng, change))
    return log


def _handoff(rng: random.Random, change: dict[str, Any]) -> list[bytes]:
    mql_at = datetime.fromisoformat(change["occurred_at"])
    owner = change.get("owner") or rng.choice(OWNERS)
    queue = change.get("queue") or rng.choice(QUEUES)
    if rng.random() < 0.05:  # no queue took this MQL: no owner, no target
        owner, queue = None, None
    target = None if owner is None else rng.choice(TARGETS)
    due_at = None if target is None else mql_at + timedelta(minutes=target * rng.uniform(1, 3))
    state: dict[str, Any] = {
        "owner": owner,
        "queue": queue,
        "mql_kind": change["mql_kind"] or "active",
        "grade": change.get("grade"),
        "source": change["source"],
        "campaign": change["campaign"],
        "due_at": due_at,
        "target_minutes": target,
        "rules_version": change["rules_version"],
    }
    mql_change_id, lead_id = change["change_id"], change["lead_id"]

    def step(kind: str, at: datetime, number: int = 0, **fields: Any) -> bytes:
        return handoff_event(kind, mql_change_id, lead_id, at, mql_at, number, **state, **fields)

    steps = [step("assigned", mql_at, assigned_by="rules")]
    if owner is not None and rng.random() < 0.2:  # the CRM gives the lead to someone else
        state["owner"] = rng.choice([o for o in OWNERS if o != owner])
        state["queue"] = rng.choice([None, queue])
        at = mql_at + timedelta(minutes=rng.uniform(0, 30))
        steps.append(step("assigned", at, 1, assigned_by="crm", team="field"))
    attempt_minutes = rng.choice(RESPONSE_MINUTES) if rng.random() < 0.8 else None
    if due_at is not None and rng.random() < 0.5:
        steps.append(step("due_soon", due_at - timedelta(minutes=5)))
    touched_at = None if attempt_minutes is None else mql_at + timedelta(minutes=attempt_minutes)
    if due_at is not None and (touched_at is None or touched_at > due_at):
        steps.append(step("breached", due_at))
    if touched_at is not None and attempt_minutes is not None:
        touches = ["attempt", "contact"] if rng.random() < 0.7 else ["contact"]
        if rng.random() < 0.3:
            touches = touches[:1]
        for number, touch in enumerate(touches):
            wall = attempt_minutes + number * rng.uniform(1, 600)
            at = mql_at + timedelta(minutes=wall)
            steps.append(
                step(
                    "touched",
                    at,
                    number,
                    touch=touch,
                    response_wall_minutes=wall,
                    response_business_minutes=round(wall * rng.uniform(0.3, 1.0), 3),
                    within_target=None if due_at is None else at <= due_at,
                )
            )
    # A retracted MQL's handoff is withdrawn; a few more stand for MQLs a late event retracted
    # after these changes were taken.
    if change["retracted"] or rng.random() < 0.05:
        steps.append(step("withdrawn", mql_at + timedelta(days=rng.uniform(0.1, 5))))
    return steps
