"""The checks made before a server starts: a directory one process holds, where to listen."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.common.preflight import LOCK_FILE, DirectoryLock, check_can_listen
from streams.errors import CannotListenError, DataDirError

SETTING = "LEADFLOW_WORKER__DATA_DIR"
NAMES = {"host_setting": "LEADFLOW_X__HOST", "port_setting": "LEADFLOW_X__PORT"}


@pytest.fixture
def listening() -> Iterator[int]:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield listener.getsockname()[1]


def test_a_lock_creates_the_directory_and_its_parents(tmp_path: Path) -> None:
    directory = tmp_path / "no" / "such" / "dir"
    with DirectoryLock(directory, SETTING):
        assert directory.is_dir() and (directory / LOCK_FILE).is_file()


def test_a_held_directory_cannot_be_locked_twice_and_is_free_once_released(
    tmp_path: Path,
) -> None:
    first = DirectoryLock(tmp_path, SETTING).acquire()
    with pytest.raises(DataDirError, match=rf"in use by another process \(pid \d+\).*{SETTING}"):
        DirectoryLock(tmp_path, SETTING).acquire()
    first.release()
    DirectoryLock(tmp_path, SETTING).acquire().release()


def test_a_directory_another_process_holds_names_that_process(tmp_path: Path) -> None:
    hold = (
        "import sys; from pathlib import Path; "
        "from streams.common.preflight import DirectoryLock; "
        f"lock = DirectoryLock(Path(sys.argv[1]), '{SETTING}').acquire(); "
        "print('held', flush=True); "
        "sys.stdin.read()"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", hold, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"held\n"
        with pytest.raises(DataDirError, match=rf"pid {holder.pid}\)"):
            DirectoryLock(tmp_path, SETTING).acquire()
    finally:
        holder.kill()
        holder.wait()
    DirectoryLock(tmp_path, SETTING).acquire().release()  # the kernel dropped the dead one's lock


def test_a_directory_that_cannot_be_created_names_the_setting(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    with pytest.raises(DataDirError, match=f"set {SETTING} to a directory"):
        DirectoryLock(tmp_path / "a-file" / "dir", SETTING).acquire()


def test_a_free_port_and_port_0_can_be_listened_on(listening: int) -> None:
    check_can_listen("127.0.0.1", 0, **NAMES)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    check_can_listen("127.0.0.1", free, **NAMES)


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0", "localhost"])
def test_a_port_in_use_names_the_port_setting(host: str, listening: int) -> None:
    with pytest.raises(CannotListenError, match=r"another process.*set LEADFLOW_X__PORT"):
        check_can_listen(host, listening, **NAMES)


# 203.0.113.0/24 is reserved for documentation (RFC 5737): no machine's own address.
@pytest.mark.parametrize("host", ["203.0.113.77", "no-such-host.invalid"])
def test_an_address_not_of_this_machine_names_the_host_setting(host: str) -> None:
    with pytest.raises(CannotListenError, match="set LEADFLOW_X__HOST"):
        check_can_listen(host, 6066, **NAMES)
