"""The README's recipe "Run the pipeline by hand", run as a user runs it.

The commands come from README.md itself (the ```sh block after the `readme-recipe` marker), in
their order: the long-running ones (`leadflow broker`, `worker`, `collect`) in the background, as
if each had its terminal, the others one after the other in a shell whose variables carry over
(the README runs its `export` lines in every terminal). The test waits where a user waits: for
the broker's "ready" line, the worker's partitions (/health), the collector's /health, and
before `leadflow project --until-caught-up`, for the worker to have published the stage changes
of the published log.

Two departures from a user's terminal, both so that the run meets nothing else on the machine:
the README's ports (9092, 6066 and 8088, the defaults) become free ones, in the lines and in the
settings the README leaves at their defaults; and the working directory is a temporary one (the
recipe only writes there: `events.jsonl` and `.leadflow/`).

The recipe carries no Faust tuning for the local broker: with the worker's defaults (a 6 s
session timeout, 1 s heartbeats) it owns its partitions about 6 s after it starts, and the
stage changes of the published log are all there about a second after `publish` (measured
here; the harness's 10 ms fetch wait would only shorten that second).
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pytest
from pydantic import SecretStr

from projections.privacy import lead_id_for_storage
from streams.common.settings import CollectorSettings, PrivacySettings, WorkerSettings
from streams.core.rules import Rules
from streams.local.broker import free_port
from streams.local.processes import LeadflowProcess, TopicReader, WorkerProcess
from tests.support.harness import difference, effective, replay_bytes, settings_from
from tests.support.waiting import wait_for

README = Path(__file__).resolve().parents[2] / "README.md"
MARKER = "<!-- readme-recipe:"
LONG_RUNNING = re.compile(r"\bleadflow (broker|worker|collect)\b")
TRACK_CALL = re.compile(r"\bcurl\b.*/v1/track\b.*-d '(\{.*\})'")
PUBLISH = re.compile(r"\bleadflow publish (\S+)")
PROJECT = re.compile(r"\bleadflow project\b")
REPORT = re.compile(r"\bleadflow report\b")
STEPS = {"track": TRACK_CALL, "publish": PUBLISH, "project": PROJECT, "report": REPORT}
README_PORTS = {"broker": 9092, "worker": 6066, "collect": 8088}
MQLS_REACHED = re.compile(r"^│\s*mql\s*│\s*(\d+)\s*│", re.MULTILINE)


def recipe_commands(readme: str) -> list[str]:
    """The commands of the marked block: continued lines joined, comments and blanks left out."""
    _, marker, after = readme.partition(MARKER)
    assert marker, f"README.md has no {MARKER} ... --> marker"
    block = re.match(r"[^\n]*\n```sh\n(.*?)\n```", after, re.DOTALL)
    assert block, "the readme-recipe marker must stand right before a ```sh block"
    lines = block.group(1).replace("\\\n", " ").splitlines()
    return [line for line in lines if line.strip() and not line.lstrip().startswith("#")]


def with_free_ports(command: str, ports: dict[str, int]) -> str:
    for name, readme_port in README_PORTS.items():
        command = re.sub(rf"\b{readme_port}\b", str(ports[name]), command)
    return command


@dataclass
class Terminals:
    """The recipe's terminals: one environment that `export` lines change for all of them,
    background processes for the commands that run until Ctrl-C."""

    cwd: Path
    logs: Path
    env: dict[str, str]
    background: list[LeadflowProcess] = field(default_factory=list)

    def run(self, command: str, timeout: float = 120) -> str:
        """Run `command` to its end (it must succeed); keep the variables it exported."""
        exported = self.logs / "exported.env"
        script = f"set -eo pipefail\n{command}\nenv -0 > {shlex.quote(str(exported))}\n"
        done = subprocess.run(
            ["bash", "-c", script],
            cwd=self.cwd,
            env=self.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
        )
        output = done.stdout.decode() + done.stderr.decode()
        assert done.returncode == 0, f"`{command}` exited with {done.returncode}:\n{output}"
        variables = (item.partition("=") for item in exported.read_text().split("\0") if item)
        self.env = {name: value for name, _, value in variables if name not in {"_", "SHLVL"}}
        return done.stdout.decode()

    def start(self, command: str, name: str) -> LeadflowProcess:
        """Start `command` in the background, in a process group of its own."""
        log_path = self.logs / f"{name}.log"
        started = LeadflowProcess(args=[command], env=self.env, log_path=log_path)
        started.process = subprocess.Popen(
            ["bash", "-c", command],
            cwd=self.cwd,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=log_path.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.background.append(started)
        return started

    def stop(self) -> None:
        """Ctrl-C in every terminal, the last started first: SIGINT to the process group, as
        a terminal sends it (SIGKILL after 30 s)."""
        for started in reversed(self.background):
            process = started.process
            assert process is not None
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGINT)
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()


@pytest.fixture
def terminals(tmp_path: Path) -> Iterator[Terminals]:
    cwd, logs = tmp_path / "cwd", tmp_path / "logs"
    cwd.mkdir()
    logs.mkdir()
    # A user's shell: no LEADFLOW_* of the developer's, and `.venv/bin` on the PATH.
    env = {name: value for name, value in os.environ.items() if not name.startswith("LEADFLOW_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    opened = Terminals(cwd=cwd, logs=logs, env=env)
    yield opened
    opened.stop()


def test_the_readme_ports_are_the_defaults_the_test_replaces() -> None:
    assert WorkerSettings.model_fields["web_port"].default == README_PORTS["worker"]
    assert CollectorSettings.model_fields["port"].default == README_PORTS["collect"]


def test_the_readme_recipe_runs_the_pipeline_from_broker_to_report(
    terminals: Terminals, rules: Rules
) -> None:
    ports = free_ports_for_the_readme()
    terminals.env["LEADFLOW_WORKER__WEB_PORT"] = str(ports["worker"])
    terminals.env["LEADFLOW_COLLECTOR__PORT"] = str(ports["collect"])
    published: list[Path] = []
    outputs: dict[str, tuple[re.Match[str], str]] = {}
    for line in recipe_commands(README.read_text()):
        command = with_free_ports(line, ports)
        if started := LONG_RUNNING.search(command):
            name = started.group(1)
            wait_until_ready(terminals.start(command, name), name, ports[name])
            outputs[name] = (started, "")
            continue
        if PROJECT.search(command):
            wait_for_stage_changes(terminals.env, published, rules)
        output = terminals.run(command)
        for step, pattern in STEPS.items():
            if found := pattern.search(command):
                outputs[step] = (found, output)
        if found := PUBLISH.search(command):
            published.append(terminals.cwd / found.group(1))
    assert outputs.keys() == {"broker", "worker", "collect", *STEPS}, "a step is missing"

    track_call, answer = outputs["track"]
    assert orjson.loads(answer) == {"success": True}
    tracked = orjson.loads(track_call.group(1))
    report = outputs["report"][1]
    mqls = MQLS_REACHED.search(report)
    assert mqls, f"`leadflow report` printed no funnel with an mql row:\n{report}"
    assert int(mqls.group(1)) == leads_reaching_mql(published, rules) > 0, report
    assert projected_event(terminals, tracked["messageId"]) == {
        "lead_id": hashed(terminals.env, tracked["userId"]),
        "type": rules.collector.track_events.get(tracked["event"]),
    }


def free_ports_for_the_readme() -> dict[str, int]:
    """A free port for each of the README's, no two alike."""
    while True:
        ports = {name: free_port() for name in README_PORTS}
        if len(set(ports.values())) == len(ports):
            return ports


def wait_until_ready(started: LeadflowProcess, name: str, port: int) -> None:
    """What a user waits for before the next command: the broker's "ready" line, the
    worker's partitions, the collector's answer."""
    if name == "worker":
        worker = WorkerProcess(
            env=started.env, log_path=started.log_path, port=port, process=started.process
        )
        worker.wait_assigned(timeout=90)
        return

    def ready() -> bool:
        assert not started.exited, f"`{started.args[0]}` exited (log: {started.log_path})"
        if name == "broker":
            return "broker ready" in started.log_path.read_text()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                return True
        except OSError:
            return False

    wait_for(ready, bool, timeout=60, what=f"`leadflow {name}` to be ready")


def wait_for_stage_changes(env: dict[str, str], logs: list[Path], rules: Rules) -> None:
    """Wait until the stage-changes topic holds, for the leads of the published logs, what
    `leadflow replay` gives for them (the README asks a user to give the worker a moment)."""
    documents = [orjson.loads(line) for log in logs for line in log.read_bytes().splitlines()]
    expected = effective(replay_bytes(documents, rules))
    leads = {document["lead_id"] for document in documents}
    settings = settings_from({k: v for k, v in env.items() if k.startswith("LEADFLOW_")})
    topic = settings.topics.stage_changes
    reader = TopicReader(settings.kafka.bootstrap_servers, topic, settings.topics.partitions)
    try:
        wait_for(
            lambda: difference(
                {
                    change_id: value
                    for change_id, value in effective(reader.values()).items()
                    if orjson.loads(value)["lead_id"] in leads
                },
                expected,
            ),
            lambda diff: diff is None,
            timeout=60,
            what="the worker's stage changes of the published events",
        )
    finally:
        reader.close()


def leads_reaching_mql(logs: list[Path], rules: Rules) -> int:
    """Leads that `replay` makes MQLs (the published logs have no merged duplicates)."""
    documents = [orjson.loads(line) for log in logs for line in log.read_bytes().splitlines()]
    changes = [orjson.loads(value) for value in effective(replay_bytes(documents, rules)).values()]
    return len({c["lead_id"] for c in changes if c["to_stage"] == "mql" and not c["retracted"]})


_PROJECTED_EVENT = """
import sys, orjson
from projections.clickhouse import connect
from streams.common.settings import Settings
settings = Settings()
rows = connect(settings.clickhouse).query(
    f"SELECT lead_id, type FROM {settings.clickhouse.database}.events FINAL "
    "WHERE event_id = {event_id:String}",
    parameters={"event_id": sys.argv[1]},
).result_rows
sys.stdout.buffer.write(orjson.dumps([{"lead_id": r[0], "type": r[1]} for r in rows]))
"""


def projected_event(terminals: Terminals, event_id: str) -> dict[str, str] | None:
    """The event's row in the recipe's ClickHouse, read in a process of its own (the embedded
    engine is one per process) with the recipe's settings."""
    done = subprocess.run(
        [sys.executable, "-c", _PROJECTED_EVENT, event_id],
        cwd=terminals.cwd,
        env=terminals.env,
        capture_output=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr.decode()
    rows: list[dict[str, str]] = orjson.loads(done.stdout)
    assert len(rows) <= 1, rows
    return rows[0] if rows else None


def hashed(env: dict[str, str], lead_id: str) -> str:
    """The lead id as ClickHouse stores it under the recipe's hash key."""
    key = SecretStr(env["LEADFLOW_PRIVACY__HASH_KEY"])
    return lead_id_for_storage(PrivacySettings(hash_key=key))(lead_id)
