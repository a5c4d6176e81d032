"""Integration tests run against real processes that the tests start themselves."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from projections.clickhouse import connect, migrate
from streams.common.settings import ClickHouseSettings
from streams.local.broker import LocalBroker
from tests.support.harness import Pipeline, unique


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "integration" in str(item.path):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    """One real Kafka-protocol broker for the session; every test uses its own topics."""
    log = tmp_path_factory.mktemp("broker") / "broker.log"
    with LocalBroker(log_path=log) as local:
        yield local


@pytest.fixture
def pipeline(broker: LocalBroker, tmp_path: Path) -> Iterator[Pipeline]:
    created = Pipeline(bootstrap_servers=broker.bootstrap_servers, workdir=tmp_path)
    yield created
    created.close()


@pytest.fixture(scope="session")
def clickhouse(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The embedded engine: one data directory for this whole process (chDB allows one, so
    every test module that reads ClickHouse in-process shares this fixture)."""
    path = tmp_path_factory.mktemp("clickhouse")
    return connect(ClickHouseSettings(url=f"chdb://{path}"))


@pytest.fixture
def database(clickhouse: Any) -> Iterator[str]:
    """A fresh, migrated database for one test, dropped after it."""
    name = unique("funnel").replace("-", "_")
    migrate(clickhouse, name)
    yield name
    clickhouse.command(f"DROP DATABASE IF EXISTS {name}")
