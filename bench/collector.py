"""Collector throughput (events accepted and acknowledged per second) and request latency.

A load generator on loopback posts Segment batches to `leadflow collect` (a subprocess, in front
of the local broker) from many concurrent connections: 16 connections with batches of 50, then
200 connections with batches of 100. The baseline, measured in the same run, is one aiokafka
producer sending the same events with acks=all and no HTTP in between.
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

from bench import topics_named
from streams.common.kafka_clients import aiokafka_config, create_topics
from streams.common.settings import KafkaSettings, Settings, environment_of
from streams.local.broker import LocalBroker, free_port
from streams.local.processes import LeadflowProcess

WRITE_KEY = "bench-write-key"
LOADS = ((16, 50), (200, 100))
"""(concurrent connections, messages per request) of each load."""


def _batches(count: int, size: int) -> list[bytes]:
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
            for index in range(size)
        ]
        bodies.append(orjson.dumps({"batch": batch}))
    return bodies


async def _load(
    url: str, bodies: list[bytes], connections: int
) -> tuple[float, list[float], dict[int, int]]:
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

    # One connection per client: the session's default pool (100) would queue clients beyond it.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        started = time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(connections)))
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
    rounds = 1 if quick else 5
    loads = [
        (connections, _batches(connections * 12 * rounds, size)) for connections, size in LOADS
    ]
    workdir = Path(tempfile.mkdtemp(prefix="leadflow-bench-"))
    with LocalBroker(log_path=workdir / "broker.log") as broker:
        name = f"bench-{uuid.uuid4().hex[:8]}"
        settings = Settings(
            kafka=KafkaSettings(bootstrap_servers=broker.bootstrap_servers),
            topics=topics_named(name),
        )
        create_topics(settings)
        baseline = loads[0][1]
        raw_seconds = asyncio.run(_raw(settings, baseline))
        raw_rate = len(baseline) * LOADS[0][1] / raw_seconds
        port = free_port()
        env = {
            **environment_of(settings),
            "LEADFLOW_COLLECTOR__PORT": str(port),
            "LEADFLOW_COLLECTOR__WRITE_KEYS": json.dumps([WRITE_KEY]),
        }
        collector = LeadflowProcess(["collect"], env, workdir / "collector.log").start()
        url = f"http://127.0.0.1:{port}"
        results = []
        try:
            _wait_healthy(url, collector)
            rss_before = _rss_mb(collector)
            for connections, bodies in loads:
                results.append((connections, bodies, asyncio.run(_load(url, bodies, connections))))
            rss_after = _rss_mb(collector)
        finally:
            collector.stop()
    print("collector: Segment batches on loopback, local broker")
    print(f"  aiokafka producer alone, acks=all      {raw_rate:>9,.0f} events/s  (1.00)")
    for (connections, size), (_, bodies, (seconds, latencies, statuses)) in zip(
        LOADS, results, strict=True
    ):
        accepted = statuses.get(200, 0) * size
        cuts = statistics.quantiles(latencies, n=100)
        print(
            f"  {len(bodies):,} requests of {size} from {connections} connections: "
            f"{accepted / seconds:,.0f} events/s accepted and acknowledged "
            f"({accepted / seconds / raw_rate:.2f} of the producer alone)"
        )
        print(
            f"    request latency p50 {cuts[49] * 1000:,.1f} ms, p99 {cuts[98] * 1000:,.1f} ms; "
            f"answers {dict(sorted(statuses.items()))}"
        )
    print(f"  collector RSS {rss_before:.0f} MB idle, {rss_after:.0f} MB after the loads")


def _rss_mb(process: LeadflowProcess) -> float:
    assert process.process is not None
    status = Path(f"/proc/{process.process.pid}/status").read_text()
    kilobytes = next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS"))
    return int(kilobytes) / 1024


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
