"""`leadflow worker --processes N`: N worker processes on one machine, in one consumer group.

A Faust worker runs its agents on one core; to use more of a machine, start more workers with
the same settings and the group shares the partitions between them. This supervisor does that
on one machine: each process gets its own web port (the next ones after
`LEADFLOW_WORKER__WEB_PORT`) and its own table directory (`process-K` under
`LEADFLOW_WORKER__DATA_DIR`). A stop signal is passed on to every process and waited for; when
one process ends on its own, the others are stopped too and its exit code is the
supervisor's, so that whatever restarts leadflow sees the failure.

With `LEADFLOW_WORKER__CHALLENGER_RULES` the supervisor also runs the challenger: one more
worker process, with the challenger's rules, in its own consumer group, that publishes only to
the challenger's topic (a challenger that lags or fails never holds up the live stream's
partitions; it costs the machine one more worker's work).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from types import FrameType

from streams.common.settings import Settings, environment_of
from streams.errors import CannotListenError, DataDirError
from streams.worker.preflight import WEB_PORT_SETTING, check_web_port, claim_data_dir


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


def challenger_settings(settings: Settings, index: int) -> Settings:
    """The settings of the challenger process (`worker.challenger_rules`), started as process
    `index`: the challenger's rules, its own consumer group and tables (`<app_id>-challenger`,
    `challenger` under the data directory), no account view, its stage changes on
    `topics.challenger_stage_changes` instead of the live topic and its identity stitching on
    `topics.challenger_identity_summaries`."""
    worker, topics = settings.worker, settings.topics
    return settings.model_copy(
        update={
            "rules_file": worker.challenger_rules,
            "topics": topics.model_copy(
                update={
                    "stage_changes": topics.challenger_stage_changes,
                    "identity_summaries": topics.challenger_identity_summaries,
                }
            ),
            "worker": worker.model_copy(
                update={
                    "app_id": f"{worker.app_id}-challenger",
                    "data_dir": worker.data_dir / "challenger",
                    "web_port": worker.web_port + index if worker.web_port else 0,
                    "accounts": False,
                    "challenger_rules": None,
                }
            ),
        }
    )


def check_processes_can_start(started: list[tuple[str, Settings]]) -> None:
    """Raise, before any process starts, what would stop one of them at its start: a data
    directory another process holds (`DataDirError`), a web port in use (`CannotListenError`),
    saying which process (`started` holds each one's name and settings)."""
    for index, (name, own) in enumerate(started):
        worker = own.worker
        try:
            claim_data_dir(worker.data_dir).acquire().release()
            check_web_port(worker.web_host, worker.web_port)
        except (DataDirError, CannotListenError) as exc:
            port = f" (web port {WEB_PORT_SETTING} + {index})" if worker.web_port else ""
            raise type(exc)(f"{name}{port}: {exc}") from None


def run_processes(settings: Settings, processes: int, loglevel: str, grace: float = 30.0) -> int:
    """Run `processes` workers, and the challenger when `worker.challenger_rules` names one,
    until a stop signal or until one of them ends; return the exit code to leave with."""
    command = [sys.executable, "-m", "streams", "worker", "--loglevel", loglevel]
    live = settings.model_copy(
        update={"worker": settings.worker.model_copy(update={"challenger_rules": None})}
    )
    started = [
        (f"worker process {index}", process_settings(live, index) if processes > 1 else live)
        for index in range(processes)
    ]
    commands = [command] * processes
    if settings.worker.challenger_rules is not None:
        started.append(("the challenger", challenger_settings(settings, processes)))
        commands.append([*command, "--shadow"])
    check_processes_can_start(started)
    # Each child's settings are all in its variables: none inherited, so that no child starts
    # a challenger of its own.
    inherited = {k: v for k, v in os.environ.items() if not k.upper().startswith("LEADFLOW_")}
    children = []
    for (_, own), args in zip(started, commands, strict=True):
        env = {**inherited, **environment_of(own)}
        children.append(subprocess.Popen(args, env=env, stdin=subprocess.DEVNULL))
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
