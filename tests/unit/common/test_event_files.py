"""Events files are read as what they are: a byte-order mark skipped, other formats named."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from streams.common.event_files import EventFileError, event_lines, not_json_lines

EVENT = b'{"event_id": "e1", "lead_id": "l1"}'


def test_a_byte_order_mark_is_skipped_on_the_first_line_only(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + EVENT + b"\n" + EVENT + b"\n")
    with event_lines(str(path)) as lines:
        assert list(lines) == [EVENT + b"\n", EVENT + b"\n"]


@pytest.mark.parametrize(
    ("head", "says"),
    [
        (gzip.compress(EVENT, mtime=0), "gzip"),
        (b"PK\x03\x04rest", "zip archive"),
        (EVENT.decode().encode("utf-16"), "UTF-16"),
        (b"  \n[" + EVENT + b"]", "JSON array"),
        (b"\xef\xbb\xbfevent_id;lead_id\n", "CSV"),
        (b"event_id,lead_id,type\ne1,l1,page_view\n", "CSV"),
        (b"event_id\tlead_id\n", "CSV"),
    ],
)
def test_other_formats_are_named(head: bytes, says: str) -> None:
    refusal = not_json_lines(head)
    assert refusal is not None and says in refusal


@pytest.mark.parametrize(
    "head",
    [
        b"",
        b"\n\n",
        EVENT,
        b"\xef\xbb\xbf" + EVENT,
        b"not json, but one bad line among good ones is reported line by line {\n" + EVENT,
        b"garbage\n" + EVENT,
    ],
)
def test_json_lines_and_merely_bad_lines_are_read_line_by_line(head: bytes) -> None:
    assert not_json_lines(head) is None


def test_a_missing_file_is_one_error(tmp_path: Path) -> None:
    with (
        pytest.raises(EventFileError, match=r"cannot read .*missing\.jsonl"),
        event_lines(str(tmp_path / "missing.jsonl")),
    ):
        pass
