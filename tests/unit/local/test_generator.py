"""The sample traffic generator: deterministic, contract-valid, and as messy as it says."""

from __future__ import annotations

from collections import Counter
from datetime import datetime

import orjson

from streams.common.events_codec import decode_event
from streams.common.settings import DEFAULT_MAX_EVENT_BYTES
from streams.local.generator import TrafficShape, generate


def test_the_same_seed_gives_the_same_traffic_and_another_seed_other_traffic() -> None:
    assert generate(150, seed=3) == generate(150, seed=3)
    assert generate(150, seed=3) != generate(150, seed=4)


def test_every_event_meets_the_contract() -> None:
    for document in generate(300, seed=8):
        decode_event(orjson.dumps(document), DEFAULT_MAX_EVENT_BYTES)


def test_late_and_duplicate_deliveries_come_in_the_shares_asked_for() -> None:
    shape = TrafficShape(late_fraction=0.1, duplicate_fraction=0.05)
    documents = generate(1_000, seed=2, shape=shape)
    ids = Counter(d["event_id"] for d in documents)
    duplicated = sum(n - 1 for n in ids.values()) / len(ids)
    assert 0.04 < duplicated < 0.06
    late = 0
    newest: dict[str, datetime] = {}
    for document in documents:
        at = datetime.fromisoformat(document["occurred_at"])
        lead = document["lead_id"]
        if lead in newest and at < newest[lead]:
            late += 1
        newest[lead] = max(at, newest.get(lead, at))
    assert 0.03 < late / len(documents) < 0.12


def test_traffic_without_mess_arrives_in_event_time_order_per_lead() -> None:
    documents = generate(200, seed=6, shape=TrafficShape(late_fraction=0, duplicate_fraction=0))
    assert len({d["event_id"] for d in documents}) == len(documents)
    seen: dict[str, datetime] = {}
    for document in documents:
        lead, at = document["lead_id"], datetime.fromisoformat(document["occurred_at"])
        assert lead not in seen or at >= seen[lead], lead
        seen[lead] = at


def test_people_at_one_company_form_buying_committees() -> None:
    documents = generate(900, seed=1, shape=TrafficShape(people_per_company=3.0))
    domains: dict[str, set[str]] = {}
    for document in documents:
        email = (
            document["properties"].get("email") if document["type"] == "profile_updated" else None
        )
        if email and email.endswith(".com") and "@" in email:
            domains.setdefault(email.rpartition("@")[2], set()).add(document["lead_id"])
    committees = [people for people in domains.values() if len(people) >= 2]
    assert len(committees) > 20
    assert max(len(people) for people in committees) >= 4


def test_some_known_people_browse_on_a_second_device_until_a_visit_there_links_it() -> None:
    traffic = generate(400, seed=3, shape=TrafficShape(anonymous_browsing=0.6))
    devices: dict[str, list[dict[str, object]]] = {}
    for document in traffic:
        anonymous_id = document.get("anonymous_id")
        if isinstance(anonymous_id, str) and anonymous_id.startswith("anon2-"):
            devices.setdefault(anonymous_id, []).append(document)
    assert len(devices) >= 10
    for device, documents in devices.items():
        lead_id = device.removeprefix("anon2-")
        visits = [d for d in documents if d["lead_id"] == device]
        (link,) = {d["event_id"]: d for d in documents if d["lead_id"] == lead_id}.values()
        assert visits and all(str(v["occurred_at"]) < str(link["occurred_at"]) for v in visits)
        assert {v["type"] for v in visits} <= {"page_view", "pricing_page_view"}
        # Known before: its form came before the visits on the second device.
        forms = [d for d in traffic if d["lead_id"] == lead_id and d["type"] == "profile_updated"]
        assert min(str(f["occurred_at"]) for f in forms) < min(
            str(v["occurred_at"]) for v in visits
        )
