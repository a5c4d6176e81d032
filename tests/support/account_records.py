"""Account records built by hand in the contract: several people per company, their stage
changes, people moving between accounts or leaving, account changes that are rewritten at a
higher revision or retracted. The pydantic models define the bytes (`model_dump_json`)."""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from schemas.accounts import ACCOUNT_STAGES, AccountChange, AccountSignal

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
LEAD_PATH = ("subscriber", "lead", "mql", "sql", "opportunity", "customer")
SENIORITIES = ("c_level", "vp", "director", "manager", "individual")


@dataclass
class AccountLog:
    """Every record published, in publication order (a test shuffles and repeats them)."""

    signals: list[bytes] = field(default_factory=list)
    changes: list[bytes] = field(default_factory=list)


def _id(*parts: object) -> str:
    return hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=16).hexdigest()


def account_log(accounts: int = 40, seed: int = 5) -> AccountLog:
    """A log of `accounts` companies with one to six people each."""
    rng = random.Random(seed)
    log = AccountLog()
    names = [f"acme-{n}.example" for n in range(accounts)]
    for n, account in enumerate(names):
        start = T0 + timedelta(days=rng.uniform(0, 40))
        for person in range(rng.randint(1, 6)):
            _person(log, rng, names, account, f"lead-{n}-{person}", start)
        _account_changes(log, rng, account, start)
    return log


def _person(
    log: AccountLog, rng: random.Random, names: list[str], account: str, lead: str, at: datetime
) -> None:
    seniority = rng.choice((None, *SENIORITIES))
    path: list[str | None] = [None, *LEAD_PATH[: rng.randint(1, len(LEAD_PATH))]]
    if rng.random() < 0.15:
        path.append("disqualified")
    revision = 0
    for step, stage in enumerate(path):
        revision += rng.randint(1, 3)  # not every event of the lead changes what accounts read
        at += timedelta(hours=rng.uniform(1, 120))
        if step and rng.random() < 0.1:  # the profile now names another company
            moved_to = rng.choice(names)
            if moved_to != account:
                log.signals.append(_signal(account, lead, revision, at, False, stage, seniority))
                account = moved_to
        log.signals.append(_signal(account, lead, revision, at, True, stage, seniority))
    if rng.random() < 0.05:  # the lead's profile names no company any more
        revision += 1
        log.signals.append(_signal(account, lead, revision, at, False, path[-1], seniority))


def _signal(
    account: str,
    lead: str,
    revision: int,
    at: datetime,
    member: bool,
    stage: str | None,
    seniority: str | None,
) -> bytes:
    return (
        AccountSignal.model_validate(
            {
                "account_id": account,
                "lead_id": lead,
                "revision": revision,
                "occurred_at": at,
                "causation_event_id": _id("event", lead, revision),
                "causation_change_id": _id("change", lead, revision) if stage else None,
                "member": member,
                "stage": stage,
                "seniority": seniority,
                "engagement_score": round(revision * 7.5, 2),
            }
        )
        .model_dump_json()
        .encode()
    )


def _account_changes(log: AccountLog, rng: random.Random, account: str, at: datetime) -> None:
    revision, sequence, stage = 0, 0, None
    for to_stage in ACCOUNT_STAGES[: rng.randint(0, len(ACCOUNT_STAGES))]:
        revision += rng.randint(1, 4)
        at += timedelta(days=rng.uniform(0.5, 30))
        roll = rng.random()
        if roll < 0.2:  # first published with a stale position, then rewritten
            log.changes.append(_change(account, stage, to_stage, at, sequence + 5, revision))
            revision += 1
        elif roll < 0.35:  # a late event: this change no longer happens, another one does
            log.changes.append(_change(account, stage, to_stage, at, sequence, revision))
            revision += 1
            log.changes.append(_change(account, stage, to_stage, at, sequence, revision, True))
            if rng.random() < 0.5:
                break
            at += timedelta(days=rng.uniform(0.5, 10))
        log.changes.append(_change(account, stage, to_stage, at, sequence, revision))
        sequence, stage = sequence + 1, to_stage


def _change(
    account: str,
    from_stage: str | None,
    to_stage: str,
    at: datetime,
    sequence: int,
    revision: int,
    retracted: bool = False,
) -> bytes:
    return (
        AccountChange.model_validate(
            {
                "change_id": _id(account, from_stage, to_stage, at.isoformat()),
                "account_id": account,
                "from_stage": from_stage,
                "to_stage": to_stage,
                "occurred_at": at,
                "rule": f"account.{to_stage}",
                "rules_version": "test",
                "causation_lead_id": f"lead-of-{account}",
                "causation_event_id": _id("event", account, revision),
                "people": sequence + 1,
                "leads": sequence + 1,
                "mqls": sequence,
                "sqls": 0,
                "engagement_score": 10.0 * revision,
                "seniorities": ["director"] * sequence,
                "sequence": sequence,
                "revision": revision,
                "retracted": retracted,
            }
        )
        .model_dump_json()
        .encode()
    )
