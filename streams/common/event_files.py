"""Reading event logs from files: JSON lines, one event object per line, or CSV with a header
naming the event's columns (`streams.common.csv_events`).

A file is read as what it is: a UTF-8 byte-order mark is skipped, and a file that is plainly
another format (gzip, a JSON array, CSV without those columns, UTF-16 text) is refused with one
line saying what it looks like and how to turn it into JSON lines, instead of one error per
line.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

from streams.common.csv_events import REQUIRED_COLUMNS, csv_event_lines, csv_header
from streams.errors import LeadflowError

UTF8_BOM = b"\xef\xbb\xbf"
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
_GZIP_MAGIC = b"\x1f\x8b"
_ZIP_MAGIC = b"PK\x03\x04"
# Enough of the file to see its first line in all but absurd cases.
_SNIFF_BYTES = 64 * 1024


class EventFileError(LeadflowError):
    """An events file cannot be read, or is not JSON lines; the message says what to do."""


@contextmanager
def event_lines(name: str) -> Iterator[Iterator[bytes]]:
    """The lines of the events file `name` ('-' is stdin), its byte-order mark skipped.

    Raises EventFileError when the file cannot be opened or is plainly not JSON lines.
    """
    if name == "-":
        yield _checked_lines(sys.stdin.buffer, "standard input")
        return
    try:
        handle = open(name, "rb")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise EventFileError(f"cannot read {name}: {exc.strerror}") from None
    with handle:
        yield _checked_lines(handle, name)


def _checked_lines(handle: IO[bytes], name: str) -> Iterator[bytes]:
    head = _peek(handle)
    if csv_header(_first_line(head)) is not None:
        return csv_event_lines(handle)
    refusal = not_json_lines(head)
    if refusal is not None:
        raise EventFileError(f"{name} {refusal}")
    return _lines_without_bom(handle)


def _first_line(head: bytes) -> bytes:
    return head.removeprefix(UTF8_BOM).split(b"\n", 1)[0].rstrip(b"\r")


def _peek(handle: IO[bytes]) -> bytes:
    peek = getattr(handle, "peek", None)
    if peek is None:  # pragma: no cover - every binary file and stdin buffer has peek
        return b""
    head: bytes = peek(_SNIFF_BYTES)[:_SNIFF_BYTES]
    return head


def _lines_without_bom(handle: IO[bytes]) -> Iterator[bytes]:
    first = True
    for line in handle:
        if first:
            first = False
            if line.startswith(UTF8_BOM):
                line = line[len(UTF8_BOM) :]
        yield line


def not_json_lines(head: bytes) -> str | None:
    """What the start of a file looks like when it is plainly not JSON lines, else None.

    Only formats that can be told with certainty are refused: a file whose first line is merely a
    bad event is read line by line, and its bad lines are reported one by one.
    """
    if head.startswith(_GZIP_MAGIC):
        return (
            "looks like a gzip file, not JSON lines: decompress it first "
            "(gunzip -c FILE | leadflow COMMAND -)"
        )
    if head.startswith(_ZIP_MAGIC):
        return "looks like a zip archive, not JSON lines: extract the JSON-lines file first"
    if head.startswith(_UTF16_BOMS):
        return "looks like UTF-16 text: save it as UTF-8 JSON lines (one event object per line)"
    text = head.removeprefix(UTF8_BOM).lstrip()
    if not text:
        return None
    first_line = text.split(b"\n", 1)[0].strip()
    if text.startswith(b"["):
        return (
            "looks like a JSON array, not JSON lines: write one event object per line "
            "(jq -c '.[]' FILE > events.jsonl)"
        )
    if first_line.startswith(b"{"):
        return None
    shown = first_line[:60].decode("utf-8", "replace")
    has_separator = any(separator in first_line for separator in (b",", b"\t", b";"))
    if has_separator and b"{" not in first_line:
        return (
            f"looks like CSV (first line: {shown!r}) without the columns "
            f"{', '.join(REQUIRED_COLUMNS)}: name them in its header (other columns are the "
            "event's properties; docs/contract.md), or write one JSON event object per line"
        )
    return None
