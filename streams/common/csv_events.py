"""Events from CSV, the shape of a CRM or analytics export: one event per row.

The header names the columns. `event_id`, `lead_id`, `type` and `occurred_at` are required;
`source`, `campaign` and `anonymous_id` are the event's own fields; every other column is a
property of the event, a dotted name a nested one (`bant.budget`). An empty cell is a value not
given. Each row becomes the JSON event it describes, validated as any other: a number or a
true/false in a cell is read as what the property's type asks for.

    event_id,lead_id,type,occurred_at,reason,job_title,company_size
    e1,crm-42,profile_updated,2026-03-02T09:00:00Z,,VP Marketing,400
    e2,crm-42,sales_disqualified,2026-03-04T10:00:00Z,competitor,,
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import IO, Any, Final

import orjson

REQUIRED_COLUMNS: Final = ("event_id", "lead_id", "type", "occurred_at")
EVENT_COLUMNS: Final = frozenset({*REQUIRED_COLUMNS, "source", "campaign", "anonymous_id"})


def csv_header(first_line: bytes) -> list[str] | None:
    """The columns of a CSV header that names every required column, else None."""
    try:
        text = first_line.decode("utf-8")
    except UnicodeDecodeError:
        return None
    for row in csv.reader([text]):
        columns = [name.strip() for name in row]
        if all(name in columns for name in REQUIRED_COLUMNS):
            return columns
    return None


def csv_event_lines(handle: IO[bytes]) -> Iterator[bytes]:
    """The events of a CSV file (its byte-order mark already skipped) as JSON lines. The
    header yields a blank line, so that each event keeps its row's line number."""
    text = io.TextIOWrapper(handle, encoding="utf-8", errors="replace", newline="")
    rows = csv.reader(text)
    header = next(rows, None)
    if header is None:
        return
    columns = [name.strip().lstrip("\ufeff") for name in header]
    yield b"\n"
    for row in rows:
        if not any(cell.strip() for cell in row):
            yield b"\n"
            continue
        yield orjson.dumps(event_of(columns, row)) + b"\n"


def event_of(columns: list[str], row: list[str]) -> dict[str, Any]:
    """The JSON event a CSV row describes."""
    event: dict[str, Any] = {}
    properties: dict[str, Any] = {}
    for name, cell in zip(columns, row, strict=False):
        value = cell.strip()
        if not value or not name:
            continue
        if name in EVENT_COLUMNS:
            event[name] = value
            continue
        target = properties
        *parents, leaf = name.split(".")
        for parent in parents:
            target = target.setdefault(parent, {})
        target[leaf] = value
    if len(row) > len(columns):
        event["__extra_cells__"] = row[len(columns) :]  # refused by validation, with its line
    event["properties"] = properties
    return event
