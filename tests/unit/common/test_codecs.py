import orjson
import pytest

from streams.common.codecs import decode_event, decode_state
from streams.common.settings import DEFAULT_MAX_EVENT_BYTES
from streams.errors import InvalidEventError, InvalidStateError
from tests.factories import event

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


def test_an_undecodable_state_is_an_error() -> None:
    with pytest.raises(InvalidStateError):
        decode_state(b"[99, 1]")
    with pytest.raises(InvalidStateError):
        decode_state(b"not json")
