"""Checks a process makes before it starts Faust or aiohttp, so that a setting that cannot work
stops it with one line naming the setting (the CLI prints a `LeadflowError` as `error: ...`)
instead of a traceback from deep inside a framework."""

from __future__ import annotations

import errno
import fcntl
import os
import socket
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from streams.errors import CannotListenError, DataDirError

LOCK_FILE = "leadflow.lock"
"""The file in a data directory that the process using the directory holds locked."""


def check_can_listen(host: str, port: int, *, host_setting: str, port_setting: str) -> None:
    """Raise `CannotListenError` unless a server could listen on `host`:`port` now: the
    port is free, and the address is this machine's. Port 0 (any free port) always can.

    It binds as asyncio's servers do (aiohttp's, Faust's): every address `host` resolves to,
    with SO_REUSEADDR, so it refuses exactly what they would refuse."""
    if port == 0:
        return
    where = f"{host}:{port}"
    try:
        addresses = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise CannotListenError(
            f"cannot listen on {where}: {host!r} is not a known address ({exc.strerror}); "
            f"set {host_setting}"
        ) from None
    for family, kind, protocol, _, address in dict.fromkeys(addresses):
        with socket.socket(family, kind, protocol) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                why = _why_not(exc, where, host, host_setting, port_setting)
                raise CannotListenError(why) from None


def _why_not(exc: OSError, where: str, host: str, host_setting: str, port_setting: str) -> str:
    if exc.errno == errno.EADDRINUSE:
        return (
            f"cannot listen on {where}: another process listens on that port; set "
            f"{port_setting} to a free port, or stop the other process"
        )
    if exc.errno == errno.EADDRNOTAVAIL:
        return (
            f"cannot listen on {where}: {host} is not an address of this machine; "
            f"set {host_setting}"
        )
    if exc.errno == errno.EACCES:
        return f"cannot listen on {where}: the port needs privileges; set {port_setting} above 1023"
    return f"cannot listen on {where}: {exc.strerror}; check {host_setting} and {port_setting}"


class DirectoryLock:
    """This process's exclusive claim on a directory, created if missing: a lock file inside it,
    held with `flock` until `release` (the kernel drops it when the process ends, kill -9 too,
    so no stale lock survives a crash).

    >>> with DirectoryLock(Path(".leadflow/worker"), "LEADFLOW_WORKER__DATA_DIR"):
    ...     ...  # run what uses the directory
    """

    def __init__(self, directory: Path, setting: str) -> None:
        self.directory = directory
        self.setting = setting
        self._file: IO[str] | None = None

    def acquire(self) -> Self:
        """Create the directory (and its parents) and lock it, or raise `DataDirError`."""
        shown = self.directory.absolute()
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            handle = (self.directory / LOCK_FILE).open("a+")
        except OSError as exc:
            raise DataDirError(
                f"cannot use {shown} as the data directory: {exc.strerror}; "
                f"set {self.setting} to a directory this user can write"
            ) from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip()
            handle.close()
            by = f"another process (pid {holder})" if holder.isdigit() else "another process"
            raise DataDirError(
                f"{shown} is in use by {by}: give each worker its own {self.setting}, "
                "or stop the other one"
            ) from None
        handle.truncate(0)
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._file = handle
        return self

    def release(self) -> None:
        """Unlock (closing the file drops the lock); the lock file stays."""
        handle, self._file = self._file, None
        if handle is not None:
            handle.close()

    def __enter__(self) -> Self:
        return self.acquire()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()
