"""`leadflow worker --processes N`: N worker processes on one machine, in one consumer group.

A Faust worker runs its agents on one core; to use more of a machine, start more workers with
the same settings and the group shares the partitions between them. This supervisor does that
on one machine: each process gets its own web port (the next ones after
`LEADFLOW_WORKER__WEB_PORT`) and its own table directory (`process-K` under
`LEADFLOW_WORKER__DATA_DIR`). A stop signal is passed on to every process and waited for; when
one process ends on its own, the others are stopped too and its exit code is the
supervisor's, so that whatever restarts leadflow sees the failure.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from types import FrameType

from streams.common.settings import Settings, environment_of


def process_settings(settings: Settings, index: int) -> Settings:
    """The settings of worker process `index` of a supervisor started with `settings`."""
    worker = settings.worker
    return settings.model_copy(
        update={
            "worker": worker.model_copy(
                update={
                    "web_port": worker.web_port + index if worker.web_port else 0,
                    "data_dir": worker.data_dir / f"process-{index}",
                }
            )
        }
    )


def run_processes(settings: Settings, processes: int, loglevel: str, grace: float = 30.0) -> int:
    """Run `processes` workers until a stop signal or until one of them ends; return the exit
    code to leave with."""
    children = []
    for index in range(processes):
        own = process_settings(settings, index)
        own.worker.data_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **environment_of(own)}
        children.append(
            subprocess.Popen(
                [sys.executable, "-m", "streams", "worker", "--loglevel", loglevel],
                env=env,
                stdin=subprocess.DEVNULL,
            )
        )
    stopping: list[int] = []

    def stop(signum: int, frame: FrameType | None) -> None:
        stopping.append(signum)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, stop)
    code = 0
    try:
        while not stopping:
            ended = [child for child in children if child.poll() is not None]
            if ended:
                code = ended[0].returncode or 1
                break
            time.sleep(0.2)
    finally:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for child in children:
            try:
                child.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
    return code
