"""Faust alone: the worker's Faust configuration copying the events topic with no processing.

Run by `bench/stream.py` as a worker process (`python -m bench.faust_floor`, configured by the
same LEADFLOW_* variables): it reads the events in the worker's batches, sends each message
unchanged to the stage-change topic and waits for the acknowledgements before the batch is
acked, as the agents do. What it reaches is the most any Faust worker can on this machine.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

import faust
from faust.web import Request, Response, View

from streams.common.settings import Settings
from streams.worker.app import RAW_BYTES, faust_app, faust_worker


def floor_app(settings: Settings) -> faust.App:
    topics, worker = settings.topics, settings.worker
    app = faust_app(settings)
    events = app.topic(topics.events, partitions=topics.partitions, **RAW_BYTES)
    copies = app.topic(topics.stage_changes, **RAW_BYTES)

    @app.agent(events, name="copy", concurrency=1)
    async def copy(stream: faust.StreamT[bytes]) -> None:
        batches = cast(Any, stream).noack().take_events(worker.batch_size, within=worker.batch_wait)
        async for batch in batches:
            sent = [await copies.send(key=e.message.key, value=e.message.value) for e in batch]
            await asyncio.gather(*sent)

    @app.page("/health")
    class Health(View):
        async def get(self, request: Request) -> Response:
            assigned = [tp.partition for tp in app.consumer.assignment()]
            return self.json({"status": "ok", "partitions": sorted(assigned)})

    return app


if __name__ == "__main__":
    faust_worker(floor_app(Settings()), "info").execute_from_commandline()
