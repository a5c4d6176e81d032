"""Logging for a client that keeps failing the same way: one line per interval, not a flood.

While the broker is away, aiokafka logs every failed connection, metadata refresh, fetch and
heartbeat: about 80 lines a second from one worker. `OncePerInterval` lets the first record of
each kind through, holds back the same kind for `interval` seconds, and then lets the next one
through with how many were held back, so the log says what is wrong, and since when, at a rate
a person can read.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Final

REPEAT_INTERVAL: Final = 10.0
"""Seconds between two records of the same kind from a client library."""
CLIENT_LOGGERS: Final = ("aiokafka", "kafka")
"""The client libraries whose records are held back: their loggers and every child."""
_MAX_KINDS: Final = 10_000


class OncePerInterval(logging.Filter):
    """Passes one record per `interval` seconds for each logger and message template of the
    loggers under `prefixes`; records of other loggers pass untouched."""

    def __init__(
        self,
        prefixes: tuple[str, ...] = CLIENT_LOGGERS,
        interval: float = REPEAT_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.prefixes = prefixes
        self.interval = interval
        self._clock = clock
        self._passed_at: dict[tuple[str, object], float] = {}
        self._held: dict[tuple[str, object], int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(self.prefixes):
            return True
        # The template, not the message: a failed connect to another port is the same kind.
        kind = (record.name, record.msg)
        now = self._clock()
        passed_at = self._passed_at.get(kind)
        if passed_at is not None and now - passed_at < self.interval:
            self._held[kind] = self._held.get(kind, 0) + 1
            return False
        held = self._held.pop(kind, 0)
        if held and passed_at is not None:
            record.msg = f"{record.msg} ({held} more like this in {now - passed_at:.0f}s)"
        if len(self._passed_at) >= _MAX_KINDS:  # templates are few; stay bounded regardless
            self._passed_at.clear()
            self._held.clear()
        self._passed_at[kind] = now
        return True


def quiet_client_repeats(logger: logging.Logger, interval: float = REPEAT_INTERVAL) -> None:
    """Hold back repeated client-library records on every handler of `logger` (the root logger,
    once logging is configured: a handler sees the records of every logger that propagates)."""
    for handler in logger.handlers:
        # One filter per handler: a shared one would hold back what another handler passed.
        handler.addFilter(OncePerInterval(interval=interval))
