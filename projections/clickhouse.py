"""The ClickHouse connection and the migrations that create the funnel tables and views.

One code path for both places: clickhouse-connect talks HTTP to a server, or runs the embedded
chDB engine for a `chdb://` URL. The same SQL runs on both.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import re
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import clickhouse_connect
from clickhouse_connect.driver import exceptions as clickhouse_errors

from streams.common.settings import ClickHouseSettings
from streams.errors import LeadflowError

# Inserts behave the same on chDB 26.x and older servers only with these set explicitly: newer
# versions default to asynchronous inserts, older ones reject deduplication through views with them.
CLIENT_SETTINGS = {"async_insert": 0, "deduplicate_blocks_in_dependent_materialized_views": 1}
_VERSIONED = re.compile(r"^V(\d{4})__(\w+)\.sql$")
_REPEATABLE = re.compile(r"^R__(\w+)\.sql$")


class ClickHouseError(LeadflowError):
    """ClickHouse could not be reached or refused a statement."""


def connect(settings: ClickHouseSettings) -> Any:
    """A clickhouse-connect client for the configured server or embedded directory.

    The embedded engine allows one data directory per process, and one process per directory.
    When the connection cannot be made, one ClickHouseError says so in a line that names the
    setting and what to do (for a directory in use, which process holds it)."""
    if settings.embedded:
        holder = embedded_directory_holder(embedded_path(settings.url))
        if holder is not None:
            raise ClickHouseError(_in_use(settings.url, holder))
    # The driver and its HTTP library log warnings of their own before raising; the error
    # below says it all, in one line.
    loggers = [logging.getLogger(name) for name in ("clickhouse_connect", "urllib3")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        return clickhouse_connect.get_client(**client_arguments(settings))
    except Exception as exc:  # the drivers raise many kinds; the operator needs one message
        raise ClickHouseError(_cannot_open(settings, exc)) from exc
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


_SETTING = "LEADFLOW_CLICKHOUSE__URL"
_OS_REASON = re.compile(r"\[Errno -?\d+\] ([^\"')(]+)")


def _cannot_open(settings: ClickHouseSettings, exc: Exception) -> str:
    text = " ".join(str(exc).split())
    if settings.embedded:
        return (
            f"cannot open the embedded ClickHouse at {settings.url} ({_SETTING}): "
            f"{text[:300]}; check that the directory is writable and was made by chDB"
        )
    if isinstance(exc, clickhouse_errors.OperationalError):
        reason = _OS_REASON.search(text)
        return (
            f"no ClickHouse server answered at {settings.url} ({_SETTING}): "
            f"{reason[1].strip() if reason else text[:200]}; is it running, and reachable from "
            "here?"
        )
    return (
        f"ClickHouse at {settings.url} ({_SETTING}) refused to connect: {text[:300]}; check "
        "LEADFLOW_CLICKHOUSE__USERNAME and LEADFLOW_CLICKHOUSE__PASSWORD"
    )


def embedded_path(url: str) -> Path:
    """The data directory of a `chdb://` URL."""
    return Path(url.removeprefix("chdb://"))


@dataclass(frozen=True)
class DirectoryHolder:
    """The process that holds an embedded data directory's lock."""

    pid: int | None
    command: str | None


def embedded_directory_holder(path: Path) -> DirectoryHolder | None:
    """Who holds the lock of an embedded data directory, or None when nobody else does.

    The engine takes an exclusive `flock` on `status` in the directory and writes its PID
    there; the kernel's lock table (/proc/locks) names the holder even when the file is stale."""
    status = path / "status"
    try:
        descriptor = os.open(status, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _flock_holder(os.fstat(descriptor).st_ino) or _pid_written_in(status)
            if pid == os.getpid():
                return None  # this process's own engine: the driver reuses it
            return DirectoryHolder(pid, _command_of(pid) if pid else None)
        fcntl.flock(descriptor, fcntl.LOCK_UN)
        return None
    finally:
        os.close(descriptor)


def _flock_holder(inode: int) -> int | None:
    # Lines like "5: FLOCK  ADVISORY  WRITE 12210 fe:00:2170914 0 EOF".
    try:
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5].endswith(f":{inode}"):
            return int(fields[4]) if fields[4].isdigit() else None
    return None


def _pid_written_in(status: Path) -> int | None:
    try:
        first = status.read_text(errors="replace").split("\n", 1)[0]
    except OSError:
        return None
    value = first.removeprefix("PID:").strip()
    return int(value) if value.isdigit() else None


def _command_of(pid: int) -> str | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    command = " ".join(raw.decode(errors="replace").replace("\0", " ").split())
    return command[:120] or None


def _in_use(url: str, holder: DirectoryHolder) -> str:
    who = "another process"
    if holder.pid is not None:
        who = f"process {holder.pid}" + (f" ({holder.command})" if holder.command else "")
    return (
        f"the embedded ClickHouse directory of {url} ({_SETTING}) is in use by {who}: the "
        "engine allows one process per directory; stop that process (a running projector, "
        "report or rebuild) or point this one at another directory"
    )


def client_arguments(settings: ClickHouseSettings) -> dict[str, Any]:
    """`clickhouse_connect.get_client` keyword arguments for these settings."""
    common = {"tz_mode": "aware", "settings": CLIENT_SETTINGS}
    if settings.embedded:
        return {"dsn": settings.url, **common}
    parts = urlsplit(settings.url)
    secure = parts.scheme == "https"
    return {
        "host": parts.hostname,
        "port": parts.port or (8443 if secure else 8123),
        "username": settings.username,
        "password": settings.password.get_secret_value() if settings.password else "",
        "secure": secure,
        "verify": settings.verify_tls,
        "ca_cert": str(settings.ca_cert) if settings.ca_cert else None,
        **common,
    }


@dataclass(frozen=True)
class Migration:
    """One SQL file of `projections/migrations`: versioned (applied once) or repeatable."""

    version: int | None
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()[:16]

    def statements(self, database: str) -> list[str]:
        """The file's statements, one per call: a server refuses several in one request."""
        text = self.sql.replace("{database}", database)
        lines = [line for line in text.splitlines() if not line.lstrip().startswith("--")]
        return [part.strip() for part in "\n".join(lines).split(";\n") if part.strip(" \n;")]


def migrations() -> list[Migration]:
    """Versioned migrations in order, then repeatable ones (views) by name."""
    versioned, repeatable = [], []
    for entry in (resources.files("projections") / "migrations").iterdir():
        if match := _VERSIONED.match(entry.name):
            versioned.append(Migration(int(match[1]), match[2], entry.read_text()))
        elif match := _REPEATABLE.match(entry.name):
            repeatable.append(Migration(None, match[1], entry.read_text()))
    return sorted(versioned, key=lambda m: m.version or 0) + sorted(
        repeatable, key=lambda m: m.name
    )


def migrate(client: Any, database: str) -> list[str]:
    """Bring the database up to date; return the names of the migrations applied (idempotent).

    A versioned migration runs once; changing it afterwards is an error (write a new one). A
    repeatable one (`R__*.sql`, the views) runs again whenever its text changes."""
    client.command(f"CREATE DATABASE IF NOT EXISTS {database}")
    client.command(
        f"CREATE TABLE IF NOT EXISTS {database}.schema_migrations "
        "(name String, version Nullable(UInt32), checksum String, "
        "applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) "
        "ENGINE = ReplacingMergeTree(applied_at) ORDER BY name"
    )
    applied = dict(
        client.query(f"SELECT name, checksum FROM {database}.schema_migrations FINAL").result_rows
    )
    done = []
    for migration in migrations():
        key = f"V{migration.version:04d}" if migration.version is not None else "R"
        name = f"{key}__{migration.name}"
        if applied.get(name) == migration.checksum:
            continue
        if name in applied and migration.version is not None:
            raise ClickHouseError(
                f"migration {name} changed after it was applied; add a new migration instead"
            )
        for statement in migration.statements(database):
            client.command(statement)
        client.insert(
            f"{database}.schema_migrations",
            [[name, migration.version, migration.checksum]],
            column_names=["name", "version", "checksum"],
        )
        done.append(name)
    return done


def missing_views(client: Any, database: str, views: Iterable[str]) -> list[str]:
    """Which of `views` the database lacks; all of them when it was never migrated."""
    present = {
        name
        for (name,) in client.query(
            "SELECT name FROM system.tables WHERE database = {database:String}",
            parameters={"database": database},
        ).result_rows
    }
    if "schema_migrations" not in present:
        return list(views)
    return [view for view in views if view not in present]


def spool_inserts_into(path: os.PathLike[str] | str) -> None:
    """Spool the embedded engine's insert buffers into `path` (clickhouse-connect writes each
    insert to a temporary file first): a process killed mid-insert leaves its file there, not
    in the machine's /tmp. It sets this process's temporary directory; nothing else reads it."""
    os.makedirs(path, exist_ok=True)
    tempfile.tempdir = str(path)
