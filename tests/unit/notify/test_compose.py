"""The compose file's `notify` service runs `leadflow notify` with real settings."""

from __future__ import annotations

import re
from pathlib import Path
from unittest import mock

import typer.main
import yaml

from streams.cli import app
from streams.common.settings import Settings
from streams.notify.notifier import check_can_start

ROOT = Path(__file__).parents[3]
SERVICES = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]


def test_the_notify_service_runs_leadflow_notify_with_real_settings() -> None:
    service = SERVICES["notify"]
    assert service["command"] == ["notify"]
    assert "notify" in typer.main.get_command(app).commands  # type: ignore[attr-defined]
    assert set(service["depends_on"]) <= set(SERVICES)

    def placeholder(match: re.Match[str]) -> str:
        return '["https://alerts.example/hook"]' if "URLS" in match[0] else "placeholder"

    env = {
        name: re.sub(r"\$\{[^}]+\}", placeholder, str(value))
        for name, value in service["environment"].items()
    }
    with mock.patch.dict("os.environ", env, clear=True):
        settings = Settings()
    check_can_start(settings)
    assert settings.kafka.bootstrap_servers == "kafka:19092"
    assert str(settings.notify.metrics_port) in service["expose"]
