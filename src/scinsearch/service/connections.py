"""Connections before they are requests: a deadline for the request's headers and a bound on idle
sockets, in front of the app (issue 23).

Why: uvicorn has no header-read timeout (a socket that sends nothing, or a byte a minute, is kept
forever), and its `limit_concurrency` counts such idle sockets: 64 of them made every request,
`/health` included, get 503 for as long as they stayed open. The API key cannot help, since it is
read from headers that never come. So uvicorn runs with this subclass of its own h11 protocol, which
1. closes a connection whose request headers have not all arrived within `header_timeout` seconds
   of it opening, or of the previous response on it (a slow body is the request guard's: 408);
2. when a new connection would pass `max_connections`, closes the longest-idle connections (those
   with no request in progress) to make room, so idle sockets can never starve a real request; only
   when every connection carries a request in progress is the newcomer closed at once.
uvicorn's own `limit_concurrency` is not used: it would answer 503 instead of closing idle sockets.
The h11 protocol is uvicorn's pure-Python one (httptools, the faster C parser, is not a dependency);
a kiosk's request rate is far below what it handles.
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.h11_impl import H11Protocol

from scinsearch.service.settings import DEFAULT_HEADER_TIMEOUT_SECONDS


def guarded_protocol(max_connections: int, header_timeout: float = DEFAULT_HEADER_TIMEOUT_SECONDS) -> type:
    """uvicorn's h11 protocol with a header deadline and an idle-connection bound (pass as `http=`)."""

    class GuardedH11Protocol(H11Protocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self.header_deadline: asyncio.TimerHandle | None = None
            self.idle_since = self.loop.time()
            self.arm_header_deadline()
            if len(self.connections) > max_connections:
                self.make_room()

        def busy(self) -> bool:
            return self.cycle is not None and not self.cycle.response_complete

        def make_room(self) -> None:
            idle = sorted((c for c in self.connections if c is not self and not c.busy()), key=lambda c: c.idle_since)
            for connection in idle[: len(self.connections) - max_connections]:
                connection.transport.close()
                self.connections.discard(connection)
            if len(self.connections) > max_connections:  # every other connection carries a request
                self.transport.close()

        def arm_header_deadline(self) -> None:
            if self.header_deadline is not None:
                self.header_deadline.cancel()
            self.header_deadline = self.loop.call_later(header_timeout, self.headers_overdue)

        def headers_overdue(self) -> None:
            self.header_deadline = None
            if not self.busy() and not self.transport.is_closing():
                self.transport.close()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self.idle_since = self.loop.time()
            if not self.transport.is_closing():
                self.arm_header_deadline()

        def connection_lost(self, exc: Exception | None) -> None:
            if self.header_deadline is not None:
                self.header_deadline.cancel()
            super().connection_lost(exc)

    return GuardedH11Protocol
