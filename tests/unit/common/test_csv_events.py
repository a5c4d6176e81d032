"""CSV event files (a CRM export's shape): each row is the event its header describes."""

from __future__ import annotations

from pathlib import Path

import orjson

from tests.support.command_line import leadflow

HEADER = b"event_id,lead_id,type,occurred_at,source,email,job_title,company_size,bant.budget,reason"
CSV = (
    b"\xef\xbb\xbf"
    + HEADER
    + b"""
e1,crm-42,profile_updated,2026-03-02T09:00:00Z,linkedin,pat@acme.com,VP Marketing,400,,
e2,crm-42,demo_request,2026-03-03T10:00:00Z,,,,,,
e3,crm-42,sales_contacted,2026-03-04T10:00:00Z,,,,,true,

e4,crm-42,sales_disqualified,2026-03-05T10:00:00Z,,,,,,alien
e5,crm-42,sales_disqualified,2026-03-06T10:00:00Z,,,,,,competitor
"""
)

JSON_LINES = [
    {
        "event_id": "e1",
        "lead_id": "crm-42",
        "type": "profile_updated",
        "occurred_at": "2026-03-02T09:00:00Z",
        "source": "linkedin",
        "properties": {"email": "pat@acme.com", "job_title": "VP Marketing", "company_size": 400},
    },
    {
        "event_id": "e2",
        "lead_id": "crm-42",
        "type": "demo_request",
        "occurred_at": "2026-03-03T10:00:00Z",
        "properties": {},
    },
    {
        "event_id": "e3",
        "lead_id": "crm-42",
        "type": "sales_contacted",
        "occurred_at": "2026-03-04T10:00:00Z",
        "properties": {"bant": {"budget": True}},
    },
    {
        "event_id": "e5",
        "lead_id": "crm-42",
        "type": "sales_disqualified",
        "occurred_at": "2026-03-06T10:00:00Z",
        "properties": {"reason": "competitor"},
    },
]


def test_a_csv_file_replays_as_the_json_lines_it_describes(tmp_path: Path) -> None:
    csv_file = tmp_path / "crm-export.csv"
    csv_file.write_bytes(CSV)
    jsonl = tmp_path / "events.jsonl"
    jsonl.write_bytes(b"\n".join(orjson.dumps(d) for d in JSON_LINES) + b"\n")
    from_csv = leadflow("replay", str(csv_file))
    from_json = leadflow("replay", str(jsonl))
    assert from_csv.returncode == 0
    assert from_csv.stdout == from_json.stdout
    stages = [orjson.loads(line)["to_stage"] for line in from_csv.stdout.splitlines()]
    assert stages == ["subscriber", "lead", "mql", "sql", "disqualified"]
    # The bad row keeps its line number in the file (the header is line 1, a blank line 5).
    assert b"line 6: " in from_csv.stderr and b"reason" in from_csv.stderr


def test_a_csv_file_without_the_event_columns_is_refused_in_one_line(tmp_path: Path) -> None:
    csv_file = tmp_path / "contacts.csv"
    csv_file.write_bytes(b"id,email,name\n1,pat@acme.com,Pat\n")
    result = leadflow("replay", str(csv_file))
    assert result.returncode == 1
    assert result.stderr.count(b"\n") == 1
    assert b"without the columns event_id, lead_id, type, occurred_at" in result.stderr
