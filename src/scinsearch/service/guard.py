"""The first thing every request meets: its Host, the API key, a body size limit, a body deadline and
a budget of uploads in flight, all enforced before (or while) the body is read, never after.

Why a pure ASGI middleware and not FastAPI dependencies: FastAPI reads and parses a JSON body before
any dependency runs, so a key checked in a dependency is checked only after the whole body is in
memory (a 200 MB body without the key used to cost 190 MB, then a 401). Here a request without the
key is answered 401 before one byte of its body is read; a declared Content-Length over the route's
limit is answered 413 at once; the bytes are counted as they arrive (413 as soon as they pass the
limit, whatever was declared) and the whole body must arrive within the deadline (408). Requests
that carry a body hold a slot and reserve their bytes until they are answered; when the slots or
the byte budget are used up the answer is 503 with Retry-After, at once, so a few stalled uploads
cannot pile up memory or starve the kiosk.

The Host check guards against DNS rebinding: a web page the kiosk's browser opens could otherwise
point its own host name at 127.0.0.1 and call the API. It is done here rather than with Starlette's
TrustedHostMiddleware because bracketed IPv6 literals ([::1]:8000) are mis-parsed by the Starlette
versions this package allows.

When the guard answers while the application is already reading the body (413, 408), it tells the
application that the client went away and drops whatever the application still tries to send.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import secrets
from collections.abc import Callable, Iterable

import anyio
from starlette.datastructures import Headers
from starlette.responses import JSONResponse

from scinsearch.errors import BAD_REQUEST, OVERLOADED, TIMEOUT, UNAUTHORIZED, UPLOAD_TOO_LARGE

log = logging.getLogger("scinsearch.service")
HOST_PATTERN = re.compile(r"^(?P<host>\[[0-9a-fA-F:.]+\]|[^:\[\]]+)(?::(?P<port>\d{1,5}))?$")


def error_body(detail: str, code: str) -> dict:
    """The one error shape of the service: a one-line reason for people, a code for programs."""
    return {"detail": " ".join(str(detail).split())[:300], "code": code}


def host_name(header: str | None) -> str | None:
    """The host of a Host header, lower-cased, IPv6 literals with their brackets; None if malformed."""
    match = HOST_PATTERN.match((header or "").strip())
    return match["host"].lower() if match else None


@dataclasses.dataclass
class Budget:
    """Uploads in progress: how many, and how many body bytes they may hold between them."""

    max_requests: int
    max_bytes: int
    requests: int = 0
    bytes: int = 0

    def take(self, size: int) -> bool:
        if self.requests >= self.max_requests or self.bytes + size > self.max_bytes:
            return False
        self.requests += 1
        self.bytes += size
        return True

    def give_back(self, size: int) -> None:
        self.requests -= 1
        self.bytes -= size


@dataclasses.dataclass(frozen=True)
class GuardRules:
    """What the guard enforces; built by `create_app` from `ServiceSettings` and the routes."""

    allowed_hosts: frozenset[str]  # "*" allows any
    api_key: str | None
    keyed_paths: tuple[re.Pattern, ...]  # the routes that need the key (their own path regexes)
    body_limit: Callable[[str], int]  # bytes a request to this path may send
    body_timeout: float  # seconds for the whole body to arrive
    max_uploads: int  # requests with a body in progress at once
    max_upload_bytes_in_flight: int  # bytes those requests may reserve between them
    retry_after: int  # seconds, in a 503's Retry-After
    key_header: str

    def needs_key(self, path: str) -> bool:
        return self.api_key is not None and any(pattern.match(path) for pattern in self.keyed_paths)

    def host_allowed(self, header: str | None) -> bool:
        return "*" in self.allowed_hosts or host_name(header) in self.allowed_hosts


def allowed_host_names(bound_host: str, extra: Iterable[str]) -> frozenset[str]:
    """This machine's names, the address the service is bound to (if it is a name or an address a
    client can use) and the extra names given; IPv6 addresses in brackets, as a Host header has them."""
    names = {"127.0.0.1", "localhost", "[::1]"}
    for name in (bound_host, *extra):
        name = name.strip().lower()
        if not name or name in ("0.0.0.0", "::", "[::]"):
            continue
        names.add(f"[{name}]" if ":" in name and not name.startswith("[") and name != "*" else name)
    return frozenset(names)


class RequestGuard:
    """Pure ASGI middleware enforcing `GuardRules` (see the module's docstring)."""

    def __init__(self, app, rules: GuardRules):
        self.app = app
        self.rules = rules
        self.budget = Budget(rules.max_uploads, rules.max_upload_bytes_in_flight)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rules, headers, path = self.rules, Headers(scope=scope), scope["path"]
        refusal = self.refusal(headers, path, scope["method"])
        if refusal is not None:
            await respond(scope, send, *refusal)
            return
        if not carries_body(headers):
            await self.app(scope, receive, send)
            return
        limit = rules.body_limit(path)
        declared = declared_length(headers)
        if declared is not None and declared > limit:
            body = error_body(f"request body larger than the limit of {describe(limit)}", UPLOAD_TOO_LARGE)
            await respond(scope, send, 413, body, {"Connection": "close"})
            return
        reserved = limit if declared is None else declared
        if not self.budget.take(reserved):
            log.warning("overloaded: %d uploads in progress hold %s", self.budget.requests, describe(self.budget.bytes))
            await respond(
                scope,
                send,
                503,
                error_body("too many uploads in progress: retry in a few seconds", OVERLOADED),
                {"Retry-After": str(rules.retry_after)},
            )
            return
        try:
            await BodyReader(self.app, rules, limit, scope).run(receive, send)
        finally:
            self.budget.give_back(reserved)

    def refusal(self, headers: Headers, path: str, method: str) -> tuple[int, dict, dict] | None:
        """(status, body, headers) for a request refused on its headers alone: wrong host, no key."""
        rules = self.rules
        if not rules.host_allowed(headers.get("host")):
            return (
                400,
                error_body("unexpected Host header: this service answers only its own host names", BAD_REQUEST),
                {},
            )
        if rules.needs_key(path) and method != "OPTIONS":  # CORS preflights never carry the key
            given = headers.get(rules.key_header, "")
            if not given or not secrets.compare_digest(given.encode(), rules.api_key.encode()):
                detail = f"missing or wrong API key: send it in the {rules.key_header} header"
                return 401, error_body(detail, UNAUTHORIZED), {"WWW-Authenticate": "ApiKey"}
        return None


class BodyReader:
    """One request with a body: counts its bytes and times their arrival while the app reads them."""

    def __init__(self, app, rules: GuardRules, limit: int, scope):
        self.app, self.rules, self.limit, self.scope = app, rules, limit, scope
        self.received = 0
        self.body_done = False
        self.started = False  # the app has started its response
        self.answered = False  # the guard answered instead of the app

    async def run(self, receive, send) -> None:
        deadline = anyio.current_time() + self.rules.body_timeout

        async def guarded_receive():
            if self.answered:
                return {"type": "http.disconnect"}
            if self.body_done:
                return await receive()  # e.g. waiting for a disconnect: no deadline
            try:
                with anyio.fail_after(max(deadline - anyio.current_time(), 0)):
                    message = await receive()
            except TimeoutError:
                seconds = self.rules.body_timeout
                await self.answer(send, 408, error_body(f"the request body took longer than {seconds:g} s", TIMEOUT))
                return {"type": "http.disconnect"}
            if message["type"] == "http.request":
                self.received += len(message.get("body", b""))
                if self.received > self.limit:
                    await self.answer(
                        send,
                        413,
                        error_body(f"request body larger than the limit of {describe(self.limit)}", UPLOAD_TOO_LARGE),
                    )
                    return {"type": "http.disconnect"}
                self.body_done = not message.get("more_body", False)
            return message

        async def guarded_send(message):
            if self.answered:
                return
            if message["type"] == "http.response.start":
                self.started = True
            await send(message)

        await self.app(self.scope, guarded_receive, guarded_send)

    async def answer(self, send, status: int, body: dict) -> None:
        if self.started:  # too late for another status: the app's response stands
            return
        self.answered = True
        await respond(self.scope, send, status, body, {"Connection": "close"})


async def respond(scope, send, status: int, body: dict, headers: dict | None = None) -> None:
    await JSONResponse(body, status_code=status, headers=headers)(scope, _no_receive, send)


async def _no_receive():
    return {"type": "http.disconnect"}


def carries_body(headers: Headers) -> bool:
    length = declared_length(headers)
    return (length is not None and length > 0) or "chunked" in headers.get("transfer-encoding", "").lower()


def declared_length(headers: Headers) -> int | None:
    value = headers.get("content-length", "").strip()
    return int(value) if value.isdigit() else None


def describe(size: int) -> str:
    return f"{size / 2**20:.1f} MiB" if size >= 2**20 else f"{size / 2**10:.0f} KiB"
