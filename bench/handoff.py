"""From an event to the alert of the MQL it makes, delivered to a webhook: p50 and p99.

The local broker, one worker and `leadflow notify` (subprocesses) and an aiohttp receiver in
this process that answers 200 at once. Generated traffic is published at a steady rate; for
every new MQL, the latency runs from the Kafka timestamp of the event that made it to the
moment the receiver has its delivery (the same clock: one machine). The baseline, in the same
run, is the stage change itself: from the same event to the MQL's record on the stage-changes
topic (what the worker alone costs).
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import orjson

from bench.stream import _settings
from streams.common.handoff_codec import is_clock
from streams.common.kafka_clients import create_topics
from streams.common.publish import make_producer
from streams.common.settings import environment_of
from streams.local.broker import FETCH_MAX_WAIT, LocalBroker, free_port
from streams.local.generator import generate
from streams.local.processes import LeadflowProcess, TopicReader, WorkerProcess

RATE = 1_000
WARM_UP_MS = 2_000
"""Traffic not counted: the worker's and the notifier's first fetches."""
SECRET = "bench-secret"


class _Receiver:
    """An aiohttp server on its own thread and loop: when each idempotency key first came."""

    def __init__(self) -> None:
        self.port = free_port()
        self.first: dict[str, tuple[float, bytes]] = {}
        self._ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        threading.Thread(target=self._serve, daemon=True).start()
        self._ready.wait(10)

    def _serve(self) -> None:
        from aiohttp import web

        async def hook(request: web.Request) -> web.Response:
            body = await request.read()
            key = request.headers.get("Idempotency-Key", "")
            self.first.setdefault(key, (time.time() * 1000, body))
            return web.Response(text="ok")

        async def start() -> None:
            app = web.Application()
            app.router.add_post("/hook", hook)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", self.port).start()
            self._ready.set()

        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(start())
        self._loop.run_forever()


def _wait(condition: Any, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


def _cuts(lags: list[float]) -> str:
    if len(lags) < 2:
        return f"{len(lags)} measured: too few"
    cuts = statistics.quantiles(lags, n=100)
    return f"p50 {cuts[49]:,.0f} ms, p99 {cuts[98]:,.0f} ms, max {max(lags):,.0f} ms"


def main(quick: bool = False) -> None:
    seconds = 15 if quick else 60
    documents = generate(4_000 if quick else 12_000, seed=17)[: RATE * seconds]
    workdir = Path(tempfile.mkdtemp(prefix="leadflow-bench-"))
    receiver = _Receiver()
    print(f"handoff: MQL to webhook at {RATE:,} events/s, {len(documents):,} events, one worker")
    with LocalBroker(log_path=workdir / "broker.log") as broker:
        settings = _settings(broker.bootstrap_servers, workdir)
        settings = settings.model_copy(
            update={"worker": settings.worker.model_copy(update={"accounts": False})}
        )
        create_topics(settings)
        env = environment_of(settings)
        worker = WorkerProcess(
            env=env, port=settings.worker.web_port, log_path=workdir / "worker.log"
        ).start()
        notifier = LeadflowProcess(
            ["notify"],
            {
                **env,
                "LEADFLOW_NOTIFY__URLS": orjson.dumps(
                    [f"http://127.0.0.1:{receiver.port}/hook"]
                ).decode(),
                "LEADFLOW_NOTIFY__KINDS": '["mql"]',
                "LEADFLOW_NOTIFY__SECRET": SECRET,
                "LEADFLOW_NOTIFY__START": "earliest",
                "LEADFLOW_NOTIFY__GROUP_ID": f"{settings.worker.app_id}-notify",
                "LEADFLOW_NOTIFY__FETCH_MAX_WAIT": str(FETCH_MAX_WAIT),
            },
            workdir / "notify.log",
        ).start()
        topics = settings.topics
        inputs = TopicReader(broker.bootstrap_servers, topics.events, topics.partitions)
        changes = TopicReader(broker.bootstrap_servers, topics.stage_changes, topics.partitions)
        try:
            worker.wait_assigned(timeout=90)
            producer = make_producer(settings, linger_ms=0)
            started = time.perf_counter()
            for index, document in enumerate(documents):
                delay = started + index / RATE - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                producer.send(
                    topics.events,
                    key=str(document["lead_id"]).encode(),
                    value=orjson.dumps(document),
                )
            producer.flush()
            achieved = len(documents) / (time.perf_counter() - started)
            producer.close()
            _wait(lambda: sum(not is_clock(m.value) for m in inputs.poll()) >= len(documents), 60)
            sent_at = {
                orjson.loads(m.value)["event_id"]: m.timestamp
                for m in inputs.messages
                if not is_clock(m.value)
            }
            mqls: dict[str, Any] = {}

            def all_mqls_delivered() -> bool:
                for record in changes.poll()[len(mqls) :]:
                    mqls.setdefault(record.value, record)
                wanted = [
                    orjson.loads(v)["change_id"]
                    for v in mqls
                    if b'"to_stage":"mql"' in v and b'"retracted":false' in v
                ]
                return bool(wanted) and all(w in receiver.first for w in wanted)

            _wait(all_mqls_delivered, 120)
        finally:
            notifier.stop()
            worker.stop()
            inputs.close()
            changes.close()
    warm_from = min(sent_at.values()) + WARM_UP_MS
    to_change, to_webhook = [], []
    seen = set()
    for record in changes.messages:
        change = orjson.loads(record.value)
        if change["to_stage"] != "mql" or change["retracted"] or change["change_id"] in seen:
            continue
        seen.add(change["change_id"])
        cause = sent_at.get(change["causation_event_id"])
        if cause is None or cause < warm_from:
            continue
        to_change.append(record.timestamp - cause)
        delivered = receiver.first.get(change["change_id"])
        if delivered is not None:
            to_webhook.append(delivered[0] - cause)
    print(
        f"  published at {achieved:,.0f} events/s; {len(changes.messages):,} stage changes, "
        f"{len(receiver.first):,} alerts delivered; {len(to_change):,} MQLs counted"
    )
    print(f"  event -> MQL stage change on its topic (baseline)  {_cuts(to_change)}")
    print(f"  event -> MQL alert at the webhook                  {_cuts(to_webhook)}")
    missing = len(to_change) - len(to_webhook)
    print(f"  alerts missing: {missing}; goal: p99 under 1,000 ms at {RATE:,} events/s")
