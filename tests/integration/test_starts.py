"""Processes that start cleanly, or stop at once with one line naming the setting to change
(issue 27): a fresh directory, a port in use, a data directory another worker holds, where the
worker's pages listen."""

from __future__ import annotations

import ipaddress
import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.common.settings import setting_variables
from streams.local.broker import free_port, free_ports
from streams.local.processes import WorkerProcess
from tests.support.collector_server import WRITE_KEY, start_collector
from tests.support.harness import Pipeline, env_with_path

START_BOUND = 60.0
"""Seconds a command that cannot start may take to say so (it checks before Faust starts)."""


@pytest.fixture
def workers() -> Iterator[list[WorkerProcess]]:
    started: list[WorkerProcess] = []
    yield started
    for worker in started:
        worker.stop()


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port something listens on (on 127.0.0.1, where leadflow's servers listen by default)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield listener.getsockname()[1]


def leadflow(args: list[str], env: dict[str, str], cwd: Path | None = None) -> tuple[int, str]:
    """Run `leadflow ARGS` to its end (within START_BOUND); its exit code and its output."""
    done = subprocess.run(
        [sys.executable, "-m", "streams", *args],
        env=env_with_path(env),
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        timeout=START_BOUND,
    )
    return done.returncode, done.stdout.decode(errors="replace")


def the_error_line(code: int, output: str) -> str:
    """The last line of a command that refused to start: its one `error: ...` line, after
    no traceback (`leadflow collect` logs its topic check before)."""
    assert code != 0, output[-3000:]
    lines = output.splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert errors == lines[-1:] and "Traceback" not in output, output[-3000:]
    return errors[0]


def names(setting: str, line: str) -> bool:
    assert setting in setting_variables()  # a real setting's variable, spelled right
    return setting in line


def listening_addresses(port: int) -> set[str]:
    """The local addresses of this machine's TCP sockets listening on `port` (/proc/net)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for row in Path(table).read_text().splitlines()[1:]:
            local, state = row.split()[1], row.split()[3]
            address, _, hex_port = local.partition(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                # The kernel prints each 32-bit word of the address in host (little-endian) order.
                words = [bytes.fromhex(address[i : i + 8])[::-1] for i in range(0, len(address), 8)]
                found.add(str(ipaddress.ip_address(b"".join(words))))
    return found


def test_a_worker_in_a_fresh_directory_creates_its_data_directory_and_starts(
    pipeline: Pipeline, tmp_path: Path, workers: list[WorkerProcess]
) -> None:
    fresh = tmp_path / "fresh"  # no .leadflow: the worker's data directory is the default
    fresh.mkdir()
    port = free_port()
    worker = WorkerProcess(
        env=pipeline.env(LEADFLOW_WORKER__WEB_PORT=str(port)),
        port=port,
        log_path=tmp_path / "fresh-worker.log",
        cwd=fresh,
    )
    workers.append(worker.start())
    assert worker.wait_assigned() == [0, 1, 2, 3]
    assert (fresh / ".leadflow" / "worker").is_dir()


def test_the_workers_pages_listen_only_on_the_address_of_web_host(
    pipeline: Pipeline, workers: list[WorkerProcess]
) -> None:
    worker = pipeline.worker()
    worker.env["LEADFLOW_WORKER__WEB_HOST"] = "127.0.0.1"
    workers.append(worker.start())
    worker.wait_assigned()
    assert listening_addresses(worker.port) == {"127.0.0.1"}


def test_a_worker_on_a_port_in_use_says_so_in_one_line(pipeline: Pipeline, busy_port: int) -> None:
    env = pipeline.env(
        LEADFLOW_WORKER__WEB_PORT=str(busy_port),
        LEADFLOW_WORKER__DATA_DIR=str(pipeline.workdir / "worker"),
    )
    line = the_error_line(*leadflow(["worker"], env))
    assert names("LEADFLOW_WORKER__WEB_PORT", line) and f":{busy_port}" in line, line


def test_a_second_worker_on_the_same_data_directory_says_so_in_one_line(
    pipeline: Pipeline, workers: list[WorkerProcess]
) -> None:
    first = pipeline.worker()
    workers.append(first.start())
    first.wait_assigned()
    env = {**first.env, "LEADFLOW_WORKER__WEB_PORT": str(free_port())}
    line = the_error_line(*leadflow(["worker"], env))
    assert names("LEADFLOW_WORKER__DATA_DIR", line), line
    assert first.health() is not None, "the first worker runs on"


def test_worker_processes_say_which_one_cannot_listen_before_any_starts(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    first = free_ports(2)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", first + 1))  # the second process's port
        taken.listen()
        env = pipeline.env(
            LEADFLOW_WORKER__WEB_PORT=str(first),
            LEADFLOW_WORKER__DATA_DIR=str(tmp_path / "workers"),
        )
        line = the_error_line(*leadflow(["worker", "--processes", "2"], env))
    assert names("LEADFLOW_WORKER__WEB_PORT", line) and "process 1" in line, line
    assert f":{first + 1}" in line, line


def test_a_second_collector_on_the_same_port_says_so_in_one_line(pipeline: Pipeline) -> None:
    running = start_collector(pipeline)
    try:
        port = int(running.url.rpartition(":")[2])
        env = pipeline.env(
            LEADFLOW_COLLECTOR__PORT=str(port),
            LEADFLOW_COLLECTOR__WRITE_KEYS=json.dumps([WRITE_KEY]),
        )
        line = the_error_line(*leadflow(["collect"], env))
        assert names("LEADFLOW_COLLECTOR__PORT", line) and f":{port}" in line, line
    finally:
        running.process.stop()
