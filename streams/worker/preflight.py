"""The worker's checks before Faust starts: its data directory and its web port, named by the
settings a user would change (`streams/common/preflight.py`). Imports nothing of Faust, so the
`--processes` supervisor can run them too."""

from __future__ import annotations

from pathlib import Path

from streams.common.preflight import DirectoryLock, check_can_listen

DATA_DIR_SETTING = "LEADFLOW_WORKER__DATA_DIR"
WEB_HOST_SETTING = "LEADFLOW_WORKER__WEB_HOST"
WEB_PORT_SETTING = "LEADFLOW_WORKER__WEB_PORT"


def claim_data_dir(data_dir: Path) -> DirectoryLock:
    """The lock of a worker's data directory (`DirectoryLock`), not yet acquired: a second
    worker on the same directory would share RocksDB files and crash on their locks."""
    return DirectoryLock(data_dir, DATA_DIR_SETTING)


def check_web_port(host: str, port: int) -> None:
    """Raise `CannotListenError` unless the worker's `/health` and `/metrics` can listen on
    `host`:`port`."""
    check_can_listen(host, port, host_setting=WEB_HOST_SETTING, port_setting=WEB_PORT_SETTING)
