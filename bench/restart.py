"""Seconds from start to first output: a fresh start, a start after a clean stop, after kill -9.

On the local broker, one new lead's events (about 120 a second) are published the whole time.
For each of the projector (`leadflow project`, embedded ClickHouse) and the worker (`leadflow
worker`), one process is started with a new consumer group and timed from its start until its
/metrics show its first output (rows written; stage changes published); then it is stopped
with SIGTERM and started again with the same group and disk, timed the same way; then killed
with -9 and started again, timed. A process that shows nothing within the limit is reported
as such.
"""

from __future__ import annotations

import itertools
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from bench import topics_named
from streams.common.kafka_clients import create_topics
from streams.common.publish import make_producer, publish_events
from streams.common.settings import (
    ClickHouseSettings,
    KafkaSettings,
    PrivacySettings,
    ProjectorSettings,
    Settings,
    WorkerSettings,
    environment_of,
)
from streams.local.broker import FETCH_MAX_WAIT, LocalBroker, free_port
from streams.local.generator import generate
from streams.local.processes import LeadflowProcess, scrape_metrics

LIMIT = 180.0  # seconds a start may take before it counts as "nothing"
SCENARIOS = ("fresh start", "after a clean stop", "after kill -9")


def _settings(bootstrap: str, workdir: Path) -> Settings:
    name = f"bench-{uuid.uuid4().hex[:8]}"
    return Settings(
        kafka=KafkaSettings(bootstrap_servers=bootstrap),
        topics=topics_named(name),
        worker=WorkerSettings(
            app_id=name,
            data_dir=workdir / "worker",
            web_port=free_port(),
            fetch_max_wait=FETCH_MAX_WAIT,
        ),
        projector=ProjectorSettings(
            group_id=f"{name}-projector",
            metrics_port=free_port(),
            temp_dir=workdir / "projector-tmp",
        ),
        clickhouse=ClickHouseSettings(url=f"chdb://{workdir / 'clickhouse'}"),
        privacy=PrivacySettings(hash_key="bench-restart-key"),
    )


def _trickle(settings: Settings, stop: threading.Event) -> None:
    producer = make_producer(settings)
    try:
        for seed in itertools.count(1):  # one new lead's events (about 12) every 0.1 s
            if stop.is_set():
                return
            publish_events(generate(1, seed=seed), settings, producer)
            stop.wait(0.1)
    finally:
        producer.close()


def _output(port: int, prefix: str) -> float:
    try:
        samples = scrape_metrics(port)
    except OSError:
        return 0.0
    return sum(value for name, value in samples.items() if name.startswith(prefix))


def _first_output(process: LeadflowProcess, shown: Callable[[], bool]) -> float | None:
    started = time.monotonic()
    process.start()
    while time.monotonic() - started < LIMIT:
        if process.exited:
            raise RuntimeError(f"{process.args[0]} exited (log: {process.log_path})")
        if shown():
            return time.monotonic() - started
        time.sleep(0.1)
    return None


def _scenarios(make: Callable[[], LeadflowProcess], shown: Callable[[], bool]) -> list[str]:
    figures = []
    process = make()
    for scenario in SCENARIOS:
        if scenario == "after a clean stop":
            process.stop()
            process = make()
        elif scenario == "after kill -9":
            process.kill()
            process = make()
        took = _first_output(process, shown)
        figures.append(f"{took:.1f} s" if took is not None else f"nothing in {LIMIT:.0f} s")
    process.kill()
    return figures


def main(quick: bool = False) -> None:
    with tempfile.TemporaryDirectory() as tmp, LocalBroker() as broker:
        workdir = Path(tmp)
        settings = _settings(broker.bootstrap_servers, workdir)
        create_topics(settings)
        env = environment_of(settings)
        stop = threading.Event()
        publisher = threading.Thread(target=_trickle, args=(settings, stop), daemon=True)
        publisher.start()
        projector_port = settings.projector.metrics_port
        worker_port = settings.worker.web_port
        assert projector_port is not None
        try:
            rows = _scenarios(
                lambda: LeadflowProcess(["project"], env, workdir / "projector.log"),
                lambda: _output(projector_port, "leadflow_projector_rows_total") > 0,
            )
            changes = _scenarios(
                lambda: LeadflowProcess(["worker"], env, workdir / "worker.log"),
                lambda: _output(worker_port, "leadflow_stage_changes_total") > 0,
            )
        finally:
            stop.set()
            publisher.join()
    print("restart: seconds from start to first output (rows written; stage changes published)")
    print(f"  {'':<22}{'projector':>14}{'worker':>14}")
    for scenario, row, change in zip(SCENARIOS, rows, changes, strict=True):
        print(f"  {scenario:<22}{row:>14}{change:>14}")


if __name__ == "__main__":
    main()
