"""The worker's Faust app, as built from settings (nothing is started)."""

from __future__ import annotations

import logging
import logging.config
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.common.settings import Settings, WorkerSettings
from streams.core.rules import load_rules
from streams.worker.app import create_app, faust_worker
from streams.worker.metrics import PipelineMetrics


@pytest.mark.parametrize("enabled", [False, True])
def test_faust_metrics_are_served_only_when_asked_for(enabled: bool, tmp_path: Path) -> None:
    worker = WorkerSettings(faust_metrics=enabled, store="memory", data_dir=tmp_path)
    metrics = PipelineMetrics()
    create_app(Settings(worker=worker), load_rules(), metrics)
    names = {family.name for family in metrics.registry.collect()}
    assert "leadflow_events_received" in names
    assert any(name.startswith("faust_") for name in names) is enabled


@pytest.fixture
def restored_logging() -> Iterator[None]:
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    yield
    root.setLevel(level)
    root.handlers[:] = handlers


@pytest.mark.parametrize("loglevel", ["warn", "error"])
def test_the_worker_logs_at_the_level_asked_for(
    loglevel: str, tmp_path: Path, restored_logging: None
) -> None:
    settings = Settings(worker=WorkerSettings(store="memory", data_dir=tmp_path))
    worker = faust_worker(create_app(settings, load_rules()), loglevel)
    worker.redirect_stdouts = False  # keep pytest's own stdout
    worker._setup_logging()  # what the worker does first when it runs
    assert logging.getLogger().getEffectiveLevel() == logging.getLevelName(loglevel.upper())
    assert not logging.getLogger("aiokafka.producer.producer").isEnabledFor(logging.DEBUG)


def test_the_pages_listen_on_the_address_of_web_host(tmp_path: Path) -> None:
    # Faust listens on web_bind (every interface by default); web_host only names the worker.
    worker = WorkerSettings(web_host="127.0.0.1", store="memory", data_dir=tmp_path)
    app = create_app(Settings(worker=worker), load_rules())
    assert app.conf.web_bind == "127.0.0.1"


@pytest.mark.parametrize("copies", [0, 2])
def test_the_standby_copies_asked_for_are_faust_s(copies: int, tmp_path: Path) -> None:
    worker = WorkerSettings(standby_replicas=copies, store="memory", data_dir=tmp_path)
    app = create_app(Settings(worker=worker), load_rules(), PipelineMetrics())
    assert app.conf.table_standby_replicas == copies
