"""What a lead's and an account's history costs: concentrated against spread, in the same run.

- core, one lead: 20,000 page views of one lead (one every 30 s) against 200 leads of 100;
- core, one account: 400 people at one company against 100 companies of 4 (a profile and 20
  engagement events each), in event-time order and person by person (a CRM import, or a
  backlog drained one partition at a time);
- the live worker: ordinary generated traffic alone, against the same traffic with a heavy lead
  and a big account added; and the largest changelog record each table wrote.

Each concentrated case is printed as a ratio to its spread baseline (goal >= 0.8).
"""

from __future__ import annotations

import gc
import tempfile
import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from kafka import KafkaConsumer, TopicPartition

from bench.stream import _end_to_end, _settings
from schemas.events import EVENT_ADAPTER, Event
from streams.common.account_state_codec import encode_account_state
from streams.common.kafka_clients import create_topics
from streams.common.lead_state_codec import encode_state
from streams.common.publish import publish_events
from streams.common.settings import DEFAULT_MAX_EVENT_BYTES
from streams.common.stage_changes_codec import encode_account_change
from streams.core.account import AccountStageChange, AccountState
from streams.core.accounts import decide_account
from streams.core.compaction import FINGERPRINT_BYTES, compact
from streams.core.lead import LeadStageChange, LeadState
from streams.core.qualify import qualify
from streams.core.rules import Rules, load_rules
from streams.local.broker import LocalBroker
from streams.local.generator import account_events, generate, lead_events
from streams.offline.replay import Replayer, account_changes_in_effect

GOAL = 0.8


def _decoded(documents: Iterable[dict[str, Any]]) -> list[Event]:
    return [EVENT_ADAPTER.validate_python(document) for document in documents]


def core_rate(events: list[Event], rules: Rules, accounts: bool, rounds: int = 3) -> float:
    """Events per second through the core (lead and, with `accounts`, account side), best of
    `rounds`."""
    best = float("inf")
    for _ in range(rounds):
        leads: dict[str, LeadState] = {}
        states: dict[str, AccountState] = {}
        gc.collect()
        gc.disable()
        started = time.perf_counter()
        for event in events:
            qualified = qualify(leads.get(event.lead_id), event, rules, accounts)
            leads[event.lead_id] = qualified.state
            for signal in qualified.signals:
                states[signal.account_id] = decide_account(
                    states.get(signal.account_id), signal, rules
                ).state
        best = min(best, time.perf_counter() - started)
        gc.enable()
    return len(events) / best


def _ratio_line(label: str, concentrated: float, spread: float) -> str:
    ratio = concentrated / spread
    return (
        f"  {label:<44}{concentrated:>9,.0f} vs {spread:>9,.0f} events/s  "
        f"({ratio:.2f} of spread; goal >= {GOAL})"
    )


def _largest(bootstrap: str, topic: str) -> tuple[int, int]:
    """(largest value, records) of a whole topic; it reads until nothing new arrives."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        consumer.assign([TopicPartition(topic, p) for p in partitions])
        consumer.seek_to_beginning()
        largest = records = 0
        quiet_until = time.monotonic() + 2
        while time.monotonic() < quiet_until:
            for batch in consumer.poll(timeout_ms=200, max_records=10_000).values():
                quiet_until = time.monotonic() + 2
                for record in batch:
                    records += 1
                    largest = max(largest, len(record.value or b""))
        return largest, records
    finally:
        consumer.close()


def _live(bootstrap: str, workdir: Path, documents: list[dict[str, Any]]) -> tuple[float, str]:
    """Events/s of one worker (with accounts) draining `documents` from a backlog, until its
    stage changes and account changes in effect are those of replay; and its largest
    changelog records."""
    rules = load_rules()
    replayed = list(
        Replayer(rules, DEFAULT_MAX_EVENT_BYTES, accounts=True).run(
            orjson.dumps(d) for d in documents
        )
    )
    expected = sum(1 for item in replayed if isinstance(item, LeadStageChange))
    expected_accounts = len(
        account_changes_in_effect(
            orjson.loads(encode_account_change(item))
            for item in replayed
            if isinstance(item, AccountStageChange)
        )
    )
    settings = _settings(bootstrap, workdir)
    create_topics(settings)
    publish_events(documents, settings)
    seconds = _end_to_end(settings, workdir, expected, expected_accounts)
    app = settings.worker.app_id
    leads, lead_records = _largest(bootstrap, f"{app}-leads-changelog")
    accounts, account_records = _largest(bootstrap, f"{app}-accounts-changelog")
    records = (
        f"largest changelog record: lead {leads:,} bytes (of {lead_records:,}), "
        f"account {accounts:,} bytes (of {account_records:,})"
    )
    return len(documents) / seconds, records


def main(quick: bool = False) -> None:
    rules = load_rules()
    heavy_events = 5_000 if quick else 20_000
    print("state: concentrated history against spread, best of 3 rounds (core), one core")
    one_lead = _decoded(lead_events(1, heavy_events, "bot"))
    many_leads = _decoded(lead_events(heavy_events // 100, 100, "lead"))
    print(
        _ratio_line(
            f"one lead of {heavy_events:,} vs {heavy_events // 100} of 100",
            core_rate(one_lead, rules, accounts=False),
            core_rate(many_leads, rules, accounts=False),
        )
    )
    people = 100 if quick else 400
    for by_person, order in ((False, "event-time order"), (True, "person by person")):
        big = _decoded(account_events(1, people, by_person))
        small = _decoded(account_events(people // 4, 4, by_person))
        print(
            _ratio_line(
                f"one account of {people} vs {people // 4} of 4, {order}",
                core_rate(big, rules, accounts=True),
                core_rate(small, rules, accounts=True),
            )
        )
    leads = 300 if quick else 1_000
    normal = generate(leads, seed=12)
    heavy = [
        *lead_events(1, heavy_events, "bot"),
        *account_events(1, people, by_person=True),
    ]
    workdir = Path(tempfile.mkdtemp(prefix="leadflow-bench-state-"))
    print(
        f"state, live worker with accounts: {len(normal):,} generated events, then the same "
        f"with {len(heavy):,} more of one lead ({heavy_events:,}) and one account ({people} "
        "people), published before the worker starts"
    )
    with LocalBroker(log_path=workdir / "broker.log") as broker:
        spread, spread_records = _live(broker.bootstrap_servers, workdir, normal)
        mixed = sorted(
            [*normal, *heavy], key=lambda d: (str(d["occurred_at"])[:19], str(d["event_id"]))
        )
        concentrated, records = _live(broker.bootstrap_servers, workdir, mixed)
    print(_ratio_line("with the heavy lead and the big account", concentrated, spread))
    print(f"  ordinary traffic alone: {spread_records}")
    print(f"  with them: {records} (goal: a lead's under 16 KB)")
    sizes_of_heavy_lead(rules, heavy_events)
    long_history(rules, 5_000 if quick else 20_000, 50 if quick else 200)


def long_history(rules: Rules, events: int, sales: int) -> None:
    """What a lead with a year of history keeps, `sales` of its events sales activities, and
    what one more fact dated on its first day costs (it is applied, exactly)."""
    start = datetime(2025, 1, 1, tzinfo=UTC)
    step = timedelta(days=365) / events
    every = events // sales
    documents = [
        {
            "event_id": f"long-{n}",
            "lead_id": "long",
            "type": "sales_contacted" if n % every == every - 1 else "page_view",
            "occurred_at": (start + step * n).isoformat(),
            "properties": {},
        }
        for n in range(1, events)
    ]
    profile = {"email": "pat@example.com", "job_title": "VP Marketing", "company_size": 400}
    documents[:0] = [
        {
            "event_id": "long-0",
            "lead_id": "long",
            "type": "profile_updated",
            "occurred_at": start.isoformat(),
            "properties": profile,
        },
        {
            "event_id": "long-demo",
            "lead_id": "long",
            "type": "demo_request",
            "occurred_at": (start + timedelta(days=2)).isoformat(),
            "properties": {},
        },
    ]
    state: LeadState | None = None
    for event in _decoded(documents):
        state = qualify(state, event, rules, False).state
    assert state is not None
    stored = encode_state(state, rules)
    late = _decoded(
        [
            {
                "event_id": "long-late",
                "lead_id": "long",
                "type": "sales_disqualified",
                "occurred_at": (start + timedelta(hours=1)).isoformat(),
                "properties": {"reason": "competitor"},
            }
        ]
    )[0]
    started = time.perf_counter()
    rounds = 20
    for _ in range(rounds):
        qualified = qualify(state, late, rules, False)
    took = (time.perf_counter() - started) / rounds
    past = compact(state, rules)[1].past
    print(
        f"  a lead of {events:,} events over a year, {sales} of them sales activities: "
        f"{len(stored):,} bytes stored ({len(past.kept)} stage-deciding events kept with "
        f"their engagement, {len(past.seen):,} fingerprints of {FINGERPRINT_BYTES} bytes); a "
        "disqualification "
        f"dated its first day is applied in {took * 1000:.1f} ms and retracts "
        f"{sum(c.retracted for c in qualified.changes)} changes"
    )


def sizes_of_heavy_lead(rules: Rules, events: int) -> None:
    """The stored size of the heavy lead and the big account after the core run."""
    leads: dict[str, LeadState] = {}
    for event in _decoded(lead_events(1, events, "bot")):
        leads[event.lead_id] = qualify(leads.get(event.lead_id), event, rules, False).state
    (bot,) = leads.values()
    states: dict[str, AccountState] = {}
    leads = {}
    for event in _decoded(account_events(1, 100, by_person=True)):
        qualified = qualify(leads.get(event.lead_id), event, rules, True)
        leads[event.lead_id] = qualified.state
        for signal in qualified.signals:
            states[signal.account_id] = decide_account(
                states.get(signal.account_id), signal, rules
            ).state
    (account,) = states.values()
    print(
        f"  stored state: the lead of {events:,} events {len(encode_state(bot, rules)):,} bytes; "
        f"an account of 100 people {len(encode_account_state(account, rules)):,} bytes "
        f"({len(encode_account_state(account, rules)) / 100:,.0f} per person)"
    )
