"""The `leadflow` console script, run as a user runs it, on generated persona traffic."""

from __future__ import annotations

import gzip
import os
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import orjson
import pytest

from schemas.stage_changes import StageChange
from streams.offline.replay import effective_changes
from tests.support.command_line import LEADFLOW, leadflow
from tests.support.factories import event
from tests.support.outcomes import current_stages, decode_stage_change

SHIPPED_RULES = Path(__file__).parents[2] / "streams" / "core" / "rules.toml"


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
    assert orjson.loads(result.stdout)["rules_version"].startswith("2026.12.7+")


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
    result = leadflow(
        "topics",
        "create",
        variables={
            "LEADFLOW_KAFKA__BOOTSTRAP_SERVERS": address,
            "LEADFLOW_KAFKA__BOOTSTRAP_TIMEOUT_SECONDS": "3",  # the clients' wait, kept short
        },
    )
    assert result.returncode == 1
    assert result.stderr.decode().splitlines() == [
        f"waiting for the Kafka broker at {address} (LEADFLOW_KAFKA__BOOTSTRAP_SERVERS)...",
        f"error: no Kafka broker answered at {address} (LEADFLOW_KAFKA__BOOTSTRAP_SERVERS): "
        "is it running, and reachable from here?",
    ]


# A new user's first hour: input read as what it is, and failures that say what to do.


def test_a_byte_order_mark_is_read_as_what_it_is(log: Path, tmp_path: Path) -> None:
    with_bom = tmp_path / "bom.jsonl"
    with_bom.write_bytes(b"\xef\xbb\xbf" + log.read_bytes())
    plain, marked = leadflow("replay", str(log)), leadflow("replay", str(with_bom))
    assert marked.returncode == 0
    assert marked.stdout == plain.stdout
    assert marked.stderr == plain.stderr
    first_lead = orjson.loads(log.read_bytes().splitlines()[0])["lead_id"]
    first_event = orjson.loads(log.read_bytes().splitlines()[0])["event_id"]
    explained = leadflow("explain", first_lead, str(with_bom), "--json", "--at", first_event)
    assert explained.returncode == 0, explained.stderr


@pytest.mark.parametrize(
    ("name", "content", "says"),
    [
        ("events.jsonl.gz", gzip.compress(b'{"a": 1}\n', mtime=0), "looks like a gzip file"),
        ("events.json", b'[\n {"event_id": "e1"},\n {"event_id": "e2"}\n]\n', "a JSON array"),
        ("events.csv", b"event_id,lead_id,type\ne1,l1,page_view\n", "looks like CSV"),
        ("utf16.jsonl", '{"a": 1}\n'.encode("utf-16"), "UTF-16"),
    ],
)
@pytest.mark.parametrize("command", ["replay", "whatif", "publish"])
def test_a_file_that_is_not_json_lines_gets_one_line_and_fails(
    tmp_path: Path, name: str, content: bytes, says: str, command: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    arguments = {
        "replay": ["replay", str(path)],
        "whatif": ["whatif", "--rules", str(SHIPPED_RULES), str(path)],
        # Checked before any broker is asked: the address is never reached.
        "publish": ["publish", str(path)],
    }[command]
    result = leadflow(*arguments, variables={"LEADFLOW_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:1"})
    assert result.returncode == 1
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"error: {path} ") and says in lines[0], lines[0]


def test_a_run_in_which_nothing_was_valid_fails_and_counts_the_bad_lines(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"event_id": "x"}\n' * 51)
    replayed = leadflow("replay", str(bad))
    assert replayed.returncode == 1
    assert replayed.stderr.decode().splitlines()[-1] == (
        f"error: no valid event in {bad}: all 51 lines are bad"
    )
    compared = leadflow("whatif", "--rules", str(SHIPPED_RULES), str(bad))
    assert compared.returncode == 1
    assert "0 events (51 lines, 51 bad) of 0 leads" in compared.stdout.decode()
    assert "51 of 51 lines were bad" in compared.stderr.decode()
    assert leadflow("replay", "-", stdin=b"").returncode == 1


def test_whatif_counts_events_and_bad_lines_apart(log: Path, tmp_path: Path) -> None:
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_bytes(log.read_bytes() + b"not json\n")
    lines = len(log.read_bytes().splitlines()) + 1
    result = leadflow("whatif", "--rules", str(SHIPPED_RULES), str(mixed))
    assert result.returncode == 0, result.stderr
    assert f"{lines - 1} events ({lines} lines, 1 bad) of 600 leads" in result.stdout.decode()
    assert f"1 of {lines} lines were bad" in result.stderr.decode()


@pytest.mark.parametrize("command", [["replay"], ["generate", "--leads", "3000"]])
def test_a_reader_that_stops_early_ends_the_command_quietly(log: Path, command: list[str]) -> None:
    arguments = [*command, str(log)] if command == ["replay"] else command
    process = subprocess.Popen(
        [*LEADFLOW, *arguments], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert process.stdout is not None and process.stderr is not None
    assert process.stdout.readline()  # `| head -1`: one line, then the pipe is closed
    process.stdout.close()
    errors = process.stderr.read()
    assert process.wait(timeout=60) == 0, errors
    assert b"Traceback" not in errors and b"Broken pipe" not in errors


@pytest.mark.integration  # the embedded ClickHouse
def test_report_before_anything_was_projected_says_what_to_run(tmp_path: Path) -> None:
    variables = {"LEADFLOW_CLICKHOUSE__URL": f"chdb://{tmp_path / 'clickhouse'}"}
    result = leadflow("report", variables=variables)
    assert result.returncode == 1
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1, lines
    assert "nothing was projected into funnel" in lines[0]
    assert "leadflow project" in lines[0]


@pytest.mark.parametrize("command", ["report", "whatif"])
def test_html_into_a_missing_folder_fails_before_any_work(
    log: Path, tmp_path: Path, command: str
) -> None:
    target = tmp_path / "no-such-folder" / "page.html"
    arguments = {
        "report": ["report", "--html", str(target)],
        "whatif": ["whatif", "--rules", str(SHIPPED_RULES), str(log), "--html", str(target)],
    }[command]
    result = leadflow(*arguments)
    assert result.returncode == 1
    assert result.stdout == b""
    assert result.stderr.decode().splitlines() == [
        f"error: cannot write {target} (--html): the folder {target.parent} does not exist; "
        "create it first or give another path"
    ]


def test_help_reads_as_sentences() -> None:
    listing = leadflow("--help").stdout.decode()
    commands = listing.split("Commands:")[1].splitlines()
    assert all(not line or (line.startswith("  ") and "..." not in line) for line in commands)
    for command in ("replay", "explain", "whatif", "report", "rebuild", "generate", "project"):
        shown = leadflow(command, "--help").stdout.decode()
        assert "<bool>" not in shown, command


def test_every_option_and_argument_says_what_it_is() -> None:
    import typer.main

    from streams.cli import app

    root = typer.main.get_command(app)
    undescribed = []
    for name, command in root.commands.items():  # type: ignore[attr-defined]
        for sub_name, sub in getattr(command, "commands", {name: command}).items():
            for param in sub.params:
                if not getattr(param, "help", None) and not getattr(param, "hidden", False):
                    undescribed.append(f"{sub_name} {param.name}")
    assert undescribed == []


_CLICKHOUSE_SCRIPT = """
import sys
from projections.clickhouse import connect, migrate
from streams.common.settings import load_settings
settings = load_settings()
client = connect(settings.clickhouse)
if sys.argv[1] == "seed":
    migrate(client, "funnel")
    client.command("INSERT INTO funnel.stage_changes (change_id, lead_id) VALUES ('c1', 'l1')")
print(client.query("SELECT count() FROM funnel.stage_changes").result_rows[0][0])
"""


@pytest.mark.integration  # the embedded ClickHouse
def test_rebuild_without_a_broker_leaves_the_projections_as_they_were(tmp_path: Path) -> None:
    with socket.socket() as closed:  # a port that nothing listens on
        closed.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{closed.getsockname()[1]}"
    variables = {
        "LEADFLOW_CLICKHOUSE__URL": f"chdb://{tmp_path / 'clickhouse'}",
        "LEADFLOW_KAFKA__BOOTSTRAP_SERVERS": address,
        "LEADFLOW_KAFKA__BOOTSTRAP_TIMEOUT_SECONDS": "3",  # the clients' wait, kept short
        "LEADFLOW_PROJECTOR__TEMP_DIR": str(tmp_path / "spool"),
        "LEADFLOW_PRIVACY__HASH_KEY": "a-test-key-of-some-length",
    }
    environment = {**os.environ, **variables}

    def rows(step: str) -> bytes:
        run = [sys.executable, "-c", _CLICKHOUSE_SCRIPT, step]
        return subprocess.run(run, env=environment, capture_output=True, check=True).stdout

    assert rows("seed").strip() == b"1"
    result = leadflow("rebuild", variables=variables)
    assert result.returncode == 1
    assert f"no Kafka broker answered at {address}".encode() in result.stderr
    assert b"Traceback" not in result.stderr
    assert rows("count").strip() == b"1"


def test_explain_counts_the_bad_lines_of_its_lead(log: Path, tmp_path: Path) -> None:
    first = orjson.loads(log.read_bytes().splitlines()[0])
    broken = tmp_path / "broken.jsonl"
    bad = orjson.dumps({**first, "event_id": "bad-1", "type": "nope"})
    broken.write_bytes(log.read_bytes() + bad + b"\n")
    result = leadflow("explain", first["lead_id"], str(broken))
    assert result.returncode == 0, result.stderr
    assert "1 of the lines naming this lead were bad" in result.stderr.decode()
