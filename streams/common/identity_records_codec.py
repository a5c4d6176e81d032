"""Records of the identity topic, as MessagePack: a known lead's link request, routed to the
identity it names, and a linked identity's summary, routed to its known lead."""

from __future__ import annotations

from typing import Final

import msgpack

from streams.common.codec_parts import summary_in, summary_out
from streams.core.lead import LinkRequest, Summary
from streams.errors import InvalidEventError

IDENTITY_RECORD_FORMAT: Final = 3
"""Version of the identity records' layout; a worker dead-letters a record of another. It
started at 3, the lead state format the records carried before they had their own, so
records in flight across that upgrade still read."""

_SUMMARY: Final = 0
_LINK_REQUEST: Final = 1


def encode_summary(summary: Summary) -> bytes:
    """A linked identity's summary as MessagePack, for the identity topic."""
    packed: bytes = msgpack.packb(
        [IDENTITY_RECORD_FORMAT, _SUMMARY, *summary_out(summary)], use_bin_type=True
    )
    return packed


def encode_link_request(request: LinkRequest) -> bytes:
    """A known lead's link request as MessagePack, for the identity topic."""
    packed: bytes = msgpack.packb(
        [IDENTITY_RECORD_FORMAT, _LINK_REQUEST, *request], use_bin_type=True
    )
    return packed


def decode_identity_record(raw: bytes) -> Summary | LinkRequest:
    """A record of the identity topic; InvalidEventError when it cannot be read."""
    try:
        version, kind, *stored = msgpack.unpackb(raw)
        if version != IDENTITY_RECORD_FORMAT:
            raise InvalidEventError(
                f"identity record format {version}, expected {IDENTITY_RECORD_FORMAT}"
            )
        if kind == _LINK_REQUEST:
            identity, to_id, at, rank, event_id = stored
            return LinkRequest(identity, to_id, at, rank, event_id)
        return summary_in(stored)
    except InvalidEventError:
        raise
    except (msgpack.UnpackException, TypeError, ValueError, KeyError, IndexError) as exc:
        raise InvalidEventError(f"not an identity record: {exc!r}") from None
