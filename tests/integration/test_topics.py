"""`leadflow topics create` and workers starting together on the real broker."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from kafka import KafkaConsumer

from streams.common.kafka_clients import create_topics, topic_specs
from tests.support.harness import Pipeline


def test_processes_creating_the_topics_at_once_all_succeed(pipeline: Pipeline) -> None:
    # Two workers started together both find the topics missing; the slower one used to crash
    # on TopicAlreadyExists.
    settings = pipeline.settings
    with ThreadPoolExecutor(max_workers=4) as pool:
        created = list(pool.map(lambda _: create_topics(settings), range(4)))
    wanted = set(topic_specs(settings.topics))
    assert sorted(name for names in created for name in names) == sorted(wanted)
    consumer = KafkaConsumer(bootstrap_servers=pipeline.bootstrap_servers)
    try:
        for topic in wanted:
            assert consumer.partitions_for_topic(topic) == set(range(pipeline.partitions))
    finally:
        consumer.close()
    assert create_topics(settings) == []
