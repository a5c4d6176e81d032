"""The `leadflow` console script, run as a user runs it, on generated persona traffic."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import orjson
import pytest

from schemas.stage_changes import StageChange
from streams.common.codecs import decode_stage_change
from streams.replay import current_stages, effective_changes
from tests.factories import event

LEADFLOW = [sys.executable, "-m", "streams"]


def leadflow(
    *args: str, stdin: bytes | None = None, variables: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    """Run the CLI; with `variables`, those are its only LEADFLOW_* variables."""
    environment = None
    if variables is not None:
        inherited = {k: v for k, v in os.environ.items() if not k.upper().startswith("LEADFLOW_")}
        environment = {**inherited, **variables}
    return subprocess.run(
        [*LEADFLOW, *args], input=stdin, env=environment, capture_output=True, timeout=120
    )


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cli") / "events.jsonl"
    result = leadflow("generate", "--leads", "600", "--seed", "11")
    assert result.returncode == 0
    path.write_bytes(result.stdout)
    return path


@pytest.fixture(scope="module")
def replayed(log: Path) -> tuple[bytes, bytes]:
    result = leadflow("replay", str(log))
    assert result.returncode == 0, result.stderr
    return result.stdout, result.stderr


def changes_of(output: bytes) -> list[StageChange]:
    return [decode_stage_change(line) for line in output.splitlines()]


def test_generate_is_deterministic_per_seed(log: Path) -> None:
    again = leadflow("generate", "--leads", "600", "--seed", "11").stdout
    assert again == log.read_bytes()
    assert leadflow("generate", "--leads", "600", "--seed", "12").stdout != again


def test_replay_is_byte_for_byte_repeatable(log: Path, replayed: tuple[bytes, bytes]) -> None:
    assert leadflow("replay", str(log)).stdout == replayed[0]
    assert leadflow("replay", "-", stdin=log.read_bytes()).stdout == replayed[0]


def test_replay_summary_counts_duplicates(log: Path, replayed: tuple[bytes, bytes]) -> None:
    ids = Counter(orjson.loads(line)["event_id"] for line in log.read_bytes().splitlines())
    duplicates = sum(n - 1 for n in ids.values())
    assert duplicates > 0
    assert f"({duplicates} duplicates, 0 bad lines)" in replayed[1].decode()


def test_personas_end_where_the_rules_say(log: Path, replayed: tuple[bytes, bytes]) -> None:
    changes = changes_of(replayed[0])
    live = effective_changes(changes).values()
    emails = {}
    for line in log.read_bytes().splitlines():
        document = orjson.loads(line)
        if "email" in document["properties"]:
            emails[document["lead_id"]] = document["properties"]["email"]
    reached: dict[str, set[str]] = {}
    for change in live:
        reached.setdefault(change.lead_id, set()).add(change.to_stage)
    students = [
        lead for lead, email in emails.items() if email.endswith((".edu", ".ac.uk", ".edu.au"))
    ]
    competitors = [lead for lead, email in emails.items() if email.endswith("rivalfunnel.com")]
    assert students and competitors
    for lead in students + competitors:
        assert reached[lead] == {"subscriber", "disqualified"}, lead
    rules = Counter(c.rule for c in live)
    kinds = Counter(c.mql_kind for c in live if c.to_stage == "mql")
    assert kinds["active"] > 0 and kinds["passive"] > 0
    for rule in (
        "sql.sales_contacted",
        "disqualified.sales",
        "disqualified.exclusion",
        "recycled.sales",
        "customer.deal_won",
        "opportunity.quote_requested",
    ):
        assert rules[rule] > 0, rule


def test_late_events_republish_and_agree_with_the_log_in_event_time_order(
    log: Path, replayed: tuple[bytes, bytes], tmp_path: Path
) -> None:
    changes = changes_of(replayed[0])
    assert len({c.change_id for c in changes}) < len(changes), "the sample has late events"
    documents = [orjson.loads(line) for line in log.read_bytes().splitlines()]
    documents.sort(key=lambda d: d["occurred_at"])
    ordered = tmp_path / "ordered.jsonl"
    ordered.write_bytes(b"\n".join(orjson.dumps(d) for d in documents))
    in_order = changes_of(leadflow("replay", str(ordered)).stdout)
    assert current_stages(changes) == current_stages(in_order)


def test_bad_lines_are_reported_with_their_number_and_do_not_stop_the_run() -> None:
    good = orjson.dumps(event("newsletter_subscribe", lead="l"))
    stdin = b"\n".join(
        [
            b"not json",
            good,
            b'{"event_id":"e2"}',
            b"",
            good.replace(b"newsletter_subscribe", b"nope"),
        ]
    )
    result = leadflow("replay", "-", stdin=stdin)
    assert result.returncode == 0
    assert len(result.stdout.splitlines()) == 1
    errors = result.stderr.decode().splitlines()
    assert errors[0].startswith("line 1: not JSON")
    assert errors[1] == "line 3: missing field 'type'"
    assert errors[2] == "line 5: unknown type 'nope'"


def test_an_unreadable_file_fails_the_run(tmp_path: Path) -> None:
    result = leadflow("replay", str(tmp_path / "missing.jsonl"))
    assert result.returncode == 1
    assert b"cannot read" in result.stderr


def test_explain_names_the_rule_behind_each_change(
    log: Path, replayed: tuple[bytes, bytes]
) -> None:
    sql = next(c for c in changes_of(replayed[0]) if c.to_stage == "sql")
    result = leadflow("explain", sql.lead_id, str(log))
    assert result.returncode == 0
    text = result.stdout.decode()
    assert "sql.sales_contacted" in text and "subscriber.contact" in text


def test_explain_ledger_adds_up_to_the_scores_on_the_stage_change(
    log: Path, replayed: tuple[bytes, bytes]
) -> None:
    mql = next(c for c in changes_of(replayed[0]) if c.rule == "mql.passive_score")
    result = leadflow("explain", mql.lead_id, str(log), "--json", "--at", mql.causation_event_id)
    assert result.returncode == 0, result.stderr
    shown = orjson.loads(result.stdout)
    assert sum(part["points"] for part in shown["fit"]) == shown["fit_score"] == mql.fit_score
    parts = sum(part["decayed_to"] for part in shown["engagement"])
    assert round(parts, 3) == round(shown["engagement_score"], 3) == mql.engagement_score
    printed = leadflow("explain", mql.lead_id, str(log), "--ledger", "--at", mql.causation_event_id)
    assert f"engagement score {mql.engagement_score:.3f}" in printed.stdout.decode()
    missing = leadflow("explain", mql.lead_id, str(log), "--ledger", "--at", "no-such-event")
    assert missing.returncode == 1 and b"no accepted event" in missing.stderr


def test_schemas_export_writes_every_model(tmp_path: Path) -> None:
    result = leadflow("schemas", "export", str(tmp_path))
    assert result.returncode == 0
    names = {p.name for p in tmp_path.iterdir()}
    assert {
        "event.schema.json",
        "stage_change.schema.json",
        "profile_updated.schema.json",
        "account_signal.schema.json",
        "account_change.schema.json",
    } <= names
    schema = orjson.loads((tmp_path / "event.schema.json").read_bytes())
    assert "profile_updated" in schema["discriminator"]["mapping"]


def test_rules_show_prints_the_version_in_force() -> None:
    result = leadflow("rules", "show")
    assert orjson.loads(result.stdout)["rules_version"].startswith("2026.12.6+")


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        (
            "LEADFLOW_TOPICS__PARTITIONS",
            "abc",
            "integer, unable to parse string as an integer (got 'abc')",
        ),
        ("LEADFLOW_TOPICS__PARTITIONS", "0", "greater than or equal to 1 (got '0')"),
        ("LEADFLOW_WORKER__BATCH_SIZE", "-1", "greater than or equal to 1"),
        ("LEADFLOW_WORKER__BATCH_WAIT", "0", "greater than 0"),
        ("LEADFLOW_WORKER__STORE", "redis", "'rocksdb' or 'memory' (got 'redis')"),
        ("LEADFLOW_KAFKA__SECURITY_PROTOCOL", "TLS", "'PLAINTEXT', 'SSL'"),
        ("LEADFLOW_KAFKA__SECURITY_PROTOCOL", "SASL_SSL", "needs sasl_mechanism"),
        ("LEADFLOW_KAFKA__BOOTSTRAP_SERVERS", "garbage", "'garbage' is not host:port"),
        ("LEADFLOW_KAFKA__BOOTSTRAP_SERVERS", "", "needs at least one host:port"),
        ("LEADFLOW_KAFKA__BOOTSTRAP_SERVERS", "a:9092,b:70000", "'b:70000' is not host:port"),
        ("LEADFLOW_COLLECTOR__WRITE_KEYS", "not json", "takes JSON"),
        ("LEADFLOW_COLLECTOR__PORT", "70000", "less than or equal to 65535"),
        (
            "LEADFLOW_MAX_EVENT_BYTES",
            "10GB",
            "integer, unable to parse string as an integer (got '10GB')",
        ),
        (
            "LEADFLOW_PRIVACY__CLEAR_IDENTIFIERS",
            "maybe",
            "valid boolean, unable to interpret input (got 'maybe')",
        ),
        ("LEADFLOW_WORKER__BATCHSIZE", "3", "did you mean LEADFLOW_WORKER__BATCH_SIZE?"),
        (
            "LEADFLOW_WORKER__FETCH_MAX_WAIT",
            "fast",
            "unable to parse string as a number (got 'fast')",
        ),
        ("LEADFLOW_COLLECTOR__PUBLISH_TIMEOUT", "-1", "greater than 0"),
        ("LEADFLOW_CLICKHOUSE__DATABASE", "drop;table", "match pattern"),
    ],
)
def test_a_bad_setting_stops_every_command_with_one_line(
    variable: str, value: str, says: str
) -> None:
    result = leadflow("rules", "show", variables={variable: value})
    assert result.returncode == 1
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"error: invalid settings: {variable.split('__')[0]}"), lines[0]
    assert variable in lines[0] or "needs sasl" in lines[0]
    assert says in lines[0]


def test_a_secret_value_is_never_shown_in_the_error() -> None:
    # A JSON string where a list of write keys is expected: invalid, and the value is a secret.
    variables = {"LEADFLOW_COLLECTOR__WRITE_KEYS": '"hunter2hunter2"'}
    result = leadflow("rules", "show", variables=variables)
    assert result.returncode == 1
    assert b"LEADFLOW_COLLECTOR__WRITE_KEYS" in result.stderr
    assert b"hunter2" not in result.stderr


def test_a_misspelt_variable_is_named_with_the_closest_setting() -> None:
    result = leadflow("rules", "show", variables={"LEADFLOW_PARTITONS": "4"})
    assert result.returncode == 0
    assert result.stderr.decode().splitlines() == [
        "warning: LEADFLOW_PARTITONS is not a leadflow setting "
        "(did you mean LEADFLOW_TOPICS__PARTITIONS?); it is ignored"
    ]


def test_an_unreachable_broker_is_one_line_naming_the_address_and_the_setting() -> None:
    with socket.socket() as closed:  # a port that nothing listens on
        closed.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{closed.getsockname()[1]}"
    result = leadflow("topics", "create", variables={"LEADFLOW_KAFKA__BOOTSTRAP_SERVERS": address})
    assert result.returncode == 1
    assert result.stderr.decode().splitlines() == [
        f"error: no Kafka broker answered at {address} (LEADFLOW_KAFKA__BOOTSTRAP_SERVERS): "
        "is it running, and reachable from here?"
    ]
