"""A batch: states are written only once every output of the batch is acknowledged."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from streams.worker.agents import Batch, Consumed


@dataclass
class RecordingTable:
    """A table that records writes; its changelog acknowledgements are resolved by the test."""

    stored: dict[bytes, bytes] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)
    changelog: list[asyncio.Future[Any]] = field(default_factory=list)

    def get_for(self, consumed: Consumed, key: bytes) -> bytes | None:
        return self.stored.get(key)

    def put_for(self, consumed: Consumed, key: bytes, value: bytes) -> asyncio.Future[Any]:
        self.stored[key] = value
        self.log.append(f"write {key.decode()}={value.decode()}")
        record: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.changelog.append(record)
        return record


CONSUMED: Any = object()


def test_a_batch_writes_states_after_its_outputs_and_ends_after_their_changelog() -> None:
    async def scenario() -> None:
        table = RecordingTable(stored={b"lead": b"v0"})
        batch = Batch(table)
        acknowledgement: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        async def send(**message: Any) -> asyncio.Future[Any]:
            table.log.append(f"send {message['value'].decode()}")
            return acknowledgement

        assert batch.read(CONSUMED, b"lead") == b"v0"
        await batch.send(send, value=b"change-1")
        batch.write(CONSUMED, b"lead", b"v1")
        assert batch.read(CONSUMED, b"lead") == b"v1", "the next event of the lead sees v1"
        batch.write(CONSUMED, b"lead", b"v2")
        finishing = asyncio.ensure_future(batch.finish())
        await asyncio.sleep(0.01)
        assert table.log == ["send change-1"], "no state before its outputs are acknowledged"
        acknowledgement.set_result(None)
        await asyncio.sleep(0.01)
        assert table.log == ["send change-1", "write lead=v2"], "one write per key, the latest"
        assert not finishing.done(), "the batch ends only once the changelog has the state"
        table.changelog[0].set_result(None)
        await asyncio.wait_for(finishing, timeout=1)

    asyncio.run(scenario())
