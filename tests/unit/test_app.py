"""The worker's Faust app, as built from settings (nothing is started)."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.app import create_app
from streams.metrics import PipelineMetrics
from streams.rules import load_rules
from streams.settings import Settings, WorkerSettings


@pytest.mark.parametrize("enabled", [False, True])
def test_faust_metrics_are_served_only_when_asked_for(enabled: bool, tmp_path: Path) -> None:
    worker = WorkerSettings(faust_metrics=enabled, store="memory", data_dir=tmp_path)
    metrics = PipelineMetrics()
    create_app(Settings(worker=worker), load_rules(), metrics)
    names = {family.name for family in metrics.registry.collect()}
    assert "leadflow_events_received" in names
    assert any(name.startswith("faust_") for name in names) is enabled
