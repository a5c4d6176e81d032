"""Against the real broker: a command that reaches it says nothing about waiting, and the
topics a command needs are checked without changing anything."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from kafka.admin import KafkaAdminClient

from streams.common.kafka_clients import create_topics, require_topics
from streams.errors import TopicMissingError
from tests.support.harness import Pipeline


def test_a_command_that_reaches_the_broker_says_nothing_about_waiting(
    pipeline: Pipeline,
) -> None:
    inherited = {k: v for k, v in os.environ.items() if not k.upper().startswith("LEADFLOW_")}
    result = subprocess.run(
        [sys.executable, "-m", "streams", "topics", "create"],
        env={**inherited, **pipeline.env()},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.startswith("created: ")


def test_required_topics_are_checked_without_creating_any(pipeline: Pipeline) -> None:
    settings = pipeline.settings
    topics = settings.topics
    wanted = [topics.stage_changes, topics.events, "not-leadflows"]
    with pytest.raises(TopicMissingError) as missing:
        require_topics(settings, wanted)
    assert str(missing.value) == (
        f"topics {topics.stage_changes!r} (LEADFLOW_TOPICS__STAGE_CHANGES), "
        f"{topics.events!r} (LEADFLOW_TOPICS__EVENTS), 'not-leadflows' not found on "
        f"{settings.kafka.bootstrap_servers}: `leadflow topics create` (or a worker) creates "
        "leadflow's topics"
    )
    admin = KafkaAdminClient(bootstrap_servers=pipeline.bootstrap_servers)
    try:
        assert not {*wanted} & set(admin.list_topics())
    finally:
        admin.close()

    create_topics(settings)
    require_topics(settings, wanted[:2])
    with pytest.raises(TopicMissingError, match=r"^topic 'not-leadflows' not found on "):
        require_topics(settings, wanted)
