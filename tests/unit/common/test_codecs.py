import msgpack
import orjson
import pytest

from streams.common import lead_state_codec
from streams.common.events_codec import decode_event
from streams.common.identity_records_codec import (
    IDENTITY_RECORD_FORMAT,
    decode_identity_record,
    encode_link_request,
    encode_summary,
)
from streams.common.lead_state_codec import LEAD_STATE_FORMAT, decode_state
from streams.common.settings import DEFAULT_MAX_EVENT_BYTES
from streams.core.lead import Attribution, LinkRequest, Step, Summary
from streams.core.rules import Rules
from streams.errors import InvalidEventError, InvalidStateError
from tests.support.factories import event

VALID = event("deal_won", amount=10.0, currency="EUR")


def reason(document: object, max_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> str:
    raw = document if isinstance(document, bytes) else orjson.dumps(document)
    with pytest.raises(InvalidEventError) as failure:
        decode_event(raw, max_bytes)
    return failure.value.reason


def test_a_valid_event_decodes() -> None:
    parsed = decode_event(orjson.dumps(VALID), DEFAULT_MAX_EVENT_BYTES)
    assert parsed.type == "deal_won" and parsed.properties.amount == 10.0  # type: ignore[union-attr]


def test_extra_envelope_fields_are_ignored_and_extra_properties_kept() -> None:
    raw = orjson.dumps({**event("page_view", url="/x", color="red"), "ctx": 1})
    parsed = decode_event(raw, DEFAULT_MAX_EVENT_BYTES)
    assert parsed.properties.model_extra == {"color": "red"}


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        (b"{nope", "not JSON: key must be a string at line 1 column 2"),
        (b"[1, 2]", "event: Input should be an object"),
        ({k: v for k, v in VALID.items() if k != "event_id"}, "missing field 'event_id'"),
        ({k: v for k, v in VALID.items() if k != "type"}, "missing field 'type'"),
        ({**VALID, "type": "page_veiw"}, "unknown type 'page_veiw'"),
        (
            {**VALID, "occurred_at": "2026-03-02T09:00:00"},
            "occurred_at: Input should have timezone info",
        ),
        ({**VALID, "occurred_at": "yesterday"}, "occurred_at: Input should be a valid datetime"),
        (
            {**VALID, "properties": {"amount": -1, "currency": "EUR"}},
            "properties.amount: Input should be greater than or equal to 0",
        ),
        ({**VALID, "properties": {"amount": 1}}, "missing field 'properties.currency'"),
        ({**VALID, "lead_id": ""}, "lead_id: String should have at least 1 character"),
    ],
)
def test_invalid_events_are_rejected_with_a_one_line_reason(
    document: object, expected: str
) -> None:
    assert reason(document).startswith(expected)


def test_an_oversized_message_is_rejected_before_parsing() -> None:
    raw = orjson.dumps({**VALID, "properties": {"blob": "x" * 2_000_000}})
    assert reason(raw, max_bytes=65536) == f"message too large: {len(raw)} bytes > 65536"


def test_an_undecodable_state_is_an_error(rules: Rules) -> None:
    with pytest.raises(InvalidStateError, match="state format 99"):
        decode_state(msgpack.packb([99, 1, None, [], [], None, []]), "lead-1", rules)
    with pytest.raises(InvalidStateError):
        decode_state(b"not a state", "lead-1", rules)
    with pytest.raises(InvalidStateError):
        decode_state(msgpack.packb([2, 1]), "lead-1", rules)


def test_stored_name_tables_cover_the_contract_and_only_grow_at_the_end() -> None:
    """A stored state keeps names as their position in these tables: moving one would make
    every stored state read wrong after an upgrade. New names go at the end."""
    from schemas.accounts import ACCOUNT_STAGES
    from schemas.events import EVENT_TYPES
    from schemas.stage_changes import STAGES
    from streams.common.account_state_codec import STORED_ACCOUNT_STAGES
    from streams.common.codec_parts import STORED_EVENT_TYPES, STORED_STAGES

    as_first_stored = (
        (
            "subscriber",
            "lead",
            "mql",
            "sql",
            "opportunity",
            "customer",
            "evangelist",
            "disqualified",
        ),
        (
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
        ),
    )
    assert STORED_STAGES[: len(as_first_stored[0])] == as_first_stored[0]
    assert STORED_EVENT_TYPES[: len(as_first_stored[1])] == as_first_stored[1]
    assert set(STORED_STAGES) == set(STAGES)
    assert set(STORED_EVENT_TYPES) == set(EVENT_TYPES)
    assert STORED_ACCOUNT_STAGES[:3] == ("engaged", "sales_ready", "customer")
    assert set(STORED_ACCOUNT_STAGES) == set(ACCOUNT_STAGES)


def test_a_state_reloads_equal_whatever_its_ids_and_times(rules: Rules) -> None:
    """UUID ids are stored as bytes and other ids as text; whole seconds as seconds and other
    times to the microsecond; before and after the snapshot."""
    import uuid
    from datetime import timedelta

    from streams.common.lead_state_codec import encode_state
    from streams.core.compaction import compact
    from tests.support.factories import BUYER, run

    documents = [
        event(
            "profile_updated", timedelta(days=-30), lead="l", event_id=str(uuid.uuid4()), **BUYER
        ),
        event("page_view", timedelta(days=-29, microseconds=7), lead="l", event_id="ajs-next-1"),
        event("content_download", timedelta(days=-1), lead="l", event_id=str(uuid.uuid4()).upper()),
        event(
            "email_click",
            timedelta(microseconds=123),
            lead="l",
            event_id=str(uuid.uuid4()),
            source="x",
        ),
    ]
    states, _ = run(documents, rules)
    state = compact(states["l"], rules)[1]
    assert state.horizon is not None and len(state.tail) == 2
    assert decode_state(encode_state(state, rules), "l", rules) == state


def test_a_state_with_intent_reloads_equal_and_one_without_stores_nothing_for_it(
    rules: Rules,
) -> None:
    from datetime import timedelta

    from streams.common.lead_state_codec import encode_state
    from streams.core.compaction import compact
    from tests.support.factories import BUYER, run

    documents = [
        event("profile_updated", timedelta(days=-20), lead="l", **BUYER),
        event("pricing_page_view", timedelta(days=-19, microseconds=3), lead="l"),
        event("pricing_page_view", timedelta(days=-1), lead="l"),
        event("email_click", timedelta(0), lead="l"),
    ]
    states, _ = run(documents, rules)
    state = compact(states["l"], rules)[1]
    assert state.horizon is not None and state.base.intent  # the intent is in the snapshot
    assert decode_state(encode_state(state, rules), "l", rules) == state
    plain, _ = run([d for d in documents if d["type"] != "pricing_page_view"], rules)
    without = rules.model_copy(update={"intent_patterns": ()})
    assert len(encode_state(plain["l"], rules)) == len(encode_state(plain["l"], without))


# Builds an account whose tail holds signals that came late (its `moved` set), and a lead
# with intent and a snapshot, then prints their stored bytes.
_ENCODE_STATES = """
from streams.common.account_state_codec import encode_account_state
from streams.common.lead_state_codec import encode_state
from streams.core.account import Signal
from streams.core.accounts import decide_account
from streams.core.compaction import compact
from streams.core.revisions import micros_of
from streams.core.rules import load_rules
from tests.support.factories import BUYER, T0, days, event, run

rules = load_rules()
narrow = rules.model_copy(update={"state": rules.state.model_copy(update={"account_signals": 8})})


def signal(lead, revision, at):
    return Signal(
        "acme.com", lead, revision, micros_of(T0 + days(at)), f"{lead}-{revision}", None,
        True, "lead", "manager", 10.0,
    )


account = None
for day in range(20):
    account = decide_account(account, signal("busy", day + 1, day), narrow).state
for n in range(8):
    decision = decide_account(account, signal(f"late-{n}", 1, 1 + n / 10), narrow)
    assert decision.late
    account = decision.state
assert len(account.moved) == 8
print(encode_account_state(account, narrow).hex())

documents = [
    event("profile_updated", days(-20), lead="l", **BUYER),
    event("pricing_page_view", days(-19), lead="l"),
    event("content_download", days(-2), lead="l", content_category="case_study"),
    event("pricing_page_view", days(-1), lead="l"),
    event("email_click", days(0), lead="l"),
]
leads, _ = run(documents, rules)
print(encode_state(compact(leads["l"], rules)[1], rules).hex())
"""


def test_stored_states_are_the_same_bytes_in_every_process() -> None:
    """Workers and restarts run with different string hash seeds: a state's bytes must not
    depend on the order a set happens to iterate in (one process cannot show this)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[3]
    outputs = set()
    for seed in ("0", "1", "2", "3", "4"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(root)}
        done = subprocess.run(
            [sys.executable, "-c", _ENCODE_STATES],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        outputs.add(done.stdout)
    assert len(outputs) == 1, f"{len(outputs)} different encodings of the same states"


_AT = 1_772_355_600_000_000  # 2026-03-01T09:00:00Z
_REQUEST = LinkRequest("anon-1", "lead-1", _AT, 1, "link-1")
_SUMMARY = Summary(
    "anon-1",
    "lead-1",
    2,
    (Step(_AT, 1, "e-1", "page_view", None, _AT, {"page_view": 3.0}, {"pricing": (_AT,)}),),
    Attribution(_AT, 1, "e-1", "google", None),
)


def test_identity_records_are_the_bytes_records_in_flight_carry() -> None:
    """Workers of two versions share the identity topic during an upgrade: a record must read
    the same on both sides (bytes as written before the format had its own version)."""
    request = "970301a6616e6f6e2d31a66c6561642d31cf00064bf2b1f4240001a66c696e6b2d31"
    summary = (
        "980300a6616e6f6e2d31a66c6561642d31029198cf00064bf2b1f4240001a3652d31a970616765"
        "5f76696577c0cf00064bf2b1f424009201cb40080000000000009192a770726963696e6791cf0006"
        "4bf2b1f4240095cf00064bf2b1f4240001a3652d31a6676f6f676c65c0c2"
    )
    assert encode_link_request(_REQUEST).hex() == request
    assert encode_summary(_SUMMARY).hex() == summary
    assert decode_identity_record(bytes.fromhex(request)) == _REQUEST
    assert decode_identity_record(bytes.fromhex(summary)) == _SUMMARY


def test_identity_records_keep_their_format_when_the_lead_state_format_changes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A new stored lead state layout must not make the identity records in flight unreadable."""
    written = encode_link_request(_REQUEST)
    monkeypatch.setattr(lead_state_codec, "LEAD_STATE_FORMAT", LEAD_STATE_FORMAT + 1)
    assert encode_link_request(_REQUEST) == written
    assert decode_identity_record(written) == _REQUEST


def test_an_identity_record_of_another_format_is_refused() -> None:
    _, *fields = msgpack.unpackb(encode_summary(_SUMMARY))
    other = msgpack.packb([IDENTITY_RECORD_FORMAT + 1, *fields])
    with pytest.raises(InvalidEventError, match="identity record format"):
        decode_identity_record(other)
    with pytest.raises(InvalidEventError, match="not an identity record"):
        decode_identity_record(b"\x93\x03")
