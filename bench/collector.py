"""Collector throughput (events accepted and acknowledged per second) and request latency.

A load generator on loopback posts Segment batches to `leadflow collect` (a subprocess, in front
of the local broker) from many concurrent connections. The baseline, measured in the same run,
is one aiokafka producer sending the same events with acks=all and no HTTP in between.
"""

from __future__ import annotations

import asyncio
import base64
import json
import statistics
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import orjson

from streams.common.kafka_clients import aiokafka_config, create_topics
from streams.common.settings import KafkaSettings, Settings, TopicSettings, environment_of
from streams.local.broker import LocalBroker, free_port
from streams.local.processes import LeadflowProcess

WRITE_KEY = "bench-write-key"
BATCH = 50  # messages per request
CONCURRENCY = 16


def _batches(count: int) -> list[bytes]:
    bodies = []
    for request in range(count):
        batch = [
            {
                "type": "track",
                "event": "Email Opened",
                "messageId": str(uuid.uuid4()),
                "userId": f"lead-{request}-{index % 7}",
                "timestamp": "2026-03-01T12:00:00Z",
                "properties": {"campaign": "spring"},
            }
            for index in range(BATCH)
        ]
        bodies.append(orjson.dumps({"batch": batch}))
    return bodies


async def _load(url: str, bodies: list[bytes]) -> tuple[float, list[float], dict[int, int]]:
    import aiohttp

    token = base64.b64encode(f"{WRITE_KEY}:".encode()).decode()
    headers = {"Authorization": f"Basic {token}", "Content-Type": "application/json"}
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    latencies: list[float] = []
    statuses: dict[int, int] = {}

    async def client(session: Any) -> None:
        while not queue.empty():
            body = queue.get_nowait()
            while True:
                started = time.perf_counter()
                async with session.post(url + "/v1/batch", data=body, headers=headers) as answer:
                    await answer.read()
                latencies.append(time.perf_counter() - started)
                statuses[answer.status] = statuses.get(answer.status, 0) + 1
                if answer.status != 503:
                    break
                await asyncio.sleep(0.05)  # what a client does with Retry-After, but shorter

    async with aiohttp.ClientSession() as session:
        started = time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(CONCURRENCY)))
        return time.perf_counter() - started, latencies, statuses


async def _raw(settings: Settings, bodies: list[bytes]) -> float:
    from aiokafka import AIOKafkaProducer

    values = [
        (orjson.dumps(m), m["userId"].encode())
        for body in bodies
        for m in orjson.loads(body)["batch"]
    ]
    producer = AIOKafkaProducer(**aiokafka_config(settings.kafka), acks="all", linger_ms=2)
    await producer.start()
    try:
        started = time.perf_counter()
        pending = [await producer.send(settings.topics.events, value=v, key=k) for v, k in values]
        await asyncio.gather(*pending)
        return time.perf_counter() - started
    finally:
        await producer.stop()


def main(quick: bool = False) -> None:
    requests = 200 if quick else 1_000
    bodies = _batches(requests)
    events = requests * BATCH
    workdir = Path(tempfile.mkdtemp(prefix="leadflow-bench-"))
    with LocalBroker(log_path=workdir / "broker.log") as broker:
        name = f"bench-{uuid.uuid4().hex[:8]}"
        settings = Settings(
            kafka=KafkaSettings(bootstrap_servers=broker.bootstrap_servers),
            topics=TopicSettings(
                events=f"{name}.events",
                stage_changes=f"{name}.stage-changes",
                dead_letter=f"{name}.dead-letter",
            ),
        )
        create_topics(settings)
        raw_seconds = asyncio.run(_raw(settings, bodies))
        port = free_port()
        env = {
            **environment_of(settings),
            "LEADFLOW_COLLECTOR__PORT": str(port),
            "LEADFLOW_COLLECTOR__WRITE_KEYS": json.dumps([WRITE_KEY]),
        }
        collector = LeadflowProcess(["collect"], env, workdir / "collector.log").start()
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_healthy(url, collector)
            seconds, latencies, statuses = asyncio.run(_load(url, bodies))
        finally:
            collector.stop()
    accepted = statuses.get(200, 0) * BATCH
    cuts = statistics.quantiles(latencies, n=100)
    print(
        f"collector: {requests:,} requests of {BATCH} events, {CONCURRENCY} connections, "
        "local broker"
    )
    print(f"  aiokafka producer alone, acks=all   {events / raw_seconds:>9,.0f} events/s  (1.00)")
    print(
        f"  collector, accepted and acknowledged {accepted / seconds:>8,.0f} events/s  "
        f"({raw_seconds / seconds * accepted / events:.2f} of the producer alone)"
    )
    print(
        f"  request latency p50 {cuts[49] * 1000:,.1f} ms, p99 {cuts[98] * 1000:,.1f} ms; "
        f"answers {dict(sorted(statuses.items()))}"
    )


def _wait_healthy(url: str, process: LeadflowProcess) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.exited:
            raise RuntimeError(f"the collector exited (log: {process.log_path})")
        try:
            with urllib.request.urlopen(url + "/health", timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("the collector did not answer within 60s")
