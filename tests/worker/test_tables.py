"""What `streams/worker/tables.py` and `recovery.py` rely on below Faust's public API.

Each test names one private piece of faust-streaming that leadflow overrides or calls; a Faust
upgrade that changes it fails here, before it can fail in production.
"""

from __future__ import annotations

import contextvars
import inspect

import faust
import faust.streams as faust_streams
from faust.tables.recovery import Recovery

from streams.common.settings import KafkaSettings
from streams.worker.recovery import table_manager_for
from streams.worker.tables import AckedTable, DirectTopic


def test_topics_find_their_producer_through_an_overridable_coroutine() -> None:
    assert inspect.iscoroutinefunction(faust.Topic._get_producer)
    assert "_get_producer" in DirectTopic.__dict__
    # What DirectTopic skips once the producer runs: Faust's stampede-guarded start.
    assert "maybe_start_producer" in inspect.getsource(faust.Topic._get_producer)


def test_a_table_sends_its_changelog_records_through_send_changelog() -> None:
    parameters = inspect.signature(faust.Table.send_changelog).parameters
    assert list(parameters)[:4] == ["self", "partition", "key", "value"]
    assert "send_changelog" in AckedTable.__dict__


def test_tables_take_the_current_event_from_a_context_variable() -> None:
    assert isinstance(faust_streams._current_event, contextvars.ContextVar)


def test_the_recovery_hook_and_the_high_watermark_builder_exist() -> None:
    assert inspect.iscoroutinefunction(faust.Table.on_recovery_completed)
    assert inspect.iscoroutinefunction(Recovery._build_highwaters)
    parameters = inspect.signature(Recovery._build_highwaters).parameters
    assert list(parameters) == ["self", "consumer", "tps", "destination", "title"]
    manager = table_manager_for(KafkaSettings())
    assert "recovery" in manager.__dict__
