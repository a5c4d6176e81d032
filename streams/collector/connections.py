"""The collector's listening socket: a bound on open connections and a deadline for headers.

aiohttp closes a connection that stays idle past its keep-alive timeout, from the connection's
start and after each answer, until the next request's headers are complete: that is the idle
timeout, and it bounds an idle connection and a slow one alike. It has no shorter deadline for
the first request and no bound on connections, so both are here, around aiohttp's own protocol
factory (`web.Server`): a connection beyond `max_connections` is answered 503 at once and closed,
and one that has not sent its first request's headers within `header_timeout` is closed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Final

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler

from streams.common.logs import OncePerInterval


def _unavailable(code: str, message: str) -> bytes:
    body = b'{"code":"%s","message":"%s"}' % (code.encode(), message.encode())
    return (
        b"HTTP/1.1 503 Service Unavailable\r\n"
        b"Content-Type: application/json\r\n"
        b"Retry-After: 1\r\n"
        b"Connection: close\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )


OVER_LIMIT_ANSWER: Final = _unavailable("overloaded", "too many open connections; retry shortly")
STOPPING_ANSWER: Final = _unavailable("stopping", "the collector is stopping; retry")
REFUSAL_LINGER: Final = 1.0
"""Seconds a refused connection stays open after its answer: closing with the client's request
still unread would reset the connection, and the reset can overtake the answer."""


class _Refusal(asyncio.Protocol):
    """A connection not served: one 503 answer, whatever the client sends, then closed."""

    def __init__(self, answer: bytes) -> None:
        self._answer = answer

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(self._answer)
        asyncio.get_running_loop().call_later(REFUSAL_LINGER, transport.close)

    def data_received(self, data: bytes) -> None:
        pass


class Listener:
    """Accepts connections for aiohttp's `server` within `max_connections`, and closes those
    that send no request's headers within `header_timeout` seconds."""

    def __init__(
        self,
        server: web.Server,
        max_connections: int,
        header_timeout: float,
        dropped: Callable[[str], None] = lambda reason: None,
    ) -> None:
        self._server = server
        self._max_connections = max_connections
        self._header_timeout = header_timeout
        self._dropped = dropped
        self._before_first_request: set[RequestHandler] = set()
        self._listening: asyncio.Server | None = None
        self._stopping = False

    def __call__(self) -> asyncio.BaseProtocol:
        if self._stopping:
            return _Refusal(STOPPING_ANSWER)
        if len(self._server.connections) >= self._max_connections:
            self._dropped("over_limit")
            return _Refusal(OVER_LIMIT_ANSWER)
        handler = self._server()
        self._before_first_request.add(handler)
        asyncio.get_running_loop().call_later(self._header_timeout, self._deadline, handler)
        return handler

    def request_started(self, handler: Any) -> None:
        """Called for every request: its connection has sent a request's headers in time."""
        self._before_first_request.discard(handler)

    def _deadline(self, handler: RequestHandler) -> None:
        if handler in self._before_first_request:
            self._before_first_request.discard(handler)
            if handler.transport is not None:  # still open
                self._dropped("header_timeout")
                handler.force_close()

    @property
    def open_connections(self) -> int:
        return len(self._server.connections)

    async def listen(self, host: str, port: int) -> None:
        self._listening = await asyncio.get_running_loop().create_server(
            self, host, port, backlog=min(self._max_connections, 4096)
        )

    def refuse(self) -> None:
        """Answer every new connection 503 (the collector stops): a client that connects
        while it stops learns so, instead of a reset."""
        self._stopping = True

    def close(self) -> None:
        """Accept no more connections; those open stay to aiohttp's shutdown."""
        if self._listening is not None:
            self._listening.close()


class _MalformedRequestLine(logging.Filter):
    """aiohttp logs a traceback for each request its parser refuses (and answers 4xx, e.g. an
    encoding it cannot decode): a client could fill the log. One line with the reason instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, HttpProcessingError) and 400 <= error.code < 500:
            record.msg = "refused a malformed request (%s): %s"
            record.args = (error.code, " ".join(error.message.split()))
            record.exc_info = None
            record.exc_text = None
        return True


def quiet_malformed_requests() -> None:
    """One line per malformed request, and one per kind per interval (`OncePerInterval`)."""
    server_log = logging.getLogger("aiohttp.server")
    server_log.addFilter(_MalformedRequestLine())
    server_log.addFilter(OncePerInterval(prefixes=("aiohttp.server",)))
