"""Notifier throughput: alerts delivered per second to a webhook on loopback.

Handoff events of many leads wait on the local broker; `leadflow notify` (a subprocess, reading
from the earliest offset) delivers them to an aiohttp receiver in this process that answers 200
at once. The rate runs from the receiver's first request to its last. The baseline, measured in
the same run, is this process posting the same bodies to the same receiver with as many
connections from another process (as the notifier is), with no Kafka in between.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kafka import KafkaProducer

from bench import topics_named
from schemas.handoff import HandoffEvent
from streams.common.kafka_clients import create_topics
from streams.common.settings import KafkaSettings, Settings, environment_of
from streams.local.broker import LocalBroker, free_port
from streams.local.processes import LeadflowProcess

CONCURRENCY = (8, 64)
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


class _Receiver:
    """An aiohttp server on its own thread and loop, counting what it is sent."""

    def __init__(self) -> None:
        self.port = free_port()
        self.times: list[float] = []
        self._ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        threading.Thread(target=self._serve, daemon=True).start()
        self._ready.wait(10)

    def _serve(self) -> None:
        from aiohttp import web

        async def hook(request: web.Request) -> web.Response:
            await request.read()
            self.times.append(time.perf_counter())
            return web.Response(text="ok")

        async def start() -> None:
            app = web.Application()
            app.router.add_post("/hook", hook)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", self.port).start()
            self._ready.set()

        self._loop.run_until_complete(start())
        self._loop.run_forever()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"


def _events(count: int, leads: int) -> list[HandoffEvent]:
    kinds = ("assigned", "due_soon", "breached")
    return [
        HandoffEvent(
            handoff_id=f"h-{n}",
            lead_id=f"lead-{n % leads}",
            kind=kinds[n // leads % 3],
            at=T0,
            mql_change_id=f"c-{n % leads}",
            owner="ana",
            queue="emea",
            mql_kind="active",
            mql_at=T0,
            rules_version="bench",
        )
        for n in range(count)
    ]


def _baseline_in_a_process(url: str, bodies: list[bytes], connections: int) -> float:
    # The receiver holds this process's GIL: a client beside it would measure their contention.
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    process = context.Process(target=_run_baseline, args=(url, bodies, connections, results))
    process.start()
    seconds: float = results.get(timeout=600)
    process.join()
    return seconds


def _run_baseline(url: str, bodies: list[bytes], connections: int, results: Any) -> None:
    results.put(asyncio.run(_baseline(url, bodies, connections)))


async def _baseline(url: str, bodies: list[bytes], connections: int) -> float:
    import aiohttp

    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)

    async def client(session: Any) -> None:
        while not queue.empty():
            body = queue.get_nowait()
            async with session.post(url, data=body) as answer:
                await answer.read()

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        started = time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(connections)))
        return time.perf_counter() - started


def main(quick: bool = False) -> None:
    count = 2_000 if quick else 20_000
    events = _events(count, leads=max(count // 3, 1))
    bodies = [event.model_dump_json().encode() for event in events]
    receiver = _Receiver()
    workdir = Path(tempfile.mkdtemp(prefix="leadflow-bench-"))
    figures = []
    with LocalBroker(log_path=workdir / "broker.log") as broker:
        name = f"bench-{uuid.uuid4().hex[:8]}"
        settings = Settings(
            kafka=KafkaSettings(bootstrap_servers=broker.bootstrap_servers),
            topics=topics_named(name),
        )
        create_topics(settings)
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap_servers, linger_ms=5)
        for event, body in zip(events, bodies, strict=True):
            producer.send(settings.topics.handoff, key=event.lead_id.encode(), value=body)
        producer.flush()
        producer.close()
        for concurrency in CONCURRENCY:
            baseline = _baseline_in_a_process(receiver.url, bodies, concurrency)
            receiver.times.clear()
            env = {
                **environment_of(settings),
                "LEADFLOW_NOTIFY__URLS": json.dumps([receiver.url]),
                "LEADFLOW_NOTIFY__SECRET": "bench-secret",
                "LEADFLOW_NOTIFY__START": "earliest",
                "LEADFLOW_NOTIFY__GROUP_ID": f"{name}-notify-{concurrency}",
                "LEADFLOW_NOTIFY__CONCURRENCY": str(concurrency),
                "LEADFLOW_NOTIFY__FETCH_MAX_WAIT": "0.01",
            }
            log = workdir / f"notify-{concurrency}.log"
            notifier = LeadflowProcess(["notify"], env, log).start()
            try:
                deadline = time.monotonic() + 600
                while len(receiver.times) < count:
                    if notifier.exited or time.monotonic() > deadline:
                        raise RuntimeError(f"the notifier did not deliver everything (log: {log})")
                    time.sleep(0.2)
            finally:
                notifier.stop()
            seconds = receiver.times[count - 1] - receiver.times[0]
            figures.append((concurrency, count / seconds, count / baseline))
    print(f"notify: {count:,} handoff events to one webhook on loopback, local broker")
    for concurrency, rate, baseline_rate in figures:
        print(
            f"  concurrency {concurrency:>3}: {rate:>8,.0f} deliveries/s signed and in order per "
            f"lead ({rate / baseline_rate:.2f} of {baseline_rate:,.0f} posts/s with no Kafka)"
        )
