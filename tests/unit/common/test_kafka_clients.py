"""A command that waits for the broker says so at once, and only when it waits."""

from __future__ import annotations

import os
import queue
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest
from kafka.errors import InvalidRecordError, MessageSizeTooLargeError

from streams.common.kafka_clients import say_if_waiting, send_failure
from streams.common.settings import KafkaSettings


@pytest.fixture
def closed_address() -> str:
    with socket.socket() as closed:  # a port that nothing listens on
        closed.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{closed.getsockname()[1]}"


@pytest.fixture
def listening_address() -> Iterator[str]:
    with socket.create_server(("127.0.0.1", 0)) as server:
        yield f"127.0.0.1:{server.getsockname()[1]}"


def waiting_line(address: str) -> str:
    return f"waiting for the Kafka broker at {address} (LEADFLOW_KAFKA__BOOTSTRAP_SERVERS)..."


def test_nothing_is_said_when_the_broker_accepts_a_connection(
    listening_address: str, closed_address: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert not say_if_waiting(KafkaSettings(bootstrap_servers=listening_address))
    # One address that accepts is enough, wherever it is in the list.
    servers = f"{closed_address},{listening_address}"
    assert not say_if_waiting(KafkaSettings(bootstrap_servers=servers))
    assert capsys.readouterr() == ("", "")


def test_a_closed_port_is_said_at_once_on_stderr(
    closed_address: str, capsys: pytest.CaptureFixture[str]
) -> None:
    started = time.monotonic()
    assert say_if_waiting(KafkaSettings(bootstrap_servers=closed_address))
    assert time.monotonic() - started < 2
    assert capsys.readouterr() == ("", waiting_line(closed_address) + "\n")


def test_a_command_says_it_waits_at_once_and_still_fails_with_one_line(
    closed_address: str,
) -> None:
    inherited = {k: v for k, v in os.environ.items() if not k.upper().startswith("LEADFLOW_")}
    command = subprocess.Popen(
        [sys.executable, "-m", "streams", "topics", "create"],
        env={
            **inherited,
            "LEADFLOW_KAFKA__BOOTSTRAP_SERVERS": closed_address,
            "LEADFLOW_KAFKA__BOOTSTRAP_TIMEOUT_SECONDS": "3",  # the clients' wait, kept short
        },
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()

    def read_stderr() -> None:
        assert command.stderr is not None
        for line in command.stderr:
            lines.put(line)

    reader = threading.Thread(target=read_stderr)
    reader.start()
    try:
        # Python starting and importing the CLI takes its time too: 2 s from the command's start
        # is what a user sees, and the broker's own timeout is 30 s.
        first = lines.get(timeout=2 + _startup_seconds())
        assert first.rstrip("\n") == waiting_line(closed_address)
        assert command.wait(timeout=120) == 1
    finally:
        command.kill()
        command.wait()
        reader.join()
    assert command.stdout is not None and command.stdout.read() == ""
    rest = []
    while not lines.empty():
        rest.append(lines.get().rstrip("\n"))
    assert rest == [
        f"error: no Kafka broker answered at {closed_address} "
        "(LEADFLOW_KAFKA__BOOTSTRAP_SERVERS): is it running, and reachable from here?"
    ]


def _startup_seconds() -> float:
    """How long `python -m streams --help` takes here: the CLI's start, not the waiting."""
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "streams", "--help"], capture_output=True, check=True)
    return time.monotonic() - started


@pytest.mark.parametrize(
    ("error", "says"),
    [
        (
            InvalidRecordError(None),
            "InvalidRecordError: This record has failed the validation on broker and hence "
            "will be rejected.",
        ),
        (MessageSizeTooLargeError("1 MB > 64 kB"), "MessageSizeTooLargeError: 1 MB > 64 kB"),
        (None, "not acknowledged by the broker"),
    ],
)
def test_a_failed_send_is_one_line_with_the_brokers_reason(
    error: BaseException | None, says: str
) -> None:
    assert send_failure(error) == says
